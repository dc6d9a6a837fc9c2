"""A user's own metric (`optimization.metric: module:function`): checked in validate, used for selection,
reported beside the built-in composite; the model stages run it against the real embedded model."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import dspy
import pytest
import yaml

from helpers import PYTHON, env, make_project, run_data_stages, run_stage
from lib.config import custom_metric
from lib.core.errors import UserError
from lib.scoring.metric import CUSTOM, Metric
from test_metric import WEIGHTS, example, pred

pytestmark = pytest.mark.timeout(1800)  # the real-model test, on 2 shared cores

# The metric a user would write: the right tool scores 1. It logs each call so the test can see who
# called it (trace is set while an optimizer bootstraps demos, i.e. while it selects).
USER_MODULE = textwrap.dedent('''
    import json, os

    def tool_match(example, prediction, trace=None):
        try:
            tool = json.loads(prediction.next_action).get("tool")
        except Exception:
            tool = None
        with open(os.path.join(os.path.dirname(__file__), "calls.log"), "a") as fh:
            fh.write(("trace" if trace is not None else "plain") + "\\n")
        return float(tool == example.gold["next_action"]["tool"])

    def with_feedback(example, prediction, trace=None):
        return {"score": 0.25, "feedback": "use the read tool first"}

    def too_big(example, prediction, trace=None):
        return 3

    def two_args(example, prediction):
        return 1.0

    THRESHOLD = 0.5
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "team_metrics.py").write_text(USER_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "team_metrics"
    sys.modules.pop("team_metrics", None)


def test_custom_metric_selects_and_is_reported_beside_the_composite(user_module):
    builtin = Metric(WEIGHTS)
    mine = Metric(WEIGHTS, custom=f"{user_module}:tool_match")
    right = pred(plan=["read", "edit"])
    wrong = pred(action={"tool": "glob", "args": {"pattern": "*.py"}})
    assert mine(example(), right) == 1.0 and mine(example(), wrong) == 0.0
    assert mine(example(), right, trace=[]) is True and mine(example(), wrong, trace=[]) is False
    parts = mine.components(example(), wrong)
    assert parts[CUSTOM] == 0.0
    # The composite is the built-in one, unchanged by the custom score beside it.
    assert mine.combine(parts) == pytest.approx(builtin(example(), wrong)) and builtin(example(), wrong) > 0
    assert set(parts) - {CUSTOM} == set(builtin.components(example(), wrong))


def test_custom_feedback_goes_to_gepa(user_module):
    got = Metric(WEIGHTS, custom=f"{user_module}:with_feedback").gepa(example(), pred(), None, None, None)
    assert isinstance(got, dspy.Prediction) and got.score == 0.25 and got.feedback == "use the read tool first"
    plain = Metric(WEIGHTS, custom=f"{user_module}:tool_match").gepa(example(), pred(), None, None, None)
    assert plain.score == 1.0 and plain.feedback.startswith("Score ")  # built-in explanation as feedback


def test_a_score_outside_0_1_is_an_error_naming_the_metric(user_module):
    with pytest.raises(UserError, match=r"optimization.metric: team_metrics:too_big returned 3; a metric must "
                                        r"return a number from 0 to 1"):
        Metric(WEIGHTS, custom=f"{user_module}:too_big")(example(), pred())


@pytest.mark.parametrize("spec, says", [
    ("team_metrics", "is not `module:function`"),
    ("nowhere_metrics:fn", "no module 'nowhere_metrics'; put nowhere_metrics.py in the project root"),
    ("team_metrics:nothing", "module 'team_metrics' has no 'nothing' (it defines too_big, tool_match, two_args, "
                             "with_feedback)"),
    ("team_metrics:THRESHOLD", "is a float, not a function"),
    ("team_metrics:two_args", "team_metrics:two_args(example, prediction) cannot be called as DSPy calls a "
                              "metric, fn(example, prediction, trace); define it as "
                              "`def my_metric(example, prediction, trace=None) -> float`"),
])
def test_wrong_names_and_signatures_say_the_fix(user_module, spec, says):
    with pytest.raises(UserError) as err:
        custom_metric.load(spec)
    assert says in str(err.value)
    assert custom_metric.problem(spec) == str(err.value)


def test_the_metric_needs_offline_selection(user_module):
    from lib.config import params as P
    with pytest.raises(UserError, match="set select_on: offline to select with your metric"):
        P.load(overrides={"optimization.metric": f"{user_module}:tool_match", "optimization.select_on": "replay"})
    P.load(overrides={"optimization.metric": f"{user_module}:tool_match", "optimization.select_on": "offline"})


def test_validate_fails_on_a_wrong_metric_with_the_fix(tmp_path):
    override = tmp_path / "o.yaml"
    override.write_text(yaml.safe_dump({"optimization": {"metric": "my_metrics:tool_match"}}), encoding="utf-8")
    done = subprocess.run([PYTHON, "-m", "lib.cli", "validate", "--params", str(override)], capture_output=True,
                          text=True, env=env(), timeout=300)
    assert done.returncode == 1, done.stdout
    assert ("optimization.metric: no module 'my_metrics'; put my_metrics.py in the project root or install "
            "the package that provides it") in done.stdout


def test_stages_use_the_metric_with_the_real_model(tmp_path):
    # One test session at turn granularity: two test examples, so a handful of model calls in all.
    project = make_project(tmp_path, train_split=0.92, val_split=0.05, test_split=0.03, max_field_chars=200,
                           max_history_messages=2, granularity="turn", min_examples=1)
    (project / "team_metrics.py").write_text(USER_MODULE, encoding="utf-8")
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params["models"]["student"]["max_tokens"] = 48
    params["models"]["teacher"]["max_tokens"] = 48
    params["optimization"].update(metric="team_metrics:tool_match", select_on="offline", optimizer="bootstrap",
                                  max_train_examples=1,
                                  max_val_examples=2)
    params["optimization"]["bootstrap"].update(max_bootstrapped_demos=1, max_labeled_demos=1)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    run_data_stages(project)

    for stage in ("baseline", "optimize"):
        done = run_stage(project, stage)
        assert done.returncode == 0, done.stderr
    base = json.loads((project / "metrics/baseline.json").read_text())
    rows = json.loads((project / "metrics/baseline_examples.json").read_text())
    for row in rows:
        assert row["components"][CUSTOM] == float(row["predicted_tool"] == row["gold_tool"])
    assert base["components"][CUSTOM] == pytest.approx(sum(r["components"][CUSTOM] for r in rows) / len(rows))
    assert base["score"] == pytest.approx(sum(r["score"] for r in rows) / len(rows))
    opt = json.loads((project / "metrics/optimized.json").read_text())
    opt_rows = json.loads((project / "metrics/optimized_examples.json").read_text())
    for row in opt_rows:
        assert row["components"][CUSTOM] == float(row["predicted_tool"] == row["gold_tool"])
    assert opt["components"][CUSTOM] == pytest.approx(sum(r["components"][CUSTOM] for r in opt_rows) / len(opt_rows))
    calls = (project / "calls.log").read_text().split()
    assert "trace" in calls, "the optimizer did not consult the user's metric while selecting demos"
