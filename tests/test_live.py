"""Live evaluation: tasks as data, the OpenCode config each run gets, the report, and real runs of real
OpenCode on an embedded coding model behind llama.cpp's own server."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, need
from helpers import PYTHON, env, make_project, read_jsonl
from lib.core.errors import UserError
from lib.opencode import live

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
    agent = json.loads(out[out.index("{"):])
    assert agent["prompt"] == "Be brief." and agent["steps"] == 4


def _live_project(tmp_path: Path, tasks: list[str], extra_task: dict | None = None) -> Path:
    """A project copy set up for the live stage: a program, the agent replay chose, the task files, and
    links to this checkout's OpenCode CLI and built engine (nothing is rebuilt per test)."""
    from lib.program.agent import Agent
    from lib.opencode.agent import agent_prompt, export_settings, load_program

    project = make_project(tmp_path / "project")
    (project / "node_modules").symlink_to(ROOT / "node_modules")
    (project / ".cache").mkdir()
    (project / ".cache" / "engine").symlink_to(ROOT / ".cache" / "engine")
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
    """Real OpenCode, the embedded Qwen2.5-Coder-0.5B behind llama-server --jinja: a task is done by a
    call whose effect the check sees, and a task whose check cannot pass is counted as not completed."""
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
    made = [r for r in runs if r["task"] == "create-file" and r["success"]]
    assert made and all(r["tool_calls"] >= 1 and "write" in r["tools_used"] for r in made), runs
    assert all(not r["success"] and r["outcome"] != "completed" for r in runs if r["task"] == "cannot-pass")
    report = json.loads((project / "metrics" / "live.json").read_text())
    entry = report["models"]["qwen2.5-coder-0.5b"]
    assert entry["difference"]["paired"] == 2
    rates = [entry[a]["completion_rate"] for a in live.AGENTS]
    assert max(rates) >= 0.5 and all(0 <= r <= 0.5 for r in rates)  # cannot-pass is half of each agent's runs
    assert (project / "metrics" / "live.svg").read_text().startswith("<svg")


def test_the_usage_guide_line_quotes_rates_and_ci() -> None:
    runs = [_run("a", "opencode_default", False), _run("a", "exported", True),
            _run("b", "opencode_default", False), _run("b", "exported", False)]
    (line,) = live.summary_lines({"enabled": True, "models": live.summarize(runs)})
    assert "50% of the time with this agent and 0% with OpenCode's default" in line
    assert "2 paired runs; difference +0.50, 95% CI" in line
    assert live.summary_lines({"enabled": False, "models": {}}) == []
