"""OpenCode's request shape as recorded from the real binary (lib/tools/shape.py), and the drift
check: regenerating it with the pinned `opencode` must give the committed data file byte for byte."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import capture
from lib.tools import shape
from devtools.capture import data_path
from devtools.recorder import ToolCall

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "capture_opencode_request.py"
TOOLS = ["bash", "edit", "glob", "grep", "read", "skill", "task", "todowrite", "webfetch", "write"]
RUNS = shape.data()["runs"]


# ---------------------------------------------------------------- tools


def test_tools_are_opencodes_ten_in_its_order():
    assert shape.tool_names() == TOOLS
    assert "list" not in shape.tool_names()
    for tool in shape.tool_definitions():
        assert tool["type"] == "function"
        assert set(tool["function"]) == {"name", "description", "parameters"}
        assert tool["function"]["parameters"]["type"] == "object"


def test_read_description_asks_for_an_absolute_path():
    read = next(t for t in shape.tool_definitions() if t["function"]["name"] == "read")["function"]
    assert "The filePath parameter should be an absolute path" in read["description"]
    assert shape.tool_schema("read")["required"] == ["filePath"]


def test_disabling_tools_matches_the_recorded_tools_map_run():
    run = RUNS["tools_map"]
    off = [name for name, on in run["tools"].items() if not on]
    assert sorted(off) == ["skill", "task", "webfetch"]
    kept = shape.tool_definitions(off)
    assert [t["function"]["name"] for t in kept] == run["tool_names"] == [n for n in TOOLS if n not in off]
    # the definitions themselves are unchanged, only dropped
    full = {t["function"]["name"]: t for t in shape.tool_definitions()}
    assert all(t == full[t["function"]["name"]] for t in kept)
    with pytest.raises(ValueError, match="list"):
        shape.tool_definitions(["list"])


def test_machine_values_in_tool_descriptions_are_filled():
    bash = shape.tool_definitions(platform="darwin", tmpdir="/var/tmp/x")[0]["function"]["description"]
    assert "OS: darwin" in bash and "/var/tmp/x/opencode" in bash
    for tool in shape.tool_definitions():
        text = json.dumps(tool)
        assert not any("{" + p + "}" in text for p in shape.PLACEHOLDERS), tool["function"]["name"]
    assert "OS: linux" in shape.tool_definitions()[0]["function"]["description"]


def test_validate_call_against_opencodes_schema():
    assert shape.validate_call("read", {"filePath": "/x"}) == []
    assert shape.validate_call("read", {"filePath": "/x", "offset": 10, "limit": 50}) == []
    missing = shape.validate_call("read", {})
    assert missing and "filePath" in missing[0]
    assert any("offset" in p for p in shape.validate_call("read", {"filePath": "/x", "offset": "ten"}))
    assert shape.validate_call("bash", {"command": "pytest -q"}) == []
    assert shape.validate_call("edit", {"filePath": "/x", "oldString": "a"})  # newString missing
    unknown = shape.validate_call("list", {"path": "."})
    assert unknown and "unknown tool 'list'" in unknown[0]
    assert shape.validate_call("read", ["/x"])  # not an object
    with pytest.raises(KeyError):
        shape.tool_schema("list")


# ---------------------------------------------------------------- system message


def test_agent_prompt_run_is_rebuilt_exactly():
    run = RUNS["agent_prompt"]
    d = shape.data()
    rebuilt = shape.system_message(run["prompt"], model=d["model"], provider_model=d["provider_model"],
                                   cwd="{cwd}", root=run["root"], is_git=run["cwd_is_git"],
                                   platform="{platform}", date="{date}")
    assert rebuilt == run["system"]
    assert shape.default_prompt() not in run["system"]  # the agent prompt replaced it
    assert run["tool_names"] == TOOLS  # a prompt does not change the tools


def test_default_system_message():
    kwargs = dict(model="qwen2.5-coder:1.5b", provider_model="ollama/qwen2.5-coder:1.5b", cwd="/home/dev/app/src",
                  root="/home/dev/app", is_git=True, platform="linux", date=shape.format_date(dt.date(2026, 11, 1)))
    text = shape.system_message(None, **kwargs)
    prompt = shape.default_prompt()
    assert text.startswith(prompt) and 5000 < len(prompt) < 20000
    assert "You are powered by the model named" not in prompt
    assert "model named qwen2.5-coder:1.5b. The exact model ID is ollama/qwen2.5-coder:1.5b" in text
    for value in ("/home/dev/app/src", "/home/dev/app\n", "Sun Nov 01 2026", shape.data()["git"]["true"]):
        assert value in text
    assert not any("{" + p + "}" in text for p in shape.PLACEHOLDERS)
    # giving OpenCode's own prompt as the agent prompt changes nothing
    assert shape.system_message(prompt, **kwargs) == text
    # without the skill tool OpenCode leaves the skills block out
    assert RUNS["tools_map"]["skills_block"] is False
    no_skills = shape.system_message(None, disabled=["skill"], **kwargs)
    assert no_skills + shape.data()["skills"] == text and "<available_skills>" not in no_skills


def test_format_date_like_opencode():
    assert shape.format_date(dt.date(2026, 11, 29)) == "Sun Nov 29 2026"


# ---------------------------------------------------------------- message layout


def test_message_helpers_rebuild_the_recorded_layout():
    run = RUNS["tool_call"]
    recorded = run["messages"]
    reply = run["reply"]
    assert reply["id"] == shape.call_id(0)
    rebuilt = [{"role": "system", "content": "{system}"},
               shape.user_message(shape.data()["task"]),
               shape.assistant_tool_call_message([(shape.call_id(0), reply["tool"], reply["arguments"])]),
               shape.tool_result_message(shape.call_id(0), recorded[3]["content"])]
    assert rebuilt == recorded
    args = recorded[2]["tool_calls"][0]["function"]["arguments"]
    assert shape.arguments_json(json.loads(args)) == args


def test_assistant_message_with_several_calls_and_text():
    msg = shape.assistant_tool_call_message([("call_1", "glob", {"pattern": "**/*.py"}),
                                             ("call_2", "grep", {"pattern": "größe"})], text="Looking.")
    assert msg["role"] == "assistant" and msg["content"] == "Looking."
    assert [c["id"] for c in msg["tool_calls"]] == ["call_1", "call_2"]
    assert msg["tool_calls"][1]["function"] == {"name": "grep", "arguments": '{"pattern":"größe"}'}
    assert shape.tool_result_message("call_2", "no matches") == {"role": "tool", "tool_call_id": "call_2",
                                                                  "content": "no matches"}


def test_data_file_is_canonical():
    path = data_path(shape.DATA_DIR, shape.version())
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- the capture's derivation


def _requests_like_opencode(system_prefix: str = "") -> dict:
    """The four agent requests of a capture, rebuilt from the stored data with made-up paths."""
    d = shape.data()
    cwd, root, plain, tmp = "/w/project/src", "/w/project", "/w/plain", "/w/tmp"
    date = "Sun Nov 29 2026"
    env = dict(model=capture.MODEL, provider_model=d["provider_model"], platform=sys.platform, date=date)
    tools = shape.tool_definitions(platform=sys.platform, tmpdir=tmp)
    off = [n for n, on in capture.TOOLS_MAP.items() if not on]

    def request(system: str, *rest: dict, tools: list = tools) -> dict:
        return {**shape.request_options(), "tools": tools,
                "messages": [{"role": "system", "content": system}, shape.user_message(d["task"]), *rest]}

    system = system_prefix + shape.system_message(None, cwd=cwd, root=root, is_git=True, **env)
    read = ToolCall("read", {"filePath": f"{root}/hello.py"}, id=shape.call_id(0))
    result = shape.fill(RUNS["tool_call"]["messages"][3]["content"], {"root": root})
    return {
        "version": d["opencode_version"], "cwd": cwd, "root": root, "plain": plain, "tmpdir": tmp,
        "dates": [date], "read_call": read,
        "default": [request(system),
                    request(system, shape.assistant_tool_call_message([(read.id, read.name, read.arguments)]),
                            shape.tool_result_message(read.id, result))],
        "agent_prompt": [request(shape.system_message(capture.AGENT_PROMPT, cwd=plain, root="/", is_git=False,
                                                      **env))],
        "tools_map": [request(shape.system_message(None, cwd=cwd, root=root, is_git=True, disabled=off, **env),
                              tools=shape.tool_definitions(off, platform=sys.platform, tmpdir=tmp))],
    }


def test_capture_recovers_the_stored_data_from_requests():
    """The derivation finds every varying value by itself: fed requests with other paths, it gives
    back exactly the committed data."""
    assert capture.build(_requests_like_opencode()) == shape.data()


def test_capture_refuses_a_request_it_does_not_understand():
    raw = _requests_like_opencode()
    for req in raw["default"]:
        req["messages"][0]["content"] = req["messages"][0]["content"].replace("You are powered by", "Powered by")
    with pytest.raises(capture.ShapeChanged, match="You are powered by the model named"):
        capture.build(raw)
    raw = _requests_like_opencode()
    raw["tools_map"][0]["tools"] = raw["default"][0]["tools"]
    with pytest.raises(capture.ShapeChanged, match="tools-map"):
        capture.build(raw)


# ---------------------------------------------------------------- drift against the real binary


def test_committed_request_matches_the_pinned_opencode(opencode_bin, tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--opencode", str(opencode_bin), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    (fresh,) = tmp_path.glob("request-opencode-*.json")
    committed = shape.DATA_DIR / fresh.name
    hint = (f"OpenCode's request differs from {committed.relative_to(ROOT)}; if the OpenCode version changed on "
            "purpose, run `python scripts/capture_opencode_request.py` and commit the new file")
    assert committed.is_file(), hint
    new, old = json.loads(fresh.read_text()), json.loads(committed.read_text())
    changed = sorted(k for k in new.keys() | old.keys() if new.get(k) != old.get(k))
    assert not changed, f"{hint} (changed: {changed})"
    assert fresh.read_text() == committed.read_text(), hint
