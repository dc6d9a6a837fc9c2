"""TROUBLESHOOTING.md quotes the product's real messages: each one is triggered here and must still read that way."""
from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from helpers import (CONTEXT_EXCEEDED, PYTHON, SAMPLES, WEB_PAGE, Loopback, crashing_engine, env, error, make_project,
                     project_with_pipeline, run_data_stages, run_stage)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "TROUBLESHOOTING.md"
_ENTRY = re.compile(r"<!-- check: (\S+) -->\s*```text\n(.*?)\n```", re.S)

pytestmark = pytest.mark.timeout(600)


def documented() -> dict[str, str]:
    return dict(_ENTRY.findall(DOC.read_text(encoding="utf-8")))


def pattern(message: str) -> re.Pattern[str]:
    """The documented text as a regex: `…` stands for any text on the line."""
    return re.compile(".*?".join(re.escape(part) for part in message.split("…")))


def _error(fn: Callable[[], object]) -> str:
    from lib.core.errors import UserError
    with pytest.raises(UserError) as err:
        fn()
    return str(err.value)


def _params(project: Path, **changes: object) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = params
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def _stage(project: Path, stage: str) -> str:
    done = run_stage(project, stage)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stderr


def _cli(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([PYTHON, "-m", "lib.cli", *args], cwd=cwd, capture_output=True, text=True, env=env(),
                          timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout + done.stderr


def _model(provider: str, **cfg: object) -> dict:
    return {"provider": provider, "model": "m", "api_base": None, "api_key_env": None, "temperature": 0.0,
            "max_tokens": 16, "timeout": 5, "num_retries": 0, **cfg}


# --------------------------------------------------------------------------------------- triggers

def params_invalid(tmp: Path) -> str:
    project = make_project(tmp, train_split=0.7)
    return _stage(project, "split")


def override_unknown_key(tmp: Path) -> str:
    override = tmp / "o.yaml"
    override.write_text(yaml.safe_dump({"optimization": {"optimzer": "bootstrap"}}), encoding="utf-8")
    return _cli("train", "--config", str(override))


def local_with_api_base(tmp: Path) -> str:
    from lib.config import params as P
    return _error(lambda: P.load(overrides={"models.student.api_base": "http://localhost:8000/v1"}))


def engine_crashed(tmp: Path) -> str:
    """Set-up's last step on an engine whose library dies with SIGSEGV as it loads."""
    done = subprocess.run([PYTHON, "-m", "lib.models.engine", "check"], cwd=ROOT, capture_output=True, text=True,
                          env={**env(), "LLAMA_CPP_LIB_PATH": str(crashing_engine(tmp))}, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stderr


def logs_dir_missing(tmp: Path) -> str:
    return _stage(make_project(tmp, tmp / "no-such-logs"), "parse")


def no_usable_session(tmp: Path) -> str:
    (tmp / "logs").mkdir()
    (tmp / "logs" / "notes.txt").write_text("not a session")
    return _stage(make_project(tmp / "p", tmp / "logs"), "parse")


def strict_rejects(tmp: Path) -> str:
    (tmp / "logs").mkdir()
    (tmp / "logs" / "dspy-broken.json").write_text("{not json")
    return _stage(make_project(tmp / "p", tmp / "logs", strict=True), "parse")


def too_few_examples(tmp: Path) -> str:
    project = make_project(tmp, min_examples=100000)
    assert run_stage(project, "parse").returncode == 0
    return _stage(project, "build_examples")


def split_empty(tmp: Path) -> str:
    logs = tmp / "logs"  # two sessions: too few groups for every split to get one
    logs.mkdir()
    for path in sorted(SAMPLES.glob("dspy-*.json"))[:2]:
        (logs / path.name).write_bytes(path.read_bytes())
    project = make_project(tmp / "p", logs, min_examples=1, train_split=0.98, val_split=0.01, test_split=0.01)
    run_data_stages(project)
    assert not (project / "data" / "splits" / "test.jsonl").read_text(encoding="utf-8").strip()
    return _stage(project, "baseline")


def api_key_missing(tmp: Path) -> str:
    from lib.models.settings import check_reachable
    name = "TROUBLESHOOTING_TEST_KEY_UNSET"
    assert name not in os.environ
    return _error(lambda: check_reachable("teacher", _model("openai", api_key_env=name), root=tmp))


def api_key_env_null(tmp: Path) -> str:
    from lib.models.settings import check_reachable
    return _error(lambda: check_reachable("teacher", _model("anthropic"), root=tmp))


def server_unreachable(tmp: Path) -> str:
    from lib.models.settings import check_reachable
    return _error(lambda: check_reachable("student", _model("openai-compatible", api_base="http://127.0.0.1:9/v1")))


def ollama_unreachable(tmp: Path) -> str:
    from lib.models.settings import check_reachable
    return _error(lambda: check_reachable("student", _model("ollama", api_base="http://127.0.0.1:9")))


def unknown_model(tmp: Path) -> str:
    """A real HTTP server answering the OpenAI model list with another model."""
    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from lib.models.settings import check_reachable
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        return _error(lambda: check_reachable(
            "student", _model("openai-compatible", model="qwen2.5-coder:1.5b", api_base=base)))
    finally:
        server.shutdown()


def budget(tmp: Path) -> str:
    project = make_project(tmp)
    _params(project, optimization__max_lm_calls=1)
    run_data_stages(project)
    return _stage(project, "baseline")


def _answered_by(tmp: Path, answer: tuple) -> str:
    """The baseline stage's error when the student's server answers every completion with `answer`."""
    project = make_project(tmp, max_field_chars=300, max_history_messages=2)
    run_data_stages(project)
    server = Loopback(lambda i: answer)
    try:
        _params(project, models__student=_model("openai-compatible", model="smollm2", api_base=server.url))
        return _stage(project, "baseline")
    finally:
        server.close()


def access_refused(tmp: Path) -> str:
    return _answered_by(tmp, error(401))


def malformed_response(tmp: Path) -> str:
    return _answered_by(tmp, WEB_PAGE)


def context_exceeded(tmp: Path) -> str:
    return _answered_by(tmp, CONTEXT_EXCEEDED)


def server_error(tmp: Path) -> str:
    return _answered_by(tmp, error(503))


def _user_metric(tmp: Path) -> None:
    (tmp / "doc_metrics.py").write_text(
        "def two(example, prediction):\n    return 1.0\n\n"
        "def big(example, prediction, trace=None):\n    return 3\n", encoding="utf-8")
    sys.path.insert(0, str(tmp))
    sys.modules.pop("doc_metrics", None)


def metric_no_module(tmp: Path) -> str:
    override = tmp / "o.yaml"
    override.write_text(yaml.safe_dump({"optimization": {"metric": "my_metrics:tool_match"}}), encoding="utf-8")
    return _cli("validate", "--params", str(override))


def metric_select_on(tmp: Path) -> str:
    from lib.config import params as P
    _user_metric(tmp)
    (tmp / "doc_metrics.py").write_text("def ok(example, prediction, trace=None):\n    return 1.0\n")
    return _error(lambda: P.load(overrides={"optimization.metric": "doc_metrics:ok",
                                            "optimization.select_on": "replay"}))


def metric_signature(tmp: Path) -> str:
    from lib.config import custom_metric
    _user_metric(tmp)
    return _error(lambda: custom_metric.load("doc_metrics:two"))


def metric_range(tmp: Path) -> str:
    project = make_project(tmp)
    (project / "doc_metrics.py").write_text("def big(example, prediction, trace=None):\n    return 3\n",
                                            encoding="utf-8")
    _params(project, optimization__metric="doc_metrics:big", optimization__select_on="offline",
            models__student__max_tokens=8)
    run_data_stages(project)
    return _stage(project, "baseline")


def export_missing_input(tmp: Path) -> str:
    return _stage(make_project(tmp), "export")


def export_replay_stale(tmp: Path) -> str:
    from lib.program.agent import Agent
    project = make_project(tmp)
    (project / "outputs").mkdir()
    Agent().save(str(project / "outputs" / "program.json"))
    (project / "metrics").mkdir()
    (project / "metrics" / "replay.json").write_text(json.dumps(
        {"agent": {"disable_tools": [], "permission": "deny_destructive", "prompt_sha256": "0" * 64},
         "students": {}}), encoding="utf-8")
    return _stage(project, "export")


def disable_tools_unknown(tmp: Path) -> str:
    from lib.config import params as P
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["export"]["disable_tools"] = ["list"]
    return _error(lambda: P.validate(params))


def plots_page_missing(tmp: Path) -> str:
    done = subprocess.run([PYTHON, "-m", "dvc", "plots", "show", "--html-template", str(tmp / "offline.html"),
                           "-o", str(tmp / "plots")], cwd=ROOT, capture_output=True, text=True, env=env(),
                          timeout=300)
    assert done.returncode != 0
    return done.stdout + done.stderr


def output_dir_inside(tmp: Path) -> str:
    return _cli("train", "--output-dir", "outputs/prompts/mine", cwd=project_with_pipeline(tmp / "project"))


def experiment_name(tmp: Path) -> str:
    return _cli("train", "--experiment-name", "my run", cwd=project_with_pipeline(tmp / "project"))


TRIGGERS: dict[str, Callable[[Path], str]] = {name.replace("_", "-"): fn for name, fn in list(globals().items())
                                              if callable(fn) and getattr(fn, "__module__", None) == __name__
                                              and not name.startswith("_") and name not in (
                                                  "documented", "pattern")}


def test_every_documented_message_has_a_trigger():
    assert sorted(documented()) == sorted(TRIGGERS)
    assert "TROUBLESHOOTING.md" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_message_still_reads_as_documented(name, tmp_path):
    message = documented()[name]
    actual = TRIGGERS[name](tmp_path)
    assert pattern(message).search(actual), f"{name}: documented\n{message}\nbut the product said\n{actual}"
