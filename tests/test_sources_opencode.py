"""Readers of OpenCode's own data: `opencode export` JSON, opencode.db, the storage/ tree, and the
plugin's raw session-<id>.json, checked on hand-made fixtures and on sessions the real OpenCode CLI
wrote (tests/fixtures/opencode/real, made by scripts/make_opencode_fixtures.sh)."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lib.data.examples import derive_success
from lib.core.files import read_jsonl
from lib.data.ingest import SessionFilter, parse
from lib.data.session import STATUS_ERROR, STATUS_OK, STATUS_UNKNOWN, Session
from lib.data.sources import read_all, walk
from lib.data.sources import opencode_db
from lib.data.sources.common import Rejected

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "opencode"
REAL = FIX / "real"
SCRIPT = ROOT / "scripts" / "make_opencode_fixtures.sh"


def read(path: Path) -> tuple[list[Session], list[Rejected]]:
    sessions, rejected = [], []
    for _, item in read_all(path):
        (rejected if isinstance(item, Rejected) else sessions).append(item)
    return sessions, rejected


def by_title(sessions: list[Session], prefix: str) -> Session:
    found = [s for s in sessions if (s.title or "").startswith(prefix)]
    assert len(found) == 1, [s.title for s in sessions]
    return found[0]


def comparable(s: Session) -> dict:
    d = s.to_dict()
    d.pop("source"), d.pop("path")
    return d


# ---------------------------------------------------------------- detection


def test_walk_hands_each_input_to_its_reader():
    claimed = {path.relative_to(FIX).as_posix(): reader.name if reader else None for path, reader in walk(FIX)}
    assert claimed["storage"] == "opencode-storage"  # the tree is claimed whole
    assert not any(p.startswith("storage/") for p in claimed)
    assert claimed["real/opencode.db"] == "opencode-db"
    assert claimed["exports/subagent-parent.json"] == "opencode-export"
    assert claimed["plugin/session-ses_637d33fffffecRUJKE8pm3R804.json"] == "plugin-session"
    assert all(claimed[p] == "opencode-export" for p in claimed if p.startswith("real/export-"))
    assert "README.md" not in claimed
    claude = "claude/-home-dev-app/7f3c2a10-5b6e-4c1d-9a8b-2e4f6d8c0a12"
    assert claimed[f"{claude}.jsonl"] == "claude-code"
    assert claimed[f"{claude}/subagents/agent-a1b2c3d.jsonl"] == "claude-code"
    assert claimed[f"{claude}/subagents/agent-a1b2c3d.meta.json"] == "claude-code"  # read with its transcript


def test_sqlite_file_is_detected_by_header_whatever_its_name(tmp_path):
    db = tmp_path / "sessions.sqlite"
    shutil.copy(REAL / "opencode.db", db)
    assert [r.name for _, r in walk(db)] == ["opencode-db"]


# ---------------------------------------------------------------- opencode export


def test_real_exports_map_turns_history_model_and_outcome():
    sessions, rejected = read(REAL)
    exports = [s for s in sessions if s.source == "opencode-export"]
    assert not rejected
    assert len(exports) >= 3
    two = by_title(exports, "What hello.py prints")
    assert [t.task for t in two.turns] == ["What does hello.py print?",
                                           "Answer in one word: which function does it call?"]
    first, second = two.turns
    assert first.history == []
    # History is the earlier turn in creation order, never this turn's own reply.
    assert [m.role for m in second.history] == ["user", "assistant"]
    assert second.history[0].text == first.task and second.history[1].text == first.response
    assert second.response and second.response not in [m.text for m in second.history]
    for t in two.turns:
        assert t.model == "local/smollm2" and t.agent == "build"
        assert t.outcome.finish == "stop" and t.outcome.error is None and t.outcome.success is None
        assert t.time_start and t.time_end and t.time_end >= t.time_start
        # llama.cpp's server sends no usage while streaming, so OpenCode recorded zero tokens.
        assert t.usage.prompt_tokens == 0 and t.usage.completion_tokens == 0
    assert two.context.captured == "start" and two.context.working_directory == two.project
    assert two.project and two.project.endswith("/proj")


def test_real_subagent_is_linked_to_its_caller():
    sessions, _ = read(REAL)
    exports = [s for s in sessions if s.source == "opencode-export"]
    child = by_title(exports, "Summarize a file in a subagent")
    parent = next(s for s in exports if s.id == child.parent_id)
    assert child.group_id == parent.id == parent.group_id
    turn = parent.turns[0]
    # `/summarize hello.py` stores only a subtask part; its prompt is the request.
    assert turn.task == "Summarize the file hello.py in one sentence."
    task = turn.actions[0]
    assert task.tool == "task" and task.status == STATUS_OK
    assert task.args["subagent_type"] == "general" and task.args["prompt"] == turn.task
    assert child.id in task.result
    # OpenCode's synthetic "Summarize the task tool output above..." continues the turn, not a new one.
    assert len(parent.turns) == 1 and turn.outcome.finish == "stop"
    assert child.turns[0].agent == "general"
    raw = json.loads((REAL / f"export-{parent.id}.json").read_text())
    tool_part = next(p for m in raw["messages"] for p in m["parts"] if p["type"] == "tool")
    assert tool_part["state"]["metadata"]["sessionId"] == child.id


def test_hand_made_export_with_subagent():
    sessions, rejected = read(FIX / "exports")
    assert not rejected
    parent = by_title(sessions, "Add a verbose flag")
    child = by_title(sessions, "Find logging setup")
    assert child.parent_id == parent.id and child.group_id == parent.group_id == parent.id
    turn = parent.turns[0]
    assert [(a.tool, a.status) for a in turn.actions] == [("task", STATUS_OK), ("read", STATUS_OK), ("edit", STATUS_OK)]
    assert turn.actions[0].args == {"description": "Find logging setup",
                                    "prompt": "Find where logging is configured in this repo",
                                    "subagent_type": "explore"}
    assert turn.actions[2].args["filePath"] == "/home/dev/cli-tool/cli.py"
    assert turn.actions[1].time_start < turn.actions[1].time_end
    # Tokens and cost are summed over the turn's two assistant messages; the last one's finish counts.
    assert (turn.usage.prompt_tokens, turn.usage.completion_tokens) == (2400 + 2900, 180 + 60)
    assert turn.usage.cost == pytest.approx(0.0163)
    assert turn.outcome.finish == "stop" and turn.outcome.files_modified == ["cli.py"]
    assert turn.model == "anthropic/claude-sonnet-4-5" and turn.agent == "build"
    assert turn.response.startswith("Added `--verbose`")
    assert child.turns[0].agent == "explore" and child.turns[0].model == "anthropic/claude-haiku-4-5"
    assert [a.tool for a in child.turns[0].actions] == ["grep"]


def test_real_file_attachment_skips_synthetic_parts():
    """Trimmed from a real `opencode run --file` session whose provider call kept failing."""
    sessions, _ = read(FIX / "exports" / "real-file-attachment.json")
    (turn,) = sessions[0].turns
    assert turn.task == "Explain this file briefly."  # not the inlined "Called the Read tool..." dump
    assert turn.response == "" and turn.outcome.finish == "unknown"
    assert derive_success(turn, "finish_stop") is False


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_export_schema_rejects_a_broken_tool_part_with_its_location(tmp_path):
    data = json.loads((FIX / "exports" / "subagent-parent.json").read_text())
    del data["messages"][1]["parts"][2]["state"]["output"]  # a completed call without output
    (_, item), = read_all(_write(tmp_path / "broken.json", data))
    assert isinstance(item, Rejected) and item.path == "broken.json"
    assert "schemas/opencode-export.schema.json" in item.reason
    assert "messages[1].parts[2].state: 'output' is a required property" in item.reason


def test_export_schema_rejects_unknown_role_and_truncated_file(tmp_path):
    data = json.loads((FIX / "exports" / "subagent-child.json").read_text())
    data["messages"][0]["info"]["role"] = "system"
    (_, item), = read_all(_write(tmp_path / "role.json", data))
    assert isinstance(item, Rejected) and "messages[0].info.role" in item.reason
    text = (FIX / "exports" / "subagent-child.json").read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    (_, item), = read_all(tmp_path / "cut.json")
    assert isinstance(item, Rejected) and "invalid JSON" in item.reason


def test_title_only_export_is_skipped_silently(tmp_path):
    data = json.loads((FIX / "exports" / "subagent-child.json").read_text())
    data["messages"] = []
    assert list(read_all(_write(tmp_path / "empty.json", data))) == []


# ---------------------------------------------------------------- opencode.db


def test_db_gives_the_same_sessions_as_the_exports():
    sessions, rejected = read(REAL)
    assert not rejected
    from_db = {s.id: comparable(s) for s in sessions if s.source == "opencode-db"}
    from_exports = {s.id: comparable(s) for s in sessions if s.source == "opencode-export"}
    assert from_db and from_db == from_exports


def _db_copy(tmp_path: Path) -> Path:
    db = tmp_path / "opencode.db"
    shutil.copy(REAL / "opencode.db", db)
    return db


def test_db_is_opened_read_only_and_left_untouched(tmp_path):
    db = _db_copy(tmp_path)
    before = (db.read_bytes(), db.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir()))
    sessions, rejected = read(db)
    assert sessions and not rejected
    assert (db.read_bytes(), db.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir())) == before


def test_db_reads_while_opencode_holds_a_write_transaction_in_wal_mode(tmp_path):
    db = _db_copy(tmp_path)
    writer = sqlite3.connect(db, isolation_level=None, timeout=1)
    try:
        assert writer.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        expected = {s.id for s in read(db)[0]}
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE session SET title = 'renamed while reading'")
        writer.execute("INSERT INTO session (id, project_id, slug, directory, title, version, time_created, "
                       "time_updated) VALUES ('ses_new', 'global', 'new', '/tmp', 'new', '1.18.33', 1, 1)")
        sessions, rejected = read(db)  # the uncommitted write is neither seen nor in the way
        assert not rejected and {s.id for s in sessions} == expected
        assert all(s.title != "renamed while reading" for s in sessions)
        writer.execute("COMMIT")  # and the reader never blocked the writer
    finally:
        writer.close()


def test_db_links_a_child_through_task_metadata_when_parent_id_is_missing(tmp_path):
    db = _db_copy(tmp_path)
    con = sqlite3.connect(db)
    child, parent = con.execute("SELECT id, parent_id FROM session WHERE parent_id IS NOT NULL").fetchone()
    con.execute("UPDATE session SET parent_id = NULL")
    con.commit()
    con.close()
    sessions, _ = read(db)
    assert next(s for s in sessions if s.id == child).parent_id == parent


def test_db_malformed_message_rejects_only_its_session(tmp_path):
    db = _db_copy(tmp_path)
    con = sqlite3.connect(db)
    ids = [r[0] for r in con.execute("SELECT id FROM session ORDER BY time_created")]
    bad_role, bad_json = ids[0], ids[1]
    mid = con.execute("SELECT id FROM message WHERE session_id = ? ORDER BY id LIMIT 1", (bad_role,)).fetchone()[0]
    con.execute("UPDATE message SET data = json_set(data, '$.role', 'robot') WHERE id = ?", (mid,))
    pid = con.execute("SELECT id FROM part WHERE session_id = ? ORDER BY id LIMIT 1", (bad_json,)).fetchone()[0]
    con.execute("UPDATE part SET data = '{\"type\": \"text\", \"text\": ' WHERE id = ?", (pid,))
    con.commit()
    con.close()
    sessions, rejected = read(db)
    assert {r.path for r in rejected} == {f"opencode.db#{bad_role}", f"opencode.db#{bad_json}"}
    why = {r.path.split("#")[1]: r.reason for r in rejected}
    assert mid in why[bad_role] and "info.role" in why[bad_role]
    assert pid in why[bad_json] and "not valid JSON" in why[bad_json]
    assert {s.id for s in sessions} == set(ids) - {bad_role, bad_json}


def test_db_streams_one_session_at_a_time(monkeypatch):
    loaded = []
    real = opencode_db._messages

    def spy(con, session_id):
        loaded.append(session_id)
        return real(con, session_id)

    monkeypatch.setattr(opencode_db, "_messages", spy)
    items = opencode_db.OpenCodeDbReader().read(REAL / "opencode.db", "opencode.db")
    first = next(items)
    assert loaded == [first.id]  # nothing else was loaded before the first session was handed on
    rest = list(items)
    assert len(loaded) == 1 + len(rest)


def test_files_that_are_not_opencode_databases_are_rejected_with_a_reason(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    (tmp_path / "opencode.db").write_bytes(b"this is not a database" * 100)
    reasons = {rel: item.reason for rel, item in read_all(tmp_path)}
    assert "session, message, part" in reasons["other.db"]
    assert "not a readable SQLite database" in reasons["opencode.db"]


def test_sessions_only_in_the_newer_message_table_are_reported(tmp_path):
    db = _db_copy(tmp_path)
    con = sqlite3.connect(db)
    sid = con.execute("SELECT id FROM session ORDER BY time_created LIMIT 1").fetchone()[0]
    con.execute("DELETE FROM part WHERE session_id = ?", (sid,))
    con.execute("DELETE FROM message WHERE session_id = ?", (sid,))
    con.execute("INSERT INTO session_message (id, session_id, type, seq, time_created, time_updated, data) "
                "VALUES ('sm_1', ?, 'user', 0, 1, 1, '{}')", (sid,))
    con.commit()
    con.close()
    _, rejected = read(db)
    assert [r.path for r in rejected] == [f"opencode.db#{sid}"] and "session_message" in rejected[0].reason


# ---------------------------------------------------------------- storage/ tree


def test_storage_tree_sessions_turns_and_tool_status():
    sessions, rejected = read(FIX / "storage")
    assert not rejected
    assert len(sessions) == 2  # the title-only session is skipped, not rejected
    fix = by_title(sessions, "Fix failing test")
    (turn,) = fix.turns
    assert turn.task == "Fix the failing test in @test_math.py"  # synthetic file dump skipped
    assert [(a.tool, a.status) for a in turn.actions] == [
        ("read", STATUS_OK), ("bash", STATUS_ERROR), ("edit", STATUS_OK), ("bash", STATUS_OK)]
    assert turn.actions[1].result.startswith("Error: 1 failed")
    assert turn.actions[1].args == {"command": "pytest -q", "description": "Run the tests"}
    assert turn.outcome.tool_errors == 1 and turn.outcome.files_modified == ["test_math.py"]
    assert turn.model == "openai/gpt-4.1" and (turn.usage.prompt_tokens, turn.usage.completion_tokens) == (5000, 400)
    assert derive_success(turn, "finish_stop") is True and derive_success(turn, "no_errors") is False

    rename = by_title(sessions, "Rename util module")
    first, second = rename.turns
    assert [(a.tool, a.status) for a in first.actions] == [
        ("apply_patch", STATUS_OK), ("grep", STATUS_UNKNOWN), ("bash", STATUS_UNKNOWN)]
    assert first.agent == "build"  # 1.0.x assistants carry only `mode`
    assert first.outcome.error == "MessageAbortedError" and first.outcome.finish is None
    assert first.outcome.files_modified == ["helpers.py", "util.py"]  # from the patch headers
    assert derive_success(first, "finish_stop") is False
    assert second.task == "continue" and [m.role for m in second.history] == ["user"]
    assert rename.time_created > fix.time_created and rename.project == "/home/dev/calc"


def test_storage_bad_file_rejects_only_its_session(tmp_path):
    tree = tmp_path / "storage"
    shutil.copytree(FIX / "storage", tree)
    sessions, _ = read(tree)
    victim = by_title(sessions, "Fix failing test")
    part = sorted((tree / "part").glob("*/*.json"))[0]
    part_of_victim = next(p for p in sorted((tree / "part").glob("*/*.json"))
                          if json.loads(p.read_text())["sessionID"] == victim.id)
    part_of_victim.write_text("{ not json")
    sessions, rejected = read(tree)
    assert [r.path for r in rejected] == [f"storage#{victim.id}"]
    assert part_of_victim.relative_to(tree).as_posix() in rejected[0].reason
    assert "invalid JSON" in rejected[0].reason
    assert [s.title for s in sessions] == ["Rename util module"]
    assert part.exists()


def test_storage_tool_part_in_an_unknown_status_is_named(tmp_path):
    tree = tmp_path / "storage"
    shutil.copytree(FIX / "storage", tree)
    for p in (tree / "part").glob("*/*.json"):
        data = json.loads(p.read_text())
        if data.get("tool") == "grep":
            data["state"]["status"] = "done"
            p.write_text(json.dumps(data))
    sessions, rejected = read(tree)
    assert len(rejected) == 1 and "state.status" in rejected[0].reason and "'done'" in rejected[0].reason
    assert len(sessions) == 1


def test_pre_04_storage_layout_is_rejected_once(tmp_path):
    old = tmp_path / "storage"
    (old / "session" / "info").mkdir(parents=True)
    (old / "session" / "info" / "ses_1.json").write_text("{}")
    (old / "session" / "message" / "ses_1").mkdir(parents=True)
    items = list(read_all(tmp_path))
    assert len(items) == 1 and "before ~0.4" in items[0][1].reason


# ---------------------------------------------------------------- plugin raw session-<id>.json


def test_plugin_raw_session_is_put_back_in_creation_order():
    sessions, rejected = read(FIX / "plugin")
    assert not rejected
    (s,) = sessions
    first, second = s.turns
    # The file stores the reply ahead of its request; the turn gets it back as its response.
    assert first.task == "Change the port in config.yaml to 8080"
    assert first.history == [] and first.response.startswith("I'll read config.yaml first.")
    assert [(a.tool, a.status) for a in first.actions] == [("read", STATUS_UNKNOWN), ("edit", STATUS_OK)]
    assert [(a.tool, a.status) for a in second.actions] == [("bash", STATUS_ERROR)]
    assert [m.text for m in second.history] == [first.task, first.response]
    assert first.model == "ollama/qwen2.5-coder:7b" and first.agent == "build"
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (1500, 90)
    assert first.outcome.files_modified == ["config.yaml"] and first.outcome.finish == "stop"
    assert second.outcome.tool_errors == 1
    # Only the directory is kept: the rest of the plugin's context is the end-of-work state.
    assert s.context.captured == "start" and s.context.working_directory == "/home/dev/webapp"
    assert s.context.files == []


def test_plugin_raw_session_tool_calls_survive_a_lost_reply(tmp_path):
    src = next((FIX / "plugin").glob("session-*.json"))
    data = json.loads(src.read_text())
    data["messages"] = [m for m in data["messages"] if m["content"] != "Tests fail: 2 errors."]
    (s,) = read(_write(tmp_path / src.name, data))[0]
    last = s.turns[-1]
    assert [a.tool for a in last.actions] == ["bash"] and last.response == "" and last.outcome.finish is None


def test_plugin_raw_session_schema_rejects_with_location(tmp_path):
    src = next((FIX / "plugin").glob("session-*.json"))
    data = json.loads(src.read_text())
    data["toolCalls"][1]["args"] = "filePath=config.yaml"
    (_, item), = read_all(_write(tmp_path / src.name, data))
    assert isinstance(item, Rejected)
    assert "schemas/plugin-session.schema.json" in item.reason and "toolCalls[1].args" in item.reason


# ---------------------------------------------------------------- Claude Code transcripts


def test_claude_code_transcript_maps_tools_to_opencode():
    sessions, rejected = read(FIX / "claude")
    assert not rejected
    main = next(s for s in sessions if s.parent_id is None)
    sub = next(s for s in sessions if s.parent_id)
    first, second = main.turns
    assert first.task == "Add a test for parse_date in utils.py"
    assert [(a.tool, a.status) for a in first.actions] == [
        ("read", STATUS_OK), ("task", STATUS_OK), ("edit", STATUS_ERROR), ("write", STATUS_OK), ("bash", STATUS_OK)]
    assert first.actions[0].args == {"filePath": "/home/dev/app/utils.py"}
    assert first.actions[2].args == {"filePath": "/home/dev/app/utils.py", "oldString": "return x",
                                     "newString": "return s.strip()", "replaceAll": False}
    assert first.actions[2].result.startswith("<tool_use_error>")
    assert first.actions[1].result == "utils.py: parse_date"  # a block-list result becomes its text
    assert first.response == "Added tests/test_utils.py; the new test passes."
    assert first.outcome.finish == "end_turn" and derive_success(first, "finish_stop") is True
    assert derive_success(first, "no_errors") is False
    assert first.outcome.files_modified == ["tests/test_utils.py"]
    assert first.model == "anthropic/claude-sonnet-4-5-20250929"
    # Usage repeats on every record of one API message: counted once per message.
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (210, 179)
    # The /cost command and its caveat are not requests; the next typed message is.
    assert second.task == "Now also handle ISO week dates"
    assert second.outcome.error == "APIError" and derive_success(second, "finish_stop") is False
    assert [m.role for m in second.history] == ["user", "assistant", "assistant"]
    assert main.project == "/home/dev/app" and main.context.captured == "start"
    assert sub.parent_id == main.id and sub.group_id == main.id and sub.title == "Find date helpers"
    (sub_turn,) = sub.turns
    assert sub_turn.agent == "general-purpose"
    assert sub_turn.actions[0].tool == "grep" and sub_turn.actions[0].args == {"pattern": "def parse_", "include": "*.py"}


def test_claude_code_damaged_line_rejects_the_file_but_a_partial_last_line_does_not(tmp_path):
    src = next((FIX / "claude" / "-home-dev-app").glob("*.jsonl"))
    lines = src.read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines) + lines[1][: len(lines[1]) // 2])  # still being written
    sessions, rejected = read(tmp_path / "a.jsonl")
    assert len(sessions) == 1 and not rejected
    broken = json.loads(lines[4])
    broken["message"]["content"][0]["input"] = "not an object"
    (tmp_path / "b.jsonl").write_text("".join(lines[:4]) + json.dumps(broken) + "\n" + "".join(lines[5:]))
    (_, item), = read_all(tmp_path / "b.jsonl")
    assert isinstance(item, Rejected) and "line 5" in item.reason and "message.content" in item.reason


# ---------------------------------------------------------------- through the parse stage


def test_parse_mixes_plugin_files_exports_storage_and_opencode_db(tmp_path):
    logs = tmp_path / "logs"
    for name in ("plugin", "exports", "storage", "claude"):
        shutil.copytree(FIX / name, logs / name)
    shutil.copytree(REAL, logs / "real", ignore=shutil.ignore_patterns("*.db"))
    out, rej = tmp_path / "sessions.jsonl", tmp_path / "rejected.jsonl"
    report = parse(str(logs), str(REAL / "opencode.db"), redact=True, strict=True, filt=SessionFilter(),
                   sessions_out=out, rejected_out=rej)
    n_real = len(list(REAL.glob("export-*.json")))
    # Each real session is both exported and in the database: the copy read first is kept.
    assert report["sessions_by_source"] == {"opencode-export": 3 + n_real, "opencode-storage": 2,
                                            "plugin-session": 1, "claude-code": 2}
    assert report["duplicates"] == n_real and report["sessions"] == 8 + n_real
    assert report["invalid_files"] == 0 and list(read_jsonl(rej)) == []
    rows = [Session.from_dict(r) for r in read_jsonl(out)]
    assert [s.id for s in rows] == sorted(s.id for s in rows)
    child = next(s for s in rows if (s.title or "").startswith("Find logging setup"))
    assert child.group_id == next(s for s in rows if s.title == "Add a verbose flag").id
    assert all(t.outcome.success is None for s in rows for t in s.turns)  # left to data.success_rule


# ---------------------------------------------------------------- against the real OpenCode CLI


@pytest.mark.timeout(600)
def test_real_opencode_sessions_regenerate_and_parse(tmp_path, opencode_bin, llama_server):
    out = tmp_path / "fixtures"
    env = {**os.environ, "OPENCODE": str(opencode_bin), "LLAMA_URL": llama_server, "MODEL": "smollm2",
           "OUT": str(out), "QUICK": "1", "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stderr[-3000:]
    sessions, rejected = read(out)
    assert not rejected
    exports = [s for s in sessions if s.source == "opencode-export"]
    from_db = {s.id: comparable(s) for s in sessions if s.source == "opencode-db"}
    assert len(exports) == 3 and from_db == {s.id: comparable(s) for s in exports}
    two = by_title(exports, "What hello.py prints")
    assert len(two.turns) == 2 and [m.role for m in two.turns[1].history] == ["user", "assistant"]
    child = next(s for s in exports if s.parent_id)
    parent = next(s for s in exports if s.id == child.parent_id)
    assert [(a.tool, a.status) for a in parent.turns[0].actions] == [("task", STATUS_OK)]
    for s in exports:
        for t in s.turns:
            assert t.model == "local/smollm2" and isinstance(t.outcome.finish, str) and t.task


def test_git_repository_as_opencode_told_the_model(tmp_path):
    """opencode.db's project `vcs` decides (the real fixtures ran outside git: "Is directory a git repo: no");
    an export without it goes by the project id, which OpenCode takes from a git repo's first commit."""
    from_db = [s for _, s in read_all(REAL / "opencode.db") if isinstance(s, Session)]
    assert from_db and all(s.context.is_git is False for s in from_db)
    export = json.loads(next(REAL.glob("export-*.json")).read_text(encoding="utf-8"))
    for project, expected in (("global", False), ("4f1c2a9e0b7d", True)):
        export["info"]["projectID"] = project
        (tmp_path / "export.json").write_text(json.dumps(export), encoding="utf-8")
        (session,) = [s for _, s in read_all(tmp_path / "export.json") if isinstance(s, Session)]
        assert session.context.is_git is expected
