"""lib/scoring/evaluate.py directly: scoring with the embedded model (one thread and several), failed examples
against a real failing server, the paired bootstrap CI, `improvement` (zero baseline, failed pairs),
and the progress display off a terminal."""
from __future__ import annotations

import io
import json

import dspy
import pytest

from helpers import Loopback, completion, error
from lib.models import ledger as LG
from lib.models import lm as L
from lib.models import settings as S
from lib.program.agent import Agent, CompactJSONAdapter
from lib.core.errors import UserError
from lib.scoring.evaluate import Failed, attempt, evaluate, improvement, paired_bootstrap_ci, summarize
from lib.scoring.metric import Metric
from lib.program.runtime import Progress

METRIC = Metric({"tool_validity": 3, "plan_coherence": 2, "first_action": 2, "reasoning_quality": 1, "efficiency": 1})


def row(i: int, task: str, action: dict, plan: list[str]) -> dict:
    return {
        "id": f"s{i}/t0/s0",
        "inputs": {"task": task, "context": "working directory: /home/u/app\nfiles: src/app.py, tests/test_app.py",
                   "history": "", "tools": "read, edit, bash, grep", "steps_so_far": ""},
        "outputs": {"plan": json.dumps(plan), "next_action": json.dumps(action)},
        "gold": {"next_action": action, "plan": plan, "response": "", "scores": {}},
    }


ROWS = [
    row(0, "Read src/app.py and explain it", {"tool": "read", "args": {"filePath": "src/app.py"}}, ["read"]),
    row(1, "Run the tests", {"tool": "bash", "args": {"command": "pytest -q", "description": "Run tests"}},
        ["bash"]),
    row(2, "Find where main is defined", {"tool": "grep", "args": {"pattern": "def main"}}, ["grep", "read"]),
]


@pytest.fixture
def project_cache(tmp_path):
    before = dspy.cache
    S.configure_cache(tmp_path)
    yield tmp_path
    dspy.cache = before


def server_cfg(url: str, **over) -> dict:
    return {"provider": "openai-compatible", "model": "smollm2", "api_base": url, "api_key_env": None,
            "temperature": 0.0, "max_tokens": 32, "timeout": 5, "num_retries": 0, **over}


# ---------------------------------------------------------------- the embedded model, threads

@pytest.mark.timeout(300)
def test_evaluate_embedded_model_one_thread_and_several_agree(smollm_path, project_cache):
    ledger = LG.Ledger()
    lm = L.make_lm("student", {"provider": "local", "model": "smollm2-135m", "api_base": None, "api_key_env": None,
                               "temperature": 0.0, "max_tokens": 16, "timeout": 60, "num_retries": 0}, ledger)
    with dspy.context(lm=lm, adapter=CompactJSONAdapter()):
        one = evaluate(Agent(), ROWS, METRIC, 1, "one", ledger)
        several = evaluate(Agent(), ROWS, METRIC, 3, "several", ledger)
    assert [r["id"] for r in one.per_example] == [r["id"] for r in ROWS]  # order kept
    assert several.per_example == one.per_example  # the threaded run gives the same records, in order
    assert one.n == 3 and one.failed == 0 and 0 <= one.score <= 1
    assert one.score == pytest.approx(sum(r["score"] for r in one.per_example) / 3)
    for name, value in one.components.items():
        values = [r["components"][name] for r in one.per_example if r["components"].get(name) is not None]
        assert value == pytest.approx(sum(values) / len(values))
    used = ledger.summary()["lm_usage"]["student"]
    assert used["calls"] == 3 and used["cache_hits"] == 3  # the second pass is served from the cache


def test_empty_split_is_a_user_error():
    with pytest.raises(UserError, match="split is empty"):
        evaluate(Agent(), [], METRIC)


# ---------------------------------------------------------------- failed examples (a real failing server)

def test_failed_example_is_left_out_and_counted(project_cache):
    server = Loopback(lambda i: error(500) if i == 1 else completion())
    try:
        ledger = LG.Ledger(max_failed_calls=1)
        with dspy.context(lm=L.make_lm("student", server_cfg(server.url), ledger), adapter=CompactJSONAdapter()):
            result = evaluate(Agent(), ROWS, METRIC, 1, "eval", ledger)
    finally:
        server.close()
    assert result.failed == 1 and result.n == 2
    failed = result.per_example[1]
    assert failed["failed"] == "server error" and failed["score"] is None and failed["components"] == {}
    answered = [r["score"] for r in result.per_example if r["failed"] is None]
    assert result.score == pytest.approx(sum(answered) / 2)
    assert ledger.failures() == 1


