"""A model's own chat format: requests rendered with the GGUF's Jinja template, replies parsed as a server would.

Rendering follows llama.cpp's server started with `--jinja` (common/chat.cpp, `common_chat_templates_apply_jinja`
and `common_chat_template_direct_apply_impl`), so the prompt is what a user's llama-server or Ollama
puts in front of the model:
- the template is the GGUF's `tokenizer.chat_template`, run with `trim_blocks` and `lstrip_blocks`
  (llama.cpp's Jinja lexer defaults), and with `tojson` writing `", "` / `": "` separators, keys in
  their given order and non-ASCII kept (llama.cpp's `tojson`, common/jinja/value.cpp);
- the variables are `messages`, `tools` (only when there are tools), `bos_token`, `eos_token`,
  `enable_thinking`, `add_generation_prompt` (only when true), `datetime` and `date_string`;
- messages are normalized as the server does: `developer` becomes `system`, a null content becomes
  "", content parts are joined with newlines, assistant tool-call arguments are parsed from their JSON
  string into objects (the template's `tojson` writes them back), tools keep only
  `{"type": "function", "function": {name, description, parameters}}`.

Parsing has three rules (`PARSERS`), all for the Hermes-2-Pro family that Qwen2.5 belongs to (calls
written as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`):

`llama.cpp`: llama.cpp at commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f, the one vendored in
  llama-cpp-python 0.3.36. Qwen2.5's template has no dedicated handler there: the differential
  autoparser (common/chat-auto-parser-generator.cpp, `build_tool_parser_json_native`, and
  common/chat-peg-parser.cpp, `standard_json_tools` / `build_json_tools_flat_keys`) builds a PEG parser.
  Checked case by case against that code (scripts/llama_cpp_chat, tests/fixtures/llama_cpp_chat):
  - leading whitespace is dropped; content is the text before the first `<tool_call>\n` (the
    newline is part of the marker: `<tool_call>{...}` is plain content);
  - then one or more `<tool_call>\n {"name": "<an offered tool>", "arguments": <JSON>} </tool_call>`
    blocks (exactly these two keys, in this order; several comma-separated objects in one block
    when parallel calls are on), whitespace between them, then the end of the reply;
  - the arguments are the object's JSON text as written ("{}" when it is not an object);
  - a bare JSON call, a fenced one or `<function=...>` is plain content;
  - anything else after the first marker (invalid JSON, a tool that was not offered, another key,
    text after the calls) fails: the server answers with an error ("The model produced output that
    does not match the expected format"), reported here as `error`;
  - the parse is lenient at the end of the reply (a reply cut off by max_tokens): a call whose name
    is complete is kept with the arguments as far as they were written ("{" when none were), a call
    with a cut-off name is dropped, and an unfinished marker at the very end is dropped from the
    content; reported as `truncated`.
`hermes-2-pro`: the rule llama.cpp used for this family before the autoparser replaced it
  (`common_chat_parse_hermes_2_pro` in common/chat.cpp), which servers built in 2025 still run. It searches the reply for
  ```` (```(xml|json)?\\n)? (<tool_call>|<function_call>|<tool>|<tools>|<response>|<json>|<xml>|<JSON>)? {"name" ````
  or `<function=NAME>` / `<function name="NAME">` followed by JSON arguments: so a bare
  `{"name": ..., "arguments": ...}` object, with or without tags or a ```json fence, is a call, as
  are several in a row; text around them is content. Any malformed call (invalid or cut-off JSON, a
  missing closing tag) turns the whole reply into plain content with no calls. Checked against that
  code as vendored in llama-cpp-python 0.3.16 (llama.cpp 4227c9be4268ac844921b90f31595f81236bd317):
  the recorded fixtures all match, and random mixes of call pieces match but for some of its JSON
  "healing" errors on malformed arguments after `<function=...>` (scripts/llama_cpp_chat/compare_random.py;
  1,300 random replies: 0 differences for `llama.cpp`, 4 for this rule).
`strict`: only the template's own syntax: `<tool_call>` + one JSON object with a string "name" and
  "arguments" + `</tool_call>`; each block on its own, text around them is content.

Neither server's sampling grammar is reproduced here: after `<tool_call>` both constrain generation
to valid calls (a lazy grammar), so a reply generated without it may fail where the server's would not.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.core.errors import UserError

LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"  # vendored in llama-cpp-python 0.3.36
PARSERS = ("llama.cpp", "hermes-2-pro", "strict")
TEMPLATE_KEY = "tokenizer.chat_template"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
SYNTAXES = ("tagged", "bare", "fenced", "function_tag", "other_tag")  # how a parsed call was written
AUTOPARSER_OPEN = TOOL_OPEN + "\n"  # llama.cpp's per-call marker for this template, newline included


# ---------------------------------------------------------------- rendering

def _tojson(value: Any, indent: int | None = None, separators: Any = None, ensure_ascii: bool = False,
            sort_keys: bool = False) -> str:
    if sort_keys:
        raise UserError("the chat template asks for tojson(sort_keys=true), which llama.cpp does not implement")
    if separators is None:
        separators = (", " if indent is None else ",", ": ")
    return json.dumps(value, indent=indent, separators=tuple(separators), ensure_ascii=ensure_ascii)


def _raise(message: str) -> None:
    raise UserError(f"the chat template refused the request: {message}")


@dataclass
class ChatTemplate:
    """A GGUF's chat template, ready to render OpenAI-style requests the way llama.cpp's server does."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    add_bos: bool = False  # llama.cpp strips a leading bos_token from the prompt when the model adds its own
    _compiled: Any = field(default=None, repr=False, compare=False)

    @property
    def family(self) -> str:
        """`hermes` when calls are `<tool_call>` JSON blocks (Qwen2.5, Hermes 2 Pro), else `other`."""
        return "hermes" if TOOL_OPEN in self.source and '"arguments"' in self.source else "other"

    def _template(self) -> Any:
        if self._compiled is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: _dt.datetime.now().strftime(fmt)
            self._compiled = env.from_string(self.source)
        return self._compiled

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
               add_generation_prompt: bool = True, now: _dt.datetime | None = None) -> str:
        """The prompt text for an OpenAI-style request (messages with tool calls and tool results, tools)."""
        now = now or _dt.datetime.now()
        context: dict[str, Any] = {
            "messages": normalize_messages(messages),
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "enable_thinking": True,
            "datetime": now.strftime("%b %d %Y"),
            "date_string": now.strftime("%d %b %Y"),
        }
        if tools:
            context["tools"] = normalize_tools(tools)
        if add_generation_prompt:
            context["add_generation_prompt"] = True
        text = self._template().render(**context)
        if self.add_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token):]
        return text

    def generation_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """What add_generation_prompt appends (e.g. `<|im_start|>assistant\\n`), found as llama.cpp does, by diff."""
        without = self.render(messages, tools, add_generation_prompt=False)
        with_it = self.render(messages, tools)
        n = 0
        while n < min(len(without), len(with_it)) and without[n] == with_it[n]:
            n += 1
        return with_it[n:]


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")


