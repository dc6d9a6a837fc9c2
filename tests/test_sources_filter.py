"""The `sources:` section (project_dirs, models, since/until): what each keeps, what it drops, and
that the parse report counts it."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import FIXTURES, load_json, make_project, read_jsonl, run_stage
from lib.data.ingest import SessionFilter
from lib.data.session import Session, Turn


def _session(project: str | None = "/repo", day: str | None = "2025-07-23", models: tuple[str | None, ...] = ("anthropic/claude-sonnet-4-5",)) -> Session:
    ms = int(dt.datetime.fromisoformat(day + "T12:00:00+00:00").timestamp() * 1000) if day else None
    return Session(id="ses_x", source="plugin", path="x.json", project=project, time_created=ms,
                   turns=[Turn(index=i, task="t", model=m) for i, m in enumerate(models)])


@pytest.mark.parametrize("project, kept", [
    ("/repo", True), ("/repo/", True), ("/repo/app", True), ("/repo/app/deep", True),
    ("/repo-old", False), ("/repository", False), ("/repo.bak/app", False), ("/other/repo", False), (None, False),
])
def test_project_dirs_match_whole_path_components(project, kept):
    f = SessionFilter(project_dirs=["/repo"])
    assert (f.apply(_session(project)) is not None) == kept
    assert f.dropped == ({} if kept else {"project_dirs": 1})


def test_project_dirs_with_a_trailing_separator_and_several_dirs():
    f = SessionFilter(project_dirs=["/work/a/", "C:\\work\\app\\"])
    assert f.apply(_session("/work/a")) and f.apply(_session("/work/a/x"))
    assert f.apply(_session("C:\\work\\app\\src")) and f.apply(_session("C:\\work\\app"))
    assert f.apply(_session("/work/ab")) is None and f.apply(_session("C:\\work\\apple")) is None
    assert f.dropped == {"project_dirs": 2}


@pytest.mark.parametrize("since, until, day, kept", [
    ("2025-07-23", None, "2025-07-23", True), ("2025-07-24", None, "2025-07-23", False),
    (None, "2025-07-23", "2025-07-23", True), (None, "2025-07-22", "2025-07-23", False),
    ("2025-07-01", "2025-07-31", "2025-07-23", True), ("2025-07-01", "2025-07-31", "2025-08-01", False),
    ("2025-07-01", None, None, False),  # no time: cannot be shown to be in the range
    (None, None, None, True),
])
def test_since_and_until_are_inclusive_days(since, until, day, kept):
    f = SessionFilter(since=since, until=until)
    assert (f.apply(_session(day=day)) is not None) == kept
    assert f.dropped == ({} if kept else {"date_range": 1})


def test_models_keep_matching_turns_and_drop_sessions_with_none():
    f = SessionFilter(models=["claude-sonnet-4-5", "openai/gpt-4o"])
    s = f.apply(_session(models=("anthropic/claude-sonnet-4-5", "openai/gpt-4o", "openai/gpt-4o-mini", None)))
    assert s is not None and [t.model for t in s.turns] == ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"]
    assert f.apply(_session(models=("ollama/qwen2.5-coder:7b",))) is None
    assert f.dropped == {"models_turns": 3, "models": 1}


def _logs(dest: Path) -> Path:
    """Three plugin sessions: in /home/dev/repo, /home/dev/repo-old and /home/dev/repo/sub."""
    dest.mkdir()
    base = load_json(FIXTURES / "valid-current.json")
    for n, project in enumerate(["/home/dev/repo", "/home/dev/repo-old", "/home/dev/repo/sub"]):
        data = json.loads(json.dumps(base))
        sid = f"ses_filter{n}"
        data["session"] = sid
        for ex in data["examples"]:
            ex["input"]["context"]["workingDirectory"] = project
            ex.setdefault("metadata", {})["sessionId"] = sid
        (dest / f"dspy-{sid}.json").write_text(json.dumps(data), encoding="utf-8")
    return dest


def test_parse_stage_applies_sources_from_params_and_reports_it(tmp_path):
    project = make_project(tmp_path / "p", _logs(tmp_path / "logs"))
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["sources"]["project_dirs"] = ["/home/dev/repo"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    proc = run_stage(project, "parse")
    assert proc.returncode == 0, proc.stderr
    kept = {s["project"] for s in read_jsonl(project / "data/parsed/sessions.jsonl")}
    assert kept == {"/home/dev/repo", "/home/dev/repo/sub"}
    report = load_json(project / "metrics/parse.json")
    assert report["filtered_by_sources"] == {"project_dirs": 1} and report["sessions"] == 2
