"""The metric: each component's property, the composite, bootstrapping mode, feedback, GEPA form."""
from __future__ import annotations

import inspect
import json
import os
import random

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for LiteLLM's cost map

import dspy  # noqa: E402
import pytest  # noqa: E402

from lib.program.agent import to_example  # noqa: E402
from lib.scoring.metric import COMPONENTS, Metric, arg_similarity, components, composite, lcs_length  # noqa: E402
from lib.tools.facts import DEFAULT_TOOLS  # noqa: E402

WEIGHTS = {"tool_validity": 3, "plan_coherence": 2, "first_action": 2, "reasoning_quality": 1, "efficiency": 1}
TOOLS = list(DEFAULT_TOOLS)
TASK = "Fix the failing login test in the auth module"
FILES = ["src/auth.py", "src/models.py", "src/views.py", "tests/test_auth.py", "README.md", "setup.py"]
CONTEXT = "working directory: /home/u/app\nproject type: python\nfiles: " + ", ".join(FILES)
GOLD_ACTION = {"tool": "read", "args": {"filePath": "/home/u/app/src/auth.py"}}
GOLD_PLAN = ["read", "edit", "bash"]
GOOD_REASONING = "Read src/auth.py to see why the login test fails."


def example(gold: dict | None = None, **over) -> dspy.Example:
    gold = {"next_action": GOLD_ACTION, "plan": GOLD_PLAN, "response": "", "scores": {}} if gold is None else gold
    row = {"inputs": {"task": TASK, "context": CONTEXT, "history": "", "tools": ", ".join(TOOLS),
                      "steps_so_far": "", **over},
           "outputs": {}, "gold": gold}
    return to_example(row)


def pred(action: dict | str | None = None, plan: list | str | None = None,
         reasoning: str = GOOD_REASONING) -> dspy.Prediction:
    action = {"tool": "read", "args": {"filePath": "src/auth.py"}} if action is None else action
    plan = GOLD_PLAN if plan is None else plan
    return dspy.Prediction(reasoning=reasoning, plan=plan if isinstance(plan, str) else json.dumps(plan),
                           next_action=action if isinstance(action, str) else json.dumps(action))


def comp(p: dspy.Prediction, gold: dict | None = None) -> dict:
    ex = example(gold)
    return components(ex.gold, p, TOOLS, task=TASK, context=CONTEXT)


METRIC = Metric(WEIGHTS)


def test_perfect_prediction_scores_one() -> None:
    assert comp(pred()) == {k: 1.0 for k in COMPONENTS}
    assert METRIC(example(), pred()) == pytest.approx(1.0)


# --- tool names are exact, never substrings ---------------------------------------------------

def test_substring_tool_names_do_not_match() -> None:
    assert lcs_length(["read"], ["already"]) == 0
    scores = comp(pred(action={"tool": "readfile", "args": {"filePath": "src/auth.py"}},
                       plan=["already", "reading", "edits"]))
    assert scores["plan_coherence"] == 0.0
    assert scores["tool_validity"] == 0.0  # "readfile" is not an offered tool
    assert scores["first_action"] == 0.0


def test_internal_invalid_tool_is_never_valid() -> None:
    ex = example(tools="read, edit, invalid")
    p = pred(action={"tool": "invalid", "args": {"tool": "x", "error": "bad"}})
    assert components(ex.gold, p, ["read", "edit", "invalid"])["tool_validity"] == 0.0


def test_tool_validity_requires_camel_case_required_args() -> None:
    assert comp(pred())["tool_validity"] == 1.0
    snake = comp(pred(action={"tool": "read", "args": {"file_path": "src/auth.py"}}))["tool_validity"]
    assert snake < 1.0
    partial = comp(pred(action={"tool": "edit", "args": {"filePath": "a.py", "oldString": "x"}}))["tool_validity"]
    full = comp(pred(action={"tool": "edit", "args": {"filePath": "a.py", "oldString": "x", "newString": ""}}))
    assert snake < partial < full["tool_validity"] == 1.0
    # Tools seen in the data (MCP, custom) are valid when offered, with any args object.
    assert components({}, pred(action={"tool": "mymcp_query", "args": {}}), ["read", "mymcp_query"])[
        "tool_validity"] == 1.0


# --- plan -------------------------------------------------------------------------------------

