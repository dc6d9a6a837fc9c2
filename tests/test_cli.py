"""lib/cli.py: validate (params, logs, models), train's override checks and summary, clear-cache."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import project_with_pipeline
from lib import cli

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})



def params_file(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return str(path)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


# ------------------------------------------------------------------------------------- validate

def test_validate_passes_on_the_shipped_setup(smollm_path):
    done = run_cli("validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PROBLEM" not in done.stdout
    assert "params.yaml: every key present and valid" in done.stdout
    assert "pass their schemas" in done.stdout
    assert "models.student: local" in done.stdout and "models.teacher: local" in done.stdout


@pytest.mark.parametrize("values, expected", [
    ({"data": {"train_split": "most"}}, "data.train_split"),
    ({"data": {"train_split": 0.9}}, "must sum to 1"),
    ({"optimization": {"optimizer": "adamw"}}, "optimization.optimizer"),
    ({"optimization": {"optimiser": "labeled"}}, "unknown key 'optimiser'"),
    ({"export": {"formats": ["pdf"]}}, "export.formats"),
])
def test_validate_fails_on_bad_params(tmp_path, values, expected):
    done = run_cli("validate", "--params", params_file(tmp_path, values))
    assert done.returncode == 1
    assert expected in done.stdout
    assert "PROBLEM" in done.stdout


def test_validate_fails_on_missing_logs_dir(tmp_path):
    done = run_cli("validate", "--params", params_file(tmp_path, {"data": {"session_logs_dir": "no/such/logs"}}))
    assert done.returncode == 1
    assert "data.session_logs_dir: no/such/logs does not exist" in done.stdout


def test_validate_counts_files_that_fail_their_schemas(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    good = sorted((ROOT / "data" / "sessions").glob("dspy-*.json"))[:2]
    for path in good:
        shutil.copy(path, logs / path.name)
    shutil.copy(ROOT / "tests" / "fixtures" / "plugin" / "bad-json.json", logs / "dspy-ses_broken.json")
    shutil.copy(ROOT / "tests" / "fixtures" / "plugin" / "wrong-type.json", logs / "dspy-ses_wrongtype.json")
    done = run_cli("validate", "--params", params_file(tmp_path, {"data": {"session_logs_dir": str(logs)}}))
    assert done.returncode == 0, done.stdout  # data.strict is false: parse skips them, so only a note
    assert "4 input file(s), 2 pass their schemas, 2 rejected; 2 session(s)" in done.stdout
    assert "dspy-ses_broken.json: " in done.stdout and "dspy-ses_wrongtype.json: " in done.stdout
    strict = run_cli("validate", "--params", params_file(tmp_path, {"data": {"session_logs_dir": str(logs),
                                                                             "strict": True}}))
    assert strict.returncode == 1 and "data.strict is true" in strict.stdout


def test_validate_fails_on_unreachable_openai_compatible_server(tmp_path):
    port = closed_port()
    done = run_cli("validate", "--params", params_file(tmp_path, {"models": {"student": {
        "provider": "openai-compatible", "model": "qwen", "api_base": f"http://127.0.0.1:{port}/v1"}}}))
    assert done.returncode == 1
    assert f"cannot reach the openai-compatible server at http://127.0.0.1:{port}/v1" in done.stdout
    assert "models.student" in done.stdout


def test_validate_fails_on_missing_api_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EXPORT_TEST_MISSING_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "lib.cli", "validate", "--params", params_file(tmp_path, {"models": {"teacher": {
            "provider": "openai", "model": "gpt-4o-mini", "api_key_env": "EXPORT_TEST_MISSING_KEY"}}})],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1
    assert "models.teacher" in done.stdout and "$EXPORT_TEST_MISSING_KEY" in done.stdout
    assert "export EXPORT_TEST_MISSING_KEY=" in done.stdout


def test_validate_reports_every_problem_in_one_run(tmp_path):
    done = run_cli("validate", "--params", params_file(tmp_path, {
        "data": {"session_logs_dir": "nowhere", "val_split": 0.5},
        "models": {"student": {"provider": "openai-compatible", "model": "m",
                               "api_base": f"http://127.0.0.1:{closed_port()}/v1"}}}))
    assert done.returncode == 1
    assert done.stdout.count("PROBLEM") == 3
    assert "3 problem(s)" in done.stdout


def test_validate_passes_with_a_real_openai_compatible_server(tmp_path, llama_server):
    done = run_cli("validate", "--params", params_file(tmp_path, {"models": {"student": {
        "provider": "openai-compatible", "model": "smollm2", "api_base": llama_server}}}))
    assert done.returncode == 0, done.stdout
    assert "server answers and serves the model" in done.stdout
    wrong = run_cli("validate", "--params", params_file(tmp_path, {"models": {"student": {
        "provider": "openai-compatible", "model": "qwen9", "api_base": llama_server}}}))
    assert wrong.returncode == 1 and "unknown model 'qwen9'" in wrong.stdout


def test_validate_reports_an_unreadable_params_file(tmp_path):
    done = run_cli("validate", "--params", str(tmp_path / "missing.yaml"))
    assert done.returncode == 1 and "cannot be read" in done.stdout


# ---------------------------------------------------------------------------------------- train

def test_train_checks_overrides_before_running_dvc(tmp_path):
    done = run_cli("train", "--optimizer", "sgd")
    assert done.returncode == 1
    assert "optimization.optimizer" in done.stderr and "running: dvc" not in done.stdout
    bad_file = run_cli("train", "--params", params_file(tmp_path, {"optimization": {"labeled": {"k": -1}}}))
    assert bad_file.returncode == 1 and "optimization.labeled.k" in bad_file.stderr
    typo = run_cli("train", "--params", params_file(tmp_path, {"modles": {"student": {"model": "x"}}}))
    assert typo.returncode == 1 and "modles" in typo.stderr


def test_train_config_is_the_params_option_and_output_dir_is_checked_first(tmp_path):
    """The seed's spellings: `--config PATH` is `--params PATH`; a bad --output-dir stops before DVC runs."""
    project = project_with_pipeline(tmp_path / "project")
    bad = run_cli("train", "--config", params_file(tmp_path, {"optimization": {"labeled": {"k": -1}}}), cwd=project)
    assert bad.returncode == 1 and "optimization.labeled.k" in bad.stderr and "running: dvc" not in bad.stdout
    inside = run_cli("train", "--output-dir", "outputs/prompts/mine", cwd=project)
    assert inside.returncode == 1 and "running: dvc" not in inside.stdout
    assert "--output-dir outputs/prompts/mine: the pipeline rewrites outputs/ on every run" in inside.stderr
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    done = run_cli("train", "--output-dir", str(a_file), cwd=project)
    assert done.returncode == 1 and "is a file; give a folder" in done.stderr
    assert not (project / "outputs" / "prompts" / "mine").exists()


