"""A failed model call is an error, never a score: real servers on loopback, real stages, no mocks.

The servers: llama.cpp killed mid-run; an HTTP server that lists its model but never answers a
completion (a stuck GPU or proxy); one that answers 500; one that answers 429 with Retry-After.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import dspy
import pytest
import yaml

from lib.models.server import free_port
from helpers import (CONTEXT_EXCEEDED, HANG, WEB_PAGE, Loopback, completion, error, make_project, read_jsonl,
                     run_data_stages, run_stage)
from lib.models import ledger as LG
from lib.models import lm as L
from lib.models import settings as S
from lib.program.agent import Agent, CompactJSONAdapter
from lib.core.errors import UserError
from lib.scoring.evaluate import evaluate
from lib.scoring.metric import Metric

pytestmark = pytest.mark.timeout(600)

OUTPUTS = ("metrics/baseline.json", "metrics/baseline_examples.json", "metrics/baseline_usage.json",
           "metrics/optimized.json", "metrics/optimized_examples.json", "metrics/optimized_usage.json",
           "outputs/program.json")


@pytest.fixture
def serve():
    servers = []

    def start(behaviour):
        servers.append(Loopback(behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def data_project(tmp_path_factory) -> Path:
    """Data stages run once; each test copies the result."""
    project = make_project(tmp_path_factory.mktemp("failures-data"), max_field_chars=300, max_history_messages=2)
    run_data_stages(project)
    return project


@pytest.fixture
def project(data_project, tmp_path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(data_project, dest, ignore=shutil.ignore_patterns(".cache", "__pycache__"))
    return dest


def use(project: Path, role_urls: dict[str, str], timeout: float = 1, num_retries: int = 1,
        **optimization) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    for role, url in role_urls.items():
        params["models"][role].update(provider="openai-compatible", model="smollm2", api_base=url, max_tokens=48,
                                      timeout=timeout, num_retries=num_retries)
    params["optimization"].update(optimization)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def written(project: Path) -> list[str]:
    return [name for name in OUTPUTS if (project / name).exists()]


def report(project: Path, name: str):
    return json.loads((project / "metrics" / name).read_text(encoding="utf-8"))


def n_test(project: Path) -> int:
    return len(read_jsonl(project / "data" / "splits" / "test.jsonl"))


# ---------------------------------------------------------------- the ledger's rules (pure logic)

def failing(kind: str = "timeout"):
    def call():
        raise LG.ModelCallFailed(f"models.student: {kind}", role="student", kind=kind)
    return call


def answered():
    return SimpleNamespace(cache_hit=False, usage={"prompt_tokens": 3, "completion_tokens": 2}, cost=0.0)


def test_ledger_allows_max_failed_calls_and_resets_the_run_of_failures_on_an_answer():
    ledger = LG.Ledger(max_failed_calls=3)
    for _ in range(2):
        with pytest.raises(LG.ModelCallFailed):
            ledger.run("student", failing(), lambda: None)
    ledger.run("student", answered, lambda: None)  # an answer ends the run of failures
    with pytest.raises(LG.ModelCallFailed):
        ledger.run("student", failing(), lambda: None)
    ledger.check()
    with pytest.raises(LG.TooManyFailures, match=r"4 failed model call\(s\); optimization.max_failed_calls = 3"):
        ledger.run("student", failing(), lambda: None)
    with pytest.raises(LG.TooManyFailures):  # stopped: nothing more is tried
        ledger.run("student", answered, lambda: None)
    assert ledger.failures() == 4 and ledger.totals()["failed"] == 4 and ledger.totals()["calls"] == 5


def test_ledger_stops_after_three_failures_in_a_row_and_inside_optimizers_at_the_first():
    ledger = LG.Ledger(max_failed_calls=100)
    for _ in range(2):
        with pytest.raises(LG.ModelCallFailed):
            ledger.run("student", failing(), lambda: None)
    with pytest.raises(LG.TooManyFailures, match="3 model calls in a row failed"):
        ledger.run("student", failing(), lambda: None)

    strict = LG.Ledger(max_failed_calls=100)
    with strict.strict():
        with pytest.raises(LG.TooManyFailures, match="during optimization stops the stage"):
            strict.run("teacher", failing("server error"), lambda: None)
    with pytest.raises(LG.TooManyFailures):
        strict.check()  # an optimizer that swallowed it cannot hide it


def test_other_errors_are_not_counted_as_model_failures():
    ledger = LG.Ledger()
    with pytest.raises(TypeError):
        ledger.run("student", lambda: (_ for _ in ()).throw(TypeError("bug")), lambda: None)
    ledger.check()
    assert ledger.failures() == 0


# ---------------------------------------------------------------- the stages fail, naming the fix

def test_hung_server_fails_the_stage_at_the_first_failed_call(project, serve):
    server = serve(lambda i: HANG)
    use(project, {"student": server.url})
    done = run_stage(project, "baseline")
    assert done.returncode == 1, done.stderr
    message = done.stderr
    for part in ("models.student", "openai-compatible", "smollm2", server.url, "timeout",
                 "models.student.timeout = 1", "optimization.max_failed_calls = 0"):
        assert part in message, (part, message)
    assert server.posts == 2  # the call and its one retry; no other example was tried
    assert written(project) == []


def test_three_failures_in_a_row_stop_the_stage(project, serve):
    server = serve(lambda i: HANG)
    use(project, {"student": server.url}, max_failed_calls=10)
    assert n_test(project) > 3
    done = run_stage(project, "baseline")
    assert done.returncode == 1
    assert "3 model calls in a row failed" in done.stderr and server.url in done.stderr
    assert server.posts == 3 * 2  # three examples, each tried twice, then it stops
    assert written(project) == []


def test_server_error_500_fails_the_stage(project, serve):
    server = serve(lambda i: error(500))
    use(project, {"student": server.url})
    done = run_stage(project, "baseline")
    assert done.returncode == 1
    assert "server error" in done.stderr and "HTTP 500" in done.stderr and server.url in done.stderr
    assert "check the server's log" in done.stderr
    assert server.posts == 2
    assert written(project) == []


# Each answer a user's server can give instead of a completion: the kind the stage names, the words
# that tell the user what to do, and how many requests the server saw (a refusal is not retried,
# nor is a prompt too long for the context; a reply that is not a completion is, once).
@pytest.mark.parametrize("answer, kind, fix, posts", [
    (error(401), "access refused (HTTP 401", "set models.student.api_key_env", 1),
    (error(403), "access refused (HTTP 403", "set models.student.api_key_env", 1),
    (error(400), "request refused", "check models.student.model and models.student.max_tokens", 1),
    (CONTEXT_EXCEEDED, "context window exceeded", "llama-server -c", 1),
    (WEB_PAGE, "malformed response", "not a proxy or web page", 2),
    ((200, {}, {"object": "chat.completion", "created": 0}), "malformed response", "models.student.api_base", 2),
], ids=["401", "403", "400", "context-exceeded", "html-page", "no-choices"])
def test_each_refusal_fails_the_stage_with_its_kind_and_fix(project, serve, answer, kind, fix, posts):
    server = serve(lambda i: answer)
    use(project, {"student": server.url})
    done = run_stage(project, "baseline")
    assert done.returncode == 1, done.stdout
    message = done.stderr
    for part in (kind, fix, "models.student", server.url):
        assert part in message, (part, message)
    assert "$None" not in message and "To fix:" not in message  # no words that name nothing
    assert server.posts == posts
    assert written(project) == []


def test_rate_limit_429_is_retried_then_fails_the_stage(project, serve):
    server = serve(lambda i: error(429, {"Retry-After": "1"}))
    use(project, {"student": server.url}, num_retries=2)
    done = run_stage(project, "baseline")
    assert done.returncode == 1
    assert "rate limit" in done.stderr and "HTTP 429" in done.stderr and server.url in done.stderr
    assert "optimization.num_threads" in done.stderr
    assert server.posts == 3  # the call and both retries
    assert written(project) == []


def test_rate_limit_once_then_answered(project, serve):
    server = serve(lambda i: error(429, {"Retry-After": "1"}) if i == 0 else completion())
    use(project, {"student": server.url})
    done = run_stage(project, "baseline")
    assert done.returncode == 0, done.stderr
    scores, usage = report(project, "baseline.json"), report(project, "baseline_usage.json")
    assert scores["failed"] == 0 and scores["n"] == n_test(project)
    assert scores["components"]["tool_validity"] > 0  # the real reply was scored, not a fabricated 0
    assert usage["lm_usage"]["student"]["failed_calls"] == 0
    # Identical inputs are answered once from the cache; the 429 was retried within one call.
    assert usage["lm_calls"] == server.posts - 1 >= 1


def test_allowed_failure_is_left_out_counted_and_retried_on_the_next_run(project, serve):
    flaky = serve(lambda i: error(500) if i == 1 else completion())
    use(project, {"student": flaky.url}, num_retries=0, max_failed_calls=1)
    done = run_stage(project, "baseline")
    assert done.returncode == 0, done.stderr
    assert "1 left out" in done.stdout
    scores = report(project, "baseline.json")
    rows = report(project, "baseline_examples.json")
    failed = [r for r in rows if r["failed"]]
    assert scores["failed"] == 1 and len(failed) == 1 and failed[0]["failed"] == "server error"
    assert failed[0]["score"] is None and scores["n"] == len(rows) - 1
    assert scores["score"] == pytest.approx(sum(r["score"] for r in rows if not r["failed"]) / scores["n"])
    assert report(project, "baseline_usage.json")["lm_usage"]["student"]["failed_calls"] == 1

    # Next run, the server is well: only the failed example reaches it, the rest come from the cache
    # (the address is not part of a request's cache key).
    well = serve(lambda i: completion())
    use(project, {"student": well.url})
    done = run_stage(project, "baseline")
    assert done.returncode == 0, done.stderr
    assert well.posts == 1
    assert report(project, "baseline.json")["failed"] == 0
    usage = report(project, "baseline_usage.json")["lm_usage"]["student"]
    assert usage["calls"] == 1 and usage["calls"] + usage["cache_hits"] == len(rows)


def test_optimizer_failure_is_never_a_low_score(project, serve):
    broken = serve(lambda i: error(500))
    fine = serve(lambda i: completion())
    use(project, {"student": fine.url, "teacher": broken.url}, optimizer="bootstrap", max_train_examples=3,
        max_failed_calls=5)
    (project / "metrics").mkdir(exist_ok=True)
    (project / "metrics" / "baseline_examples.json").write_text("[]")
    done = run_stage(project, "optimize")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "models.teacher" in done.stderr and broken.url in done.stderr and "server error" in done.stderr
    assert "during optimization stops the stage" in done.stderr
    assert broken.posts == 2  # the first failed call stopped it, despite max_failed_calls: 5
    assert [name for name in written(project) if name != "metrics/baseline_examples.json"] == []


# ---------------------------------------------------------------- llama.cpp killed mid-run

def start_llama(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "4096", "--model_alias", "smollm2", "--n_threads", "2"],
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"llama_cpp.server did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)


class KillServerBefore(dspy.Module):
    """The agent, except that the server is killed just before example number `n` (0-based)."""

    def __init__(self, n: int, server: subprocess.Popen) -> None:
        super().__init__()
        self.agent, self.n, self.server, self.seen = Agent(), n, server, 0

    def forward(self, **inputs):
        if self.seen == self.n:
            self.server.kill()
            self.server.wait()
        self.seen += 1
        return self.agent(**inputs)


@pytest.mark.timeout(600)
def test_llama_server_killed_mid_run_fails_naming_it_and_the_rerun_reuses_answers(smollm_path, data_project,
                                                                                   tmp_path):
    distinct = {}
    for row in read_jsonl(data_project / "data" / "splits" / "test.jsonl"):
        distinct.setdefault(json.dumps(row["inputs"], sort_keys=True), row)
    rows = list(distinct.values())[:4]
    assert len(rows) == 4
    metric = Metric({"tool_validity": 3, "plan_coherence": 2, "first_action": 2, "reasoning_quality": 1,
                     "efficiency": 1})
    before = dspy.cache
    S.configure_cache(tmp_path)
    log = tmp_path / "server.log"
    server, url = start_llama(smollm_path, log)
    try:
        settings = {"provider": "openai-compatible", "model": "smollm2", "api_base": url, "api_key_env": None,
                    "temperature": 0.0, "max_tokens": 24, "timeout": 60, "num_retries": 1}
        ledger = LG.Ledger()
        with dspy.context(lm=L.make_lm("student", settings, ledger), adapter=CompactJSONAdapter()):
            with pytest.raises(UserError) as err:
                evaluate(KillServerBefore(2, server), rows, metric, 1, "baseline", ledger)
        assert f"cannot reach the openai-compatible server at {url}" in str(err.value)
        used = ledger.summary()["lm_usage"]["student"]
        assert used["calls"] == 3 and used["failed_calls"] == 1  # two answered, the third failed

        # Restarted (on another port: the address is not part of the cache key), the re-run pays
        # only for the examples not answered before.
        server, url = start_llama(smollm_path, log)
        ledger = LG.Ledger()
        with dspy.context(lm=L.make_lm("student", {**settings, "api_base": url}, ledger),
                          adapter=CompactJSONAdapter()):
            result = evaluate(Agent(), rows, metric, 1, "baseline", ledger)
        used = ledger.summary()["lm_usage"]["student"]
        assert used["cache_hits"] == 2 and used["calls"] == 2 and used["failed_calls"] == 0
        assert result.n == 4 and result.failed == 0
    finally:
        server.kill()
        server.wait()
        dspy.cache = before