def test_listing_every_tool_scores_low_on_plan_coherence() -> None:
    everything = list(dict.fromkeys(GOLD_PLAN + TOOLS))
    scores = comp(pred(plan=everything))
    assert scores["plan_coherence"] < 0.5
    assert scores["efficiency"] == pytest.approx(len(GOLD_PLAN) / len(everything))
    assert METRIC(example(), pred(plan=everything)) < METRIC(example(), pred())


def test_plan_order_and_missing_tools_count() -> None:
    assert comp(pred(plan=["bash", "edit", "read"]))["plan_coherence"] < 0.5
    assert comp(pred(plan=["read", "edit"]))["plan_coherence"] == pytest.approx(0.8)
    assert comp(pred(plan=["read", "edit"]))["efficiency"] == 1.0  # shorter than needed: coherence pays for it
    assert comp(pred(plan=[]))["plan_coherence"] == 0.0 and comp(pred(plan=[]))["efficiency"] == 0.0
    assert comp(pred(plan="read then edit"))["plan_coherence"] == 0.0


# --- first action: the arguments matter -------------------------------------------------------

def test_wrong_file_path_lowers_first_action() -> None:
    right = comp(pred())["first_action"]
    wrong = comp(pred(action={"tool": "read", "args": {"filePath": "src/views.py"}}))["first_action"]
    other_tool = comp(pred(action={"tool": "bash", "args": {"command": "cat src/auth.py", "description": "x"}}))
    assert right == 1.0 and 0 < wrong < right
    assert other_tool["first_action"] == 0.0


@pytest.mark.parametrize("path", ["src/auth.py", "./src/auth.py", "/home/u/app/src/auth.py", "src//auth.py",
                                  "src/../src/auth.py"])
def test_equivalent_paths_agree(path: str) -> None:
    assert arg_similarity("filePath", "/home/u/app/src/auth.py", path, "/home/u/app") == 1.0
    assert arg_similarity("filePath", "src/auth.py", path, "") == 1.0


def test_argument_kinds() -> None:
    assert arg_similarity("filePath", "src/auth.py", "/elsewhere/auth.py", "/home/u/app") == 0.0
    assert arg_similarity("command", "pytest -q tests", "pytest -q tests") == 1.0
    assert 0 < arg_similarity("command", "pytest -q tests", "pytest tests") < 1
    assert arg_similarity("command", "pytest -q", "rm -rf build") == 0.0
    assert arg_similarity("pattern", "def main", "def main") == 1.0
    assert arg_similarity("pattern", "def main", "main") == 0.0
    assert arg_similarity("url", "https://docs.python.org/3/", "https://docs.python.org/3") == 1.0
    assert arg_similarity("command", "npm run build && npm te…", "npm run build && npm test") == 1.0
    patch = "*** Begin Patch\n*** Update File: src/auth.py\n@@\n-a\n+b\n*** End Patch"
    assert arg_similarity("patchText", patch, patch.replace("-a\n+b", "-x\n+y"), "") == 1.0
    assert arg_similarity("patchText", patch, patch.replace("src/auth.py", "src/views.py"), "") == 0.0
    # An omitted path means the working directory.
    assert arg_similarity("path", None, ".", "/home/u/app") == 1.0


def test_grep_compares_pattern_and_scope() -> None:
    gold = {"next_action": {"tool": "grep", "args": {"pattern": "def login", "include": "*.py"}}, "plan": ["grep"]}
    same = comp(pred(action={"tool": "grep", "args": {"pattern": "def login", "include": "*.py"}}, plan=["grep"]),
                gold)
    other = comp(pred(action={"tool": "grep", "args": {"pattern": "login", "path": "src"}}, plan=["grep"]), gold)
    assert same["first_action"] == 1.0 and other["first_action"] == 0.5


# --- missing ground truth ---------------------------------------------------------------------

def test_missing_ground_truth_drops_the_component() -> None:
    gold = {"next_action": GOLD_ACTION, "plan": None, "response": "", "scores": {}}
    p = pred(plan=["read", "write", "grep", "glob", "bash"])
    scores = comp(p, gold)
    assert scores["plan_coherence"] is None and scores["efficiency"] is None
    known = {k: v for k, v in scores.items() if v is not None}
    expected = sum(WEIGHTS[k] * v for k, v in known.items()) / sum(WEIGHTS[k] for k in known)
    got = METRIC(example(gold), p)
    assert got == pytest.approx(expected)
    neutral = {**scores, "plan_coherence": 0.5, "efficiency": 0.5}
    assert got != pytest.approx(composite(neutral, WEIGHTS))
    no_action = comp(pred(), {"plan": GOLD_PLAN})
    assert no_action["first_action"] is None and no_action["plan_coherence"] == 1.0