def normalize_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as llama.cpp's server hands them to the template (see the module docstring)."""
    out = []
    for msg in messages:
        role = msg.get("role")
        item: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": _text(msg.get("content"))}
        if msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                fn = call.get("function") or {}
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except ValueError as exc:
                        raise UserError(f"a tool call's arguments are not JSON ({exc}); llama.cpp's server "
                                        f"refuses such a request") from None
                calls.append({"type": "function", "function": {"name": fn.get("name", ""), "arguments": args},
                              **({"id": call["id"]} if call.get("id") else {})})
            item["tool_calls"] = calls
        for key in ("name", "tool_call_id"):
            if msg.get(key):
                item[key] = msg[key]
        out.append(item)
    return out


def normalize_tools(tools: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn = tool.get("function") or {}
        out.append({"type": "function", "function": {"name": fn.get("name", ""),
                                                     "description": fn.get("description", ""),
                                                     "parameters": fn.get("parameters") or {}}})
    return out


def template_from_llama(llama: Any) -> ChatTemplate:
    """The chat template of a loaded llama_cpp.Llama (metadata `tokenizer.chat_template`)."""
    source = (getattr(llama, "metadata", None) or {}).get(TEMPLATE_KEY)
    if not source:
        raise UserError("this GGUF has no chat template (tokenizer.chat_template); it cannot be used for chat")

    def piece(token: int) -> str:
        if token is None or token < 0:
            return ""
        return llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    add_bos = str(llama.metadata.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"
    return ChatTemplate(source=source, bos_token=piece(llama.token_bos()), eos_token=piece(llama.token_eos()),
                        add_bos=add_bos)


_templates: dict[str, ChatTemplate] = {}


def load_template(path: str | Path) -> ChatTemplate:
    """The chat template of a GGUF file (its vocabulary only is loaded: well under a second)."""
    key = str(path)
    if key not in _templates:
        from llama_cpp import Llama

        _templates[key] = template_from_llama(Llama(model_path=key, vocab_only=True, verbose=False))
    return _templates[key]


# ---------------------------------------------------------------- parsing

@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text
    syntax: str  # "tagged" (the template's <tool_call> block), "bare", "fenced", "function_tag", "other_tag"

    @property
    def tagged(self) -> bool:
        return self.syntax == "tagged"

    def as_openai(self, index: int) -> dict[str, Any]:
        # The id names the syntax the call was written in: only the id survives DSPy's reading of a reply.
        return {"id": f"call_{index}_{self.syntax}", "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Reply:
    """A completion as the chosen server rule reads it."""

    parser: str
    content: str
    calls: list[ToolCall] = field(default_factory=list)
    text_call: bool = False  # the content still holds something written as a call (the rule did not take it)
    error: bool = False  # the server would reject this reply (llama.cpp rule: output does not match the format)
    truncated: bool = False  # the reply ended inside a call

    @property
    def strict(self) -> bool:
        """At least one call, and every call in the template's own tagged syntax."""
        return bool(self.calls) and all(c.tagged for c in self.calls)

    def message(self) -> dict[str, Any]:
        """The OpenAI assistant message a client would receive."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.calls:
            msg["tool_calls"] = [c.as_openai(i) for i, c in enumerate(self.calls)]
        return msg


def parse(text: str, tools: list[dict[str, Any]] | None = None, parser: str = "llama.cpp", *,
          parallel_tool_calls: bool = True) -> Reply:
    """Read a raw completion (the text after the generation prompt) with one of `PARSERS`."""
    names = [((t.get("function") or {}).get("name") or "") for t in tools] if tools is not None else None
    if parser == "llama.cpp":
        reply = _parse_autoparser(text, names, parallel_tool_calls)
    elif parser == "hermes-2-pro":
        reply = _parse_hermes(text)
    elif parser == "strict":
        reply = _parse_strict(text)
    else:
        raise UserError(f"unknown parser {parser!r}; choose one of: {', '.join(PARSERS)}")
    reply.text_call = reply.error or holds_call_text(reply.content)
    return reply


_DECODER = json.JSONDecoder()
_WS = re.compile(r"\s*")


def _skip_ws(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()


def _json_at(text: str, pos: int) -> tuple[Any, int] | None:
    try:
        return _DECODER.raw_decode(text, pos)
    except ValueError:
        return None


class _EndOfInput(Exception):
    """The JSON text stopped where more would have made it valid; `cut` drops an unfinished escape."""

    def __init__(self, cut: int | None = None) -> None:
        self.cut = cut


class _BadJson(Exception):
    pass


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


class _PrefixReader:
    """Reads one JSON value and tells a valid but unfinished text (cut off by max_tokens) from invalid JSON."""

    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def peek(self) -> str:
        if self.i >= len(self.s):
            raise _EndOfInput()
        return self.s[self.i]

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\n\r":
            self.i += 1

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise _BadJson(ch)
        self.i += 1

    def value(self) -> None:
        self.ws()
        c = self.peek()
        if c in "{[":
            close = "}" if c == "{" else "]"
            self.i += 1
            self.ws()
            if self.peek() == close:
                self.i += 1
                return
            while True:
                if c == "{":
                    self.ws()
                    self.string()
                    self.ws()
                    self.expect(":")
                self.value()
                self.ws()
                if self.peek() == ",":
                    self.i += 1
                    continue
                self.expect(close)
                return
        if c == '"':
            self.string()
        elif c in "tfn":
            word = {"t": "true", "f": "false", "n": "null"}[c]
            for expected in word:
                if self.peek() != expected:
                    raise _BadJson(word)
                self.i += 1
        elif c == "-" or c.isdigit():
            start = self.i
            while self.i < len(self.s) and self.s[self.i] in "0123456789+-.eE":
                self.i += 1
            if self.i >= len(self.s):
                raise _EndOfInput()
            if not _NUMBER.fullmatch(self.s[start:self.i]):
                raise _BadJson("number")
        else:
            raise _BadJson(c)

    def string(self) -> None:
        self.expect('"')
        while True:
            c = self.peek()
            self.i += 1
            if c == '"':
                return
            if c == "\\":
                start = self.i - 1
                try:
                    e = self.peek()
                    self.i += 1
                    if e == "u":
                        for _ in range(4):
                            if self.peek() not in "0123456789abcdefABCDEF":
                                raise _BadJson("escape")
                            self.i += 1
                    elif e not in '"\\/bfnrt':
                        raise _BadJson("escape")
                except _EndOfInput:
                    raise _EndOfInput(cut=start) from None
            elif ord(c) < 0x20:
                raise _BadJson("control character")


def _json_prefix(fragment: str) -> str | None:
    """`fragment` as far as a server keeps it when it is the start of a JSON value cut off at the end of
    the reply (trailing whitespace and an unfinished escape dropped); None when it is invalid JSON."""
    reader = _PrefixReader(fragment)
    try:
        reader.value()
    except _EndOfInput as end:
        kept = fragment if end.cut is None else fragment[:end.cut]
        return kept.rstrip()
    except _BadJson:
        return None
    return None  # a complete value: not a cut-off one


class _Incomplete(Exception):
    """The reply ended in the middle of what the rule was reading (lenient: not an error)."""

    def __init__(self, partial: ToolCall | None = None) -> None:
        self.partial = partial


class _Mismatch(Exception):
    """The reply does not follow the rule."""


def _literal(text: str, pos: int, lit: str) -> int:
    if text.startswith(lit, pos):
        return pos + len(lit)
    if lit.startswith(text[pos:]):  # the reply stops inside the literal
        raise _Incomplete()
    raise _Mismatch(lit)


def _autoparser_call(text: str, pos: int, names: list[str] | None) -> tuple[ToolCall, int]:
    """`{"name": "<tool>", "arguments": <json>}` at pos (llama.cpp's build_json_tools_flat_keys).

    The arguments are the JSON text as the model wrote it when it is an object, "{}" otherwise. A call
    cut off after its name keeps what was written of the arguments ("{" when none was).
    """
    pos = _literal(text, pos, "{")
    pos = _skip_ws(text, pos)
    pos = _literal(text, pos, '"name"')
    pos = _skip_ws(text, pos)
    pos = _literal(text, pos, ":")
    pos = _skip_ws(text, pos)
    pos = _literal(text, pos, '"')
    end = text.find('"', pos)
    if end < 0:
        if names is None or any(n.startswith(text[pos:]) for n in names):
            raise _Incomplete()
        raise _Mismatch("name")
    name = text[pos:end]
    if names is not None and name not in names:
        raise _Mismatch(f"tool {name!r} was not offered")
    pos = _skip_ws(text, end + 1)
    try:
        pos = _literal(text, pos, ",")
        pos = _skip_ws(text, pos)
        pos = _literal(text, pos, '"arguments"')
        pos = _skip_ws(text, pos)
        pos = _literal(text, pos, ":")
        pos = _skip_ws(text, pos)
    except _Incomplete:
        raise _Incomplete(ToolCall(name, "{", "tagged")) from None
    found = _json_at(text, pos)
    if found is None:
        kept = _json_prefix(text[pos:])
        if kept is None:
            raise _Mismatch("arguments")
        raise _Incomplete(ToolCall(name, kept or "{", "tagged"))
    value, end = found
    arguments = text[pos:end] if isinstance(value, dict) else "{}"
    pos = _skip_ws(text, end)
    try:
        pos = _literal(text, pos, "}")
    except _Incomplete:
        raise _Incomplete(ToolCall(name, arguments, "tagged")) from None
    return ToolCall(name, arguments, "tagged"), pos


def _partial_marker(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is the start of `marker` (0 when none)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def _parse_autoparser(text: str, names: list[str] | None, parallel: bool) -> Reply:
    text = text.lstrip()  # the parser allows whitespace after the generation prompt
    start = text.find(AUTOPARSER_OPEN)
    if start < 0:
        cut = _partial_marker(text, AUTOPARSER_OPEN)  # the server would wait for the rest of the marker
        return Reply("llama.cpp", content=text[:len(text) - cut], truncated=bool(cut))
    calls: list[ToolCall] = []
    pos = start
    try:
        while pos < len(text):
            pos = _literal(text, pos, AUTOPARSER_OPEN)
            pos = _skip_ws(text, pos)
            call, pos = _autoparser_call(text, pos, names)
            calls.append(call)
            while parallel:  # several comma-separated calls in one block
                after = _skip_ws(text, pos)
                if not text.startswith(",", after):
                    break
                call, pos = _autoparser_call(text, _skip_ws(text, after + 1), names)
                calls.append(call)
            pos = _literal(text, _skip_ws(text, pos), TOOL_CLOSE)
            pos = _skip_ws(text, pos)
    except _Incomplete as cut:
        if cut.partial is not None:
            calls.append(cut.partial)
        return Reply("llama.cpp", content=text[:start], calls=calls, truncated=True)
    except _Mismatch:
        return Reply("llama.cpp", content=text, error=True)
    return Reply("llama.cpp", content=text[:start], calls=calls)


_HERMES_TAGS = ("<tool_call>", "<function_call>", "<tool>", "<tools>", "<response>", "<json>", "<xml>", "<JSON>")
_HERMES_OPEN = re.compile(
    r"(?:(```(?:xml|json)?\n\s*)?"
    r"(" + "|".join(_HERMES_TAGS) + r")?"
    r"(\s*\{\s*\"name\"))"
    r"|<function=([^>]+)>"
    r"|<function name=\"([^\"]+)\">")
_MISSING = object()


def _hermes_could_start(s: str) -> bool:
    """True when `s` (the end of a reply) counts as the unfinished start of a call for that server.

    Its partial match (common/regex-partial.cpp) reverses the regex's first alternative and makes
    every element optional: the end of the reply may be a piece of a fence, then a piece of a tag,
    then a piece of `{"name"` (each possibly empty). The `<function=` alternatives never take part:
    the first alternative matches an empty end first.
    """
    def fence_piece(part: str) -> bool:
        return any(head.startswith(part) or (part.startswith(head) and part[len(head):].isspace())
                   for head in ("```xml\n", "```json\n", "```\n"))

    def body_piece(part: str) -> bool:  # \s* \{ \s* "name"
        part = part.lstrip()
        if not part:
            return True
        return part[0] == "{" and '"name"'.startswith(part[1:].lstrip())

    for i in range(len(s) + 1):
        if i and not fence_piece(s[:i]):
            break
        for j in range(i, len(s) + 1):
            if j > i and not any(tag.startswith(s[i:j]) for tag in _HERMES_TAGS):
                break
            if body_piece(s[j:]):
                return True
    return False


def _hermes_partial_start(text: str, pos: int) -> int | None:
    """Where the longest unfinished match at the end of the reply starts (llama.cpp's partial regex match)."""
    for start in range(pos, len(text)):
        if _hermes_could_start(text[start:]):
            return start
    return None


def _dumped_arguments(value: Any) -> str:
    if value is _MISSING:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _hermes_json_at(text: str, pos: int) -> tuple[Any, int] | None:
    """A JSON value at pos as that server's reader takes it: its reader also fails when the next token
    after the value starts a literal, a string or a negative number (`{...} then` is not a call)."""
    found = _json_at(text, _skip_ws(text, pos))
    if found is None:
        return None
    after = text[found[1]:].lstrip(" \t\n\r")
    if after[:1] and after[0] in 'tfn"-':
        return None
    return found


def _parse_hermes(text: str) -> Reply:
    content: list[str] = []
    calls: list[ToolCall] = []
    pos = 0

    def plain() -> Reply:
        # A malformed call: no calls at all, the whole reply as content. That server keeps what it had
        # already added (the text before each call it found), so that text appears twice.
        return Reply("hermes-2-pro", content="".join(content) + text)

    while True:
        m = _HERMES_OPEN.search(text, pos)
        if m is None:
            cut = _hermes_partial_start(text, pos)
            if cut is not None:  # an unfinished call marker at the very end is dropped
                content.append(text[pos:cut])
                pos = len(text)
            break
        content.append(text[pos:m.start()])
        fence = "```" if m.group(1) else ""
        if m.group(3):
            open_tag = m.group(2) or ""
            close_tag = "</" + open_tag[1:] if open_tag else ""
            found = _hermes_json_at(text, m.start(3))
            if found is None or not isinstance(found[0], dict):
                return plain()  # invalid or cut-off JSON
            value, pos = found
            name = value.get("name")
            if not isinstance(name, str):
                return Reply("hermes-2-pro", content=text, error=True)  # the server fails on a non-string name
            if not name:
                return plain()
            syntax = "tagged" if open_tag == TOOL_OPEN else ("other_tag" if open_tag else ("fenced" if fence else "bare"))
            calls.append(ToolCall(name, _dumped_arguments(value.get("arguments", _MISSING)), syntax))
        else:
            name = m.group(4) or m.group(5)
            close_tag = "</function>"
            found = _hermes_json_at(text, m.end())
            if found is None:
                rest = text[_skip_ws(text, m.end()):]
                if rest[:1] in ("{", "[") and _json_prefix(rest) is not None:
                    return plain()  # cut off inside the arguments
                pos = m.end()  # not JSON: the tag is dropped, the search goes on
                continue
            value, pos = found
            calls.append(ToolCall(name, _dumped_arguments(value), "function_tag"))
        pos = _skip_ws(text, pos)
        if not text.startswith(close_tag, pos):
            return plain()
        pos = _skip_ws(text, pos + len(close_tag))
        if fence:
            if not text.startswith(fence, pos):
                return plain()
            pos = _skip_ws(text, pos + len(fence))
    content.append(text[pos:])
    return Reply("hermes-2-pro", content="".join(content), calls=calls)


_STRICT_BLOCK = re.compile(re.escape(TOOL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CLOSE), re.S)


def _parse_strict(text: str) -> Reply:
    content: list[str] = []
    calls: list[ToolCall] = []
    pos = 0
    for m in _STRICT_BLOCK.finditer(text):
        call = None
        try:
            value = json.loads(m.group(1))
        except ValueError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"] \
                and isinstance(value.get("arguments"), (dict, str)):
            call = ToolCall(value["name"], _dumped_arguments(value["arguments"]), "tagged")
        content.append(text[pos:m.start()])
        if call is None:
            content.append(m.group(0))
        else:
            calls.append(call)
        pos = m.end()
    content.append(text[pos:])
    truncated = TOOL_OPEN in text[pos:]
    return Reply("strict", content="".join(content), calls=calls, truncated=truncated)


_CALL_MARKERS = (TOOL_OPEN, "<function=", "<function name=")
_CALL_START = re.compile(r'\{\s*"name"\s*:\s*"[^"\n]*"\s*,\s*"(?:arguments|parameters)"\s*:')


def call_syntax(call_id: Any) -> str | None:
    """The syntax (`ToolCall.syntax`) named by a call id from `ToolCall.as_openai`; None for any other id."""
    if not isinstance(call_id, str) or not call_id.startswith("call_"):
        return None
    return next((s for s in SYNTAXES if call_id.endswith("_" + s)), None)


def holds_call_text(content: str) -> bool:
    """True when text holds a call: a tool-call tag, a JSON object with "name" and "arguments"/"parameters",
    or the start of one (`{"name": "...", "arguments":`, also when cut off)."""
    if any(marker in content for marker in _CALL_MARKERS) or _CALL_START.search(content):
        return True
    for m in re.finditer(r"\{", content):
        found = _json_at(content, m.start())
        if found and isinstance(found[0], dict) and isinstance(found[0].get("name"), str) \
                and ("arguments" in found[0] or "parameters" in found[0]):
            return True
    return False


def tally(replies: Iterable[Reply]) -> dict[str, int]:
    """Counts for a report: replies, calls made, calls in the strict syntax, replies holding a call as text."""
    out = {"replies": 0, "replies_with_calls": 0, "calls": 0, "strict_calls": 0, "strict_replies": 0,
           "text_call_replies": 0, "errors": 0, "truncated": 0}
    for r in replies:
        out["replies"] += 1
        out["replies_with_calls"] += bool(r.calls)
        out["calls"] += len(r.calls)
        out["strict_calls"] += sum(c.tagged for c in r.calls)
        out["strict_replies"] += r.strict
        out["text_call_replies"] += r.text_call
        out["errors"] += r.error
        out["truncated"] += r.truncated
    return out


# ---------------------------------------------------------------- one call, as a server would answer it

def chat_completion(llama: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
                    parser: str = "llama.cpp", max_tokens: int | None = None, template: ChatTemplate | None = None,
                    **sampling: Any) -> dict[str, Any]:
    """An OpenAI chat.completion dict for a request to a loaded llama_cpp.Llama, in the model's native format.

    The prompt is the model's own template (tools included); the raw completion is read with `parser`.
    The result carries `prompt` (the text sent) and `parse` (the raw text and the Reply's flags) beside
    the usual fields. A reply the server would reject (`error`) comes back as plain content with
    `finish_reason: "error"`.
    """
    template = template or template_from_llama(llama)
    prompt = template.render(messages, tools)
    out = llama.create_completion(prompt=prompt, max_tokens=max_tokens, **sampling)
    choice = out["choices"][0]
    text = choice["text"]
    reply = parse(text, tools if tools else None, parser) if tools else Reply(parser, content=text)
    if reply.error:
        finish = "error"
    elif reply.calls and not reply.truncated:
        finish = "tool_calls"
    else:
        finish = choice.get("finish_reason") or "stop"
    message = reply.message() if not reply.error else {"role": "assistant", "content": text}
    return {"object": "chat.completion", "model": out.get("model", ""), "prompt": prompt,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": out.get("usage", {}),
            "parse": {"parser": parser, "text": text, "calls": len(reply.calls), "strict": reply.strict,
                      "text_call": reply.text_call, "error": reply.error, "truncated": reply.truncated}}
