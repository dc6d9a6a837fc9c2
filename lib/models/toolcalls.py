"""Native tool calling for the embedded model: an OpenAI-style request with `tools` -> `tool_calls`.

SmolLM2 speaks ChatML. Tools are offered the way llama.cpp's `chatml-function-calling` format does
(each tool's name and parameter schema after the system text; a reply starts with
`functions.<name>:` followed by JSON arguments, or with `message:`), and generation is constrained
by grammars: first the choice of tool or message, then arguments that follow the chosen tool's
JSON Schema. Unlike that handler, earlier tool results are part of the prompt (it drops `tool`
messages), because the agent's next call depends on what its last call returned.
"""
from __future__ import annotations

import json
from typing import Any

_CHOICE_RULES = 'root ::= functions | "message:"\nfunctions ::= {names}\n'
_grammars: dict[str, Any] = {}  # schema text -> compiled grammar (compiling is slow; schemas repeat)


def render_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """ChatML text for the messages, the tools listed after the (first) system message."""
    out = []
    offered = False
    for msg in messages:
        role, content = msg.get("role"), _content(msg.get("content"))
        if role == "system" and not offered:
            content += _tools_text(tools)
            offered = True
        if role == "assistant" and msg.get("tool_calls"):
            calls = "".join(f"functions.{c['function']['name']}:\n{c['function'].get('arguments') or '{}'}\n"
                            for c in msg["tool_calls"])
            content = (f"message:\n{content}\n" if content else "") + calls.rstrip("\n")
        elif role == "assistant" and content:
            content = f"message:\n{content}"
        out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    if not offered:
        out.insert(0, f"<|im_start|>system\n{_tools_text(tools).lstrip()}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def _content(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # OpenAI content parts: keep the text ones.
    return "".join(p.get("text", "") for p in value if isinstance(p, dict))


def _tools_text(tools: list[dict[str, Any]]) -> str:
    lines = ["\n\nYou have access to the following functions:\n"]
    for tool in tools:
        fn = tool["function"]
        lines.append(f"\nfunctions.{fn['name']}:\n{json.dumps(fn.get('parameters') or {})}\n")
    lines.append("\n\nYou can respond to users messages with either a single message or one or more function calls."
                 "\n\nTo respond with a message begin the message with 'message:', use the following format:"
                 "\n\nmessage:\n<message>"
                 "\n\nTo respond with a function call begin the message with 'functions.<function_name>:', "
                 "use the following format:\n\nfunctions.<function_name>:\n{ \"arg1\": \"value1\", \"arg2\": \"value2\" }")
    return "".join(lines)


def _grammar(gbnf: str | None = None, schema: dict[str, Any] | None = None) -> Any:
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    key = gbnf if gbnf is not None else json.dumps(schema, sort_keys=True)
    if key not in _grammars:
        if gbnf is not None:
            _grammars[key] = LlamaGrammar.from_string(gbnf, verbose=False)
        else:
            try:
                _grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception:  # a schema feature the converter lacks: any JSON object is still valid JSON
                _grammars[key] = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    return _grammars[key]


def complete(llama: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]], tool_choice: Any,
             max_tokens: int | None, sampling: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat.completion dict: one tool call (`finish_reason: tool_calls`) or a message.

    `tool_choice` "auto" lets the model choose, "required" forces a call, {"function": {"name"}} forces
    that tool, "none" forbids calls. Raises ValueError (from llama.cpp) when the prompt exceeds the context.
    """
    by_name = {t["function"]["name"]: t for t in tools}
    prompt = render_prompt(messages, tools if tool_choice != "none" else [])
    usage = {"prompt_tokens": 0, "completion_tokens": 0}

    def run(text: str, grammar: Any, limit: int | None, stop: list[str]) -> str:
        out = llama.create_completion(prompt=text, grammar=grammar, max_tokens=limit, stop=stop, **sampling)
        usage["prompt_tokens"] = max(usage["prompt_tokens"], out["usage"]["prompt_tokens"])
        usage["completion_tokens"] += out["usage"]["completion_tokens"]
        return out["choices"][0]["text"]

    chosen = False  # whether the model already wrote the "functions.<name>:" / "message:" prefix
    if isinstance(tool_choice, dict):
        name = tool_choice.get("function", {}).get("name")
    elif tool_choice == "none" or not tools:
        name = None
    else:
        names = sorted(by_name) if tool_choice == "required" else [*sorted(by_name), "message"]
        alternatives = " | ".join(json.dumps(f"functions.{n}:") for n in names if n != "message")
        rules = _CHOICE_RULES.format(names=alternatives)
        if tool_choice == "required":
            rules = f"root ::= {alternatives}\n"
        picked = run(prompt, _grammar(rules), 24, [])
        name = picked.removeprefix("functions.").removesuffix(":") if picked.startswith("functions.") else None
        prompt += picked + ("\n" if name else "")
        chosen = True
    if name is None:
        if not chosen:
            prompt += "message:"
        text = run(prompt + "\n", None, max_tokens, ["<|im_end|>"]).strip()
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
    else:
        if not chosen:
            prompt += f"functions.{name}:\n"
        schema = (by_name.get(name) or {}).get("function", {}).get("parameters") or {"type": "object"}
        arguments = run(prompt, _grammar(schema=schema), max_tokens, ["<|im_end|>"]).strip()
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": name, "arguments": arguments}}]}
        finish = "tool_calls"
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage}
