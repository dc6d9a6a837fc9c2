"""A model's own chat format: rendering with the GGUF's template, and replies read with llama.cpp's rules."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lib.core.errors import UserError
from lib.models import catalog, chat
from lib.tools import shape
from tests.conftest import need

TOOLS = [{"type": "function", "function": {"name": n, "description": f"the {n} tool",
                                           "parameters": {"type": "object", "properties": {"filePath": {"type": "string"}}}}}
         for n in ("read", "bash")]
READ = '{"name": "read", "arguments": {"filePath": "a.py"}}'
BASH = '{"name": "bash", "arguments": {"command": "ls", "description": "List files"}}'


def parse_all(text: str, tools: list | None = TOOLS) -> dict[str, chat.Reply]:
    return {p: chat.parse(text, tools, p) for p in chat.PARSERS}


def names(reply: chat.Reply) -> list[str]:
    return [c.name for c in reply.calls]


def test_a_tagged_call_is_a_strict_call_for_every_rule() -> None:
    for rule, r in parse_all(f"<tool_call>\n{READ}\n</tool_call>").items():
        assert names(r) == ["read"], rule
        assert json.loads(r.calls[0].arguments) == {"filePath": "a.py"}
        assert r.strict and not r.text_call and not r.error and r.content == ""


def test_a_bare_json_call_is_text_for_llama_cpp_and_strict_but_a_call_for_hermes() -> None:
    r = parse_all(READ)
    assert r["llama.cpp"].calls == [] and r["llama.cpp"].content == READ and r["llama.cpp"].text_call
    assert r["strict"].calls == [] and r["strict"].text_call
    assert names(r["hermes-2-pro"]) == ["read"] and r["hermes-2-pro"].calls[0].syntax == "bare"
    assert not r["hermes-2-pro"].strict and not r["hermes-2-pro"].text_call


def test_prose_is_content_with_no_call() -> None:
    for r in parse_all("I will read a.py first, then run the tests.").values():
        assert r.calls == [] and not r.text_call and not r.error and r.content.startswith("I will")


def test_invalid_json_in_tags() -> None:
    text = '<tool_call>\n{"name": "read", "arguments": {filePath: a.py}}\n</tool_call>'
    r = parse_all(text)
    assert r["llama.cpp"].error and r["llama.cpp"].calls == [] and r["llama.cpp"].text_call
    assert r["hermes-2-pro"].calls == [] and r["hermes-2-pro"].content == text and r["hermes-2-pro"].text_call
    assert r["strict"].calls == [] and r["strict"].content == text and r["strict"].text_call


def test_two_calls_and_leading_text() -> None:
    text = f"Let me look.\n<tool_call>\n{READ}\n</tool_call>\n<tool_call>\n{BASH}\n</tool_call>"
    for rule, r in parse_all(text).items():
        assert names(r) == ["read", "bash"], rule
        assert r.content.strip() == "Let me look." and r.strict
    # llama.cpp also takes comma-separated calls inside one block when parallel calls are on
    one_block = f"<tool_call>\n{READ},\n{BASH}\n</tool_call>"
    assert names(chat.parse(one_block, TOOLS, "llama.cpp")) == ["read", "bash"]
    assert chat.parse(one_block, TOOLS, "llama.cpp", parallel_tool_calls=False).error


def test_a_fenced_call() -> None:
    text = f"```json\n{READ}\n```"
    r = parse_all(text)
    assert r["llama.cpp"].calls == [] and r["llama.cpp"].text_call
    assert names(r["hermes-2-pro"]) == ["read"] and r["hermes-2-pro"].calls[0].syntax == "fenced"
    assert r["hermes-2-pro"].content == ""
    assert r["strict"].calls == [] and r["strict"].text_call


def test_text_after_a_call_or_an_unoffered_tool_fails_llama_cpp_only() -> None:
    after = f"<tool_call>\n{READ}\n</tool_call>\nDone."
    r = parse_all(after)
    assert r["llama.cpp"].error and r["llama.cpp"].calls == []
    assert names(r["hermes-2-pro"]) == ["read"] and r["hermes-2-pro"].content.strip() == "Done."
    assert names(r["strict"]) == ["read"]
    other = '<tool_call>\n{"name": "rm", "arguments": {}}\n</tool_call>'
    assert chat.parse(other, TOOLS, "llama.cpp").error
    assert names(chat.parse(other, None, "llama.cpp")) == ["rm"]  # no tool list: any name
    assert names(chat.parse(other, TOOLS, "hermes-2-pro")) == ["rm"]


def test_keys_in_the_other_order() -> None:
    text = '<tool_call>\n{"arguments": {"filePath": "a.py"}, "name": "read"}\n</tool_call>'
    r = parse_all(text)
    assert r["llama.cpp"].error
    assert r["hermes-2-pro"].calls == [] and r["hermes-2-pro"].text_call
    assert names(r["strict"]) == ["read"]


def test_a_call_cut_off_by_max_tokens() -> None:
    text = '<tool_call>\n{"name": "read", "arguments": {"filePath": "src/a.'
    r = parse_all(text)
    cut = r["llama.cpp"]
    assert cut.truncated and not cut.error and names(cut) == ["read"]
    assert cut.calls[0].arguments == '{"filePath": "src/a.'  # as written: the server does not close it
    assert r["hermes-2-pro"].calls == [] and r["hermes-2-pro"].text_call
    assert r["strict"].calls == [] and r["strict"].truncated and r["strict"].text_call


def test_function_tags_are_hermes_only() -> None:
    text = '<function=read>{"filePath": "a.py"}</function>'
    r = parse_all(text)
    assert names(r["hermes-2-pro"]) == ["read"] and r["hermes-2-pro"].calls[0].syntax == "function_tag"
    assert r["llama.cpp"].calls == [] and r["llama.cpp"].text_call
    assert r["strict"].calls == [] and r["strict"].text_call


def test_unknown_parser_and_tally() -> None:
    with pytest.raises(UserError, match="strict"):
        chat.parse("x", TOOLS, "ollama")
    replies = [chat.parse(t, TOOLS, "llama.cpp") for t in (f"<tool_call>\n{READ}\n</tool_call>", READ, "hello")]
    assert chat.tally(replies) == {"replies": 3, "replies_with_calls": 1, "calls": 1, "strict_calls": 1,
                                   "strict_replies": 1, "text_call_replies": 1, "errors": 0, "truncated": 0}
    msg = replies[0].message()
    assert msg["tool_calls"][0]["function"]["name"] == "read" and msg["content"] is None


MINI = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}"
        "{% for c in m.tool_calls or [] %}[{{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}"
        "{{ '\\n' }}"
        "{% endfor %}{% if tools %}{% for t in tools %}{{ t | tojson }}\n{% endfor %}{% endif %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


def test_rendering_normalizes_messages_as_the_server_does() -> None:
    tmpl = chat.ChatTemplate(source=MINI)
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "é"}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "read", "arguments": '{"filePath":"x"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    tools = [{"type": "function", "function": {"name": "read", "description": "Read", "parameters": {"b": 1, "a": 2}},
              "strict": True}]
    text = tmpl.render(messages, tools)
    assert text.splitlines()[:5] == ["<system>Be brief.", "<user>a", "é", '<assistant>[read {"filePath": "x"}]', "<tool>ok"]
    # llama.cpp's tojson: ", " and ": ", keys in order, non-ASCII kept; tools reduced to type + function
    assert '{"type": "function", "function": {"name": "read", "description": "Read", "parameters": {"b": 1, "a": 2}}}' in text
    assert text.endswith("<assistant>") and not tmpl.render(messages, tools, add_generation_prompt=False).endswith("<assistant>")
    assert tmpl.generation_prompt(messages, tools) == "<assistant>"
    with pytest.raises(UserError, match="not JSON"):
        tmpl.render([{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "x", "arguments": "{"}}]}])


# ---------------------------------------------------------------- the real model

@pytest.fixture(scope="module")
def qwen_small() -> object:
    need(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed (run ./setup.sh)")
    try:
        path = catalog.model_path("qwen2.5-coder-0.5b")
    except UserError as exc:
        need(False, f"cannot assemble qwen2.5-coder-0.5b: {exc}")
        raise
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=4096, n_threads=2, verbose=False, seed=1234)


def test_real_qwen_renders_tools_natively_and_its_reply_parses(qwen_small: object) -> None:
    llama = qwen_small
    tmpl = chat.template_from_llama(llama)
    assert tmpl.family == "hermes" and tmpl.bos_token == "<|endoftext|>" and tmpl.eos_token == "<|im_end|>"
    tools = [t for t in shape.tool_definitions() if t["function"]["name"] in ("read", "bash")]
    for tool in tools:  # OpenCode's schemas, descriptions cut to their first line: a short prompt on 2 cores
        tool["function"]["description"] = tool["function"]["description"].split("\n")[0]
    messages = [{"role": "system", "content": "You are opencode, a coding agent. Use the tools.\n"
                                              "<env>\n  Working directory: /work/proj\n</env>"},
                {"role": "user", "content": "Show me the contents of /work/proj/hello.py"}]
    prompt = tmpl.render(messages, tools)
    assert prompt.startswith("<|im_start|>system\nYou are opencode")
    assert "<tools>\n" in prompt and "</tools>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert '{"type": "function", "function": {"name": "read", "description": ' in prompt
    assert tmpl.generation_prompt(messages, tools) == "<|im_start|>assistant\n"
    # A turn with an earlier call and its result renders the call in the template's own syntax.
    later = tmpl.render(messages + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c0", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}]},
        {"role": "tool", "tool_call_id": "c0", "content": "hello.py"}], tools)
    assert '<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call><|im_end|>' in later
    assert "<|im_start|>user\n<tool_response>\nhello.py\n</tool_response><|im_end|>" in later

    answer = chat.chat_completion(llama, messages, tools, max_tokens=40, temperature=0.0, template=tmpl)
    assert answer["prompt"] == prompt and answer["usage"]["prompt_tokens"] > 100
    assert answer["choices"][0]["finish_reason"] in ("tool_calls", "stop", "length", "error")
    text = answer["parse"]["text"]
    for rule in chat.PARSERS:
        reply = chat.parse(text, tools, rule)
        assert isinstance(reply.content, str)
        for call in reply.calls:
            assert call.name in ("read", "bash") or rule != "llama.cpp"
            if not reply.truncated:
                json.loads(call.arguments)
        assert reply.strict == (bool(reply.calls) and all(c.syntax == "tagged" for c in reply.calls))
    assert chat.load_template(catalog.model_path("qwen2.5-coder-0.5b")).source == tmpl.source


# ---------------------------------------------------------------- against llama.cpp's own code

FIXTURES = Path(__file__).parent / "fixtures" / "llama_cpp_chat"


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _qwen_template() -> chat.ChatTemplate:
    source = (FIXTURES / _fixture("render.json")["template"]).read_text(encoding="utf-8")
    return chat.ChatTemplate(source=source, bos_token="<|endoftext|>", eos_token="<|im_end|>")


@pytest.mark.parametrize("case", _fixture("render.json")["cases"], ids=lambda c: c["name"])
def test_rendering_matches_llama_cpp_byte_for_byte(case: dict) -> None:
    request = case["request"]
    assert _qwen_template().render(request["messages"], request.get("tools")) == case["prompt"]


@pytest.mark.parametrize("case", _fixture("parse.json")["cases"], ids=lambda c: c["name"])
def test_the_llama_cpp_rule_reads_replies_as_llama_cpp_does(case: dict) -> None:
    reply = chat.parse(case["text"], _fixture("parse.json")["tools"], "llama.cpp")
    expected = case["expected"]
    if "error" in expected:
        assert reply.error and reply.calls == []
    else:
        assert not reply.error
        assert reply.content == expected["content"]
        assert [(c.name, c.arguments) for c in reply.calls] == [(c["name"], c["arguments"])
                                                               for c in expected["tool_calls"]]


# The older server "heals" malformed JSON as if it were cut off; for these replies the healed text
# does not parse either and it answers with an error, where lib.models.chat reads plain content.
HERMES_KNOWN_DIFFERENCES = {"invalid_json", "inv_bare_unquoted"}


@pytest.mark.parametrize("case", _fixture("parse.json")["cases"], ids=lambda c: c["name"])
def test_the_hermes_rule_reads_replies_as_the_older_llama_cpp_does(case: dict) -> None:
    reply = chat.parse(case["text"], _fixture("parse.json")["tools"], "hermes-2-pro")
    expected = case["expected_hermes"]
    if case["name"] in HERMES_KNOWN_DIFFERENCES:
        assert "error" in expected and reply.calls == [] and reply.content == case["text"]
    elif "error" in expected:
        assert reply.error and reply.calls == []
    else:
        assert not reply.error
        assert reply.content == expected["content"]
        assert [(c.name, c.arguments) for c in reply.calls] == [(c["name"], c["arguments"])
                                                               for c in expected["tool_calls"]]


class FakeLlama:
    """Stands in for llama_cpp.Llama: a fixed completion, and the prompt it was given."""

    metadata = {chat.TEMPLATE_KEY: MINI}

    def __init__(self, text: str) -> None:
        self.text, self.prompts = text, []

    def token_bos(self) -> int:
        return 1

    def token_eos(self) -> int:
        return 2

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return {1: b"<s>", 2: b"</s>"}[tokens[0]]

    def create_completion(self, prompt: str, max_tokens: int | None = None, **kw: object) -> dict:
        self.prompts.append(prompt)
        return {"model": "fake", "choices": [{"text": self.text, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def test_chat_completion_answers_like_a_server() -> None:
    call = chat.chat_completion(FakeLlama(f"<tool_call>\n{READ}\n</tool_call>"), [{"role": "user", "content": "go"}],
                                TOOLS, max_tokens=20, temperature=0.0)
    assert call["choices"][0]["finish_reason"] == "tool_calls"
    assert call["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "read", "arguments": '{"filePath": "a.py"}'}
    assert call["parse"]["strict"] and call["prompt"].endswith("<assistant>")
    bare = chat.chat_completion(FakeLlama(READ), [{"role": "user", "content": "go"}], TOOLS)
    assert bare["choices"][0]["message"] == {"role": "assistant", "content": READ}
    assert bare["parse"]["text_call"] and bare["choices"][0]["finish_reason"] == "stop"
    assert chat.chat_completion(FakeLlama(READ), [{"role": "user", "content": "go"}], TOOLS,
                                parser="hermes-2-pro")["choices"][0]["finish_reason"] == "tool_calls"
    broken = chat.chat_completion(FakeLlama(f"<tool_call>\n{READ}\n</tool_call> done"), [{"role": "user", "content": "x"}], TOOLS)
    assert broken["choices"][0]["finish_reason"] == "error" and broken["parse"]["error"]


def test_a_call_written_as_text_is_seen_even_when_cut_off() -> None:
    cut = '```json\n{\n  "name": "bash",\n  "arguments": {\n    "command": "cat hello.py",\n   '
    assert chat.holds_call_text(cut)
    assert not chat.holds_call_text('The config has {"name": "demo", "version": 2} in it.')
    assert chat.parse(cut, TOOLS, "llama.cpp").text_call and chat.parse(cut, TOOLS, "strict").text_call


def test_rendering_matches_a_real_llama_server(tmp_path: Path) -> None:
    """The same requests through the real llama-server (--jinja, built from the engine's sources) give the
    same prompt text as lib.models.chat renders from the GGUF's own template (its /apply-template)."""
    import urllib.request

    from lib.models import server

    path = catalog.model_path("qwen2.5-coder-0.5b")
    template = chat.load_template(path)
    with server.serve(path, "qwen", ctx=4096, log=tmp_path / "server.log") as (url, _):
        for case in _fixture("render.json")["cases"]:
            request = case["request"]
            body = json.dumps({"messages": request["messages"], **({"tools": request["tools"]}
                                                                     if request.get("tools") else {})}).encode()
            answer = urllib.request.urlopen(urllib.request.Request(
                url.removesuffix("/v1") + "/apply-template", body, {"Content-Type": "application/json"}), timeout=120)
            prompt = json.loads(answer.read())["prompt"]
            assert prompt == template.render(request["messages"], request.get("tools")), case["name"]


def test_a_calls_id_names_its_syntax():
    for syntax in chat.SYNTAXES:
        call = chat.ToolCall("read", "{}", syntax).as_openai(2)
        assert call["id"].startswith("call_2") and chat.call_syntax(call["id"]) == syntax
    assert [chat.call_syntax(i) for i in ("call_0", "call_abc", "x_tagged", None)] == [None, None, None, None]
    bare = chat.parse('{"name": "read", "arguments": {"filePath": "a.py"}}', TOOLS, "hermes-2-pro")
    assert [chat.call_syntax(c["id"]) for c in bare.message()["tool_calls"]] == ["bare"]
