"""The built-in tools' descriptions sent short (`export.tool_descriptions`), by an OpenCode plugin.

OpenCode's ten tool descriptions are about 3,300 of the ~7,400 tokens of its request in Qwen2.5's
template (bash alone 1,061). The plugin (short-tools.js, shipped as is) replaces each long one with
its first paragraph through OpenCode's `tool.definition` hook; its data file (short-tools.json) holds
the texts. `task` is left out: OpenCode appends the list of subagents after whatever the hook returns.
Replay sends the same descriptions, so the exported agent is scored with them.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from lib.tools import shape

PLUGIN_SOURCE = Path(__file__).with_name("short-tools.js")
PLUGIN_FILE = "plugin/short-tools.js"
DATA_FILE = "plugin/short-tools.json"
FORMAT = "opencode-prompt-learn/short-tools"
KEEP = frozenset({"task"})  # OpenCode extends this one's description after the hook


def first_paragraph(text: str) -> str:
    """The text up to its first blank line."""
    return text.strip().split("\n\n", 1)[0].strip()


def descriptions() -> dict[str, str]:
    """Tool -> its short description, for OpenCode's tools whose first paragraph is shorter."""
    out = {}
    for tool in shape.data()["tools"]:  # unfilled: a text naming the user's platform or TMPDIR is kept long
        fn = tool["function"]
        short = first_paragraph(fn["description"])
        if fn["name"] not in KEEP and len(short) < len(fn["description"].strip()) and not shape.has_placeholder(short):
            out[fn["name"]] = short
    return dict(sorted(out.items()))


def files() -> dict[str, str]:
    """Relative path -> text of the plugin and its data."""
    data = {"format": FORMAT, "version": 1, "descriptions": descriptions()}
    return {PLUGIN_FILE: PLUGIN_SOURCE.read_text(encoding="utf-8"),
            DATA_FILE: json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n"}


def sent(short: bool) -> dict[str, str] | None:
    """The descriptions an agent's requests carry: the plugin's when it sends them short, else None (OpenCode's)."""
    return descriptions() if short else None


def shorten(tools: list[dict[str, Any]], short: dict[str, str]) -> list[dict[str, Any]]:
    """Tool definitions as OpenCode sends them with the plugin: the listed tools' descriptions replaced."""
    out = copy.deepcopy(tools)
    for tool in out:
        fn = tool["function"]
        if fn["name"] in short:
            fn["description"] = short[fn["name"]]
    return out
