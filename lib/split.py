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


_DECODER = json.JSONDecoder()
_TAIL = re.compile(r',"session_id":("(?:[^"\\]|\\.)*"),"step":(?:null|-?\d+),"turn":-?\d+\}\s*$')


def row_groups(line: str) -> tuple[str, str]:
    """(group_id, session_id) of one examples.jsonl line, without parsing its inputs.

    Rows are written with sorted keys: `gold` then `group_id` lead, `session_id`, `step` and
    `turn` close the line. A line laid out otherwise is parsed whole.
    """
    try:
        if line.startswith('{"gold":'):
            _, end = _DECODER.raw_decode(line, 8)
            tail = _TAIL.search(line)
            if line.startswith(',"group_id":"', end) and tail:
                group, _ = json.decoder.scanstring(line, end + 13)
                return group, json.loads(tail.group(1))
    except ValueError:
        pass
    row = json.loads(line)
    return row["group_id"], row["session_id"]
