"""Every optimizer, once, on the embedded model, through lib.optimize.optimizers.optimize as the optimize stage
calls it: real teacher and student calls, a tiny budget (2 train / 2 val examples, smallest settings).

Each run checks that the optimizer ran with the teacher where it has one, that no call failed, and that
what it learned (instructions, demos) survives program.save -> load, the way the export stage reads it.
"""
from __future__ import annotations

import hashlib
import json
import re

import dspy
import pytest

from helpers import Loopback, completion, make_project, read_jsonl, run_data_stages, shipped_params, tool_completion
from lib.models import ledger as LG
from lib.models import lm as L
from lib.models import settings as S
from lib.program.agent import Agent, CompactJSONAdapter, to_example
from lib.scoring.metric import Metric
from lib.optimize.optimizers import OPTIMIZERS, optimize
from lib.config.params import ParamsError, validate
from lib.program.runtime import save_program
from lib.tools import shape

pytestmark = pytest.mark.timeout(900)

METRIC = Metric({"tool_validity": 3, "plan_coherence": 2, "first_action": 2, "reasoning_quality": 1, "efficiency": 1})
# The smallest settings the params schema accepts that still exercise each optimizer's search.
TINY = {
    "labeled": {"k": 2},
    "bootstrap": {"max_bootstrapped_demos": 1, "max_labeled_demos": 1, "max_rounds": 1},
    "bootstrap_rs": {"max_bootstrapped_demos": 1, "max_labeled_demos": 1, "num_candidate_programs": 1},
    "mipro": {"auto": None, "max_bootstrapped_demos": 1, "max_labeled_demos": 1, "num_candidates": 2,
              "num_trials": 2},
    "copro": {"depth": 1, "breadth": 2, "init_temperature": 1.0},
    "simba": {"bsize": 2, "num_candidates": 2, "max_steps": 1},
    "gepa": {"auto": "light", "max_metric_calls": 6, "reflection_minibatch_size": 1},
    "knn": {"k": [1, 2], "fields": [["task"]], "fixed": [0]},
}
# SIMBA asks its prompt model only when a mini-batch's scores differ; at this size they may not.
USES_TEACHER = {"bootstrap", "bootstrap_rs", "mipro", "copro", "gepa"}


def local(temperature: float, max_tokens: int) -> dict:
    return {"provider": "local", "model": "smollm2-135m", "api_base": None, "api_key_env": None,
            "temperature": temperature, "max_tokens": max_tokens, "timeout": 60, "num_retries": 0}


def served(url: str, max_tokens: int) -> dict:
    """A model behind a (scripted) OpenAI-compatible server."""
    return {"provider": "openai-compatible", "model": "smollm2", "api_base": url, "api_key_env": None,
            "temperature": 0.0, "max_tokens": max_tokens, "timeout": 30, "num_retries": 0}