def test_copy_prompts_copies_the_export_and_leaves_other_files(tmp_path):
    source = tmp_path / "prompts"
    (source / "agents").mkdir(parents=True)
    (source / "OPTIMIZED_BUILD.md").write_text("guidance")
    (source / "agents" / "build-x.md").write_text("agent")
    target = cli.output_dir(tmp_path / "out" / "deep")
    (target / "mine.txt").write_text("keep")
    assert cli.copy_prompts(target, source) == ["OPTIMIZED_BUILD.md", "agents/build-x.md"]
    assert (target / "agents" / "build-x.md").read_text() == "agent" and (target / "mine.txt").read_text() == "keep"


def test_train_rejects_a_bad_experiment_name(tmp_path):
    done = run_cli("train", "--experiment-name", "my run", cwd=project_with_pipeline(tmp_path / "project"))
    assert done.returncode == 1 and "--experiment-name" in done.stderr


def test_train_command_quotes_values_for_dvc(tmp_path):
    """The -S values, applied by DVC's own override parser, give back exactly the values asked for."""
    from dvc.utils.hydra import apply_overrides

    overrides = cli.overrides_from(Path(params_file(tmp_path, {
        "models": {"student": {"api_base": "http://localhost:11434/v1", "provider": "ollama"}},
        "export": {"formats": ["agent_config", "template"], "opencode_model": None, "agent_name": "it's"},
        "data": {"strict": True, "min_efficiency": 0.5},
        "sources": {"project_dirs": ["C:\\work\\app\\"]}})), "bootstrap", "qwen2.5-coder:1.5b")
    cmd = cli.dvc_command(overrides, "try-1")
    assert cmd[1:6] == ["-m", "dvc", "exp", "run", "--name"] and cmd[6] == "try-1"
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    apply_overrides(target, [arg for i, arg in enumerate(cmd) if i > 0 and cmd[i - 1] == "-S"])
    got = yaml.safe_load(target.read_text())
    assert got["models"]["student"]["model"] == "qwen2.5-coder:1.5b"
    assert got["models"]["student"]["api_base"] == "http://localhost:11434/v1"
    assert got["models"]["student"]["provider"] == "ollama"
    assert got["optimization"]["optimizer"] == "bootstrap"
    assert got["export"]["formats"] == ["agent_config", "template"]
    assert got["export"]["opencode_model"] is None and got["export"]["agent_name"] == "it's"
    assert got["data"]["strict"] is True and got["data"]["min_efficiency"] == 0.5
    assert got["sources"]["project_dirs"] == ["C:\\work\\app\\"]


