"""What the model benches share: params with `--set` overrides, a stage's set-up, and the splits as
the optimize stage reads them (train and val capped and sampled as optimization.* says)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from lib.config import params as P
from lib.program.runtime import Runtime, load_rows, start
from lib.scoring.metric import Metric


@dataclass
class Run:
    params: dict[str, Any]
    rt: Runtime
    metric: Metric  # the stage's test metric (optimization.metric_weights / metric)
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    test: list[dict[str, Any]]


def start_run(ap: argparse.ArgumentParser, example: str, *, with_teacher: bool) -> tuple[argparse.Namespace, Run]:
    """Parse the arguments (plus `--set KEY=VALUE`, e.g. `example`), load params, start the models and
    read the splits; a `limit` argument keeps the first N test rows."""
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"params override, e.g. {example} (repeatable)")
    args = ap.parse_args()
    p = P.load(overrides=P.parse_overrides(args.set))
    opt, seed = p["optimization"], p["data"]["random_seed"]
    rt = start(p, with_teacher=with_teacher)
    metric = Metric.from_params(opt)
    limit = getattr(args, "limit", None)
    test = load_rows("test")[:limit] if limit else load_rows("test")
    return args, Run(p, rt, metric, load_rows("train", opt["max_train_examples"], seed),
                     load_rows("val", opt["max_val_examples"], seed), test)
