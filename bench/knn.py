"""Per-input demos (optimizer knn) against the fixed labeled demos, on the test split.

    python -m bench.knn                                   # params.yaml settings (k and fields chosen on val)
    python -m bench.knn --set 'optimization.knn.k=[3]' --set 'optimization.knn.fields=[[task]]'
    python -m bench.knn --labeled metrics/optimized_examples.json   # labeled side from a labeled run's records

Run `dvc repro split` first. Both programs are scored on the whole test split with the params'
student; the table gives the composite and every component, and the paired bootstrap 95% CI of
the knn - labeled difference per component (same examples, resampled together). The model cache
makes a repeated run free.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


from bench.common import start_run
from lib.optimize.compile import compile_program
from lib.scoring.evaluate import evaluate, paired_bootstrap_ci
from lib.scoring.metric import COMPONENTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labeled", type=Path, metavar="FILE",
                    help="per-example test records of a labeled run (metrics/optimized_examples.json of "
                         "`dvc repro` with optimizer labeled) instead of scoring labeled again")
    ap.add_argument("--limit", type=int, metavar="N",
                    help="score only the first N test examples (a partial run, e.g. what the model cache holds)")
    args, run = start_run(ap, "optimization.knn.k=[3]", with_teacher=False)
    p, rt, metric, train, val, test = run.params, run.rt, run.metric, run.train, run.val, run.test
    opt = p["optimization"]
    print(f"test {len(test)}, train {len(train)}, val {len(val)}; student "
          f"{p['models']['student']['provider']}/{p['models']['student']['model']}; "
          f"labeled k={opt['labeled']['k']}, knn k in {opt['knn']['k']}, fields in {opt['knn']['fields']}, "
          f"fixed in {opt['knn']['fixed']}", flush=True)

    results = {}
    if args.labeled:
        records = json.loads(args.labeled.read_text(encoding="utf-8"))
        by_id = {r["id"]: r for r in records}
        if not {r["id"] for r in test} <= set(by_id):
            sys.exit(f"{args.labeled} does not hold the current test split's examples; run without --labeled")
        results["labeled"] = [by_id[r["id"]] for r in test]
        print(f"labeled: per-example test records from {args.labeled}", flush=True)
    for name in [n for n in ("labeled", "knn") if n not in results]:
        t0 = time.monotonic()
        program = compile_program(p, rt, train, val, name)  # as the optimize stage compiles and selects
        chosen = f" (fixed={len(program.fixed)}, k={program.k}, fields={'+'.join(program.fields)})" \
            if name == "knn" else ""
        done = evaluate(program, test, metric, opt["num_threads"], name, rt.ledger)
        results[name] = done.per_example
        print(f"{name}{chosen}: test score {done.score:.3f} on {done.n} answered in {time.monotonic() - t0:.0f}s",
              flush=True)

    lab = {r["id"]: r for r in results["labeled"] if not r.get("failed")}
    knn = {r["id"]: r for r in results["knn"] if not r.get("failed")}
    ids = [r["id"] for r in test if r["id"] in lab and r["id"] in knn]  # a failed call leaves an example out
    print("\n| measure | labeled | knn | knn - labeled | paired 95% CI |")
    print("|---|---|---|---|---|")
    for part in ("score", *COMPONENTS):
        before = [_value(lab[i], part) for i in ids]
        after = [_value(knn[i], part) for i in ids]
        pairs = [(b, a) for b, a in zip(before, after) if b is not None and a is not None]
        if not pairs:
            continue
        b_mean = sum(b for b, _ in pairs) / len(pairs)
        a_mean = sum(a for _, a in pairs) / len(pairs)
        lo, hi = paired_bootstrap_ci([b for b, _ in pairs], [a for _, a in pairs])
        print(f"| {part} | {b_mean:.3f} | {a_mean:.3f} | {a_mean - b_mean:+.3f} | {lo:+.3f}..{hi:+.3f} |")
    totals = rt.ledger.totals()
    print(f"\nn={len(ids)} paired test examples; LM calls {totals['calls']}, cache hits {totals['cache_hits']}")


def _value(record: dict, part: str) -> float | None:
    return record["score"] if part == "score" else record["components"].get(part)


if __name__ == "__main__":
    main()
