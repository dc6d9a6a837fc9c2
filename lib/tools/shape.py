"""OpenCode's request, as recorded from the real binary: system message, tools, message layout.

The data lives in `lib/tools/data/request-opencode-<version>.json`, written by
`scripts/capture_opencode_request.py` (see `devtools/capture.py`); nothing here is typed from
memory. With several versions stored, the newest is used unless a version is asked for.
"""
from __future__ import annotations

import copy
import datetime as _dt
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema

from lib.core.errors import UserError
from lib.core.schema import problems

DATA_DIR = Path(__file__).resolve().parent / "data"
# Named placeholders in the stored templates; other braces in the text (`*.{ts,tsx}`) are literal.
PLACEHOLDERS = ("model", "provider_model", "cwd", "root", "git", "platform", "date", "skills", "tmpdir", "system")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def has_placeholder(text: str) -> bool:
    """Whether `text` names a value OpenCode fills in per user (platform, TMPDIR, ...)."""
    return bool(_PLACEHOLDER.search(text))


def fill(template: str, values: Mapping[str, str]) -> str:
    """Put `values` into the named placeholders of `template`; placeholders without a value stay."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _version_key(path: Path) -> tuple:
    version = path.name[len("request-opencode-"):-len(".json")]
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.-]", version))


@functools.cache
def data(version: str | None = None) -> dict[str, Any]:
    """The stored request shape of `version` (default: the newest stored). Cached; do not modify."""
    if version is not None:
        path = DATA_DIR / f"request-opencode-{version}.json"
    else:
        found = sorted(DATA_DIR.glob("request-opencode-*.json"), key=_version_key)
        if not found:
            raise UserError(f"no recorded OpenCode request in {DATA_DIR}: run scripts/capture_opencode_request.py")
        path = found[-1]
    if not path.is_file():
        raise UserError(f"no recorded request for OpenCode {version} ({path}): run "
                        "scripts/capture_opencode_request.py with that OpenCode version")
    return json.loads(path.read_text(encoding="utf-8"))


def version() -> str:
    """The OpenCode version the data was recorded with."""
    return data()["opencode_version"]


def request_options() -> dict[str, Any]:
    """The request's other fields as recorded (max_tokens, stream, tool_choice, ...; `model` is the
    recorded model id). `max_tokens` follows the model's configured output limit (none was set)."""
    return copy.deepcopy(data()["request_options"])


def tool_names() -> list[str]:
    """OpenCode's tools, in the order it sends them."""
    return [t["function"]["name"] for t in data()["tools"]]


def tool_definitions(disabled: Iterable[str] = (), *, platform: str = "linux", tmpdir: str = "/tmp") -> list[dict]:
    """OpenCode's own tool definitions (`{"type": "function", "function": {name, description,
    parameters}}`), in its order, minus the `disabled` ones (as an agent's `tools` map does).

    The bash tool's description names the platform and OpenCode's TMPDIR; pass the user's.
    """
    off = set(disabled)
    unknown = off - set(tool_names())
    if unknown:
        raise ValueError(f"unknown tool(s) {sorted(unknown)}; OpenCode {version()} has {tool_names()}")
    values = {"platform": platform, "tmpdir": tmpdir}
    out = []
    for tool in data()["tools"]:
        if tool["function"]["name"] in off:
            continue
        tool = copy.deepcopy(tool)
        tool["function"]["description"] = fill(tool["function"]["description"], values)
        out.append(tool)
    return out


def default_prompt() -> str:
    """OpenCode's built-in prompt for a model outside its named families (used when an agent has none)."""
    return data()["default_prompt"]


def format_date(day: _dt.date) -> str:
    """A date the way OpenCode writes it in the environment block (e.g. 'Sun Nov 29 2026')."""
    return day.strftime(data()["date_format"])


def system_message(agent_prompt: str | None, *, model: str, provider_model: str, cwd: str, root: str,
                   is_git: bool, platform: str, date: str, disabled: Iterable[str] = ()) -> str:
    """The system message text OpenCode sends: the agent's prompt (OpenCode's default prompt when
    None), then the model line, the environment block and, unless the skill tool is disabled, the
    skills block.

    model: the model id (not its display name); provider_model: `<provider>/<model id>`;
    date: as `format_date` writes it; platform: Node's `process.platform` (linux, darwin, win32).
    """
    d = data()
    prompt = d["default_prompt"] if agent_prompt is None else agent_prompt
    values = {"model": model, "provider_model": provider_model, "cwd": cwd, "root": root,
              "git": d["git"]["true" if is_git else "false"], "platform": platform, "date": date,
              "skills": "" if "skill" in set(disabled) else d["skills"]}
    return prompt + d["separator"] + fill(d["system_template"], values)


def tool_schema(name: str) -> dict:
    """The JSON Schema of a tool's arguments, as OpenCode sends it."""
    for tool in data()["tools"]:
        if tool["function"]["name"] == name:
            return tool["function"]["parameters"]
    raise KeyError(f"OpenCode {version()} has no tool {name!r}; it has {tool_names()}")


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = tool_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate_call(name: str, args: dict) -> list[str]:
    """Problems of a call to tool `name` with `args` against OpenCode's schema; empty when valid."""
    if name not in tool_names():
        return [f"unknown tool {name!r}; OpenCode {version()} offers {', '.join(tool_names())}"]
    if not isinstance(args, dict):
        return [f"arguments of {name} must be an object, got {type(args).__name__}"]
    return problems(_validator(name), args)


# ---------------------------------------------------------------- message layout


def _layout() -> list[dict]:
    return data()["runs"]["tool_call"]["messages"]


def _by_role(role: str) -> dict:
    return next(m for m in _layout() if m["role"] == role)


def call_id(n: int) -> str:
    """A stable id for the n-th tool call of a conversation (OpenCode passes ids through unchanged)."""
    return f"call_{n}"


def arguments_json(args: Mapping[str, Any]) -> str:
    """Tool arguments serialized as OpenCode sends them (compact JSON, non-ASCII kept)."""
    return json.dumps(args, separators=(",", ":"), ensure_ascii=False)


def user_message(text: str) -> dict:
    """A user message as OpenCode sends the task."""
    message = copy.deepcopy(_by_role("user"))
    message["content"] = text
    return message


def assistant_tool_call_message(calls: Sequence[tuple[str, str, Mapping[str, Any]]], *, text: str = "") -> dict:
    """An earlier assistant turn that called tools, laid out as OpenCode sends it.

    calls: `(id, tool name, arguments)` for each call, e.g. `[(call_id(0), "read", {"filePath": "/x"})]`;
    text: what the assistant said alongside (OpenCode sends "" when nothing).
    """
    template = _by_role("assistant")
    call_template = template["tool_calls"][0]
    message = copy.deepcopy(template)
    message["content"] = text
    message["tool_calls"] = []
    for cid, name, args in calls:
        call = copy.deepcopy(call_template)
        call["id"] = cid
        call["function"] = {"name": name, "arguments": arguments_json(args)}
        message["tool_calls"].append(call)
    return message


def tool_result_message(call_id: str, output: str) -> dict:
    """The result of tool call `call_id` as OpenCode sends it back (the tool's output text)."""
    message = copy.deepcopy(_by_role("tool"))
    message["tool_call_id"] = call_id
    message["content"] = output
    return message
