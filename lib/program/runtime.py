"""Everything a model stage sets up before its first call: checks, cache, LMs, adapter, data."""
from __future__ import annotations

import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from dataclasses import dataclass
from typing import IO, Any

import dspy

from lib.program.agent import CompactJSONAdapter
from lib.data.examples import with_earlier_steps
from lib.core.files import read_jsonl
from lib.models.ledger import Ledger
from lib.models.lm import make_lm
from lib.models.settings import check_reachable, configure_cache
from lib.config.params import ROOT

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
    opt = params["optimization"]
    ledger = Ledger(max_calls=opt["max_lm_calls"], max_failed_calls=opt["max_failed_calls"])
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


class _Lines:
    """A file for tqdm off a terminal: each refresh becomes one plain line (no carriage returns)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.out.write(text + "\n")

    def flush(self) -> None:
        self.out.flush()


class Progress:
    """A tqdm bar with the ledger's calls, cache hits and tokens in its postfix.

    On a terminal it redraws in place; elsewhere (CI, logs, `dvc repro > log`) it prints one line
    every `every` items or every `interval` seconds, whichever comes first, and one at the end.
    Use it as a context manager; `update()` after each item.
    """

    def __init__(self, label: str, total: int | None, ledger: Ledger | None = None, unit: str = "example",
                 every: int = 10, interval: float = 30.0, out: IO[str] | None = None) -> None:
        from tqdm import tqdm

        out = out or sys.stderr
        self.tty = out.isatty()
        self.ledger, self.every, self.interval = ledger, every, interval
        self._last_n, self._last_t = 0, time.monotonic()
        self.bar = tqdm(total=total, desc=label, unit=unit, file=out if self.tty else _Lines(out),
                        mininterval=0.5 if self.tty else float("inf"),
                        maxinterval=10.0 if self.tty else float("inf"), dynamic_ncols=self.tty,
                        ascii=not self.tty, leave=True)
        self.bar.set_postfix_str(self._postfix(), refresh=False)

    def _postfix(self) -> str:
        if self.ledger is None:
            return ""
        t = self.ledger.totals()
        failed = f", {t['failed']} failed" if t["failed"] else ""
        return f"{t['calls']} calls, {t['cache_hits']} cached, {t['tokens']} tokens{failed}"

    def update(self, n: int = 1) -> None:
        self.bar.set_postfix_str(self._postfix(), refresh=False)
        self.bar.update(n)
        if not self.tty:
            now = time.monotonic()
            due = self.bar.n - self._last_n >= self.every or now - self._last_t >= self.interval
            if due and self.bar.n != self.bar.total:  # the last line comes from close()
                self.bar.refresh()
                self._last_n, self._last_t = self.bar.n, now

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.set_postfix_str(self._postfix(), refresh=False)
        self.bar.close()  # draws the final state once


def load_rows(split: str, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """A split's example rows; `limit` takes a seeded sample (order kept) so capped runs stay representative."""
    rows = with_earlier_steps(list(read_jsonl(SPLIT_FILE.format(split))))
    if limit is not None and len(rows) > limit:
        keep = set(random.Random(seed).sample(range(len(rows)), limit))
        rows = [r for i, r in enumerate(rows) if i in keep]
    return rows


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
