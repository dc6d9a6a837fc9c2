"""`dvc repro split` on a fresh copy of the repository: the contract files, then nothing to do on a rerun."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import PYTHON, ROOT, env, load_json, read_jsonl
from lib.data.examples import INPUT_FIELDS, OUTPUT_FIELDS

DATA_STAGES = ("parse", "build_examples", "split")
OUTPUTS = (
    "data/parsed/sessions.jsonl", "data/parsed/rejected.jsonl", "metrics/parse.json",
    "data/examples/examples.jsonl", "metrics/examples.json",
    "data/splits/train.jsonl", "data/splits/val.jsonl", "data/splits/test.jsonl", "metrics/split.json",
)
DVC = str(Path(PYTHON).parent / "dvc")


def _copy(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    elif src.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def copy_repository(dest: Path) -> None:
    """Git-tracked files as they are in the working tree, plus every dependency of the data stages."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, listed.decode().split("\0")):
        _copy(ROOT / rel, dest / rel)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    produced = {out if isinstance(out, str) else next(iter(out)) for st in stages.values()
                for kind in ("outs", "metrics", "plots") for out in st.get(kind, [])}
    for stage in DATA_STAGES:
        for dep in stages[stage]["deps"]:
            if "${" not in dep and dep not in produced:
                _copy(ROOT / dep, dest / dep)


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DVC, *args], cwd=project, env=env(), capture_output=True, text=True, timeout=240)


def digests(project: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((project / rel).read_bytes()).hexdigest() for rel in OUTPUTS}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.fail("the pipeline test copies the git-tracked files; run it in a git checkout with git installed")
    project = tmp_path_factory.mktemp("repo")
    copy_repository(project)
    for out in OUTPUTS:
        (project / out).unlink(missing_ok=True)  # committed metrics too: the run must write them
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    first = dvc(project, "repro", "split")
    assert first.returncode == 0, f"dvc repro split failed:\n{first.stdout}\n{first.stderr}"
    before = digests(project)
    second = dvc(project, "repro", "split")
    return {"project": project, "first": first, "second": second, "before": before}


def test_first_repro_runs_the_three_data_stages(repo):
    out = repo["first"].stdout
    for stage in DATA_STAGES:
        assert f"Running stage '{stage}'" in out
    for rel in OUTPUTS:
        assert (repo["project"] / rel).is_file(), f"{rel} missing"


def test_parsed_sessions_are_sorted_by_id_and_counted(repo):
    project = repo["project"]
    sessions = read_jsonl(project / "data/parsed/sessions.jsonl")
    ids = [s["id"] for s in sessions]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for s in sessions:
        assert {"id", "source", "path", "turns", "context", "parent_id"} <= set(s)
    report = load_json(project / "metrics/parse.json")
    assert {"files", "valid_files", "invalid_files", "sessions", "turns", "actions", "redactions"} <= set(report)
    assert report["sessions"] == len(sessions)
    assert report["turns"] == sum(len(s["turns"]) for s in sessions)
    assert report["actions"] == sum(len(t["actions"]) for s in sessions for t in s["turns"])
    assert report["files"] == report["valid_files"] + report["invalid_files"]
    assert report["invalid_files"] == len(read_jsonl(project / "data/parsed/rejected.jsonl"))
    assert report["redactions"] > 0


def test_examples_and_their_metrics(repo):
    project = repo["project"]
    examples = read_jsonl(project / "data/examples/examples.jsonl")
    report = load_json(project / "metrics/examples.json")
    assert {"examples", "filtered"} <= set(report)
    assert report["examples"] == len(examples) > 0
    assert report["filtered"].get("min_efficiency", 0) >= 1  # the shipped min_efficiency removes some
    for row in examples:
        assert set(row["inputs"]) == set(INPUT_FIELDS) and set(row["outputs"]) == set(OUTPUT_FIELDS)
        assert row["group_id"] and row["session_id"]


def test_splits_and_their_metrics(repo):
    project = repo["project"]
    report = load_json(project / "metrics/split.json")
    total = 0
    for name in ("train", "val", "test"):
        rows = read_jsonl(project / "data/splits" / f"{name}.jsonl")
        assert rows, f"{name} split is empty"
        assert report[name]["examples"] == len(rows)
        total += len(rows)
    assert total == load_json(project / "metrics/examples.json")["examples"]


def test_second_repro_has_nothing_to_do_and_changes_nothing(repo):
    second = repo["second"]
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout
    for stage in DATA_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in second.stdout
    assert "up to date" in second.stdout
    assert digests(repo["project"]) == repo["before"]
