"""baseline: the unoptimized student on the test split.

Writes metrics/baseline.json (scores: a function of inputs and params), metrics/baseline_examples.json
(per-example scores) and metrics/baseline_usage.json (calls, cache hits, tokens, cost: may change on
a re-run). A failed run writes none of them.
"""
from lib.config import params as P
from lib.program.agent import Agent
from lib.core.errors import run_stage
from lib.scoring.evaluate import evaluate
from lib.core.files import write_json
from lib.scoring.metric import Metric
from lib.program.runtime import load_rows, start, usage_report


def main() -> None:
    p = P.load()
    rt = start(p, with_teacher=False)
    opt = p["optimization"]
    result = evaluate(Agent(), load_rows("test"), Metric.from_params(opt), opt["num_threads"],
                      "baseline", rt.ledger)
    rt.ledger.check()
    write_json("metrics/baseline.json", result.summary())
    write_json("metrics/baseline_examples.json", result.per_example)
    write_json("metrics/baseline_usage.json", usage_report(rt.ledger))
    failed = f", {result.failed} left out: their model call failed" if result.failed else ""
    print(f"baseline: score {result.score:.3f} on {result.n} test examples ({result.unparsed} unparsed{failed})")


if __name__ == "__main__":
    run_stage(main)
