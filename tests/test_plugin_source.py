"""Plugin dspy-*.json files: the schema, the reader, and how bad files are reported."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from helpers import (BAD_FIXTURES, FIXTURES, load_json, make_project, read_jsonl, run_stage, sample_files)
from lib.data.ingest import SessionFilter, parse
from lib.core.schema import location, schema_errors
from lib.data.sources import read_all
from lib.data.sources.common import Rejected
from lib.data.sources.plugin_logger import PluginReader

SCHEMA = "plugin-dspy.schema.json"
VALID = ("valid-current", "valid-legacy")


def fixture(name: str) -> Path:
    return FIXTURES / f"{name}.json"


# --- schema ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", VALID)
def test_schema_accepts_valid_fixtures(name):
    assert schema_errors(load_json(fixture(name)), SCHEMA) == []


def test_schema_accepts_every_shipped_sample_file():
    files = sample_files()
    assert len(files) >= 30
    assert any(f.parent.name != "sessions" for f in files), "the samples include a nested folder"
    for path in files:
        assert schema_errors(load_json(path), SCHEMA) == [], path.name


# invalid-but-parsable fixture -> problems the schema must report, as "<JSON location>: <message>"
SCHEMA_PROBLEMS = {
    "null-examples": ["examples: None is not of type 'array'"],
    "null-in-action": ["examples[0].input.context: None is not of type 'object'",
                       "examples[0].actions[1].args: None is not of type 'object'"],
    "wrong-type": ["totalExamples: '2' is not of type 'integer'", "examples[0].actions: {"],
    "no-examples": ["examples: [] "],
    "not-a-session": ["(top level): 'session' is a required property",
                      "(top level): 'examples' is a required property"],
}


@pytest.mark.parametrize("name", sorted(SCHEMA_PROBLEMS))
def test_schema_rejects_invalid_fixtures_with_location_and_message(name):
    problems = schema_errors(load_json(fixture(name)), SCHEMA)
    assert problems
    for expected in SCHEMA_PROBLEMS[name]:
        assert any(p.startswith(expected) for p in problems), f"{expected!r} not in {problems}"
    for p in problems:
        where, _, message = p.partition(": ")
        assert where and message, p


def test_location_is_a_readable_json_path():
    assert location(["examples", 0, "actions", 2, "tool"]) == "examples[0].actions[2].tool"
    assert location(["totalExamples"]) == "totalExamples"
    assert location([]) == "(top level)"


# --- reader ---------------------------------------------------------------------------------------------------

def test_reader_reads_the_current_variant():
    [session] = PluginReader().read(fixture("valid-current"), "valid-current.json")
    assert session.id == "ses_7a1f3c2e9ffeQm4TnB8xLr2VdK"
    assert session.source == "plugin" and session.path == "valid-current.json"
    assert [len(t.actions) for t in session.turns] == [3, 1]
    assert [a.tool for a in session.turns[0].actions] == ["read", "edit", "bash"]
    assert session.turns[0].task == "Fix the KeyError in load_settings when INVOICE_TIMEOUT is unset"
    assert session.turns[0].agent == "build" and session.turns[0].model == "anthropic/claude-sonnet-4-5"
    assert session.turns[0].outcome.success is True and session.turns[0].outcome.efficiency == 1.0
    assert session.turns[0].outcome.files_modified == ["/home/dev/projects/invoice-api/src/invoice_api/config.py"]
    assert session.project == "/home/dev/projects/invoice-api"


def test_reader_reads_the_legacy_variant_with_the_file_level_outcome():
    [session] = PluginReader().read(fixture("valid-legacy"), "valid-legacy.json")
    [turn] = session.turns
    assert turn.agent == "plan"
    assert [a.status for a in turn.actions] == ["ok", "unknown"]  # the last read has no result/success
    assert turn.outcome.correctness == 1.0 and turn.outcome.success is True
    assert session.context.project_type == "javascript"
    assert session.context.files == ["vite.config.ts", "src/main.tsx"]  # node_modules dropped


def test_raw_session_file_is_not_taken_for_a_dspy_file():
    assert not PluginReader().detect(fixture("session-ses_7a1f3c2e9ffeQm4TnB8xLr2VdK"))
    assert PluginReader().detect(fixture("valid-current")) is False  # only dspy-*.json names are claimed


# --- bad files among good ones ------------------------------------------------------------------------------

GOOD_SAMPLES = 4


def _mixed_folder(root: Path) -> tuple[list[str], list[str]]:
    """Bad fixtures as dspy-<name>.json plus good files (fixtures and samples, one nested). Returns paths."""
    root.mkdir(parents=True, exist_ok=True)
    bad = []
    for name in BAD_FIXTURES:
        shutil.copy(fixture(name), root / f"dspy-{name}.json")
        bad.append((root / f"dspy-{name}.json").as_posix())
    good = []
    for name in VALID:
        shutil.copy(fixture(name), root / f"dspy-{name}.json")
        good.append(load_json(fixture(name))["session"])
    for i, path in enumerate(sample_files()[:GOOD_SAMPLES]):
        dest = root / ("nested" if i == 0 else ".") / path.name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(path, dest)
        good.append(load_json(path)["session"])
    (root / "plugin.log").write_text("2025-10-14T09:12:00Z - saved\n", encoding="utf-8")  # not session data
    return sorted(bad), sorted(good)


def test_each_bad_file_is_rejected_with_its_path_and_reason_and_good_files_are_kept(tmp_path):
    logs = tmp_path / "logs"
    bad, good = _mixed_folder(logs)
    out = tmp_path / "out"
    report = parse(str(logs), None, True, False, SessionFilter(), out / "sessions.jsonl", out / "rejected.jsonl")

    rejected = read_jsonl(out / "rejected.jsonl")
    assert [r["path"] for r in rejected] == bad
    for row in rejected:
        name = re.fullmatch(r".*/dspy-(.+)\.json", row["path"]).group(1)
        assert BAD_FIXTURES[name] in row["reason"], row
    sessions = read_jsonl(out / "sessions.jsonl")
    assert [s["id"] for s in sessions] == good
    assert report["files"] == len(bad) + len(good)
    assert report["valid_files"] == len(good)
    assert report["invalid_files"] == len(bad)
    assert report["sessions"] == len(good)
    assert "rejected" in report["warning"]


def test_rejection_reasons_say_what_to_do(tmp_path):
    logs = tmp_path / "logs"
    _mixed_folder(logs)
    reasons = {Path(r.path).stem.removeprefix("dspy-"): r.reason
               for _, r in read_all(logs) if isinstance(r, Rejected)}
    assert set(reasons) == set(BAD_FIXTURES)
    assert re.search(r"line \d+, column \d+", reasons["bad-json"])
    assert "offset" in reasons["latin1"] and "UTF-8" in reasons["latin1"]
    assert "delete it or re-export" in reasons["empty"]
    assert "only the plugin's" in reasons["not-a-session"]
    for name in ("null-examples", "null-in-action", "wrong-type", "no-examples"):
        assert "schemas/plugin-dspy.schema.json" in reasons[name], reasons[name]


def test_unrecognised_file_is_rejected_and_named(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(sample_files()[0], logs)
    (logs / "notes.json").write_text("{}", encoding="utf-8")
    out = tmp_path / "out"
    report = parse(str(logs), None, True, False, SessionFilter(), out / "s.jsonl", out / "r.jsonl")
    [row] = read_jsonl(out / "r.jsonl")
    assert row["path"].endswith("logs/notes.json")
    assert "not a recognised session file" in row["reason"] and "move it out" in row["reason"]
    assert report["sessions"] == 1


def test_same_session_twice_is_kept_once(tmp_path):
    logs = tmp_path / "logs"
    (logs / "copy").mkdir(parents=True)
    shutil.copy(fixture("valid-current"), logs / "dspy-a.json")
    shutil.copy(fixture("valid-current"), logs / "copy" / "dspy-a.json")
    out = tmp_path / "out"
    report = parse(str(logs), None, True, False, SessionFilter(), out / "s.jsonl", out / "r.jsonl")
    assert report["sessions"] == 1 and report["duplicates"] == 1
    assert len(read_jsonl(out / "s.jsonl")) == 1


# --- the parse stage's failures -------------------------------------------------------------------------------

def test_strict_fails_lists_every_bad_file_and_writes_nothing_partial(tmp_path):
    logs = tmp_path / "logs"
    bad, _ = _mixed_folder(logs)
    project = make_project(tmp_path / "project", logs, strict=True)
    # Outputs of an earlier run must survive a failed one untouched.
    parsed = project / "data" / "parsed"
    parsed.mkdir(parents=True)
    (parsed / "sessions.jsonl").write_text('{"id": "earlier"}\n', encoding="utf-8")
    (project / "metrics").mkdir()
    (project / "metrics" / "parse.json").write_text('{"sessions": 1}\n', encoding="utf-8")

    proc = run_stage(project, "parse")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "data.strict" in proc.stderr
    assert f"{len(bad)} input(s) rejected" in proc.stderr
    for path in bad:
        assert path in proc.stderr
    assert (parsed / "sessions.jsonl").read_text(encoding="utf-8") == '{"id": "earlier"}\n'
    assert (project / "metrics" / "parse.json").read_text(encoding="utf-8") == '{"sessions": 1}\n'
    assert sorted(p.name for p in parsed.iterdir()) == ["rejected.jsonl", "sessions.jsonl"]  # no temp files left
    assert [r["path"] for r in read_jsonl(parsed / "rejected.jsonl")] == bad


def test_strict_passes_when_every_file_is_good(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for path in sample_files()[:3]:
        shutil.copy(path, logs)
    project = make_project(tmp_path / "project", logs, strict=True)
    proc = run_stage(project, "parse")
    assert proc.returncode == 0, proc.stderr
    assert len(read_jsonl(project / "data/parsed/sessions.jsonl")) == 3
    assert read_jsonl(project / "data/parsed/rejected.jsonl") == []


def test_no_valid_file_at_all_is_a_clear_error(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in BAD_FIXTURES:
        shutil.copy(fixture(name), logs / f"dspy-{name}.json")
    project = make_project(tmp_path / "project", logs)
    proc = run_stage(project, "parse")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "no usable session" in proc.stderr
    assert f"all {len(BAD_FIXTURES)} input(s) rejected" in proc.stderr
    assert not (project / "metrics" / "parse.json").exists()


def test_empty_logs_folder_is_a_clear_error(tmp_path):
    logs = tmp_path / "empty"
    logs.mkdir()
    project = make_project(tmp_path / "project", logs)
    proc = run_stage(project, "parse")
    assert proc.returncode != 0
    assert f"no usable session in {logs}" in proc.stderr
    assert "data.session_logs_dir" in proc.stderr


def test_missing_logs_dir_names_the_param(tmp_path):
    missing = tmp_path / "no-such-folder"
    project = make_project(tmp_path / "project", missing)
    proc = run_stage(project, "parse")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: data.session_logs_dir")
    assert str(missing) in proc.stderr
    assert not (project / "data" / "parsed" / "sessions.jsonl").exists()
