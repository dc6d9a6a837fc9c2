"""The data stages use every core, and what they write does not depend on how many: parse and
build_examples give the same bytes with one worker and with several."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from bench.sessions import write_logs
from lib.data.build_examples import build_file
from lib.data.examples import Filters
from lib.core.files import dumps, loads, read_jsonl
from lib.data.ingest import SessionFilter, parse
from lib.data.session import line_ids
from lib.data.split import row_groups

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"


def _mixed_logs(dest: Path) -> Path:
    """Real-sized plugin sessions and one input of every other format, bad files included, and an
    opencode.db whose subagent is linked to its caller only through the caller's `task` call."""
    write_logs(dest / "bench", 40)
    for name in ("valid-current.json", "valid-legacy.json", "bad-json.json", "empty.json", "wrong-type.json"):
        shutil.copy(FIX / "plugin" / name, dest / f"dspy-{name}")
    shutil.copytree(FIX / "opencode" / "exports", dest / "exports")
    shutil.copytree(FIX / "opencode" / "storage", dest / "storage")
    shutil.copytree(FIX / "opencode" / "claude", dest / "claude")
    shutil.copy(FIX / "opencode" / "real" / "opencode.db", dest / "opencode.db")
    con = sqlite3.connect(dest / "opencode.db")
    con.execute("UPDATE session SET parent_id = NULL")
    con.commit()
    con.close()
    return dest


def _parse(logs: Path, out: Path, workers: int) -> tuple[dict, bytes, bytes]:
    report = parse(str(logs), None, True, False, SessionFilter(), out / "sessions.jsonl", out / "rejected.jsonl",
                   workers=workers)
    report.pop("warning")  # names the output folder
    return report, (out / "sessions.jsonl").read_bytes(), (out / "rejected.jsonl").read_bytes()


def test_parse_writes_the_same_bytes_with_one_worker_or_two(tmp_path):
    logs = _mixed_logs(tmp_path / "logs")
    one = _parse(logs, tmp_path / "one", 1)
    two = _parse(logs, tmp_path / "two", 2)
    assert one == two
    report = one[0]
    assert report["sessions"] > 40 and report["invalid_files"] == 3 and report["redactions"] > 0
    sessions = read_jsonl(tmp_path / "two" / "sessions.jsonl")
    db = {s["id"]: s for s in sessions if s["source"] == "opencode-db"}
    child = next(s for s in db.values() if (s["title"] or "").startswith("Summarize a file"))
    assert child["parent_id"] in db  # found through the caller's task call, in the worker-read chunks too


def test_build_examples_writes_the_same_bytes_with_one_worker_or_two(tmp_path):
    logs = _mixed_logs(tmp_path / "logs")
    _parse(logs, tmp_path, 2)
    results = []
    for workers in (1, 2):
        filters = Filters(True, "finish_stop", 0.0, 0.3, None)
        out = tmp_path / f"examples-{workers}.jsonl"
        built = build_file(tmp_path / "sessions.jsonl", out, filters, "step", 6, 1200, workers=workers)
        results.append((out.read_bytes(), built.examples, built.tools, filters.removed, filters.seen))
    assert results[0] == results[1]
    assert results[0][1] > 100


def test_ids_of_lines_laid_out_otherwise_are_still_read(tmp_path):
    row = {"context": {"files": ["a"]}, "id": "ses_1", "parent_id": "ses_0", "turns": []}
    assert line_ids(dumps(row).encode()) == ("ses_1", "ses_0")
    assert line_ids(dumps({**row, "parent_id": None}).encode()) == ("ses_1", None)
    assert line_ids(json.dumps(row, indent=1).encode()) == ("ses_1", "ses_0")  # not canonical: parsed whole
    odd = {**row, "id": 'a"é', "parent_id": "b\\c"}
    assert line_ids(dumps(odd).encode()) == ('a"é', "b\\c")
    example = {"gold": {"args": {"group_id": "no", "x": ',"session_id":"no"'}}, "group_id": "g", "id": "s/t0",
               "session_id": "s", "step": None, "turn": 0}
    assert row_groups(dumps(example).encode()) == ("g", "s")
    assert row_groups(dumps({**example, "tags": ["x"]}).encode()) == ("g", "s")  # a key after session_id
    assert row_groups(json.dumps(example).encode()) == ("g", "s")  # not canonical: parsed whole
    odd = {**example, "group_id": 'g"1é', "session_id": "s\\2"}
    assert row_groups(dumps(odd).encode()) == ('g"1é', "s\\2")


def test_collapsing_a_prefix_of_tool_output_cuts_it_the_same_as_collapsing_all_of_it():
    import random
    from lib.data.examples import _cut, _squeeze
    rnd = random.Random(3)
    words = ["a", "bb", "ccc", "x" * 50, " ", "  ", "\n", "\t\t", "é", "日本"]
    for _ in range(2000):
        text = "".join(rnd.choice(words) for _ in range(rnd.randint(0, 400)))
        for limit in (1, 5, 120):
            assert _cut(_squeeze(text, limit), limit) == _cut(" ".join(text.split()), limit)


def test_json_that_only_the_json_module_reads_is_read_and_kept_writable():
    """orjson reads strict JSON; NaN and a lone surrogate escape (a cut-off emoji) are read too, and the
    lone surrogate becomes U+FFFD so the session can still be written as UTF-8."""
    assert loads(b'{"a": [1, "\\ud83d\\ude00"]}') == {"a": [1, "\U0001F600"]}
    value = loads('{"task": "\\ud83d cut", "\\udc00k": NaN}')
    assert value["task"] == "\ufffd cut" and "\ufffdk" in value
    assert dumps({"task": value["task"]}).encode("utf-8")
    try:
        loads('{"a": }')
    except json.JSONDecodeError as exc:
        assert (exc.lineno, exc.colno) == (1, 7)
    else:
        raise AssertionError("invalid JSON was read")


def test_a_session_file_with_a_lone_surrogate_escape_is_parsed_with_the_others(tmp_path):
    logs = tmp_path / "logs"
    write_logs(logs, 3)
    first = sorted(logs.rglob("*.json"))[0]
    text = first.read_text(encoding="utf-8")
    at = text.index('"task"')
    at = text.index('"', at + 7) + 1
    first.write_text(text[:at] + "\\ud83d " + text[at:], encoding="utf-8")
    out = tmp_path / "out"
    report = parse(str(logs), None, True, False, SessionFilter(), out / "sessions.jsonl", out / "rejected.jsonl")
    assert report["sessions"] == 3 and report["invalid_files"] == 0 and "warning" not in report
    assert "\ufffd " in (out / "sessions.jsonl").read_text(encoding="utf-8")
