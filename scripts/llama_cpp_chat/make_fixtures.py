"""Record what llama.cpp's own chat code does with Qwen2.5's template: rendered prompts and parsed replies.

    scripts/llama_cpp_chat/build.sh /tmp/llama-cpp-chat-ref          # once: builds the harnesses
    scripts/llama_cpp_chat/build_hermes.sh /tmp/llama-cpp-chat-hermes
    python scripts/llama_cpp_chat/make_fixtures.py /tmp/llama-cpp-chat-ref/harness /tmp/llama-cpp-chat-hermes/harness

Writes tests/fixtures/llama_cpp_chat/: the template (as llama.cpp ships it in models/templates, the
same text as the Qwen2.5-Coder GGUFs' tokenizer.chat_template), render.json (requests and the exact
prompt llama.cpp renders) and parse.json (replies and the message llama.cpp's server would return,
or its error: `expected` from the current llama.cpp, `expected_hermes` from the one before the
autoparser, whose Hermes 2 Pro rule handled this template). tests/test_chat.py checks lib.models.chat against them.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lib.opencode import shape  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "llama_cpp_chat"
TEMPLATE = "Qwen-Qwen2.5-7B-Instruct.jinja"

READ = '{"name": "read", "arguments": {"filePath": "a.py"}}'
BASH = '{"name": "bash", "arguments": {"command": "ls", "description": "List files"}}'
REPLIES = {
    "tagged": f"<tool_call>\n{READ}\n</tool_call>",
    "tagged_tight": f"<tool_call>{READ}</tool_call>",
    "open_nl_close_tight": f"<tool_call>\n{READ}</tool_call>",
    "open_tight_close_nl": f"<tool_call>{READ}\n</tool_call>",
    "open_nlnl": f"<tool_call>\n\n{READ}\n</tool_call>",
    "open_space_nl": f"<tool_call> \n{READ}\n</tool_call>",
    "open_crlf": f"<tool_call>\r\n{READ}\r\n</tool_call>",
    "lead_ws": f"\n\n<tool_call>\n{READ}\n</tool_call>",
    "ws_after": f"<tool_call>\n{READ}\n</tool_call>\n\n",
    "bare": READ,
    "bare_after_text": "I'll read it.\n" + READ,
    "prose": "I will read a.py first, then run the tests.",
    "empty": "",
    "ws_only": "  \n",
    "lead_ws_content": " \n hello \n",
    "lead_ws_content_call": ' \n hello \n<tool_call>\n{"name": "read", "arguments": {}}\n</tool_call>',
    "trailing_newlines": "hi\n\n",
    "invalid_json": '<tool_call>\n{"name": "read", "arguments": {filePath: a.py}}\n</tool_call>',
    "two_calls": f"Let me look.\n<tool_call>\n{READ}\n</tool_call>\n<tool_call>\n{BASH}\n</tool_call>",
    "one_block_two": f"<tool_call>\n{READ},\n{BASH}\n</tool_call>",
    "one_block_two_no_comma": '<tool_call>\n{"name": "read", "arguments": {}}\n{"name": "read", "arguments": {}}\n</tool_call>',
    "text_between": f"<tool_call>\n{READ}\n</tool_call>\nand\n<tool_call>\n{READ}\n</tool_call>",
    "tight_then_proper": f"<tool_call>{READ}</tool_call>\n<tool_call>\n{READ}\n</tool_call>",
    "fenced": f"```json\n{READ}\n```",
    "text_after": f"<tool_call>\n{READ}\n</tool_call>\nDone.",
    "unoffered": '<tool_call>\n{"name": "rm", "arguments": {}}\n</tool_call>',
    "key_order": '<tool_call>\n{"arguments": {"filePath": "a.py"}, "name": "read"}\n</tool_call>',
    "type_wrapper": '<tool_call>\n{"type": "function", "name": "read", "arguments": {"filePath": "a.py"}}\n</tool_call>',
    "extra_key": '<tool_call>\n{"name": "read", "arguments": {"filePath": "a.py"}, "id": "x"}\n</tool_call>',
    "function_tag": '<function=read>{"filePath": "a.py"}</function>',
    "think": f"<think>hmm</think>\n<tool_call>\n{READ}\n</tool_call>",
    "name_space": '<tool_call>\n{ "name" : "read" , "arguments" : {"filePath": "a.py"} }\n</tool_call>',
    "no_space": '<tool_call>\n{"name":"read","arguments":{"filePath":"a.py"}}\n</tool_call>',
    "unicode_args": '<tool_call>\n{"name": "read", "arguments": {"filePath": "\\u00e9\u00e9.py"}}\n</tool_call>',
    "nested_args": '<tool_call>\n{"name": "bash", "arguments": {"command": "echo \\"}\\" </tool_call>", "description": "Echo"}}\n</tool_call>',
    "args_nested": '<tool_call>\n{"name": "read", "arguments": {"filePath": "a.py", "x": {"y": [1, 2.5, true]}}}\n</tool_call>',
    "args_string": '<tool_call>\n{"name": "read", "arguments": "{\\"filePath\\": \\"a.py\\"}"}\n</tool_call>',
    "args_str": '<tool_call>\n{"name": "read", "arguments": "x"}\n</tool_call>',
    "args_array": '<tool_call>\n{"name": "read", "arguments": []}\n</tool_call>',
    "args_num": '<tool_call>\n{"name": "read", "arguments": 5}\n</tool_call>',
    "args_null": '<tool_call>\n{"name": "read", "arguments": null}\n</tool_call>',
    "args_empty_obj": '<tool_call>\n{"name": "read", "arguments": {}}\n</tool_call>',
    # cut off by max_tokens
    "no_close": f"<tool_call>\n{READ}",
    "truncated_close": f"<tool_call>\n{READ}\n</tool_",
    "truncated_args": '<tool_call>\n{"name": "read", "arguments": {"filePath": "src/a.',
    "truncated_args_open": '<tool_call>\n{"name": "read", "arguments": {',
    "truncated_args_ws": '<tool_call>\n{"name": "read", "arguments": {"a": 1} ',
    "truncated_args_done": '<tool_call>\n{"name": "read", "arguments": {"a": 1}}',
    "truncated_args_key": '<tool_call>\n{"name": "read", "arguments": ',
    "truncated_after_name": '<tool_call>\n{"name": "read", "argu',
    "truncated_name_done": '<tool_call>\n{"name": "read"',
    "truncated_name_comma": '<tool_call>\n{"name": "read", ',
    "truncated_name": '<tool_call>\n{"name": "re',
    "truncated_bad_name": '<tool_call>\n{"name": "xy',
    "truncated_second": f"<tool_call>\n{READ}\n</tool_call>\n<tool_call>\n{{\"name\": \"ba",
    "truncated_tag": "Sure.\n<tool_ca",
    "truncated_open": "Sure.\n<tool_call>",
    "truncated_open_nl": "Sure.\n<tool_call>\n",
    "cut_literal": '<tool_call>\n{"name": "read", "arguments": {"a": tr',
    "cut_key": '<tool_call>\n{"name": "read", "arguments": {"a": 1, "ke',
    "cut_comma": '<tool_call>\n{"name": "read", "arguments": {"a": 1,',
    "cut_colon": '<tool_call>\n{"name": "read", "arguments": {"a":',
    "cut_number": '<tool_call>\n{"name": "read", "arguments": {"a": 1.',
    "cut_array": '<tool_call>\n{"name": "read", "arguments": {"a": [1, ',
    "cut_escape": '<tool_call>\n{"name": "read", "arguments": {"a": "x\\',
    "cut_unicode_escape": '<tool_call>\n{"name": "read", "arguments": {"a": "x\\u00',
    "cut_bad_literal": '<tool_call>\n{"name": "read", "arguments": {"a": tx',
    "function_tag_cut": '<function=read>{"filePath": "a.',
    "trailing_lt": "abc <",
    "trailing_lt_t": "abc <t",
    "inv_trailing_comma": '<tool_call>\n{"name": "read", "arguments": {"filePath": "a.py",}}\n</tool_call>',
    "inv_single_quotes": "<tool_call>\n{\"name\": \"read\", \"arguments\": {'filePath': 'a.py'}}\n</tool_call>",
    "inv_missing_comma": '<tool_call>\n{"name": "read" "arguments": {}}\n</tool_call>',
    "inv_extra_brace": '<tool_call>\n{"name": "read", "arguments": {"a": 1}}}\n</tool_call>',
    "inv_bare_unquoted": '{"name": "read", "arguments": {filePath: a.py}}',
    "inv_python_true": '<tool_call>\n{"name": "read", "arguments": {"a": True}}\n</tool_call>',
    "bare_then_text": '{"name": "read", "arguments": {"a": 1}} and more text',
    "two_bare": '{"name": "read", "arguments": {}}\n{"name": "bash", "arguments": {}}',
    "name_not_string": '<tool_call>\n{"name": 5, "arguments": {}}\n</tool_call>',
    "missing_args": '<tool_call>\n{"name": "read"}\n</tool_call>',
    "text_brace_end": "see this {",
    "text_brace_name_end": 'see this {"na',
    "fence_end": "code:\n```js",
    "function_name_attr": '<function name="read">{"filePath": "a.py"}</function> ok',
    "other_tag": '<tools>{"name": "read", "arguments": {"a": 1}}</tools>',
}
PARSE_TOOLS = [{"type": "function", "function": {
    "name": n, "description": f"the {n} tool",
    "parameters": {"type": "object", "properties": {"filePath": {"type": "string"}, "command": {"type": "string"},
                                                    "description": {"type": "string"}}}}} for n in ("read", "bash")]


def render_requests() -> dict[str, dict]:
    system = shape.system_message(None, model="qwen2.5-coder", provider_model="local/qwen2.5-coder",
                                  cwd="/home/u/p", root="/home/u/p", is_git=True, platform="linux",
                                  date="Sat Dec 05 2026")
    few = [t for t in shape.tool_definitions() if t["function"]["name"] in ("read", "bash", "glob")]
    return {
        "opencode_default": {"messages": [{"role": "system", "content": system},
                                          shape.user_message("Fix the failing test in calc.py")],
                             "tools": shape.tool_definitions()},
        "history": {"messages": [
            {"role": "developer", "content": "Be brief. Ünïcode → ok <b>&</b>"},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
            shape.assistant_tool_call_message([(shape.call_id(0), "read", {"filePath": "/home/u/p/a.py", "limit": 5})]),
            shape.tool_result_message(shape.call_id(0), "1: print('héllo')"),
            shape.assistant_tool_call_message([(shape.call_id(1), "bash", {"command": "ls", "description": "List"}),
                                               (shape.call_id(2), "glob", {"pattern": "*.py"})], text="Two at once."),
            shape.tool_result_message(shape.call_id(1), "a.py"),
            shape.tool_result_message(shape.call_id(2), "a.py\nb.py"),
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "again"}], "tools": few},
        "no_system": {"messages": [{"role": "user", "content": "hello"}], "tools": few[:1]},
        "no_tools": {"messages": [{"role": "user", "content": "hello"}]},
    }


def run(harness: str, template: Path, request: dict, mode: str, reply: str | None = None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "req.json"
        req.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
        args = [harness, str(template), str(req), mode]
        if reply is not None:
            (Path(tmp) / "reply.txt").write_text(reply, encoding="utf-8")
            args.append(str(Path(tmp) / "reply.txt"))
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def main() -> None:
    harness, hermes = sys.argv[1], sys.argv[2]
    work = Path(harness).parent
    commit = (work / "llama_cpp_commit").read_text().strip()
    source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp/models/templates")) / TEMPLATE
    OUT.mkdir(parents=True, exist_ok=True)
    template = OUT / TEMPLATE
    template.write_bytes(source.read_bytes())
    renders = [{"name": k, "request": v, "prompt": run(harness, template, v, "render"),
                "prompt_hermes": run(hermes, template, v, "render")} for k, v in render_requests().items()]
    parses = []
    request = {"messages": [{"role": "user", "content": "hi"}], "tools": PARSE_TOOLS}
    for name, text in REPLIES.items():
        parses.append({"name": name, "text": text,
                       "expected": json.loads(run(harness, template, request, "parse", text)),
                       "expected_hermes": json.loads(run(hermes, template, request, "parse", text))})
    hermes_commit = (Path(hermes).parent / "llama_cpp_commit").read_text().strip()
    meta = {"llama_cpp_commit": commit, "hermes_llama_cpp_commit": hermes_commit, "template": TEMPLATE,
            "note": "recorded by scripts/llama_cpp_chat/make_fixtures.py with llama.cpp's own chat code"}
    (OUT / "render.json").write_text(json.dumps({**meta, "cases": renders}, ensure_ascii=False, indent=1) + "\n",
                                     encoding="utf-8")
    (OUT / "parse.json").write_text(json.dumps({**meta, "tools": PARSE_TOOLS, "cases": parses}, ensure_ascii=False,
                                               indent=1) + "\n", encoding="utf-8")
    print(f"{len(renders)} renders, {len(parses)} replies -> {OUT}")


if __name__ == "__main__":
    main()
