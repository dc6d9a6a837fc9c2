"""Sessions -> examples: granularity, steps so far, history without the turn's own reply, cleaning, filters."""
from __future__ import annotations

import copy
import json

import pytest

from helpers import FIXTURES, SAMPLES, load_json, sample_files
from lib.data.examples import INPUT_FIELDS, OUTPUT_FIELDS, Filters, build, with_earlier_steps
from lib.data.session import Session
from lib.data.sources.common import clean_task, iso_to_ms
from lib.data.sources.plugin_logger import to_session

BIG = 10**6  # no history or field limit


def keep_all(**over) -> Filters:
    args = dict(require_success=True, success_rule="finish_stop", min_correctness=0.0, min_efficiency=None,
                agent_filter=None)
    return Filters(**{**args, **over})


def fixture_session(name: str) -> Session:
    return to_session(load_json(FIXTURES / f"{name}.json"), f"{name}.json")


def sample_sessions() -> list[tuple[dict, Session]]:
    return [(load_json(p), to_session(load_json(p), p.relative_to(SAMPLES).as_posix())) for p in sample_files()]


def rows_of(sessions: list[Session], granularity: str, filters: Filters | None = None, history: int = BIG,
            chars: int = BIG) -> list[dict]:
    return list(build(sessions, filters or keep_all(), granularity, history, chars))


# --- granularity and steps so far -----------------------------------------------------------------------------

def test_turn_granularity_gives_one_row_per_turn():
    s = fixture_session("valid-current")
    rows = rows_of([s], "turn")
    assert [r["id"] for r in rows] == [f"{s.id}/t0", f"{s.id}/t1"]
    assert [r["step"] for r in rows] == [None, None]
    assert [r["gold"]["plan"] for r in rows] == [["read", "edit", "bash"], ["bash"]]
    assert [r["gold"]["next_action"]["tool"] for r in rows] == ["read", "bash"]
    assert all(r["inputs"]["steps_so_far"] == "" for r in rows)


def test_step_granularity_gives_one_row_per_action():
    s = fixture_session("valid-current")
    rows = rows_of([s], "step")
    assert [r["id"] for r in rows] == [f"{s.id}/t0/s0", f"{s.id}/t0/s1", f"{s.id}/t0/s2", f"{s.id}/t1/s0"]
    assert [r["gold"]["next_action"]["tool"] for r in rows] == ["read", "edit", "bash", "bash"]
    assert [r["gold"]["plan"] for r in rows] == [["read", "edit", "bash"], ["edit", "bash"], ["bash"], ["bash"]]
    assert [json.loads(r["outputs"]["plan"]) for r in rows] == [r["gold"]["plan"] for r in rows]
    assert json.loads(rows[1]["outputs"]["next_action"]) == {
        "tool": "edit", "args": {"filePath": "/home/dev/projects/invoice-api/src/invoice_api/config.py",
                                 "newString": 'timeout = int(env.get("INVOICE_TIMEOUT", "30"))',
                                 "oldString": 'timeout = int(env["INVOICE_TIMEOUT"])'}}
    for r in rows:
        assert set(r["inputs"]) == set(INPUT_FIELDS) and set(r["outputs"]) == set(OUTPUT_FIELDS)
        assert r["session_id"] == s.id and r["group_id"] == s.id


def test_step_rows_carry_the_previous_actions_of_their_turn():
    rows = rows_of([fixture_session("valid-current")], "step")
    steps = [r["inputs"]["steps_so_far"] for r in rows]
    assert steps[0] == ""
    assert steps[1].splitlines() == [steps[1]] and steps[1].startswith('1. read {"filePath": ')
    assert "config.py" in steps[1] and "-> ok" in steps[1]
    lines = steps[2].splitlines()
    assert len(lines) == 2 and lines[0] == steps[1] and lines[1].startswith("2. edit ")
    assert steps[3] == ""  # a new turn starts with no actions taken
    assert "pytest" not in steps[2]  # the action being predicted is never among the inputs


