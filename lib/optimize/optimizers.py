"""Optimizer name -> a configured DSPy optimizer with the teacher wired in, compiled on train/val.

What the teacher does depends on the optimizer: it runs the program to bootstrap demos
(bootstrap, bootstrap_rs, mipro, simba), proposes instructions (mipro, copro), or reflects on
failures with the metric's feedback (gepa). Selection only ever sees the val split (SIMBA ranks its
final candidates on train, so they are ranked again on val); the test split is for the final score alone.

DSPy optimizers score an example whose program raised as 0 and go on. So that a failed model call
never passes as a low score, any failed call during optimization stops the stage (the ledger's
strict mode), and a stop the optimizer swallowed is raised again once it returns.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dspy

from lib.models.ledger import Ledger
from lib.program.agent import mean_score
from lib.scoring.metric import Metric
from lib.program.runtime import Progress

Compile = Callable[[dspy.Module, list[dspy.Example], list[dspy.Example]], dspy.Module]


def _labeled(cfg, metric, teacher, student_lm, threads, seed) -> Compile:
    return lambda program, train, val: dspy.LabeledFewShot(k=cfg["k"]).compile(program, trainset=train)


def _bootstrap(cfg, metric, teacher, student_lm, threads, seed) -> Compile:
    opt = dspy.BootstrapFewShot(metric=metric, teacher_settings={"lm": teacher},
                                max_bootstrapped_demos=cfg["max_bootstrapped_demos"],
                                max_labeled_demos=cfg["max_labeled_demos"], max_rounds=cfg["max_rounds"])
    return lambda program, train, val: opt.compile(program, trainset=train)


def _bootstrap_rs(cfg, metric, teacher, student_lm, threads, seed) -> Compile:
    opt = dspy.BootstrapFewShotWithRandomSearch(
        metric=metric, teacher_settings={"lm": teacher}, max_bootstrapped_demos=cfg["max_bootstrapped_demos"],
        max_labeled_demos=cfg["max_labeled_demos"], num_candidate_programs=cfg["num_candidate_programs"],
        num_threads=threads)
    return lambda program, train, val: opt.compile(program, trainset=train, valset=val)


def _mipro(cfg, metric, teacher, student_lm, threads, seed) -> Compile:
    # auto sizes the search; with auto null the params give it (validated: both set).
    size = {"auto": cfg["auto"]} if cfg["auto"] else {"auto": None, "num_candidates": cfg["num_candidates"]}
    trials = {} if cfg["auto"] else {"num_trials": cfg["num_trials"]}
    opt = dspy.MIPROv2(metric=metric, prompt_model=teacher, task_model=student_lm,
                       teacher_settings={"lm": teacher}, **size,
                       max_bootstrapped_demos=cfg["max_bootstrapped_demos"],
                       max_labeled_demos=cfg["max_labeled_demos"], num_threads=threads, seed=seed)
    # Evaluation in mini-batches (DSPy's 35) only where val is larger than one, as auto decides.
    return lambda program, train, val: opt.compile(program, trainset=train, valset=val, **trials,
                                                   minibatch=len(val) > 35)


def _copro(cfg, metric, teacher, student_lm, threads, seed) -> Compile:
    opt = dspy.COPRO(prompt_model=teacher, metric=metric, breadth=cfg["breadth"], depth=cfg["depth"],
                     init_temperature=cfg["init_temperature"])
    # COPRO scores its candidate instructions on the set it is given: that is selection, so val.
    return lambda program, train, val: opt.compile(
        program, trainset=val, eval_kwargs={"num_threads": threads, "display_progress": False})


def _simba(cfg, metric, teacher, student_lm, threads, seed) -> Compile:
    def run(program, train, val):
        # SIMBA needs a mini-batch no larger than its data.
        opt = dspy.SIMBA(metric=metric, bsize=min(cfg["bsize"], len(train)), num_candidates=cfg["num_candidates"],
                         max_steps=cfg["max_steps"], prompt_model=teacher, num_threads=threads)
        found = opt.compile(program, trainset=train, seed=seed)
        if not val:
            return found
        # SIMBA ranks its final candidates on its own trainset; the pipeline selects on val alone.
        scored = [(mean_score(c["program"], val, metric), c["program"]) for c in found.candidate_programs]
        scored.sort(key=lambda pair: pair[0], reverse=True)  # stable: a tie keeps SIMBA's order
        best = scored[0][1]
        best.candidate_programs = [{"score": score, "program": prog} for score, prog in scored]
        return best
    return run


def _gepa(cfg, metric, teacher, student_lm, threads, seed) -> Compile:
    budget = {"max_metric_calls": cfg["max_metric_calls"]} if cfg["max_metric_calls"] else {"auto": cfg["auto"]}
    # track_stats keeps each candidate's val score on the program, so the choice can be checked.
    opt = dspy.GEPA(metric=metric.gepa, **budget, reflection_lm=teacher, track_stats=True,
                    reflection_minibatch_size=cfg["reflection_minibatch_size"], num_threads=threads, seed=seed)
    return lambda program, train, val: opt.compile(program, trainset=train, valset=val)


def _knn(cfg, metric, teacher, student_lm, threads, seed) -> Compile:
    # Per-input demos by BM25 (lib.program.retrieval) after `fixed` labeled ones; all three are selected on val.
    from lib.program.retrieval import select_on_val
    return lambda program, train, val: select_on_val(program, train, val, metric, cfg["k"], cfg["fields"],
                                                     cfg["fixed"])


OPTIMIZERS: dict[str, Callable[..., Compile]] = {
    "labeled": _labeled,
    "bootstrap": _bootstrap,
    "bootstrap_rs": _bootstrap_rs,
    "mipro": _mipro,
    "copro": _copro,
    "simba": _simba,
    "gepa": _gepa,
    "knn": _knn,
}


def optimize(name: str, settings: dict[str, Any], program: dspy.Module, train: list[dspy.Example],
             val: list[dspy.Example], metric: Metric, teacher: dspy.BaseLM, student_lm: dspy.BaseLM,
             num_threads: int, seed: int, ledger: Ledger | None = None) -> dspy.Module:
    """Compile `program` with optimizer `name` (params section `settings`); returns the optimized copy.

    `ledger` (the one the LMs report to) shows progress, and turns any failed model call, budget
    overrun or stop into the stage's error even where the optimizer swallowed it.
    """
    build = OPTIMIZERS[name]  # the params schema guarantees the name
    compile_ = build(settings, metric, teacher, student_lm, num_threads, seed)
    if ledger is None:
        return compile_(program, train, val)
    with Progress(f"optimize ({name})", None, ledger, unit="request", every=50) as progress, ledger.strict():
        ledger.listener = progress.update
        try:
            optimized = compile_(program, train, val)
        except Exception:
            ledger.check()  # the model failure behind the optimizer's own error, if there is one
            raise
        finally:
            ledger.listener = None
    ledger.check()
    return optimized
