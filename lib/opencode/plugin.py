"""Export format `plugin`: an OpenCode plugin that adds the nearest learned examples to each turn.

Two files for `.opencode/plugin/`: the plugin (nearest-demos.js, shipped as is) and its demo
bank (nearest-demos.json: rendered demo texts and BM25 statistics from lib.program.retrieval, so the
plugin does no rendering and picks exactly what `lib.program.retrieval.Index.from_bank(...).top_k` picks).
Only demos that render safely (relative paths, no secrets; see lib.opencode.render.worked_example) enter
the bank.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lib.data.examples import INPUT_FIELDS
from lib.opencode import render
from lib.program.retrieval import Index, bank, prompt_order, query_text
from lib.tools.facts import KEY_ARGS

PLUGIN_SOURCE = Path(__file__).with_name("nearest-demos.js")
PLUGIN_FILE = "plugin/nearest-demos.js"
BANK_FILE = "plugin/nearest-demos.json"
RESULT_CHARS = 120  # as lib.data.examples renders earlier results in steps_so_far
HEADER = render.EXAMPLES_INTRO  # the same heading and words as the agent prompt's examples
DEFAULT_FIELDS = ("task",)


def demo_text(demo: dict[str, Any]) -> str | None:
    """One worked example exactly as the agent prompt shows it; None when it is unsafe or unusable to ship."""
    ex = render.worked_example(demo)
    return None if ex is None else render.demo_text(ex)


def demo_bank(demos: list[dict[str, Any]], retrieval: dict[str, Any] | None, default_k: int,
              field_chars: int) -> dict[str, Any]:
    """The bank for a program's demos; `retrieval` is the knn program's saved settings (None: task only, default_k)."""
    settings = retrieval or {}
    fields = tuple(settings.get("fields") or DEFAULT_FIELDS)
    k = int(settings.get("k") or default_k)
    entries = []
    for i, demo in enumerate(demos):
        text = demo_text(demo)
        if text is not None:
            inputs = {name: demo.get(name) for name in INPUT_FIELDS}
            entries.append((str(demo.get("id") or f"demo-{i:05d}"), query_text(inputs, fields), text))
    return bank(entries, k=k, fields=fields, header=HEADER, key_args=KEY_ARGS, field_chars=field_chars,
                result_chars=RESULT_CHARS)


def files(demos: list[dict[str, Any]], retrieval: dict[str, Any] | None, default_k: int,
          field_chars: int) -> dict[str, str]:
    """Relative path -> text of the plugin and its bank."""
    data = demo_bank(demos, retrieval, default_k, field_chars)
    return {PLUGIN_FILE: PLUGIN_SOURCE.read_text(encoding="utf-8"),
            BANK_FILE: json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"}


def injected_text(data: dict[str, Any], inputs: dict[str, Any]) -> str:
    """The system text the plugin adds for a step with these inputs (header and the k nearest demos, nearest last)."""
    picks = prompt_order(Index.from_bank(data).top_k(query_text(inputs, data["fields"]), data["k"]))
    return "\n\n".join([data["header"], *(data["demos"][i]["text"] for i in picks)]) if picks else ""