def test_replay_steps_are_the_turns_earlier_calls_taken_from_its_earlier_rows():
    s = fixture_session("valid-current")
    rows = rows_of([s], "step")
    # a row holds only its own call, so its size does not grow with its step
    assert all("steps" not in r["replay"] for r in rows)
    calls = [r["replay"]["call"] for r in rows]
    assert [c["tool"] for c in calls] == ["read", "edit", "bash", "bash"]
    assert calls[0]["args"] == s.turns[0].actions[0].args and calls[0]["result"] == s.turns[0].actions[0].result
    shuffled = copy.deepcopy([rows[2], rows[3], rows[0], rows[1]])  # a split's rows, in any order
    with_earlier_steps(shuffled)
    by_id = {r["id"]: r["replay"]["steps"] for r in shuffled}
    assert by_id[rows[0]["id"]] == [] and by_id[rows[3]["id"]] == []  # a turn's first step
    assert by_id[rows[1]["id"]] == calls[:1] and by_id[rows[2]["id"]] == calls[:2]
    turn_rows = with_earlier_steps(copy.deepcopy(rows_of([s], "turn")))
    assert all(r["replay"]["steps"] == [] for r in turn_rows)


def test_row_counts_on_the_sample_sessions():
    pairs = sample_sessions()
    n_turns = sum(len(data["examples"]) for data, _ in pairs)
    n_actions = sum(len(ex["actions"]) for data, _ in pairs for ex in data["examples"])
    sessions = [s for _, s in pairs]
    assert len(rows_of(sessions, "turn")) == n_turns
    assert len(rows_of(sessions, "step")) == n_actions
    assert n_actions > n_turns


# --- history: never the turn's own reply, always in creation order -------------------------------------------

def _quirk_sessions() -> list[tuple[dict, Session]]:
    """Sample sessions whose first turn's history holds only replies: the turn's own first reply arrived first."""
    out = []
    for data, session in sample_sessions():
        first = data["examples"][0]["input"]["conversationHistory"]
        if first and all(e["role"] == "assistant" for e in first):
            out.append((data, session))
    return out


def _own_reply(example: dict) -> dict:
    """In an arrival-order session, a turn's own first reply is the last entry of its conversationHistory."""
    own = example["input"]["conversationHistory"][-1]
    assert own["role"] == "assistant"
    return own


def _index(history, role: str, text: str, stamp: int | None = None) -> int | None:
    for i, m in enumerate(history):
        if m.role == role and m.text == text and (stamp is None or m.time_created == stamp):
            return i
    return None


def test_sample_data_has_the_arrival_order_quirk():
    quirky = _quirk_sessions()
    assert len(quirky) >= 5
    assert any(len(data["examples"]) >= 3 for data, _ in quirky)


def test_no_history_holds_its_own_turns_reply():
    checked = 0
    for data, session in _quirk_sessions():
        rows = {r["turn"]: r for r in rows_of([session], "turn")}
        for i, (example, turn) in enumerate(zip(data["examples"], session.turns)):
            own = _own_reply(example)
            assert _index(turn.history, "assistant", own["content"], iso_to_ms(own["timestamp"])) is None, \
                f"{session.id} turn {i}: own reply {own['content'][:60]!r} is in its history"
            earlier = [e["content"] for e in example["input"]["conversationHistory"][:-1]]
            if own["content"] not in earlier:  # the same words said in an earlier turn may stay
                shown = " ".join(own["content"].split())[:300]
                assert f"assistant: {shown}" not in rows[i]["inputs"]["history"]
            checked += 1
    assert checked >= 10


def test_history_is_in_creation_order():
    checked_later_turns = 0
    for data, session in _quirk_sessions():
        for i, turn in enumerate(session.turns):
            if turn.history:
                assert turn.history[0].role == "user", f"{session.id} turn {i} history starts with a reply"
            for j in range(i):
                request = _index(turn.history, "user", data["examples"][j]["input"]["task"])
                own = _own_reply(data["examples"][j])
                reply = _index(turn.history, "assistant", own["content"], iso_to_ms(own["timestamp"]))
                assert request is not None and reply is not None, f"{session.id} turn {i}: turn {j} missing"
                assert request < reply, f"{session.id} turn {i}: turn {j}'s reply comes before its request"
                checked_later_turns += j >= 1
    assert checked_later_turns >= 1


