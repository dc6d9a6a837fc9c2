"""export.tool_descriptions: short: the descriptions, the requests replay builds with them, the exported files."""
from __future__ import annotations

import json

from lib.opencode import replay as R
from lib.opencode import short_tools
from lib.tools import shape

ROW = {"id": "s/t0/s0", "inputs": {"task": "Run the tests"},
       "gold": {"next_action": {"tool": "bash", "args": {"command": "pytest"}}},
       "replay": {"cwd": "/home/dev/app", "git": True, "time": 1763566723778, "history": [], "steps": []}}
STUDENT = R.Student(label="m", call=lambda request: None, count_tokens=lambda request: 10, context_window=100,
                    model="m", provider_model="local/m")


def test_each_short_description_is_the_first_paragraph_of_opencodes_own():
    short = short_tools.descriptions()
    full = {t["function"]["name"]: t["function"]["description"] for t in shape.data()["tools"]}
    assert {"bash", "edit", "read", "write", "todowrite"} <= set(short) and "task" not in short
    for name, text in short.items():
        assert full[name].strip().startswith(text) and "\n\n" not in text and len(text) < len(full[name])
        assert not shape.has_placeholder(text)
    assert short["edit"] == "Performs exact string replacements in files."


def test_replay_sends_the_exported_agent_the_short_descriptions_and_nothing_else_changes():
    short = short_tools.descriptions()
    plain = R.build_request(ROW, R.Setup(R.EXPORTED, "Prompt.", ("webfetch",)), STUDENT)
    slim = R.build_request(ROW, R.Setup(R.EXPORTED, "Prompt.", ("webfetch",), short_tools=short), STUDENT)
    assert slim["messages"] == plain["messages"]
    assert [t["function"]["name"] for t in slim["tools"]] == [t["function"]["name"] for t in plain["tools"]]
    for a, b in zip(plain["tools"], slim["tools"]):
        name = a["function"]["name"]
        assert b["function"]["parameters"] == a["function"]["parameters"]
        assert b["function"]["description"] == (short[name] if name in short else a["function"]["description"])
    assert len(json.dumps(slim["tools"])) < 0.6 * len(json.dumps(plain["tools"]))
    assert short_tools.sent(False) is None and short_tools.sent(True) == short


def test_files_are_the_plugin_as_shipped_and_its_data():
    files = short_tools.files()
    assert files[short_tools.PLUGIN_FILE] == short_tools.PLUGIN_SOURCE.read_text(encoding="utf-8")
    data = json.loads(files[short_tools.DATA_FILE])
    assert data == {"format": short_tools.FORMAT, "version": 1, "descriptions": short_tools.descriptions()}
    assert files == short_tools.files()  # deterministic
