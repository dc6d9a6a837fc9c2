"""The exported plugin inside the real OpenCode: the demos in the request are the ones Python picks.

Each test runs the pinned `opencode run` in a throw-away HOME and project, with the plugin and a
bank exported from the sample sessions in `.opencode/plugin/`, against a loopback endpoint that
records every request body (devtools.recorder). No model is involved.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import sample_step_rows
from lib.program.agent import to_example
from lib.opencode import plugin, short_tools
from devtools.recorder import Recorder, ToolCall, is_title_request, system_text

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2"
CALC = "def add(a, b):\n    return a - b\n"


@pytest.fixture(scope="module")
def demos() -> list[dict]:
    return [dict(to_example(r)) for r in sample_step_rows()]


class Workspace:
    """A throw-away HOME and git project, with the exported plugin files in .opencode/plugin/."""

    def __init__(self, tmp: Path, opencode: Path, files: dict[str, str]) -> None:
        self.opencode, self.home, self.project = opencode, tmp / "home", tmp / "project"
        (self.home / ".config" / "opencode").mkdir(parents=True)
        (self.project / ".opencode" / "plugin").mkdir(parents=True)
        subprocess.run(["git", "init", "-q", str(self.project)], check=True)
        (self.project / "calc.py").write_text(CALC, encoding="utf-8")
        for rel, text in files.items():
            (self.project / ".opencode" / rel).write_text(text, encoding="utf-8")

    def run(self, rec: Recorder, task: str, **env: str) -> subprocess.CompletedProcess[str]:
        config = rec.opencode_config()
        (self.home / ".config" / "opencode" / "opencode.json").write_text(json.dumps(config), encoding="utf-8")
        home = str(self.home)
        full = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE")}
        full.update({"HOME": home, "XDG_CONFIG_HOME": f"{home}/.config", "XDG_DATA_HOME": f"{home}/.local/share",
                     "XDG_CACHE_HOME": f"{home}/.cache", "XDG_STATE_HOME": f"{home}/.local/state",
                     "PWD": str(self.project), "SHELL": "/bin/bash", **env})
        done = subprocess.run([str(self.opencode), "run", "--print-logs", "--log-level", "INFO", "--", task],
                              cwd=self.project, env=full, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        return done


def tool_output(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m.get("role") == "tool")


def test_demos_in_the_request_are_the_ones_python_picks(demos, opencode_bin, tmp_path):
    files = plugin.files(demos, {"k": 3, "fields": ["task", "steps_so_far"]}, 3, 1200)
    bank = json.loads(files[plugin.BANK_FILE])
    ws = Workspace(tmp_path, opencode_bin, files)
    tasks = sorted({d["task"] for d in demos if not d["steps_so_far"]})[:2] + ["Fix the bug in calc.py"]
    assert len(tasks) == 3
    read = ToolCall("read", {"filePath": str(ws.project / "calc.py")}, id="call_read_0")
    for task in tasks:
        answered: list[int] = []

        def first_reads(index: int, body: dict):
            # The first agent request gets a read call, so a second request carries a step.
            if is_title_request(body) or answered:
                return None
            answered.append(index)
            return [read]

        with Recorder("done", model=MODEL, respond=first_reads) as rec:
            ws.run(rec, task)
            agent = rec.agent_requests()
        assert len(agent) == 2, f"{task!r}: {len(agent)} agent requests"
        context = f"working directory: {ws.project}"
        first = {"task": task, "steps_so_far": "", "context": context}
        output = " ".join(tool_output(agent[1]).split())
        steps = f'1. read {json.dumps({"filePath": str(ws.project / "calc.py")})} -> ok: ' + \
                (output if len(output) <= 120 else output[:119] + "…")
        second = {"task": task, "steps_so_far": steps, "context": context}
        for body, inputs in ((agent[0], first), (agent[1], second)):
            system = system_text(body)
            assert system.count(bank["header"]) == 1, f"{task!r}: examples block missing or repeated"
            # Python's pick, as the replay stage sends it (lib.opencode.plugin.injected_text)
            assert plugin.injected_text(bank, inputs) in system, f"{task!r}: the request's demos differ"
        # The step changed what is nearest (a read of calc.py): the two requests need not agree,
        # but each must match its own query, which the asserts above check.


def test_without_a_usable_bank_opencode_runs_with_the_plain_prompt(demos, opencode_bin, tmp_path):
    files = plugin.files(demos, {"k": 3, "fields": ["task"]}, 3, 1200)
    files[plugin.BANK_FILE] = "{broken"
    ws = Workspace(tmp_path, opencode_bin, files)
    with Recorder("done", model=MODEL) as rec:
        done = ws.run(rec, "Fix the bug in calc.py")
        agent = rec.agent_requests()
    assert agent and "## Examples" not in system_text(agent[0])
    lines = [line for line in done.stderr.splitlines() if "nearest-demos" in line and "plain prompt" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "nearest-demos.json" in lines[0] and "JSON" in lines[0]


def test_turned_off_by_the_environment(demos, opencode_bin, tmp_path):
    ws = Workspace(tmp_path, opencode_bin, plugin.files(demos, {"k": 3, "fields": ["task"]}, 3, 1200))
    with Recorder("done", model=MODEL) as rec:
        ws.run(rec, "Fix the bug in calc.py", OPENCODE_NEAREST_DEMOS="off")
        agent = rec.agent_requests()
    assert agent and "## Examples" not in system_text(agent[0])


def _first_agent_request(ws: Workspace, **env: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    with Recorder("done", model=MODEL) as rec:
        done = ws.run(rec, "Fix the bug in calc.py", **env)
        agent = rec.agent_requests()
    assert agent, done.stderr[-3000:]
    return agent[0], done


def test_short_tools_plugin_sends_what_replay_sends(opencode_bin, tmp_path):
    """Format short_tools inside real OpenCode: the request's tools are OpenCode's own with exactly the
    listed descriptions replaced, which is what replay sends for the exported agent
    (lib.opencode.short_tools.shorten); the tools and their parameters are unchanged, and
    OPENCODE_SHORT_TOOLS=off sends them as OpenCode writes them."""
    ws = Workspace(tmp_path, opencode_bin, short_tools.files())
    on, _ = _first_agent_request(ws)
    off, _ = _first_agent_request(ws, OPENCODE_SHORT_TOOLS="off")
    short = short_tools.descriptions()
    names = [t["function"]["name"] for t in off["tools"]]
    assert set(short) < set(names) and "task" in names and "task" not in short
    assert on["tools"] == short_tools.shorten(off["tools"], short)
    for tool in off["tools"]:  # each replaced text is the opening of OpenCode's own, and shorter
        fn = tool["function"]
        if fn["name"] in short:
            assert fn["description"].startswith(short[fn["name"]]) and len(fn["description"]) > len(short[fn["name"]])
    assert len(json.dumps(on["tools"])) < 0.6 * len(json.dumps(off["tools"]))


def test_short_tools_without_usable_data_leaves_the_descriptions(opencode_bin, tmp_path):
    files = short_tools.files()
    files[short_tools.DATA_FILE] = "{broken"
    ws = Workspace(tmp_path, opencode_bin, files)
    body, done = _first_agent_request(ws)
    bash = next(t["function"]["description"] for t in body["tools"] if t["function"]["name"] == "bash")
    assert bash != short_tools.descriptions()["bash"] and len(bash) > 2000
    lines = [line for line in done.stderr.splitlines() if "short-tools" in line and "left as they are" in line]
    assert len(lines) == 1 and "short-tools.json" in lines[0], done.stderr[-3000:]
