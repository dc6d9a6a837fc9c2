"""Live evaluation: real OpenCode runs scripted tasks on a model, with the exported agent and with its
own default agent, and each task's check decides from the repository's end state whether it was done.

One run = one task, one agent, one model, one repeat:
  1. a scratch git repository with the task's files, always at the same path (so OpenCode's system
     prompt, whose `<env>` block names the directory, is the same for every run and the server
     reuses its decoded prefix);
  2. a throw-away HOME whose opencode.json defines the model as an OpenAI-compatible provider and
     the exported agent, and, for the exported agent's runs, the plugins shipped with it in its global
     plugin folder (as a user installs them; OpenCode's default agent runs without them);
     `opencode run --agent NAME` sends the task;
  3. the session is read back from that HOME's opencode.db through the project's own reader:
     calls (valid, invalid, destructive), calls printed as text, steps, tokens, errors;
  4. the task's check runs in the repository (a command that must exit 0, and/or an answer the
     final reply must contain).
A run that times out or whose OpenCode process fails is a failed run, named as such; a server that
dies stops the stage with the server's log.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lib.core.errors import UserError
from lib.core.schema import schema_errors
from lib.data.session import STATUS_ERROR, Session
from lib.data.sources.opencode_db import OpenCodeDbReader, connect_readonly
from lib.models import catalog, server
from lib.models.chat import holds_call_text
from lib.models.settings import check_reachable
from lib.opencode import safety
from lib.scoring.evaluate import paired_bootstrap_ci

SCHEMA = "live-task.schema.json"
DEFAULT_AGENT = "build"  # OpenCode's own default primary agent
AGENTS = ("opencode_default", "exported")
OUTCOMES = ("completed", "not_completed", "timeout", "opencode_failed", "model_error")
# The environment a check runs in: the project's Python first on PATH, so `python` is the one with
# the pipeline's packages, whatever the machine's default is.
CHECK_TIMEOUT = 120.0
GIT_ENV = {"GIT_AUTHOR_NAME": "live", "GIT_AUTHOR_EMAIL": "live@localhost", "GIT_COMMITTER_NAME": "live",
           "GIT_COMMITTER_EMAIL": "live@localhost"}


# ------------------------------------------------------------------------------------------ tasks

@dataclass(frozen=True)
class Task:
    id: str  # the file name without .yaml
    prompt: str
    files: dict[str, str]
    command: str | None  # check: exit 0 = done
    answer: str | None  # check: the final reply contains this as a whole word
    timeout: float | None


def load_tasks(folder: Path, only: Iterable[str] | None = None) -> list[Task]:
    """The tasks in `folder` (one YAML file each), sorted by id; each file is checked against its schema."""
    if not folder.is_dir():
        raise UserError(f"live.tasks_dir: {folder} is not a folder; point it at the task files "
                        f"(data/live/tasks/ ships ten)")
    tasks = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not a readable YAML task ({exc}); fix or remove the file") from None
        problems = schema_errors(raw, SCHEMA)
        if problems:
            raise UserError(f"{path}: not a valid task ({'; '.join(problems)}); see schemas/{SCHEMA}")
        check = raw["check"]
        tasks.append(Task(path.stem, raw["prompt"], dict(raw.get("files") or {}), check.get("command"),
                          check.get("answer"), raw.get("timeout")))
    wanted = list(only) if only else None
    if wanted:
        known = {t.id for t in tasks}
        missing = [name for name in wanted if name not in known]
        if missing:
            raise UserError(f"live.tasks names {', '.join(missing)}, not in {folder}; "
                            f"the tasks there are: {', '.join(sorted(known))}")
        tasks = [t for t in tasks if t.id in wanted]
    if not tasks:
        raise UserError(f"live: no task in {folder}; add <id>.yaml files (see schemas/{SCHEMA})")
    return tasks


# ------------------------------------------------------------------------------------------ runs

@dataclass
class Run:
    """What one run did. `success` is the check's verdict; `outcome` names how the run ended."""

    task: str
    agent: str  # opencode_default | exported
    model: str
    repeat: int
    outcome: str  # see OUTCOMES
    success: bool
    tool_calls: int = 0
    invalid_calls: int = 0  # unknown tool or arguments OpenCode refused
    failed_calls: int = 0  # any call whose result was an error (invalid ones included)
    destructive_calls: int = 0
    text_calls: int = 0  # replies that hold a tool call as text, which the server did not parse
    steps: int = 0  # model calls OpenCode made (assistant messages)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    tools_used: list[str] = field(default_factory=list)
    detail: str = ""  # the check's output, or why the run failed

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """A model OpenCode talks to: an OpenAI-compatible base URL and the name the server knows it by."""

    label: str  # how the metrics name it
    base_url: str
    model: str
    context: int
    server_alive: Callable[[], str | None] = lambda: None  # None, or why the server is gone
    api_key_env: str | None = None  # the variable holding the server's key, passed to OpenCode by name