def test_legacy_fixture_own_reply_at_the_end_of_history_is_dropped():
    s = fixture_session("valid-legacy")
    assert s.turns[0].history == []
    [row] = rows_of([s], "turn")
    assert row["inputs"]["history"] == ""
    assert "search the codebase" not in json.dumps(row["inputs"])


def test_history_of_a_later_turn_holds_the_earlier_turn_in_order():
    s = fixture_session("valid-current")
    assert s.turns[0].history == []
    rows = rows_of([s], "turn")
    assert rows[1]["inputs"]["history"].splitlines() == [
        "user: Fix the KeyError in load_settings when INVOICE_TIMEOUT is unset",
        "assistant: I'll read src/invoice_api/config.py first.",
        "assistant: ",
        "assistant: The bug has been fixed: load_settings now defaults INVOICE_TIMEOUT to 30.",
    ]
    assert "Done. All 24 tests pass." not in rows[1]["inputs"]["history"]


def test_history_keeps_only_the_most_recent_messages():
    s = fixture_session("valid-current")
    assert rows_of([s], "turn", history=2)[1]["inputs"]["history"].splitlines() == [
        "assistant: ",
        "assistant: The bug has been fixed: load_settings now defaults INVOICE_TIMEOUT to 30.",
    ]
    assert rows_of([s], "turn", history=0)[1]["inputs"]["history"] == ""


# --- task cleaning --------------------------------------------------------------------------------------------

def test_clean_task_removes_inlined_file_dumps():
    raw = ('fix @src/api/client.ts: fetchJson resolves with an HTML page\n'
           'Called the Read tool with the following input: {"filePath":"/p/src/api/client.ts"}\n'
           "<file>\n00001| import x from 'y';\n\n(End of file - total 1 lines)\n</file>")
    assert clean_task(raw) == "fix @src/api/client.ts: fetchJson resolves with an HTML page"
    assert clean_task("explain <file>\n1| a\n</file> this") == "explain  this"
    assert clean_task("  plain request\nwith two lines  ") == "plain request\nwith two lines"


def test_no_task_or_history_keeps_a_file_dump():
    raw_dumps = sum("Called the" in e["content"] for data, _ in sample_sessions() for ex in data["examples"]
                    for e in ex["input"]["conversationHistory"])
    assert raw_dumps >= 1, "the sample histories hold inlined file dumps"
    for row in rows_of([s for _, s in sample_sessions()], "turn"):
        for field in ("task", "history"):
            assert "Called the" not in row["inputs"][field], row["id"]
            assert "<file>" not in row["inputs"][field], row["id"]


# --- filters --------------------------------------------------------------------------------------------------

def test_min_efficiency_removes_and_counts():
    data = load_json(FIXTURES / "valid-current.json")
    low = copy.deepcopy(data)
    low["examples"][1]["outcome"]["evaluation"]["efficiency"] = 0.2
    filters = keep_all(min_efficiency=0.3)
    rows = rows_of([to_session(low, "low.json")], "turn", filters)
    assert [r["turn"] for r in rows] == [0]
    assert dict(filters.removed) == {"min_efficiency": 1}


def test_min_efficiency_count_on_the_sample_sessions():
    pairs = sample_sessions()
    expected = sum(ex["outcome"]["evaluation"]["efficiency"] < 0.3 for data, _ in pairs for ex in data["examples"])
    assert expected >= 1
    filters = keep_all(min_efficiency=0.3)
    rows = rows_of([s for _, s in pairs], "turn", filters)
    assert filters.removed["min_efficiency"] == expected
    assert len(rows) == sum(len(data["examples"]) for data, _ in pairs) - expected