def test_summary_table(tmp_path):
    (tmp_path / "metrics").mkdir()
    usage = {"lm_usage": {"total": {"calls": 4, "cache_hits": 2, "prompt_tokens": 1000, "completion_tokens": 200,
                                    "cost": 0.0}}}
    (tmp_path / "metrics" / "baseline.json").write_text(json.dumps({"score": 0.1}))
    (tmp_path / "metrics" / "optimized.json").write_text(json.dumps({
        "score": 0.35, "n": 40, "improvement": {"absolute": 0.25, "relative": 2.5}, "ci95": [0.05, 0.4],
        "optimizer": "labeled", "demos": 6}))
    for name in ("baseline_usage.json", "optimized_usage.json"):
        (tmp_path / "metrics" / name).write_text(json.dumps(usage))
    table = cli.summary(tmp_path)
    for text in ("baseline score   0.100", "optimized score  0.350", "+0.250 (+250.0%)", "+0.050 .. +0.400",
                 "labeled (6 demos)", "8 (4 served from cache)", "2400 (2000 prompt + 400 completion)"):
        assert text in table

    assert "not run (metrics/replay.json missing)" in table
    side = {"score": 0.3, "n": 40}
    (tmp_path / "metrics" / "replay.json").write_text(json.dumps({"students": {"m": {
        "opencode_default": side, "exported": {**side, "score": 0.4},
        "difference": {"absolute": 0.1, "ci95": [0.02, 0.18]}}}}))
    line = next(x for x in cli.summary(tmp_path).splitlines() if x.startswith("replay, m "))
    assert line.split(None, 2)[2] == ("OpenCode default 0.300 -> exported 0.400 (+0.100, 95% CI +0.020 .. +0.180; "
                                      "40 steps as OpenCode sends them)")


# ---------------------------------------------------------------------------------- clear-cache

def test_clear_cache_reports_and_removes(tmp_path, monkeypatch, capsys):
    cache = tmp_path / ".cache" / "dspy"
    (cache / "000").mkdir(parents=True)
    (cache / "cache.db").write_bytes(b"x" * 2048)
    (cache / "000" / "a.val").write_bytes(b"y" * 1024)
    monkeypatch.setattr(cli, "cache_dir", lambda: cache)
    assert cli.main(["clear-cache"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 file(s), 3.0 KB" in out
    assert cache.is_dir() and not any(cache.iterdir())
    assert cli.main(["clear-cache"]) == 0
    assert "already empty" in capsys.readouterr().out


def test_help_lists_the_commands():
    done = run_cli("--help")
    assert done.returncode == 0
    for command in ("validate", "train", "clear-cache"):
        assert command in done.stdout