def opencode_config(target: Target, agents: dict[str, dict[str, Any]], output_tokens: int) -> dict[str, Any]:
    """opencode.json for a run: the model as a local OpenAI-compatible provider, and the agents."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {"live": {"npm": "@ai-sdk/openai-compatible", "name": "live",
                              # OpenCode reads the key from the variable itself ({env:…}), so it is never written down.
                              "options": {"baseURL": target.base_url,
                                          "apiKey": f"{{env:{target.api_key_env}}}" if target.api_key_env else "live"},
                              "models": {target.model: {"name": target.model, "tool_call": True,
                                                        "limit": {"context": target.context,
                                                                  "output": output_tokens}}}}},
        "model": f"live/{target.model}",
        "autoupdate": False,
        "share": "disabled",
        "agent": agents,
    }


def agents_config(exported: dict[str, Any], exported_name: str, max_steps: int,
                  temperature: float | None) -> dict[str, dict[str, Any]]:
    """The agent section: OpenCode's `build` and the exported agent, with the same step cap and sampling.

    The exported entry keeps its prompt, tools and permission; its model is the run's model, and its
    temperature is the run's (OpenCode's own default for the model unless `temperature` is set), so
    the two agents differ only in what the export changes.
    """
    shipped = {k: v for k, v in exported.items() if k not in ("model", "temperature")}
    build: dict[str, Any] = {"steps": max_steps}
    mine: dict[str, Any] = {**shipped, "mode": "primary", "steps": max_steps}
    if temperature is not None:
        build["temperature"] = mine["temperature"] = temperature
    return {DEFAULT_AGENT: build, exported_name: mine}


def isolated_env(home: Path, npm_cache: Path) -> dict[str, str]:
    """OpenCode's environment for one run: its own HOME and XDG folders (config, data, state), and a
    shared cache, so the provider package is installed once, not per run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_STATE_HOME=str(home / ".local/state"), XDG_CACHE_HOME=str(npm_cache),
               OPENCODE_DISABLE_AUTOUPDATE="1", **GIT_ENV)
    return env


def make_repo(repo: Path, task: Task) -> None:
    """The task's scratch repository, from nothing, with its files committed."""
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    for rel, text in sorted(task.files.items()):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text, encoding="utf-8")
    env = {**os.environ, **GIT_ENV}
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "commit", "-q", "--allow-empty", "-m", "task start"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)


def contains_answer(reply: str, answer: str) -> bool:
    """The expected answer as a whole word (so "4" is not found in "14")."""
    return re.search(rf"(?<![\w.]){re.escape(answer)}(?!\w|\.\d)", reply or "") is not None


