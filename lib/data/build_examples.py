"""data/examples/examples.jsonl from data/parsed/sessions.jsonl, in parallel, in order, in flat memory.

Sessions are independent once each knows the group (top-most caller) it belongs to, so a first
cheap pass reads only ids and parents; then chunks of sessions become rows in worker processes
while this process writes them in session order. The bytes do not depend on the worker count.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from lib.data.examples import Filters, build
from lib.core.files import atomic_open, dumps_bytes, loads
from lib.data.session import Session, line_ids
from lib.data.split import root_of
from lib.core.workers import ordered_map

_CHUNK = 32  # sessions per unit of work


@dataclass
class Built:
    examples: int = 0
    tools: Counter[str] = field(default_factory=Counter)  # next-action tool of every example


def build_file(sessions_path: str | Path, out_path: str | Path, filters: Filters, granularity: str,
               max_history: int, max_chars: int, workers: int | None = None) -> Built:
    """Write every example row of every session; `filters` gets the counts of what it removed."""
    parents: dict[str, str] = {}
    with open(sessions_path, "rb") as fh:  # bytes: workers decode, in parallel
        for line in fh:
            if line.strip():
                sid, parent = line_ids(line)
                if parent:
                    parents[sid] = parent
    settings = (parents, (filters.require_success, filters.success_rule, filters.min_correctness,
                          filters.min_efficiency, filters.agent_filter), granularity, max_history, max_chars)
    built = Built()
    with open(sessions_path, "rb") as fh, atomic_open(out_path, binary=True) as out:
        for _, (text, n, tools, removed, seen) in ordered_map(_rows, _chunks(fh), settings, workers):
            out.write(text)
            built.examples += n
            built.tools.update(tools)
            filters.removed.update(removed)
            filters.seen.update(seen)
    return built


def _chunks(lines: Any) -> Iterator[list[bytes]]:
    lines = (line for line in lines if line.strip())
    while chunk := list(islice(lines, _CHUNK)):
        yield chunk


def _rows(lines: list[bytes], settings: tuple[Any, ...]) -> tuple[bytes, int, Counter[str], Counter[str], Counter[str]]:
    """The example rows of a chunk of sessions, as UTF-8 JSONL (runs in a worker)."""
    parents, filter_args, granularity, max_history, max_chars = settings
    filters = Filters(*filter_args)
    tools: Counter[str] = Counter()
    out = []
    sessions = (Session.from_dict(loads(line)) for line in lines)
    for row in build(sessions, filters, granularity, max_history, max_chars):
        row["group_id"] = root_of(parents, row["session_id"])
        tools[row["gold"]["next_action"]["tool"]] += 1
        out.append(dumps_bytes(row))
    return b"\n".join(out) + b"\n" if out else b"", len(out), tools, filters.removed, filters.seen
