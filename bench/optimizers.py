"""Benchmark every optimizer on the current splits and print a comparison table.

    python -m bench.optimizers                          # all optimizers, params.yaml settings
    python -m bench.optimizers labeled bootstrap        # a subset
    python -m bench.optimizers --set optimization.max_train_examples=30 copro

Run `dvc repro split` first. Each optimizer is compiled from scratch and scored on the full test
split against the same baseline; the model cache makes repeated calls free, so "calls" counts only
calls that were really made in this run.
"""
from __future__ import annotations

import argparse
import time


from bench.common import start_run
from lib.optimize.compile import compile_program
from lib.optimize.optimizers import OPTIMIZERS
from lib.program.agent import Agent
from lib.scoring.evaluate import evaluate, improvement


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("optimizers", nargs="*", default=list(OPTIMIZERS), help="optimizer names (default: all)")
    args, run = start_run(ap, "optimization.mipro.auto=light", with_teacher=True)
    p, rt, metric, train, val, test = run.params, run.rt, run.metric, run.train, run.val, run.test
    opt = p["optimization"]

    def usage() -> tuple[int, int]:
        total = rt.ledger.summary()["lm_usage"]["total"]
        return total["calls"], total["prompt_tokens"] + total["completion_tokens"]

    print(f"test examples: {len(test)}, train {len(train)}, val {len(val)}; "
          f"student {p['models']['student']['provider']}/{p['models']['student']['model']}, "
          f"teacher {p['models']['teacher']['provider']}/{p['models']['teacher']['model']}\n")
    print("| optimizer | test score | abs. gain | rel. gain | 95% CI of gain | LM calls | tokens | wall s | demos |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)

    t0, (c0, k0) = time.monotonic(), usage()
    base = evaluate(Agent(), test, metric, opt["num_threads"], "baseline", rt.ledger)
    c1, k1 = usage()
    _row("baseline", base.score, None, c1 - c0, k1 - k0, time.monotonic() - t0, 0)
    for name in args.optimizers:
        t0, (c0, k0) = time.monotonic(), usage()
        program = compile_program(p, rt, train, val, name)  # as the optimize stage compiles and selects
        result = evaluate(program, test, metric, opt["num_threads"], name, rt.ledger)
        c1, k1 = usage()
        _row(name, result.score, improvement(base.per_example, result.per_example), c1 - c0, k1 - k0,
             time.monotonic() - t0, sum(len(pr.demos) for pr in program.predictors()))


def _row(name: str, score: float, gain: dict | None, calls: int, tokens: int, wall: float, demos: int) -> None:
    """One table row, printed as soon as its optimizer is done (a long sweep can be stopped early)."""
    absolute = f"{gain['improvement']['absolute']:+.3f}" if gain else ""
    rel = gain["improvement"]["relative"] if gain else None
    relative = "" if not gain else "n/a" if rel is None else f"{rel:+.0%}"
    interval = f"{gain['ci95'][0]:+.3f} .. {gain['ci95'][1]:+.3f}" if gain else ""
    print(f"| {name} | {score:.3f} | {absolute} | {relative} | {interval} | {calls} | {tokens} | {wall:.0f} | "
          f"{demos} |", flush=True)

if __name__ == "__main__":
    main()
