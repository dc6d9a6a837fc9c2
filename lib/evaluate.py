"""Run a program over a split: per-example scores and components, totals, paired bootstrap CI.

Scores are 0-1 (this module does not use dspy.Evaluate's 0-100 percentage).
Model errors that a user must fix (budget, unreachable server) stop the run; any other failure
on one example scores 0 and is counted, so one odd example never sinks an evaluation.
"""
from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dspy

from lib.agent import parse_action, to_example
from lib.errors import UserError
from lib.metric import Metric


@dataclass
class Evaluation:
    score: float
    components: dict[str, float]
    n: int
    unparsed: int  # predictions with no usable next action
    errors: int  # examples whose run raised
    per_example: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"score": self.score, "components": self.components, "n": self.n,
                "unparsed": self.unparsed, "errors": self.errors}


def show_progress() -> bool:
    """Progress lines on a terminal; silence in CI and in logs."""
    return sys.stderr.isatty() and os.environ.get("CI") != "true"


def evaluate(program: dspy.Module, rows: list[dict[str, Any]], metric: Metric, num_threads: int = 1,
             label: str = "eval", status: Callable[[], str] | None = None) -> Evaluation:
    """Score `program` on example rows; rows keep their order in `per_example`."""
    if not rows:
        raise UserError(f"{label}: the split is empty; add session logs or change data.*_split")
    examples = [to_example(r) for r in rows]
    progress = show_progress()
    started = time.monotonic()
    done = 0

    def one(i: int) -> dict[str, Any]:
        nonlocal done
        ex = examples[i]
        try:
            pred = program(**ex.inputs())
            failed = False
        except UserError:
            raise
        except Exception as exc:  # a broken example scores 0, the run goes on
            pred, failed = dspy.Prediction(reasoning="", plan="", next_action=""), repr(exc)[:200]
        parts = metric.components(ex, pred)
        record = {"id": rows[i]["id"], "score": metric.combine(parts), "components": parts,
                  "parsed": parse_action(pred.get("next_action", "") or "") is not None,
                  "predicted_tool": (parse_action(pred.get("next_action", "") or "") or {}).get("tool"),
                  "gold_tool": rows[i]["gold"]["next_action"]["tool"], "error": failed}
        done += 1
        if progress and (done % 5 == 0 or done == len(rows)):
            extra = f", {status()}" if status else ""
            print(f"\r{label}: {done}/{len(rows)} examples, {time.monotonic() - started:.0f}s{extra}   ",
                  end="" if done < len(rows) else "\n", file=sys.stderr, flush=True)
        return record

    if num_threads > 1:
        with ThreadPoolExecutor(num_threads) as pool:
            records = list(pool.map(one, range(len(rows))))
    else:
        records = [one(i) for i in range(len(rows))]

    names = sorted({k for r in records for k in r["components"]})
    components = {}
    for name in names:
        values = [r["components"][name] for r in records if r["components"].get(name) is not None]
        if values:
            components[name] = sum(values) / len(values)
    return Evaluation(
        score=sum(r["score"] for r in records) / len(records),
        components=components,
        n=len(records),
        unparsed=sum(not r["parsed"] for r in records),
        errors=sum(bool(r["error"]) for r in records),
        per_example=records,
    )


def paired_bootstrap_ci(before: list[float], after: list[float], n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """CI of mean(after - before) over the same examples, by resampling examples with replacement."""
    if len(before) != len(after) or not before:
        raise ValueError("paired bootstrap needs two equal, non-empty score lists")
    diffs = [a - b for a, b in zip(after, before)]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo = means[int((1 - level) / 2 * n_boot)]
    hi = means[min(n_boot - 1, int((1 + level) / 2 * n_boot))]
    return lo, hi


def improvement(baseline: list[dict[str, Any]], optimized: list[dict[str, Any]]) -> dict[str, Any]:
    """Absolute and relative gain on the same test examples (per-example records), with a paired 95% CI."""
    base = {r["id"]: r["score"] for r in baseline}
    after = {r["id"]: r["score"] for r in optimized}
    if set(base) != set(after) or not base:
        raise UserError("baseline and optimized were scored on different test examples; run `dvc repro` "
                        "so both stages read the same data/splits/test.jsonl")
    ids = sorted(base)
    before_mean = sum(base.values()) / len(ids)
    absolute = sum(after.values()) / len(ids) - before_mean
    lo, hi = paired_bootstrap_ci([base[i] for i in ids], [after[i] for i in ids])
    return {
        "baseline_score": before_mean,
        "improvement": {"absolute": absolute, "relative": absolute / before_mean if before_mean > 0 else None},
        "ci95": [lo, hi],
    }
