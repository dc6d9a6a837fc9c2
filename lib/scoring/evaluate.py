"""Run a program over a split: per-example scores and components, totals, paired bootstrap CI.

Scores are 0-1 (this module does not use dspy.Evaluate's 0-100 percentage).
A model call that fails after its retries is never a score: within optimization.max_failed_calls
the example is left out (and counted), beyond it, or after a few failures in a row, the ledger
stops the run with an error that names the model, its address and the fix (see lib.models.ledger.Ledger).
"""
from __future__ import annotations

import contextvars
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dspy

from lib.program.agent import parse_action, to_example
from lib.core.errors import UserError
from lib.models.ledger import Ledger, ModelCallFailed
from lib.scoring.metric import Metric
from lib.program.runtime import Progress

T = TypeVar("T")


@dataclass(frozen=True)
class Failed:
    """An example whose model call failed after its retries, allowed by optimization.max_failed_calls."""
    kind: str  # e.g. "timeout", "rate limit", "server error"
    message: str


def attempt(call: Callable[[], T]) -> T | Failed:
    """Run one example's model call(s): the result, or Failed when its call failed and the ledger
    allows it (leave that example out of every score and count it).

    Anything the ledger does not allow propagates as a UserError: more failures than
    optimization.max_failed_calls, three in a row, a spent budget, a dead server, a rejected key.
    """
    try:
        return call()
    except ModelCallFailed as exc:
        return Failed(exc.kind, str(exc))


@dataclass
class Evaluation:
    score: float  # mean over the answered examples
    components: dict[str, float]
    n: int  # answered (scored) examples
    unparsed: int  # predictions with no usable next action
    failed: int  # examples left out because their model call failed
    per_example: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"score": self.score, "components": self.components, "n": self.n,
                "unparsed": self.unparsed, "failed": self.failed}


def evaluate(program: dspy.Module, rows: list[dict[str, Any]], metric: Metric, num_threads: int = 1,
             label: str = "eval", ledger: Ledger | None = None) -> Evaluation:
    """Score `program` on example rows; rows keep their order in `per_example`.

    An example whose call failed (and was allowed) has `score` None and `failed` set to the kind.
    """
    if not rows:
        raise UserError(f"{label}: the split is empty; add session logs or change data.*_split")
    examples = [to_example(r) for r in rows]

    def one(i: int) -> dict[str, Any]:
        ex = examples[i]
        pred = attempt(lambda: program(**ex.inputs()))
        gold_tool = rows[i]["gold"]["next_action"]["tool"]
        if isinstance(pred, Failed):
            return {"id": rows[i]["id"], "score": None, "components": {}, "parsed": False,
                    "predicted_tool": None, "gold_tool": gold_tool, "failed": pred.kind}
        parts = metric.components(ex, pred)
        action = parse_action(pred.get("next_action", "") or "")
        return {"id": rows[i]["id"], "score": metric.combine(parts), "components": parts,
                "parsed": action is not None, "predicted_tool": (action or {}).get("tool"),
                "gold_tool": gold_tool, "failed": None}

    with Progress(label, len(rows), ledger, unit="example") as progress:
        if num_threads > 1:
            records: list[dict[str, Any]] = [{}] * len(rows)
            pool = ThreadPoolExecutor(num_threads)
            try:
                # Each example runs in a copy of this context, so dspy.context(lm=...) reaches the threads.
                futures = {pool.submit(contextvars.copy_context().run, one, i): i for i in range(len(rows))}
                for future in futures:
                    records[futures[future]] = future.result()
                    progress.update()
            finally:
                # On a stopping error, queued examples never start; calls under way finish.
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            records = []
            for i in range(len(rows)):
                records.append(one(i))
                progress.update()
    return summarize(records, label)


def summarize(records: list[dict[str, Any]], label: str = "eval") -> Evaluation:
    """Totals over per-example records; failed examples are counted, never scored."""
    answered = [r for r in records if not r.get("failed")]
    if not answered:
        raise UserError(f"{label}: no example was answered (all {len(records)} model calls failed); "
                        f"see the errors above and fix the model server")
    names = sorted({k for r in answered for k in r["components"]})
    components = {}
    for name in names:
        values = [r["components"][name] for r in answered if r["components"].get(name) is not None]
        if values:
            components[name] = sum(values) / len(values)
    return Evaluation(
        score=sum(r["score"] for r in answered) / len(answered),
        components=components,
        n=len(answered),
        unparsed=sum(not r["parsed"] for r in answered),
        failed=len(records) - len(answered),
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
    """Absolute and relative gain on the same test examples (per-example records), with a paired 95% CI.

    Examples whose call failed in either run are left out of the pairing; `paired` says how many remain.
    """
    base = {r["id"]: r["score"] for r in baseline}
    after = {r["id"]: r["score"] for r in optimized}
    if set(base) != set(after) or not base:
        raise UserError("baseline and optimized were scored on different test examples; run `dvc repro` "
                        "so both stages read the same data/splits/test.jsonl")
    ids = sorted(i for i in base if base[i] is not None and after[i] is not None)
    if not ids:
        raise UserError("no test example was answered in both the baseline and the optimized run; "
                        "fix the model server and run `dvc repro`")
    before_mean = sum(base[i] for i in ids) / len(ids)
    absolute = sum(after[i] for i in ids) / len(ids) - before_mean
    lo, hi = paired_bootstrap_ci([base[i] for i in ids], [after[i] for i in ids])
    return {
        "baseline_score": before_mean,
        "improvement": {"absolute": absolute, "relative": absolute / before_mean if before_mean > 0 else None},
        "ci95": [lo, hi],
        "paired": len(ids),
    }
