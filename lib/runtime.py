"""Everything a model stage sets up before its first call: checks, cache, LMs, adapter, data."""
from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import dspy

from lib.agent import CompactJSONAdapter, to_example
from lib.files import read_jsonl
from lib.lm import Ledger, check_reachable, configure_cache, make_lm
from lib.params import ROOT

SPLIT_FILE = "data/splits/{}.jsonl"


@dataclass
class Runtime:
    student: dspy.BaseLM
    teacher: dspy.BaseLM | None
    ledger: Ledger


def start(params: dict[str, Any], with_teacher: bool) -> Runtime:
    """Check every model is usable (fail before any paid call), then configure DSPy."""
    models = params["models"]
    roles = ["student", "teacher"] if with_teacher else ["student"]
    for role in roles:
        check_reachable(role, models[role])
    configure_cache(ROOT)
    ledger = Ledger(max_calls=params["optimization"]["max_lm_calls"])
    student = make_lm("student", models["student"], ledger)
    teacher = make_lm("teacher", models["teacher"], ledger) if with_teacher else None
    dspy.configure(lm=student, adapter=CompactJSONAdapter())
    # A cut-off reply is already counted as unparsed; one warning per call would bury the progress.
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    return Runtime(student, teacher, ledger)


def usage_report(ledger: Ledger) -> dict[str, Any]:
    """Model usage for a metrics file: headline totals, then the per-role breakdown."""
    summary = ledger.summary()
    total = summary["lm_usage"]["total"]
    return {"lm_calls": total["calls"], "cache_hits": total["cache_hits"], "prompt_tokens": total["prompt_tokens"],
            "completion_tokens": total["completion_tokens"], "cost": total["cost"], **summary}


def load_rows(split: str, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """A split's example rows; `limit` takes a seeded sample (order kept) so capped runs stay representative."""
    rows = list(read_jsonl(SPLIT_FILE.format(split)))
    if limit is not None and len(rows) > limit:
        keep = set(random.Random(seed).sample(range(len(rows)), limit))
        rows = [r for i, r in enumerate(rows) if i in keep]
    return rows


def load_examples(split: str, limit: int | None = None, seed: int = 0) -> list[dspy.Example]:
    return [to_example(r) for r in load_rows(split, limit, seed)]


def save_program(program: dspy.Module, path: str) -> None:
    """program.save() (instructions and demos), atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".json")
    os.close(fd)
    try:
        program.save(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
