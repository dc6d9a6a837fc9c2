"""Shared helpers for the data-stage tests: throw-away project copies and stage runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "plugin"
SAMPLES = ROOT / "data" / "sessions"
PYTHON = sys.executable
SPLIT_FILES = ("train.jsonl", "val.jsonl", "test.jsonl")

# Invalid plugin fixtures, each with a piece of the reason it must be rejected for.
BAD_FIXTURES = {
    "bad-json": "invalid JSON at line",
    "empty": "empty file",
    "null-examples": "examples: None is not of type 'array'",
    "null-in-action": "examples[0].input.context: None is not of type 'object'",
    "wrong-type": "totalExamples: '2' is not of type 'integer'",
    "not-a-session": "not a session-logger dspy file",
    "latin1": "not UTF-8",
    "no-examples": "examples: []",
}


def sample_files() -> list[Path]:
    """The shipped sample session files, in path order."""
    return sorted(SAMPLES.rglob("dspy-*.json"))


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shipped_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def make_project(dest: Path, logs_dir: Path | str | None = None, **data: Any) -> Path:
    """A copy of the code the data stages run (lib, stages, schemas, params.yaml) in `dest`.

    `logs_dir` becomes data.session_logs_dir; other keyword arguments override keys of `data:`.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("lib", "stages", "schemas"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    params = shipped_params()
    params["data"]["session_logs_dir"] = str(logs_dir if logs_dir is not None else SAMPLES)
    params["data"].update(data)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return dest


def env() -> dict[str, str]:
    """Environment for subprocesses: the project's virtualenv first on PATH, no analytics."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{out.get('PATH', '')}"
    out["DVC_NO_ANALYTICS"] = "1"
    out.pop("PYTHONPATH", None)
    return out


def run_stage(project: Path, stage: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m stages.<stage>` in `project` (as dvc.yaml does); never raises on failure."""
    return subprocess.run([PYTHON, "-m", f"stages.{stage}"], cwd=project, env=env(), capture_output=True,
                          text=True, timeout=600)


def run_data_stages(project: Path) -> None:
    """parse -> build_examples -> split; fails the test with the stage's output when one fails."""
    for stage in ("parse", "build_examples", "split"):
        proc = run_stage(project, stage)
        assert proc.returncode == 0, f"stage {stage} failed:\n{proc.stdout}\n{proc.stderr}"


def split_bytes(project: Path) -> dict[str, bytes]:
    return {name: (project / "data" / "splits" / name).read_bytes() for name in SPLIT_FILES}
