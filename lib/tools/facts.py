"""What OpenCode's tools are: the arguments each requires (and their JSON types), and which identify an action.

Required arguments and their types are read from OpenCode's own tool schemas as recorded
(lib/tools/data, through lib.tools.shape), so the offline metric and replay judge a call by the
same schema. Only tools the recorded OpenCode no longer offers, but older logs still hold, are
described here by hand (OLDER_REQUIRED_ARGS).
"""
from __future__ import annotations

import functools
import json

from lib.tools import shape

# Tool id -> the arguments that say *what* the call acts on (compared by the metric,
# shown in rendered history). Current tools first, then older ones still found in logs.
KEY_ARGS: dict[str, tuple[str, ...]] = {
    "read": ("filePath",),
    "edit": ("filePath",),
    "write": ("filePath",),
    "apply_patch": ("patchText",),
    "bash": ("command",),
    "glob": ("pattern", "path"),
    "grep": ("pattern", "path", "include"),
    "task": ("subagent_type", "description"),
    "todowrite": ("todos",),
    "webfetch": ("url",),
    "websearch": ("query",),
    "codesearch": ("query",),
    "lsp": ("operation", "filePath"),
    "skill": ("name",),
    "question": ("questions",),
    "batch": ("tool_calls",),
    "list": ("path",),
    "patch": ("patchText",),
    "todoread": (),
    "multiedit": ("filePath",),
}

# Required arguments and their JSON types of tools that the recorded OpenCode does not offer (older
# versions, other agents) but that logs still hold; a recorded tool's schema always wins.
OLDER_REQUIRED_ARGS: dict[str, dict[str, type]] = {
    "apply_patch": {"patchText": str},
    "websearch": {"query": str},
    "codesearch": {"query": str},
    "lsp": {"operation": str, "filePath": str, "line": int, "character": int},
    "question": {"questions": list},
    "batch": {"tool_calls": list},
    "list": {},
    "patch": {"patchText": str},
    "todoread": {},
    "multiedit": {"filePath": str, "edits": list},
}

_JSON_TYPES: dict[str, type] = {"string": str, "array": list, "integer": int, "object": dict, "boolean": bool,
                                 "number": float}


@functools.cache
def required_args() -> dict[str, dict[str, type]]:
    """Tool -> {required argument: Python type}, from OpenCode's recorded schemas (in the schema's
    order), then OLDER_REQUIRED_ARGS for tools it does not offer. Tools in neither need only an args object."""
    recorded: dict[str, dict[str, type]] = {}
    for tool in shape.data()["tools"]:
        fn = tool["function"]
        props = fn["parameters"].get("properties", {})
        recorded[fn["name"]] = {name: _JSON_TYPES[props[name]["type"]] for name in fn["parameters"].get("required", [])}
    return {**{k: v for k, v in OLDER_REQUIRED_ARGS.items() if k not in recorded}, **recorded}


# Offered to the model as available tools when a session does not list its own.
DEFAULT_TOOLS: tuple[str, ...] = (
    "read", "edit", "write", "bash", "grep", "glob", "list", "todowrite", "task", "webfetch",
)

# One line each, for prompts that must carry OpenCode's tool guidance themselves.
DESCRIPTIONS: dict[str, str] = {
    "read": 'read a file: {"filePath": "src/app.py"} (optional "offset", "limit")',
    "edit": 'replace text in a file: {"filePath": ..., "oldString": ..., "newString": ...}',
    "write": 'create or overwrite a file: {"filePath": ..., "content": ...}',
    "bash": 'run a shell command: {"command": "pytest -q", "description": "Run the tests"}',
    "grep": 'search file contents by regex: {"pattern": "def main", "include": "*.py"}',
    "glob": 'find files by name: {"pattern": "**/*.ts"}',
    "list": 'list a directory: {"path": "src"}',
    "todowrite": 'plan multi-step work: {"todos": [{"content": ..., "status": "pending", "priority": "high", "id": "1"}]}',
    "task": 'delegate to a subagent: {"description": ..., "prompt": ..., "subagent_type": "general"}',
    "webfetch": 'fetch a web page: {"url": "https://...", "format": "markdown"}',
}


def guidance_line(tool: str) -> str:
    """`- name: how to call it` for a prompt; the argument names when no description is written."""
    if tool in DESCRIPTIONS:
        return f"- {tool}: {DESCRIPTIONS[tool]}"
    if KEY_ARGS.get(tool):
        return f"- {tool}: " + json.dumps({k: "..." for k in KEY_ARGS[tool]})
    return f"- {tool}"


def is_known(tool: str) -> bool:
    return tool in KEY_ARGS


def key_args(tool: str, args: dict) -> dict:
    """The identifying arguments of a call, for comparison and compact display."""
    keys = KEY_ARGS.get(tool)
    if keys is None:
        return dict(args)
    return {k: args[k] for k in keys if k in args}
