"""optimize: compile the student with the chosen optimizer (selection on val), score it on test.

Writes outputs/program.json (instructions and demos), metrics/optimized.json (scores: a function of
inputs and params), metrics/optimized_examples.json and metrics/optimized_usage.json (calls, cache
hits, tokens, cost: may change on a re-run). A failed run writes none of them.
"""
import json

from lib.config import params as P
from lib.core.errors import run_stage
from lib.core.files import write_json
from lib.optimize.compile import compile_program
from lib.program.runtime import load_rows, save_program, start, usage_report
from lib.scoring.evaluate import evaluate, improvement
from lib.scoring.metric import Metric


def main() -> None:
    p = P.load()
    opt, seed = p["optimization"], p["data"]["random_seed"]
    rt = start(p, with_teacher=True)
    metric = Metric.from_params(opt)
    train_rows = load_rows("train", opt["max_train_examples"], seed)
    val_rows = load_rows("val", opt["max_val_examples"], seed)
    name = opt["optimizer"]
    print(f"optimize: {name} on {len(train_rows)} train / {len(val_rows)} val examples, selecting on the "
          f"{opt['select_on']} score")
    program = compile_program(p, rt, train_rows, val_rows)

    result = evaluate(program, load_rows("test"), metric, opt["num_threads"], "optimized", rt.ledger)
    rt.ledger.check()
    with open("metrics/baseline_examples.json", encoding="utf-8") as fh:
        baseline = json.load(fh)
    report = {**result.summary(), **improvement(baseline, result.per_example), "optimizer": name,
              "demos": sum(len(pr.demos) for pr in program.predictors())}
    retrieval = program.dump_state().get("retrieval")  # optimizer knn: demos picked per input (k, fields)
    if retrieval:
        report["retrieval"] = retrieval
    save_program(program, "outputs/program.json")
    write_json("metrics/optimized.json", report)
    write_json("metrics/optimized_examples.json", result.per_example)
    write_json("metrics/optimized_usage.json", usage_report(rt.ledger))
    gain = report["improvement"]
    print(f"optimize: test score {result.score:.3f} vs baseline {report['baseline_score']:.3f} "
          f"({gain['absolute']:+.3f}, 95% CI {report['ci95'][0]:+.3f}..{report['ci95'][1]:+.3f})")


if __name__ == "__main__":
    run_stage(main)