def read_session(db: Path) -> tuple[Session | None, dict[str, Any]]:
    """The run's session through the project's own opencode.db reader, plus what that reader does not
    keep: the number of model calls (assistant messages), the text of every reply, and the errors."""
    extra: dict[str, Any] = {"steps": 0, "texts": [], "errors": [], "prompt_tokens": 0, "completion_tokens": 0}
    if not db.is_file():
        return None, extra
    reader = OpenCodeDbReader()
    sessions = [s for unit in reader.units(db) for s, _ in reader.read_unit(db, db.name, unit)
                if isinstance(s, Session)]
    top = [s for s in sessions if s.parent_id is None]
    session = top[0] if top else (sessions[0] if sessions else None)
    con = connect_readonly(db)
    replies: set[str] = set()  # ids of the assistant messages
    try:
        for mid, data in con.execute("SELECT id, data FROM message ORDER BY time_created"):
            info = json.loads(data)
            if info.get("role") == "assistant":
                replies.add(mid)
                extra["steps"] += 1
                tokens = info.get("tokens") or {}
                # OpenCode counts the part of a prompt the server had cached apart from the rest.
                extra["prompt_tokens"] += int(tokens.get("input") or 0) + int((tokens.get("cache") or {}).get("read") or 0)
                extra["completion_tokens"] += int(tokens.get("output") or 0)
                if info.get("error"):
                    extra["errors"].append(str(info["error"].get("data", {}).get("message") or info["error"])[:300])
        for mid, data in con.execute("SELECT message_id, data FROM part ORDER BY time_created, id"):
            part = json.loads(data)
            if mid in replies and part.get("type") == "text" and not part.get("synthetic"):
                extra["texts"].append(part.get("text") or "")
    except sqlite3.DatabaseError as exc:
        extra["errors"].append(f"reading {db}: {exc}")
    finally:
        con.close()
    return session, extra


def _check(task: Task, repo: Path, reply: str) -> tuple[bool, str]:
    notes, ok = [], True
    if task.command:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        try:
            done = subprocess.run(task.command, shell=True, cwd=repo, env=env, capture_output=True, text=True,
                                  timeout=CHECK_TIMEOUT)
            ok = done.returncode == 0
            notes.append(f"check exit {done.returncode}: {(done.stdout + done.stderr).strip()[-300:]}")
        except subprocess.TimeoutExpired:
            ok = False
            notes.append(f"check timed out after {CHECK_TIMEOUT:.0f} s")
    if task.answer:
        found = contains_answer(reply, task.answer)
        ok = ok and found
        notes.append(f"answer {task.answer!r} {'found' if found else 'not found'} in the final reply")
    return ok, "; ".join(notes)


def run_task(task: Task, agent: str, agent_name: str, target: Target, repeat: int, *, workdir: Path,
             opencode: str, agents: dict[str, dict[str, Any]], timeout: float, output_tokens: int,
             known_tools: frozenset[str], plugins: dict[str, str] | None = None) -> Run:
    """One run of `task` with `agent_name` on `target`, in `workdir` (reused: the same paths every run).

    `plugins` (path under the config folder -> text, e.g. plugin/short-tools.js) are installed for this run.
    """
    repo, home = workdir / "repo", workdir / "home"
    config = home / ".config" / "opencode"
    make_repo(repo, task)
    shutil.rmtree(home, ignore_errors=True)
    config.mkdir(parents=True)
    (config / "opencode.json").write_text(json.dumps(opencode_config(target, agents, output_tokens), indent=2),
                                          encoding="utf-8")
    for rel, text in sorted((plugins or {}).items()):
        (config / rel).parent.mkdir(parents=True, exist_ok=True)
        (config / rel).write_text(text, encoding="utf-8")
    # Not --pure: it also skips the plugin files a user installs.
    cmd = [opencode, "run", "--agent", agent_name, "--model", f"live/{target.model}",
           "--title", f"live {task.id}"]
    run = Run(task.id, agent, target.label, repeat, "completed", False)
    started = time.monotonic()
    try:
        # PWD too: OpenCode takes the working directory its <env> block names from it.
        # The task on stdin, as typed: as arguments, OpenCode quotes words with spaces and fails on a
        # word that is a number ("8000").
        done = subprocess.run(cmd, cwd=repo, env={**isolated_env(home, workdir.parent / "opencode-cache"),
                                                  "PWD": str(repo)},
                              input=task.prompt, capture_output=True, text=True, timeout=task.timeout or timeout)
        failure = None if done.returncode == 0 else \
            f"opencode exited {done.returncode}: {(done.stderr or done.stdout).strip()[-400:]}"
    except subprocess.TimeoutExpired:
        failure, run.outcome = f"timed out after {task.timeout or timeout:.0f} s", "timeout"
    run.wall_s = round(time.monotonic() - started, 3)
    gone = target.server_alive()
    if gone:
        raise UserError(f"live: the model server for {target.label} at {target.base_url} stopped during "
                        f"task {task.id}: {gone}")

    session, extra = read_session(home / ".local" / "share" / "opencode" / "opencode.db")
    actions = [a for turn in (session.turns if session else []) for a in turn.actions]
    run.tool_calls = len(actions)
    run.tools_used = sorted({a.tool for a in actions})
    run.failed_calls = sum(a.status == STATUS_ERROR for a in actions)
    run.invalid_calls = sum(a.tool not in known_tools or (a.status == STATUS_ERROR and _refused(a.result))
                            for a in actions)
    run.destructive_calls = sum(safety.destructive(a.tool, a.args, str(repo)) is not None for a in actions)
    run.text_calls = sum(holds_call_text(t) for t in extra["texts"])
    run.steps, run.prompt_tokens, run.completion_tokens = extra["steps"], extra["prompt_tokens"], extra["completion_tokens"]
    reply = next((t for t in reversed(extra["texts"]) if t.strip()), "")
    if failure is None and extra["errors"]:
        failure, run.outcome = "the model call failed: " + " | ".join(extra["errors"])[:400], "model_error"
    if failure is not None:
        run.outcome = run.outcome if run.outcome != "completed" else "opencode_failed"
        run.detail = failure
        return run
    run.success, run.detail = _check(task, repo, reply)
    run.outcome = "completed" if run.success else "not_completed"
    return run


