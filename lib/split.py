"""Deterministic session-level split: no session (or subagent family) is in two splits.

Each group gets a rank from sha256(seed, group id); the lowest ranks go to test, then val,
the rest to train. The result depends only on the ids and the seed, never on file order.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

SPLITS = ("train", "val", "test")


def _rank(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()


def assign(groups: Iterable[str], ratios: dict[str, float], seed: int) -> dict[str, str]:
    """group id -> split name. With >= 3 groups, test and val (if its ratio > 0) are never empty."""
    ordered = sorted(set(groups), key=lambda g: (_rank(seed, g), g))
    n = len(ordered)
    n_test = round(n * ratios["test"])
    n_val = round(n * ratios["val"])
    if n >= 3:
        n_test = max(n_test, 1)
        n_val = max(n_val, 1) if ratios["val"] > 0 else 0
    n_test = min(n_test, n)
    n_val = min(n_val, n - n_test)
    out = {}
    for i, g in enumerate(ordered):
        out[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def root_of(parents: dict[str, str | None], sid: str) -> str:
    """Top-most ancestor of a session (subagent chains stay with their caller)."""
    seen = {sid}
    while parents.get(sid) and parents[sid] not in seen:
        sid = parents[sid]  # type: ignore[assignment]
        seen.add(sid)
    return sid


_TAIL = re.compile(rb',"session_id":"([^"\\]*)","step":(?:null|-?\d+),"turn":-?\d+\}\s*$')


def row_groups(line: bytes) -> tuple[str, str]:
    """(group_id, session_id) of one examples.jsonl line, without parsing its inputs.

    Rows are written with sorted keys, `session_id`, `step` and `turn` closing the line. An
    unescaped `"group_id":"` is a key (in a string it would read `\\"group_id\\":\\"`): if the line
    holds just one, it is the row's own. Anything else (a hand-edited line, an id with escapes)
    is parsed whole.
    """
    key = line.find(b'"group_id":"')
    if key > 0 and line.find(b'"group_id":"', key + 1) < 0:
        end = line.find(b'"', key + 12)
        tail = _TAIL.search(line, max(0, len(line) - 1024))
        if tail and end > 0 and b"\\" not in line[key + 12:end]:
            return line[key + 12:end].decode("utf-8"), tail.group(1).decode("utf-8")
    row = json.loads(line)
    return row["group_id"], row["session_id"]