def test_failure_beyond_the_limit_stops_with_the_fix(project_cache):
    server = Loopback(lambda i: error(500))
    try:
        ledger = LG.Ledger(max_failed_calls=0)
        with dspy.context(lm=L.make_lm("student", server_cfg(server.url), ledger), adapter=CompactJSONAdapter()):
            with pytest.raises(LG.TooManyFailures) as err:
                evaluate(Agent(), ROWS, METRIC, 1, "eval", ledger)
            # The stage is failing: later calls are refused at once, without reaching the server.
            with pytest.raises(LG.TooManyFailures):
                attempt(lambda: Agent()(**ROWS[2]["inputs"]))
    finally:
        server.close()
    message = str(err.value)
    assert server.url in message and "server error" in message and "max_failed_calls = 0" in message
    assert server.posts == 1
    with pytest.raises(LG.TooManyFailures):
        ledger.check()


def test_attempt_returns_failed_within_the_limit(project_cache):
    server = Loopback(lambda i: error(429, {"Retry-After": "0"}))
    try:
        ledger = LG.Ledger(max_failed_calls=2)
        lm = L.make_lm("student", server_cfg(server.url), ledger)
        out = attempt(lambda: lm(messages=[{"role": "user", "content": "hi"}]))
    finally:
        server.close()
    assert isinstance(out, Failed) and out.kind == "rate limit" and "HTTP 429" in out.message
    ledger.check()  # one failure of two allowed: the run goes on


def test_all_failed_is_an_error_not_a_score():
    records = [{"id": "a", "score": None, "components": {}, "parsed": False, "failed": "timeout"}]
    with pytest.raises(UserError, match="no example was answered"):
        summarize(records)


# ---------------------------------------------------------------- paired bootstrap CI, improvement

def test_paired_bootstrap_ci():
    assert paired_bootstrap_ci([0.2, 0.4, 0.6], [0.2, 0.4, 0.6]) == (0.0, 0.0)
    assert paired_bootstrap_ci([0.1, 0.2, 0.3], [0.6, 0.7, 0.8]) == pytest.approx((0.5, 0.5))
    before, after = [0.0, 0.5, 0.2, 0.9, 0.4, 0.1], [0.3, 0.4, 0.6, 0.9, 0.8, 0.0]
    lo, hi = paired_bootstrap_ci(before, after)
    mean = sum(a - b for a, b in zip(after, before)) / len(before)
    assert lo <= mean <= hi and lo < hi
    assert min(a - b for a, b in zip(after, before)) <= lo and hi <= max(a - b for a, b in zip(after, before))
    assert paired_bootstrap_ci(before, after) == (lo, hi)  # seeded: the same on every run
    with pytest.raises(ValueError):
        paired_bootstrap_ci([0.1], [0.1, 0.2])


def records(scores: dict[str, float | None]) -> list[dict]:
    return [{"id": i, "score": s, "failed": None if s is not None else "timeout"} for i, s in scores.items()]


def test_improvement_with_a_zero_baseline_has_no_relative_gain():
    out = improvement(records({"a": 0.0, "b": 0.0}), records({"a": 0.5, "b": 0.25}))
    assert out["baseline_score"] == 0 and out["improvement"]["absolute"] == pytest.approx(0.375)
    assert out["improvement"]["relative"] is None and out["paired"] == 2
    lo, hi = out["ci95"]
    assert 0.25 <= lo <= hi <= 0.5


def test_improvement_pairs_only_examples_answered_in_both():
    out = improvement(records({"a": 0.2, "b": None, "c": 0.4}), records({"a": 0.6, "b": 1.0, "c": None}))
    assert out["paired"] == 1 and out["baseline_score"] == pytest.approx(0.2)
    assert out["improvement"] == {"absolute": pytest.approx(0.4), "relative": pytest.approx(2.0)}
    with pytest.raises(UserError, match="different test examples"):
        improvement(records({"a": 0.2}), records({"b": 0.2}))
    with pytest.raises(UserError, match="answered in both"):
        improvement(records({"a": None}), records({"a": 0.3}))


# ---------------------------------------------------------------- progress off a terminal

def test_progress_prints_plain_lines_every_n_items():
    out = io.StringIO()
    ledger = LG.Ledger()
    with Progress("eval", 25, ledger, every=10, out=out) as progress:
        for _ in range(25):
            progress.update()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # the start, after 10 and 20 items, and the end (once)
    assert len(lines) == 4 and lines[0].startswith("eval:") and "25/25" in lines[-1]
    assert "0 calls, 0 cached, 0 tokens" in lines[-1]
