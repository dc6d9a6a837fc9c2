"""optimize: compile the student with the chosen optimizer (selection on val), score it on test.

Writes outputs/program.json (instructions and demos) and metrics/optimized.json.
"""
import json

from lib import params as P
from lib.agent import Agent
from lib.errors import run_stage
from lib.evaluate import evaluate, improvement
from lib.files import write_json
from lib.metric import Metric
from lib.optimize import optimize
from lib.runtime import load_examples, load_rows, save_program, start, usage_report


def main() -> None:
    p = P.load()
    opt, seed = p["optimization"], p["data"]["random_seed"]
    rt = start(p, with_teacher=True)
    metric = Metric.from_params(opt)
    train = load_examples("train", opt["max_train_examples"], seed)
    val = load_examples("val", opt["max_val_examples"], seed)
    name = opt["optimizer"]
    print(f"optimize: {name} on {len(train)} train / {len(val)} val examples")
    program = optimize(name, opt[name], Agent(), train, val, metric, rt.teacher, rt.student,
                       opt["num_threads"], seed)
    rt.ledger.check()  # optimizers swallow per-example errors, a spent budget among them
    save_program(program, "outputs/program.json")

    result = evaluate(program, load_rows("test"), metric, opt["num_threads"], "optimized", rt.ledger.status)
    with open("metrics/baseline_examples.json", encoding="utf-8") as fh:
        baseline = json.load(fh)
    report = {**result.summary(), **improvement(baseline, result.per_example), **usage_report(rt.ledger),
              "optimizer": name,
              "demos": sum(len(pr.demos) for pr in program.predictors())}
    write_json("metrics/optimized.json", report)
    write_json("metrics/optimized_examples.json", result.per_example)
    gain = report["improvement"]
    print(f"optimize: test score {result.score:.3f} vs baseline {report['baseline_score']:.3f} "
          f"({gain['absolute']:+.3f}, 95% CI {report['ci95'][0]:+.3f}..{report['ci95'][1]:+.3f})")


if __name__ == "__main__":
    run_stage(main)
