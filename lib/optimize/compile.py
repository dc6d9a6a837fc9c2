"""The program the optimize stage ships, compiled and selected as params.yaml says.

The stage and every bench call `compile_program`, so a bench measures what the stage ships: the
same optimizer settings, and selection on val by `optimization.select_on` (replay: the agent's call
as OpenCode sends it, scored as the replay stage scores it; offline: `optimization.metric` where
set, else the composite).
"""
from __future__ import annotations

import contextlib
from typing import Any

import dspy

from lib.optimize.optimizers import optimize
from lib.optimize.selection import deployed_selection
from lib.program.agent import Agent, to_example
from lib.program.runtime import Runtime
from lib.scoring.metric import Metric


def compile_program(params: dict[str, Any], rt: Runtime, train_rows: list[dict[str, Any]],
                    val_rows: list[dict[str, Any]], name: str | None = None) -> dspy.Module:
    """The agent compiled with optimizer `name` (default: optimization.optimizer) on the train rows,
    selected on the val rows."""
    opt, seed = params["optimization"], params["data"]["random_seed"]
    name = name or opt["optimizer"]
    train, val = [to_example(r) for r in train_rows], [to_example(r) for r in val_rows]
    if opt["select_on"] == "replay":
        adapter, metric = deployed_selection(params, train_rows + val_rows, rt.ledger)
        context: Any = dspy.context(adapter=adapter)
    else:
        metric, context = Metric.from_params(opt), contextlib.nullcontext()
    with context:
        return optimize(name, opt[name], Agent(), train, val, metric, rt.teacher, rt.student,
                        opt["num_threads"], seed, ledger=rt.ledger)
