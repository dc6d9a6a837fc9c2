"""Secrets filed under a key that names them (`{"password": ...}` in tool arguments: MCP tools,
Claude Code inputs) never reach data/, whichever input format carried them."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from lib.core.files import read_jsonl
from lib.data.ingest import SessionFilter, parse

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OC = FIX / "opencode"

PLANTED = {"password": "hunter2secretXYZ", "apiKey": "abcd1234efgh5678",
           "env": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
           "passwordField": "string"}  # a name that only mentions the word: kept
VALUES = ("hunter2secretXYZ", "abcd1234efgh5678", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def _rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _logs(dest: Path) -> Path:
    """One input of every format, each with the secrets planted in a tool call's arguments."""
    dest.mkdir()
    shutil.copy(FIX / "plugin" / "valid-current.json", dest / "dspy-ses_plantedplugin.json")
    _rewrite(dest / "dspy-ses_plantedplugin.json",
             lambda d: d["examples"][0]["actions"][0]["args"].update(PLANTED))
    raw = next((OC / "plugin").glob("session-*.json"))
    shutil.copy(raw, dest / raw.name)
    _rewrite(dest / raw.name, lambda d: d["toolCalls"][0]["args"].update(PLANTED))
    shutil.copy(OC / "exports" / "subagent-parent.json", dest / "export.json")

    def plant_export(d):
        part = next(p for m in d["messages"] for p in m["parts"] if p.get("type") == "tool")
        part["state"]["input"].update(PLANTED)
    _rewrite(dest / "export.json", plant_export)
    shutil.copytree(OC / "storage", dest / "storage")
    tool_part = next(p for p in sorted((dest / "storage" / "part").rglob("*.json"))
                     if json.loads(p.read_text(encoding="utf-8")).get("type") == "tool")
    _rewrite(tool_part, lambda d: d["state"]["input"].update(PLANTED))
    shutil.copytree(OC / "claude", dest / "claude")
    transcript = next((dest / "claude").glob("*/*.jsonl"))
    lines = transcript.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        record = json.loads(line)
        blocks = record.get("message", {}).get("content")
        uses = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"] if isinstance(blocks, list) else []
        if uses:
            uses[0]["input"].update(PLANTED)
            lines[n] = json.dumps(record)
            break
    transcript.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = dest / "opencode.db"
    shutil.copy(OC / "real" / "opencode.db", db)
    con = sqlite3.connect(db)
    changed = con.execute("UPDATE part SET data = json_set(data, '$.state.input', json(?)) "
                          "WHERE json_extract(data, '$.type') = 'tool'", (json.dumps(PLANTED),)).rowcount
    con.commit()
    con.close()
    assert changed >= 1
    return dest


def test_secrets_in_tool_arguments_of_every_input_format_are_redacted(tmp_path):
    logs = _logs(tmp_path / "logs")
    out = tmp_path / "out"
    report = parse(str(logs), None, True, False, SessionFilter(), out / "sessions.jsonl", out / "rejected.jsonl")
    assert report["invalid_files"] == 0, read_jsonl(out / "rejected.jsonl")
    assert set(report["sessions_by_source"]) == {"plugin", "plugin-session", "opencode-export", "opencode-storage",
                                                 "claude-code", "opencode-db"}
    text = (out / "sessions.jsonl").read_text(encoding="utf-8")
    for value in VALUES:
        assert value not in text
    planted = [a["args"] for s in read_jsonl(out / "sessions.jsonl") for t in s["turns"] for a in t["actions"]
               if "passwordField" in a["args"]]
    assert {s["source"] for s in read_jsonl(out / "sessions.jsonl")
            if any("passwordField" in a["args"] for t in s["turns"] for a in t["actions"])} == \
        set(report["sessions_by_source"])
    for args in planted:
        assert args["password"] == args["apiKey"] == "[REDACTED:password]"
        assert args["env"] == {"AWS_SECRET_ACCESS_KEY": "[REDACTED:password]"}
        assert args["passwordField"] == "string"
    assert report["redactions_by_kind"]["password"] >= 3 * len(planted)
    assert report["redactions"] == text.count("[REDACTED:")


def test_without_redaction_the_planted_values_are_kept(tmp_path):
    logs = _logs(tmp_path / "logs")
    out = tmp_path / "out"
    report = parse(str(logs), None, False, False, SessionFilter(), out / "sessions.jsonl", out / "rejected.jsonl")
    text = (out / "sessions.jsonl").read_text(encoding="utf-8")
    assert all(value in text for value in VALUES)
    assert report["redactions"] == 0