@pytest.fixture(scope="module")
def examples(tmp_path_factory, smollm_path):
    """2 train and 2 val examples with short inputs, from the sample sessions through the data stages."""
    project = make_project(tmp_path_factory.mktemp("optimizers"), max_field_chars=200, max_history_messages=1,
                           train_split=0.6, val_split=0.2, test_split=0.2)
    run_data_stages(project)

    def pick(split: str, n: int) -> list[dspy.Example]:
        rows = sorted(read_jsonl(project / "data" / "splits" / f"{split}.jsonl"),
                      key=lambda r: (len(json.dumps(r["inputs"])), r["id"]))
        return [to_example(r) for r in rows[:n]]

    return pick("train", 2), pick("val", 2)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One model cache for the module, as for a stage re-run with another optimizer: requests that
    coincide (the unoptimized program on val) are answered once."""
    return tmp_path_factory.mktemp("optimizers-cache")


def test_every_optimizer_has_a_tiny_setting_the_schema_accepts():
    assert set(TINY) == set(OPTIMIZERS)
    params = shipped_params()
    params["optimization"].update(TINY)
    validate(params)


@pytest.mark.parametrize("mipro, message", [
    ({"auto": None, "num_candidates": 2, "num_trials": None}, "auto is null, so set both num_candidates"),
    ({"auto": "light", "num_candidates": 2, "num_trials": None}, "auto: light sets the search size"),
])
def test_mipro_search_size_is_auto_or_both_numbers(mipro, message):
    params = shipped_params()
    params["optimization"]["mipro"].update(mipro)
    with pytest.raises(ParamsError, match=message):
        validate(params)


def _learned(candidate: dict) -> tuple[str, int]:
    """(instructions, number of demos) of a candidate an optimizer recorded in `candidate_programs`."""
    if "program" in candidate:
        (predictor,) = candidate["program"].predictors()
        return predictor.signature.instructions, len(predictor.demos)
    return str(candidate.get("instruction")), 0  # COPRO records the instruction text itself


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_runs_on_the_embedded_model(name, examples, shared_cache, tmp_path, capsys):
    train, val = examples
    before = dspy.cache
    S.configure_cache(shared_cache)
    try:
        ledger = LG.Ledger(max_calls=400)
        student = L.make_lm("student", local(0.0, 16), ledger)
        teacher = L.make_lm("teacher", local(0.7, 32), ledger)
        with dspy.context(lm=student, adapter=CompactJSONAdapter()):
            program = optimize(name, TINY[name], Agent(), train, val, METRIC, teacher, student,
                               num_threads=1, seed=0, ledger=ledger)
    finally:
        dspy.cache = before

    usage = ledger.summary()["lm_usage"]
    assert usage["total"]["failed_calls"] == 0
    if name in USES_TEACHER:
        teacher_used = usage.get("teacher", {})
        assert teacher_used.get("calls", 0) + teacher_used.get("cache_hits", 0) >= 1, usage
    (predictor,) = program.predictors()
    if name == "labeled":
        assert len(predictor.demos) == 2
    if name == "knn":  # chosen on val: the kept k has the best of the val scores it printed
        scores = {int(k): float(v) for k, v in
                  re.findall(r"knn: fixed=\d+ k=(\d+) fields=\S+: val score ([\d.]+)", capsys.readouterr().out)}
        assert set(scores) == {1, 2} and scores[program.k] == max(scores.values()), scores
    if name == "bootstrap":
        assert 1 <= len(predictor.demos) <= 2  # one bootstrapped at most, topped up with a labeled one
    if name in ("bootstrap_rs", "mipro"):  # the zero-shot program is one of the candidates selection may keep
        assert len(predictor.demos) <= 2  # one bootstrapped and one labeled at most
    if name in ("copro", "mipro"):  # it tried programs other than the one it was given (SIMBA does only
        # where a mini-batch's scores differ, which this size does not guarantee)
        start = Agent().predict
        tried = [_learned(c) for c in getattr(program, "candidate_programs", [])]
        assert any(t != (start.signature.instructions, 0) for t in tried), tried

    # What the optimizer learned is what a saved program holds.
    path = tmp_path / "program.json"
    save_program(program, str(path))
    loaded = Agent()
    loaded.load(str(path))
    (again,) = loaded.predictors()
    assert again.signature.instructions == predictor.signature.instructions
    assert len(again.demos) == len(predictor.demos)


# The optimizers that select with a metric; each must select on the replay score when select_on says so.
SELECTING = ("bootstrap_rs", "mipro", "copro", "simba", "gepa")


def _kept_is_best(name: str, program) -> None:
    """The program an optimizer returns is the best-scoring of the candidates it recorded."""
    if name == "gepa":
        results = program.detailed_results
        scores = results.val_aggregate_scores
        assert len(scores) >= 1 and scores[results.best_idx] == max(scores), scores
        return
    scores = [c["score"] for c in program.candidate_programs]
    assert scores and scores[0] == max(scores), scores
    if name in ("bootstrap_rs", "copro", "simba"):
        kept = program.candidate_programs[0]["program"]
        assert [p.signature.instructions for p in kept.predictors()] == \
            [p.signature.instructions for p in program.predictors()]
    if name == "mipro":
        assert program.score == max(scores)


_ANSWERS = (("read", {"filePath": "README.md"}), ("glob", {"pattern": "**/*.py"}),
            ("bash", {"command": "ls", "description": "List files"}))


def _replay_student(i: int, request: dict) -> tuple[int, dict, dict]:
    """A served student for OpenCode-shaped requests: one native tool call, chosen by the system prompt, so
    candidates that differ in instructions or demos get different calls and different replay scores."""
    if not request.get("tools"):
        return completion("{}")
    system = json.dumps(request["messages"][0]["content"])
    return tool_completion(*_ANSWERS[int(hashlib.sha256(system.encode()).hexdigest(), 16) % len(_ANSWERS)], i)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", SELECTING)
def test_the_default_selection_scores_candidates_as_opencode_sends_them(name, tmp_path, shared_cache, smollm_path):
    """The shipped select_on (replay), through compile_program as the stage calls it: every candidate is
    scored by the replay metric (the student gets OpenCode's request with its native tools), and the
    program kept is the best-scoring candidate. GEPA's reflection reads the replay metric's feedback.
    bootstrap_rs runs on the embedded student; the others on a served student scripted over real HTTP
    (each replayed request of the embedded one decodes ~4,000 tokens), with the embedded teacher."""
    from lib.optimize.compile import compile_program
    from lib.program.runtime import Runtime

    params = shipped_params()
    assert params["optimization"]["select_on"] == "replay"
    params["optimization"][name].update(TINY[name])
    # The embedded student's requests are a third shorter with four tools off (the scripted one's calls
    # are keyed to its system prompt, which that would change).
    off = ["task", "webfetch", "todowrite", "skill"] if name == "bootstrap_rs" else []
    params["export"]["disable_tools"] = off or "none"
    project = make_project(tmp_path, max_field_chars=200, max_history_messages=1)
    run_data_stages(project)

    def rows(split: str, n: int) -> list[dict]:
        return sorted(read_jsonl(project / "data" / "splits" / f"{split}.jsonl"),
                      key=lambda r: (len(json.dumps(r["inputs"])), r["id"]))[:n]

    server = None if name == "bootstrap_rs" else Loopback(lambda i: _replay_student(i, server.requests[i]))
    student_cfg = local(0.0, 48) if server is None else served(server.url, 48)
    params["models"]["student"] = student_cfg
    before = dspy.cache
    S.configure_cache(shared_cache if server is None else tmp_path / "cache")  # the server sees every request
    try:
        ledger = LG.Ledger(max_calls=400)
        student = L.make_lm("student", student_cfg, ledger)
        teacher = L.make_lm("teacher", local(0.7, 48), ledger)
        with dspy.context(lm=student, adapter=CompactJSONAdapter()):
            program = compile_program(params, Runtime(student, teacher, ledger), rows("train", 2), rows("val", 2),
                                      name=name)
    finally:
        dspy.cache = before
        if server is not None:
            server.close()
    assert ledger.summary()["lm_usage"]["total"]["failed_calls"] == 0
    _kept_is_best(name, program)
    replayed = ([h["kwargs"]["tools"] for h in student.history if h.get("kwargs", {}).get("tools")]
                if server is None else [r["tools"] for r in server.requests if r.get("tools")])
    assert replayed, "no request in OpenCode's shape reached the student during selection"
    assert {t["function"]["name"] for t in replayed[0]} == set(shape.tool_names()) - set(off)
    if name == "gepa":  # the teacher reflected on what the replay metric said went wrong
        asked = " ".join(json.dumps(h.get("messages") or h.get("prompt"), ensure_ascii=False)
                         for h in teacher.history)
        assert any(words in asked for words in ("The next call should use", "Make one valid tool call",
                                                "Right tool, but aim it at", "destructive")), asked[:2000]


ADVICE = "Before you edit a file, read it; name the file the task names."
PROPOSAL = "Choose the one tool call that moves the task forward; prefer reading the named file first."


def _scripted_teacher(i: int, request: dict, train: list = ()) -> tuple[int, dict, dict]:
    """A teacher that can do what each optimizer asks: run the agent right on a training example (the
    recorded answer), SIMBA's advice and GEPA's new instruction, each as the JSON object of output fields
    the adapter reads."""
    asked = json.dumps(request.get("messages"))
    gold = next((ex for ex in train if json.dumps(ex.task)[1:-1] in asked), None)
    if "keys reasoning, plan, next_action" in asked and gold is not None:
        text = json.dumps({"reasoning": "The task names this; do it first.", "plan": gold.plan,
                           "next_action": gold.next_action})
    elif "module_advice" in asked:
        text = json.dumps({"discussion": "The better run read the file first.", "module_advice": {"predict": ADVICE}})
    else:
        text = json.dumps({"new_instruction": PROPOSAL})
    return completion(text)


def _scripted_student(i: int, requests: list[dict]) -> tuple[int, dict, dict]:
    """A student whose answers to one question differ: the first time a valid call, the next time not
    (SIMBA samples each example more than once and learns from the difference)."""
    asked_before = sum(r["messages"] == requests[i]["messages"] for r in requests[:i])
    if asked_before % 2:
        return completion("I am not sure what to do.")
    action = json.dumps({"tool": "read", "args": {"filePath": "README.md"}})
    return completion(json.dumps({"reasoning": "Read the README first.", "plan": json.dumps(["read"]),
                                  "next_action": action}))


@pytest.mark.parametrize("name", ["bootstrap", "simba", "gepa"])
def test_optimizers_keep_what_a_capable_teacher_gives(name, examples, tmp_path):
    """Bootstrap keeps the teacher's right answers as demos. Where the student's scores differ, SIMBA asks
    the teacher for advice and GEPA for a new instruction (with the metric's feedback); both then run the
    student with that text in its instructions. The embedded teacher rarely passes the metric or writes a
    parseable proposal, so teacher and student are scripted here, over real HTTP."""
    train, val = examples
    servers: dict[str, Loopback] = {}
    servers["teacher"] = Loopback(lambda i: _scripted_teacher(i, servers["teacher"].requests[i], train))
    servers["student"] = Loopback(lambda i: _scripted_student(i, servers["student"].requests))
    before = dspy.cache
    S.configure_cache(tmp_path)
    try:
        ledger = LG.Ledger(max_calls=200)
        lms = {role: L.make_lm(role, served(s.url, 200), ledger) for role, s in servers.items()}
        with dspy.context(lm=lms["student"], adapter=CompactJSONAdapter()):
            program = optimize(name, TINY[name], Agent(), train, val, METRIC, lms["teacher"], lms["student"],
                               num_threads=1, seed=0, ledger=ledger)
        sent = [json.dumps(r["messages"]) for r in servers["student"].requests]
        asked = [json.dumps(r["messages"]) for r in servers["teacher"].requests]
    finally:
        dspy.cache = before
        for server in servers.values():
            server.close()
    assert asked, "the teacher was never asked"
    if name == "bootstrap":  # a demo the teacher made, with the recorded answer it gave
        made = [d for d in program.predict.demos if d.get("augmented")]
        assert made and all(d["next_action"] in {ex.next_action for ex in train} for d in made), \
            program.predict.demos
        return
    if name == "gepa":  # the reflection saw the metric's own feedback, not only a number
        assert any(re.search(r"Score \d\.\d\d \(tool_validity \d\.\d\d", a) for a in asked), asked[0][:2000]
    learned = json.dumps(ADVICE if name == "simba" else PROPOSAL)[1:-1]
    tried = [s for s in sent if learned in s]
    assert tried, f"no student request carried the {name} proposal"
    # Both choose on val: the student answered the val examples (SIMBA alone never sees them).
    for ex in val:
        assert any(json.dumps(ex.task)[1:-1] in s for s in sent), ex.task