def _refused(result: str | None) -> bool:
    """OpenCode's answer to a call it could not run as asked: an unknown tool or invalid arguments."""
    text = (result or "").lower()
    return "invalid" in text and ("argument" in text or "input" in text or "parameter" in text)


# ------------------------------------------------------------------------------------------ report

def summarize(runs: list[Run], seed: int = 0) -> dict[str, Any]:
    """Per model and agent: completion rate and counts; per model: exported minus default, paired over
    (task, repeat), with a 95% bootstrap CI."""
    out: dict[str, Any] = {}
    for model in sorted({r.model for r in runs}):
        mine = [r for r in runs if r.model == model]
        entry: dict[str, Any] = {}
        for agent in AGENTS:
            rs = [r for r in mine if r.agent == agent]
            if not rs:
                continue
            n = len(rs)
            entry[agent] = {
                "runs": n,
                "completion_rate": sum(r.success for r in rs) / n,
                "outcomes": {o: sum(r.outcome == o for r in rs) for o in OUTCOMES},
                "tool_calls": sum(r.tool_calls for r in rs),
                "invalid_calls": sum(r.invalid_calls for r in rs),
                "failed_calls": sum(r.failed_calls for r in rs),
                "destructive_calls": sum(r.destructive_calls for r in rs),
                "runs_with_text_calls": sum(r.text_calls > 0 for r in rs),
                "runs_with_a_call": sum(r.tool_calls > 0 for r in rs),
                "mean_steps": sum(r.steps for r in rs) / n,
                "mean_prompt_tokens": sum(r.prompt_tokens for r in rs) / n,
                "mean_completion_tokens": sum(r.completion_tokens for r in rs) / n,
                "mean_wall_s": sum(r.wall_s for r in rs) / n,
            }
        pairs = _pairs(mine)
        if pairs:
            before = [float(d.success) for d, _ in pairs]
            after = [float(e.success) for _, e in pairs]
            lo, hi = paired_bootstrap_ci(before, after, seed=seed)
            entry["difference"] = {"absolute": sum(after) / len(after) - sum(before) / len(before),
                                   "ci95": [lo, hi], "paired": len(pairs)}
        out[model] = entry
    return out


def _pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    by = {(r.agent, r.task, r.repeat): r for r in runs}
    keys = sorted({(r.task, r.repeat) for r in runs})
    return [(by[("opencode_default", *k)], by[("exported", *k)]) for k in keys
            if ("opencode_default", *k) in by and ("exported", *k) in by]