# --- empty and unparseable predictions --------------------------------------------------------

@pytest.mark.parametrize("p", [
    dspy.Prediction(reasoning="", plan="", next_action=""),
    dspy.Prediction(),
    dspy.Prediction(reasoning=GOOD_REASONING, plan=json.dumps(GOLD_PLAN), next_action="read src/auth.py"),
    dspy.Prediction(reasoning=GOOD_REASONING, plan=json.dumps(GOLD_PLAN), next_action='{"tool": "read"}'),
    None,
])
def test_empty_or_unparseable_prediction_scores_zero(p) -> None:
    assert METRIC(example(), p) == 0.0
    assert all(v == 0.0 for v in comp(p).values())
    assert METRIC(example(), p, trace=[]) is False


def test_bootstrapping_mode_returns_a_bool() -> None:
    good, weak = pred(), pred(action={"tool": "bash", "args": {"command": "ls", "description": "List"}},
                              plan=["bash"], reasoning="")
    assert METRIC(example(), good, trace=[]) is True
    assert METRIC(example(), weak, trace=[]) is False
    assert Metric(WEIGHTS, threshold=1.0)(example(), pred(plan=["read", "edit"]), trace=[]) is False
    # Even a high score with the wrong tool is no demo: it would teach the wrong habit.
    wrong_tool = pred(action={"tool": "grep", "args": {"pattern": "login"}}, reasoning="Search for login in auth.")
    assert METRIC(example(), wrong_tool) > 0.5 and METRIC(example(), wrong_tool, trace=[]) is False
    assert isinstance(METRIC(example(), good), float)


# --- reasoning cannot be gamed ----------------------------------------------------------------

def rq(reasoning: str, action: dict | None = None) -> float:
    return comp(pred(reasoning=reasoning, action=action))["reasoning_quality"]


def test_reasoning_rewards_justifying_this_action_for_this_task() -> None:
    good = rq(GOOD_REASONING)
    assert good == 1.0
    assert rq("") == 0.0 and rq("the and of to") == 0.0
    assert rq("I will read a file.") < good  # purpose only, no target, no task
    assert rq("Read src/auth.py first.") < good  # target, no task link
    assert rq("Bananas are yellow and tasty fruit.") == 0.0
    # The reasoning is judged against the action it comes with.
    assert rq(GOOD_REASONING, action={"tool": "bash", "args": {"command": "ls docs", "description": "List"}}) < good


def test_echoing_the_file_list_does_not_raise_reasoning_quality() -> None:
    echo = "Files: " + ", ".join(FILES)
    for base in (GOOD_REASONING, "Read src/auth.py first.", "I will read a file.", ""):
        assert rq((base + " " + echo).strip()) <= rq(base)
    assert rq(echo) == 0.0  # the target file is in the list, but listing is no justification
    assert rq(CONTEXT) == 0.0


def test_padding_does_not_raise_reasoning_quality() -> None:
    for base in (GOOD_REASONING, "Read src/auth.py first.", "I will read a file."):
        assert rq((base + " ") * 20) == rq(base)  # repetition changes nothing
        assert rq(base + " " + "the " * 300) == rq(base)  # filler words change nothing
        padded = base + " This is a careful, thorough, considered, deliberate and important decision overall."
        assert rq(padded) <= rq(base)


# --- weights, bounds, feedback, GEPA ----------------------------------------------------------

def test_weights_change_the_composite_and_zero_weights_skip() -> None:
    p = pred(action={"tool": "read", "args": {"filePath": "src/views.py"}}, reasoning="")
    a = Metric(WEIGHTS)(example(), p)
    b = Metric({**WEIGHTS, "first_action": 10})(example(), p)
    assert a != pytest.approx(b)
    no_reasoning = Metric({**WEIGHTS, "reasoning_quality": 0})
    assert "reasoning_quality" not in no_reasoning.components(example(), p)
    assert no_reasoning.combine(no_reasoning.components(example(), p)) == no_reasoning(example(), p)
    assert no_reasoning(example(), p) > a  # the empty reasoning no longer counts against it
    assert Metric({"first_action": 1})(example(), p) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        Metric({k: 0 for k in WEIGHTS})
    with pytest.raises(ValueError):
        Metric({**WEIGHTS, "efficiency": -1})