def test_agent_filter_removes_and_counts():
    sessions = [fixture_session("valid-current"), fixture_session("valid-legacy")]  # build x2, plan x1
    filters = keep_all(agent_filter="plan")
    rows = rows_of(sessions, "turn", filters)
    assert [r["session_id"] for r in rows] == [sessions[1].id]
    assert all(r["meta"]["agent"] == "plan" for r in rows)
    assert dict(filters.removed) == {"agent_filter": 2}

    pairs = sample_sessions()
    not_build = sum(ex.get("agent", {}).get("name") != "build" for data, _ in pairs for ex in data["examples"])
    assert not_build >= 1
    filters = keep_all(agent_filter="build")
    rows_of([s for _, s in pairs], "turn", filters)
    assert filters.removed["agent_filter"] == not_build


def test_require_success_removes_an_unsuccessful_turn():
    data = copy.deepcopy(load_json(FIXTURES / "valid-current.json"))
    data["examples"][0]["outcome"]["success"] = False
    filters = keep_all()
    rows = rows_of([to_session(data, "x.json")], "turn", filters)
    assert [r["turn"] for r in rows] == [1]
    assert dict(filters.removed) == {"require_success": 1}
    assert not any("require_success removed nothing" in n for n in filters.notes())


def test_notes_say_success_and_correctness_filters_cannot_act_on_plugin_data():
    filters = keep_all(min_correctness=0.5, min_efficiency=0.3)
    rows_of([s for _, s in sample_sessions()], "turn", filters)
    notes = " | ".join(filters.notes())
    assert "require_success removed nothing" in notes
    assert "min_correctness cannot act" in notes
    assert "require_success" not in filters.removed and "min_correctness" not in filters.removed


# --- context --------------------------------------------------------------------------------------------------

def test_end_state_context_does_not_leak_git_status_or_diagnostics():
    leaks = 0
    for data, session in sample_sessions():
        ctx = data["examples"][0]["input"]["context"]
        assert session.context.captured == "end"
        git = ctx.get("gitStatus")
        status_lines = [line.strip() for line in (git or {}).get("status", "").splitlines() if line.strip()]
        diags = [d["message"] for kind in ("errors", "warnings") for d in ctx["lspDiagnostics"][kind]]
        leaks += len(status_lines) + len(diags)
        for row in rows_of([session], "turn"):
            shown = row["inputs"]["context"]
            assert "uncommitted" not in shown.lower() and "status" not in shown.lower()
            for line in status_lines + diags:
                assert line not in shown, f"{session.id}: end-state {line!r} in context"
    assert leaks >= 2, "the samples hold git status and diagnostics to leak"


def test_context_keeps_the_project_facts():
    [row] = rows_of([fixture_session("valid-legacy")], "turn")
    assert row["inputs"]["context"].splitlines() == [
        "working directory: /home/dev/projects/web-dashboard",
        "project type: javascript",
        "files: vite.config.ts, src/main.tsx",
        "file count: 48213",
    ]


@pytest.mark.parametrize("granularity", ["turn", "step"])
def test_rows_round_trip_through_the_session_model(granularity):
    s = fixture_session("valid-current")
    again = Session.from_dict(json.loads(json.dumps(s.to_dict())))
    assert rows_of([again], granularity) == rows_of([s], granularity)



def test_a_field_over_budget_keeps_its_latest_part():
    # Cutting the end of steps_so_far would hide the action just taken, and make later steps look alike.
    sessions = [s for _, s in sample_sessions() if any(len(t.actions) >= 5 for t in s.turns)]
    rows = [r for r in build(sessions, keep_all(), "step", 6, 150) if r["step"] and r["step"] >= 4]
    assert rows
    for row in rows:
        steps = row["inputs"]["steps_so_far"]
        assert len(steps) <= 150 and steps.startswith("…")
        assert steps.splitlines()[-1].startswith(f"{row['step']}. ")
    assert len({json.dumps(r["inputs"], sort_keys=True) for r in rows}) == len(rows)