def chart_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of {model, agent, value} for metrics/live.svg: the completion rate of each agent per model."""
    names = {"opencode_default": "OpenCode default", "exported": "exported agent"}
    return [{"model": model, "agent": names[agent], "value": entry[agent]["completion_rate"]}
            for model, entry in report.items() for agent in AGENTS if agent in entry]


# ------------------------------------------------------------------------------------------ driver

def opencode_cli() -> str:
    """The opencode CLI: the project's (./setup.sh --test installs it), else one on PATH. Absolute, since
    OpenCode runs inside each task's scratch repository."""
    local = Path("node_modules/.bin/opencode")
    found = str(local.resolve()) if local.exists() else shutil.which("opencode")
    if not found:
        raise UserError("live: the opencode CLI was not found; run `./setup.sh --test` (it installs "
                        "opencode-ai from npm into node_modules/)")
    return found


@contextlib.contextmanager
def target_for(model: dict[str, Any], context: int, log_dir: Path, key: str = "live.models") -> Iterator[Target]:
    """The model as OpenCode will reach it: an embedded model behind llama.cpp's own server (built on
    first use, run on loopback with --jinja so the model's own template parses its tool calls), or the
    user's own OpenAI-compatible server (Ollama, vLLM, LM Studio), checked before the first run."""
    if model["provider"] == "local":
        path = catalog.model_path(model.get("model"), model.get("model_path"))
        alias = model.get("model") or path.stem
        log = log_dir / f"llama-server-{re.sub(r'[^A-Za-z0-9_.-]', '_', alias)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with server.serve(path, alias, ctx=context, log=log) as (url, alive):
            yield Target(alias, url, alias, context, alive)
        return
    base = model["api_base"].rstrip("/")
    if model["provider"] == "ollama" and not base.endswith("/v1"):
        base += "/v1"  # OpenCode talks to Ollama through its OpenAI-compatible endpoint
    check_reachable(key, {"provider": "openai-compatible", "model": model["model"], "api_base": base,
                          "api_key_env": model.get("api_key_env"), "temperature": 0.0, "max_tokens": 1,
                          "timeout": 10, "num_retries": 0})
    yield Target(model["model"], base, model["model"], context, api_key_env=model.get("api_key_env"))


def run_all(cfg: dict[str, Any], exported: dict[str, Any], exported_name: str, *, opencode: str,
            workroot: Path, known_tools: frozenset[str], plugins: dict[str, str] | None = None,
            log: Callable[[str], None] = print) -> list[Run]:
    """Every (model, agent, task, repeat) run. Runs are ordered agent by agent so that consecutive
    requests share OpenCode's system prompt and tool definitions, which the server decodes once.
    `plugins` (lib.opencode.agent.plugin_files) are installed for the exported agent's runs."""
    workroot = workroot.resolve()  # OpenCode runs inside each task's repository: relative paths would move
    tasks = load_tasks(Path(cfg["tasks_dir"]), cfg["tasks"])
    for i, model in enumerate(cfg["models"]):  # every name checked before the first run
        if model["provider"] == "local" and model.get("model"):
            try:
                catalog.entry(model["model"])
            except UserError as exc:
                raise UserError(f"live.models[{i}].model: {exc}") from None
    agents = agents_config(exported, exported_name, cfg["max_steps"], cfg["temperature"])
    names = {"opencode_default": DEFAULT_AGENT, "exported": exported_name}
    runs: list[Run] = []
    total = len(cfg["models"]) * len(AGENTS) * len(tasks) * cfg["repeats"]
    for i, model in enumerate(cfg["models"]):
        with target_for(model, cfg["context_window"], workroot / "logs", f"live.models[{i}]") as target:
            workdir = workroot / re.sub(r"[^A-Za-z0-9_.-]", "_", target.label)
            for agent in AGENTS:
                for task in tasks:
                    for repeat in range(cfg["repeats"]):
                        run = run_task(task, agent, names[agent], target, repeat, workdir=workdir,
                                       opencode=opencode, agents=agents, timeout=cfg["timeout"],
                                       output_tokens=cfg["max_output_tokens"], known_tools=known_tools,
                                       plugins=plugins if agent == "exported" else None)
                        runs.append(run)
                        log(f"live [{len(runs)}/{total}] {target.label} {agent} {task.id}#{repeat}: {run.outcome}, "
                            f"{run.tool_calls} call(s), {run.steps} step(s), {run.wall_s:.0f} s")
    return runs

