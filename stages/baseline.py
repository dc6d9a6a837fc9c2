"""baseline: the unoptimized student on the test split -> metrics/baseline.json (+ per-example scores)."""
from lib import params as P
from lib.agent import Agent
from lib.errors import run_stage
from lib.evaluate import evaluate
from lib.files import write_json
from lib.metric import Metric
from lib.runtime import load_rows, start, usage_report


def main() -> None:
    p = P.load()
    rt = start(p, with_teacher=False)
    opt = p["optimization"]
    result = evaluate(Agent(), load_rows("test"), Metric.from_params(opt), opt["num_threads"],
                      "baseline", rt.ledger.status)
    write_json("metrics/baseline.json", {**result.summary(), **usage_report(rt.ledger)})
    write_json("metrics/baseline_examples.json", result.per_example)
    print(f"baseline: score {result.score:.3f} on {result.n} test examples ({result.unparsed} unparsed)")


if __name__ == "__main__":
    run_stage(main)
