"""Live evaluation: tasks as data, the OpenCode config each run gets, the report, and real runs of real
OpenCode on an embedded coding model behind llama.cpp's own server."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, need
from helpers import PYTHON, env, make_project
from lib.core.errors import UserError
from lib.export.files import live_lines
from lib.opencode import live, safety, short_tools
from lib.tools import shape

TASKS = ROOT / "data" / "live" / "tasks"
OPENCODE = ROOT / "node_modules" / ".bin" / "opencode"


def _task(folder: Path, name: str, body: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def test_the_shipped_tasks_are_valid_and_each_has_a_check() -> None:
    tasks = live.load_tasks(TASKS)
    assert len(tasks) >= 10
    assert all(t.command or t.answer for t in tasks)
    assert [t.id for t in tasks] == sorted(t.id for t in tasks)


def test_a_broken_task_file_is_named_with_the_problem(tmp_path: Path) -> None:
    _task(tmp_path, "good", {"prompt": "p", "check": {"answer": "1"}})
    _task(tmp_path, "no-check", {"prompt": "p"})
    with pytest.raises(UserError, match=r"no-check\.yaml: not a valid task .*check"):
        live.load_tasks(tmp_path)
    (tmp_path / "no-check.yaml").unlink()
    _task(tmp_path, "escape", {"prompt": "p", "files": {"../outside.txt": "x"}, "check": {"answer": "1"}})
    with pytest.raises(UserError, match=r"escape\.yaml"):
        live.load_tasks(tmp_path)


def test_unknown_task_ids_list_the_known_ones(tmp_path: Path) -> None:
    _task(tmp_path, "a", {"prompt": "p", "check": {"answer": "1"}})
    with pytest.raises(UserError, match="names b, not in .* the tasks there are: a"):
        live.load_tasks(tmp_path, ["b"])


def test_an_answer_counts_only_as_a_whole_word() -> None:
    assert live.contains_answer("There are 4 Python files.", "4")
    assert not live.contains_answer("There are 14 files", "4")
    assert not live.contains_answer("version 4.5", "4")
    assert live.contains_answer("MAX_RETRIES is 17.", "17")


def test_both_agents_get_the_same_step_cap_and_sampling_and_only_the_export_differs() -> None:
    exported = {"description": "d", "mode": "primary", "model": "local/other", "temperature": 0.0,
                "prompt": "You are a careful agent.", "tools": {"skill": False},
                "permission": {"bash": {"rm -rf *": "deny"}}}
    agents = live.agents_config(exported, "opt-qwen", max_steps=5, temperature=None)
    assert agents["build"] == {"steps": 5}
    mine = agents["opt-qwen"]
    assert mine["steps"] == 5 and "model" not in mine and "temperature" not in mine
    assert mine["prompt"] == exported["prompt"] and mine["tools"] == {"skill": False}
    assert mine["permission"] == exported["permission"]
    fixed = live.agents_config(exported, "opt-qwen", max_steps=5, temperature=0.2)
    assert fixed["build"]["temperature"] == fixed["opt-qwen"]["temperature"] == 0.2


def _run(task: str, agent: str, success: bool, repeat: int = 0) -> live.Run:
    return live.Run(task, agent, "m", repeat, "completed" if success else "not_completed", success, tool_calls=1)


def test_the_report_pairs_runs_by_task_and_repeat() -> None:
    runs = [_run(f"t{i}", "opencode_default", i < 2) for i in range(6)]
    runs += [_run(f"t{i}", "exported", i < 5) for i in range(6)]
    report = live.summarize(runs)["m"]
    assert report["opencode_default"]["completion_rate"] == pytest.approx(2 / 6)
    assert report["exported"]["completion_rate"] == pytest.approx(5 / 6)
    diff = report["difference"]
    assert diff["paired"] == 6 and diff["absolute"] == pytest.approx(0.5)
    assert 0 < diff["ci95"][0] <= 0.5 <= diff["ci95"][1] <= 1
    assert report["exported"]["outcomes"]["completed"] == 5
    # A run missing on one side is not paired.
    assert live.summarize(runs[:-1])["m"]["difference"]["paired"] == 5


def test_real_opencode_accepts_the_run_config(tmp_path: Path) -> None:
    need(OPENCODE.exists(), "OpenCode CLI missing (run ./setup.sh --test)")
    target = live.Target("m", "http://127.0.0.1:9/v1", "qwen", 32768)
    agents = live.agents_config({"description": "d", "mode": "primary", "prompt": "Be brief.",
                                 "tools": {"skill": False}}, "opt-qwen", 4, None)
    home = tmp_path / "home"
    (home / ".config" / "opencode").mkdir(parents=True)
    (home / ".config" / "opencode" / "opencode.json").write_text(
        json.dumps(live.opencode_config(target, agents, 512)), encoding="utf-8")
    done = subprocess.run([str(OPENCODE), "debug", "agent", "opt-qwen"], cwd=tmp_path, capture_output=True,
                          text=True, env=live.isolated_env(home, tmp_path / "cache"), timeout=120)
    out = done.stdout + done.stderr
    assert "Configuration is invalid" not in out, out
    keyed = live.opencode_config(live.Target("m", "http://h/v1", "q", 8192, api_key_env="MY_KEY"), agents, 512)
    assert keyed["provider"]["live"]["options"]["apiKey"] == "{env:MY_KEY}"  # the key itself is never written
    agent = json.loads(out[out.index("{"):])
    assert agent["prompt"] == "Be brief." and agent["steps"] == 4


def _live_project(tmp_path: Path, tasks: list[str], extra_task: dict | None = None) -> Path:
    """A project copy set up for the live stage: a program, the agent replay chose, the task files, and
    a link to this checkout's OpenCode CLI (the engine and its server are built once per machine)."""
    from lib.program.agent import Agent
    from lib.opencode.agent import agent_prompt, export_settings, load_program

    project = make_project(tmp_path / "project")
    (project / "node_modules").symlink_to(ROOT / "node_modules")
    tasks_dir = project / "data" / "live" / "tasks"
    tasks_dir.mkdir(parents=True)
    for name in tasks:
        shutil.copy(TASKS / f"{name}.yaml", tasks_dir)
    if extra_task:
        _task(tasks_dir, "cannot-pass", extra_task)
    (project / "outputs").mkdir()
    Agent().save(str(project / "outputs" / "program.json"))
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    program = load_program(json.loads((project / "outputs" / "program.json").read_text()))
    prompt = agent_prompt(export_settings(params, ["skill"]), program)
    (project / "metrics").mkdir()
    (project / "metrics" / "replay.json").write_text(json.dumps(
        {"agent": {"disable_tools": ["skill"], "permission": params["export"]["permission"],
                   "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()}, "students": {}}))
    params["live"].update(enabled=True, tasks=[], max_steps=4, repeats=1, temperature=0.0, timeout=600,
                          context_window=16384)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return project


@pytest.mark.timeout(3600)
def test_the_stage_runs_real_opencode_on_the_embedded_coder(tmp_path: Path) -> None:
    """The stage as shipped: real OpenCode sends each task to the embedded Qwen2.5-Coder-0.5B behind
    llama.cpp's own server (--jinja), both agents, and every run is recorded with how it ended.

    Whether this 0.5B model finishes a task is what the stage measures, not what the test assumes: with
    llama.cpp's current parser it writes its calls as text (a ```json block or a bare object), which
    the server passes on as text. The test checks that the real request reached the real model (OpenCode's
    own prompt for the default agent, the export's for the other), that every run is read back and
    reported, and that a task whose check cannot pass is never completed."""
    need(OPENCODE.exists(), "OpenCode CLI missing (run ./setup.sh --test)")
    project = _live_project(tmp_path, ["create-file"], extra_task={
        "prompt": "Create a file named notes.txt that contains the word alpha.",
        "check": {"command": "test -f file-nobody-was-asked-for.txt"}})
    done = subprocess.run([PYTHON, "-m", "stages.live"], cwd=project, env=env(), capture_output=True, text=True,
                          timeout=3500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = json.loads((project / "metrics" / "live_runs.json").read_text())
    assert {(r["task"], r["agent"]) for r in runs} == {(t, a) for t in ("create-file", "cannot-pass")
                                                       for a in live.AGENTS}
    for r in runs:
        assert r["model"] == "qwen2.5-coder-0.5b" and r["outcome"] in live.OUTCOMES and r["steps"] >= 1, r
        # OpenCode's own prompt and tools are ~7,200 tokens for this model; the exported prompt is shorter.
        assert r["prompt_tokens"] >= (6000 if r["agent"] == "opencode_default" else 2000), r
        assert r["success"] == (r["outcome"] == "completed")
        if r["success"]:
            assert r["tool_calls"] >= 1, r  # no task here can be done without a call
    assert not any(r["success"] for r in runs if r["task"] == "cannot-pass")
    report = json.loads((project / "metrics" / "live.json").read_text())
    entry = report["models"]["qwen2.5-coder-0.5b"]
    assert entry["difference"]["paired"] == 2 and set(live.AGENTS) <= set(entry)
    assert all(entry[a]["runs"] == 2 and entry[a]["completion_rate"] <= 0.5 for a in live.AGENTS)
    assert (project / "metrics" / "live.svg").read_text().startswith("<svg")
    assert "live [qwen2.5-coder-0.5b]: OpenCode default" in done.stdout


def greeting_call(request: dict) -> tuple[str, dict]:
    cwd = re.search(r"Working directory: (\S+)", request["messages"][0]["content"]).group(1)
    return "write", {"filePath": f"{cwd}/greeting.txt", "content": "hello from opencode\n"}


class ScriptedModel:
    """An OpenAI-compatible server on 127.0.0.1 that streams a scripted agent: to a task it answers with the
    call `call_for(request)` names (by default a `write` of greeting.txt in the working directory OpenCode
    names); to a tool result, with a short reply. It stands in for a model that calls tools reliably, so
    the test checks the live machinery and real OpenCode, not a small model's luck. Every request body is
    kept."""

    def __init__(self, call_for=greeting_call) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.requests.append(request)
                last = request["messages"][-1]
                if last["role"] == "tool":
                    delta, finish = {"role": "assistant", "content": "Done."}, "stop"
                else:
                    name, args = call_for(request)
                    delta = {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                             "function": {"name": name, "arguments": json.dumps(args)}}]}
                    finish = "tool_calls"
                chunks = [{"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                          {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                           "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for chunk in chunks:
                    data = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "scripted", **chunk}
                    self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def scripted_runs(tmp_path: Path, tasks: Path, exported: dict, call_for=greeting_call,
                  timeout: int = 300, plugins: dict | None = None) -> tuple[list[live.Run], ScriptedModel]:
    """Every task in `tasks` run by real OpenCode with both agents on a ScriptedModel (closed after)."""
    model = ScriptedModel(call_for)
    try:
        cfg = {"tasks_dir": str(tasks), "tasks": [], "models": [{"provider": "openai-compatible", "model": "scripted",
               "api_base": model.url}], "max_steps": 3, "repeats": 1, "temperature": 0.0, "timeout": timeout,
               "context_window": 16384, "max_output_tokens": 256}
        runs = live.run_all(cfg, exported, "opt-scripted", opencode=str(OPENCODE), workroot=tmp_path / "work",
                            known_tools=frozenset(shape.tool_names()), plugins=plugins, log=lambda line: None)
    finally:
        model.close()
    return runs, model


@pytest.mark.timeout(900)
def test_real_opencode_runs_each_task_with_both_agents_and_the_checks_decide(tmp_path: Path) -> None:
    """Real OpenCode against a scripted model: the call it makes takes effect and the check sees it; a task
    whose check cannot pass is not completed; both agents get the same task and the export's prompt."""
    need(OPENCODE.exists(), "OpenCode CLI missing (run ./setup.sh --test)")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(TASKS / "create-file.yaml", tasks)
    # A number as a word of its own once made OpenCode's command line fail: the task goes in as typed.
    _task(tasks, "cannot-pass", {"prompt": "Create greeting.txt saying hello from opencode, on port 8000.",
                                 "check": {"command": "test -f file-nobody-was-asked-for.txt"}})
    exported = {"description": "d", "mode": "primary", "prompt": "LEARNED PROMPT: act through tools.",
                "tools": {"skill": False}}
    runs, model = scripted_runs(tmp_path, tasks, exported, timeout=600)
    by = {(r.task, r.agent): r for r in runs}
    assert set(by) == {(t, a) for t in ("create-file", "cannot-pass") for a in live.AGENTS}
    for agent in live.AGENTS:
        done = by[("create-file", agent)]
        assert done.success and done.outcome == "completed", done
        assert done.tool_calls == 1 and done.tools_used == ["write"] and done.failed_calls == 0
        assert done.steps == 2 and done.text_calls == 0 and done.prompt_tokens >= 200
        failed = by[("cannot-pass", agent)]
        assert not failed.success and failed.outcome == "not_completed" and "check exit 1" in failed.detail
    users = {m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
             for r in model.requests for m in r["messages"] if m["role"] == "user"}
    assert users == {yaml.safe_load((TASKS / "create-file.yaml").read_text())["prompt"],
                     "Create greeting.txt saying hello from opencode, on port 8000."}
    systems = [r["messages"][0]["content"] for r in model.requests]
    assert sum(s.startswith("LEARNED PROMPT") for s in systems) == 4  # 2 tasks x 2 steps with the export
    assert sum(not s.startswith("LEARNED PROMPT") for s in systems) == 4  # and with OpenCode's own prompt
    assert all({t["function"]["name"] for t in r["tools"]} >= {"write", "read", "bash"} for r in model.requests)
    assert not any("skill" in {t["function"]["name"] for t in r["tools"]} for r in model.requests
                   if r["messages"][0]["content"].startswith("LEARNED PROMPT"))  # the export's tools block
    report = live.summarize(runs)["scripted"]
    assert report["exported"]["completion_rate"] == report["opencode_default"]["completion_rate"] == 0.5
    assert report["difference"] == {"absolute": 0.0, "ci95": [0.0, 0.0], "paired": 2}


@pytest.mark.timeout(900)
def test_the_exported_agents_runs_load_the_plugins_it_ships(tmp_path: Path) -> None:
    """Live scores what ships: with short descriptions exported, real OpenCode sends the exported agent's
    requests with the plugin's descriptions, exactly as replay builds them, and OpenCode's default agent
    its own long ones (the plugin is installed for the exported agent's runs only)."""
    need(OPENCODE.exists(), "OpenCode CLI missing (run ./setup.sh --test)")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(TASKS / "create-file.yaml", tasks)
    exported = {"description": "d", "mode": "primary", "prompt": "LEARNED PROMPT: act through tools."}
    runs, model = scripted_runs(tmp_path, tasks, exported, plugins=short_tools.files())
    assert all(r.success for r in runs), runs
    by_agent: dict[bool, list[list[dict]]] = {}
    for r in model.requests:
        by_agent.setdefault(r["messages"][0]["content"].startswith("LEARNED PROMPT"), []).append(r["tools"])
    assert len(by_agent[True]) == len(by_agent[False]) == 2
    for default_tools, exported_tools in zip(by_agent[False], by_agent[True]):
        assert exported_tools == short_tools.shorten(default_tools, short_tools.descriptions())
        assert len(json.dumps(exported_tools)) < 0.6 * len(json.dumps(default_tools))


@pytest.mark.timeout(900)
def test_replay_blocks_what_real_opencode_refuses_under_the_exported_permission(tmp_path: Path) -> None:
    """The same calls through real OpenCode, with the exported `permission` rules and with OpenCode's own
    agent: a call took effect exactly where lib.opencode.safety.permitted (replay's `blocked`) says it may."""
    need(OPENCODE.exists(), "OpenCode CLI missing (run ./setup.sh --test)")
    outside = tmp_path / "outside"
    outside.mkdir()
    cases = {  # task id -> (the call, a check that passes when the call took effect)
        "allowed-bash": (("bash", {"command": "touch ran.txt", "description": "Touch a file"}), "test -f ran.txt"),
        "denied-rm-rf": (("bash", {"command": "rm -rf build", "description": "Clean"}), "test ! -e build"),
        "denied-reset": (("bash", {"command": "git reset --hard HEAD && touch reset-ran.txt", "description": "Reset"}),
                         "test -f reset-ran.txt"),
        "chained-rm-rf": (("bash", {"command": "touch chained.txt && rm -rf build", "description": "Clean"}),
                          "test -f chained.txt"),
        "write-outside": (("write", {"filePath": str(outside / "escaped.txt"), "content": "x\n"}),
                          f"test -f {outside / 'escaped.txt'}"),
        "rm-outside": (("bash", {"command": f"rm {outside / 'victim.txt'}", "description": "Remove"}),
                       f"test ! -e {outside / 'victim.txt'}"),
    }
    (outside / "victim.txt").write_text("keep me\n")
    tasks = tmp_path / "tasks"
    for name, (_, check) in cases.items():
        _task(tasks, name, {"prompt": f"CASE {name}", "files": {"build/out.o": "obj\n"}, "check": {"command": check},
                            "timeout": 120})

    def call_for(request: dict) -> tuple[str, dict]:
        task = next(m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
                    for m in request["messages"] if m["role"] == "user")
        return cases[task.removeprefix("CASE ")][0]

    permission = {"bash": dict(safety.DENY_DESTRUCTIVE)}
    exported = {"description": "d", "mode": "primary", "prompt": "LEARNED PROMPT", "permission": permission}
    runs, _ = scripted_runs(tmp_path, tasks, exported, call_for, timeout=120)
    took_effect = {(r.task, r.agent): r.success for r in runs}
    workdir = str((tmp_path / "work").resolve())  # every task's repository is below it; `outside` is not
    expected = {(task, agent): safety.permitted(*cases[task][0], permission if agent == "exported" else None, workdir)
                for task in cases for agent in live.AGENTS}
    assert took_effect == expected, [r.record() for r in runs]


@pytest.mark.timeout(900)
def test_replay_rebuilds_the_request_real_opencode_sent(tmp_path: Path) -> None:
    """An independent oracle for replay's request: real OpenCode runs a task with the exported agent
    (tools block included) against a scripted model that keeps every request body; the session it stored
    is read back by the pipeline's own reader into a step row, and replay's request for that step must
    be what OpenCode sent: the same system prompt, messages and tool definitions."""
    from lib.data.examples import Filters, build
    from lib.data.sources import read_all
    from lib.data.sources.common import Rejected
    from lib.opencode import replay as R

    need(OPENCODE.exists(), "OpenCode CLI missing (run ./setup.sh --test)")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(TASKS / "create-file.yaml", tasks)
    exported = {"description": "d", "mode": "primary", "prompt": "LEARNED PROMPT: act through tools.",
                "tools": {"webfetch": False, "skill": False}}
    runs, model = scripted_runs(tmp_path, tasks, exported)
    assert [r.success for r in runs] == [True, True]
    sent = model.requests[-2]  # the exported agent's first request (the last run's two requests)
    assert sent["messages"][0]["content"].startswith("LEARNED PROMPT")
    db = next((tmp_path / "work").rglob("opencode.db"))  # the last run's store
    sessions = [item for _, item in read_all(db) if not isinstance(item, Rejected)]
    (row,) = [r for r in build(sessions, Filters(True, "finish_stop", 0.0, None, None), "step", 6, 100_000)
              if not r["replay"].get("steps")]
    student = R.Student("scripted", None, None, 16384, "scripted", "live/scripted")
    rebuilt = R.build_request(row, R.Setup(R.EXPORTED, exported["prompt"], ("webfetch", "skill")), student)
    assert rebuilt["messages"] == sent["messages"]
    assert rebuilt["tools"] == sent["tools"]


def test_the_usage_guide_quotes_the_live_result() -> None:
    from lib.export.files import Scores, usage_guide
    from lib.opencode.agent import ExportSettings, opencode_target

    runs = [_run("a", "opencode_default", False), _run("a", "exported", True)]
    lines = live_lines({"enabled": True, "models": live.summarize(runs)})
    settings = ExportSettings(agent="opt", mode="primary", formats=("agent_config", "usage_guide"), max_examples=0,
                              student={"provider": "local", "model": "qwen2.5-coder-0.5b", "api_base": None,
                                       "api_key_env": None, "temperature": 0.0}, opencode_model=None)
    scores = Scores(baseline=0.2, optimized=0.3, n=10, optimizer="labeled", demos=0, live=lines)
    guide = usage_guide("opt-x", settings, opencode_target(settings.student, None), scores, None,
                        {"agent_config": "a.jsonc", "usage_guide": "U.md"})
    assert "- Inside real OpenCode on m, the scripted tasks were finished 100% of the time with this agent" in guide


def test_the_usage_guide_line_quotes_rates_and_ci() -> None:
    runs = [_run("a", "opencode_default", False), _run("a", "exported", True),
            _run("b", "opencode_default", False), _run("b", "exported", False)]
    (line,) = live_lines({"enabled": True, "models": live.summarize(runs)})
    assert "50% of the time with this agent and 0% with OpenCode's default" in line
    assert "2 paired runs; difference +0.50, 95% CI" in line
    assert live_lines({"enabled": False, "models": {}}) == []