def test_scores_stay_in_unit_interval() -> None:
    rng = random.Random(7)
    names = TOOLS + ["already", "mymcp_x", "invalid", ""]
    words = "read auth login test fails src/auth.py README.md the fix edit run pytest banana".split()
    args_pool = [{}, {"filePath": "src/auth.py"}, {"filePath": 3}, {"command": "pytest -q"}, {"pattern": "x"},
                 {"file_path": "a"}, {"todos": [{"content": "fix login"}]}, {"path": None}]
    for _ in range(300):
        action = rng.choice([{"tool": rng.choice(names), "args": rng.choice(args_pool)}, "garbage", "", None])
        plan = rng.choice([[rng.choice(names) for _ in range(rng.randint(0, 12))], "nope", []])
        reasoning = " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
        gold = rng.choice([None, {"plan": GOLD_PLAN}, {"next_action": GOLD_ACTION}, {}])
        p = dspy.Prediction(reasoning=reasoning, plan=plan if isinstance(plan, str) else json.dumps(plan),
                            next_action=json.dumps(action) if isinstance(action, dict) else action)
        for v in comp(p, gold).values():
            assert v is None or 0.0 <= v <= 1.0
        assert 0.0 <= METRIC(example(gold), p) <= 1.0


def test_feedback_says_what_was_wrong() -> None:
    p = pred(action={"tool": "read", "args": {"filePath": "src/views.py"}}, plan=TOOLS, reasoning="")
    text = METRIC.feedback(example(), p)
    assert "src/views.py" in text and "auth.py" in text  # the wrong argument and the expected one
    assert "unneeded" in text and "reasoning is empty" in text
    broken = METRIC.feedback(example(), dspy.Prediction(next_action="I would read the file"))
    assert broken.startswith("Score 0.00") and "not a JSON object" in broken
    assert "right" in METRIC.feedback(example(), pred())


def test_gepa_form_returns_score_and_feedback() -> None:
    inspect.signature(METRIC.gepa).bind(None, None, None, None, None)  # what GEPA checks
    p = pred(plan=["read"])
    out = METRIC.gepa(example(), p, trace=[], pred_name="predict", pred_trace=[])
    assert isinstance(out, dspy.Prediction)
    assert isinstance(out.score, float) and out.score == pytest.approx(METRIC(example(), p))
    assert "missing" in out.feedback


def test_example_without_gold_falls_back_to_its_outputs() -> None:
    ex = dspy.Example(task=TASK, context=CONTEXT, history="", tools=", ".join(TOOLS), steps_so_far="",
                      plan=json.dumps(GOLD_PLAN), next_action=json.dumps(GOLD_ACTION)).with_inputs("task")
    assert METRIC(ex, pred()) == pytest.approx(1.0)


# --- tool facts: one source with replay ------------------------------------------------------------

def test_required_arguments_are_opencodes_schema() -> None:
    from lib.tools import shape
    from lib.tools.facts import KEY_ARGS, OLDER_REQUIRED_ARGS, required_args

    for tool in shape.data()["tools"]:
        params = tool["function"]["parameters"]
        name = tool["function"]["name"]
        assert list(required_args()[name]) == params.get("required", [])
        assert set(KEY_ARGS[name]) <= set(params["properties"]), name  # a key argument is a real one
    assert not set(OLDER_REQUIRED_ARGS) & set(shape.tool_names())  # the recorded schema is the only source


def test_a_call_valid_in_replay_is_valid_offline() -> None:
    """OpenCode 1.18.33's bash has command, timeout and workdir: a call without a description is valid."""
    from lib.tools import shape

    call = {"tool": "bash", "args": {"command": "pytest -q"}}
    assert shape.validate_call("bash", call["args"]) == []
    assert comp(pred(action=call))["tool_validity"] == 1.0
    missing = {"tool": "edit", "args": {"filePath": "src/auth.py"}}
    assert shape.validate_call("edit", missing["args"]) and comp(pred(action=missing))["tool_validity"] < 1.0
