"""Record what the real `opencode` binary sends a model, and turn it into versioned data.

Three `opencode run --pure` calls, each against a `Recorder` and in a throw-away HOME:

1. `default`: the built-in `build` agent in a subfolder of a git repository. The recorder answers
   the first agent request with a `read` tool call, so OpenCode runs the tool and sends a second
   request that holds the assistant tool call and the tool result (the message layout).
2. `agent_prompt`: an agent with its own `prompt`, in a folder that is not a git repository.
   Shows that the prompt replaces OpenCode's default one, and what the environment block says
   outside a repository.
3. `tools_map`: an agent whose `tools` map switches some tools off.

Nothing about the request is written down from memory: the default prompt is what precedes the
model line, and every varying value in the rest (model, paths, git, platform, date) is found by
locating the value this capture itself caused, then replaced by a named placeholder.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lib.core.errors import UserError
from devtools.recorder import Recorder, ToolCall, is_title_request
from lib.tools.shape import PLACEHOLDERS, call_id, fill

PROVIDER = "local"
MODEL = "smollm2"  # outside OpenCode's named model families, so the generic default prompt is used
# Differs from the id on purpose: the capture then shows which of the two OpenCode puts in the prompt.
MODEL_NAME = "SmolLM2 (capture)"
PROMPT_AGENT = "capture-prompt"
# No trailing newline: what follows the prompt in the system message is then OpenCode's separator.
AGENT_PROMPT = "You are the capture agent.\nAnswer in one word."
TOOLS_AGENT = "capture-tools"
TOOLS_MAP = {"webfetch": False, "task": False, "skill": False}
TASK_WORDS = ["Read", "hello.py"]  # one word per argument: `opencode run` quotes arguments with spaces
HELLO = 'print("hello")\n'
MARKER = "You are powered by the model named"  # the line that follows the prompt
DATE_FORMAT = "%a %b %d %Y"  # checked against the date OpenCode wrote, see _find_date


def data_path(directory: Path, version: str) -> Path:
    return Path(directory) / f"request-opencode-{version}.json"


# ---------------------------------------------------------------- running OpenCode


class _Session:
    """A throw-away HOME, a git project with a subfolder, a plain folder and a TMPDIR."""

    def __init__(self, opencode: Path, work: Path, timeout: float) -> None:
        self.opencode, self.timeout = opencode, timeout
        self.home = work / "home"
        self.project = work / "project"
        self.cwd = self.project / "src"  # a subfolder, so working directory and workspace root differ
        self.plain = work / "plain"
        self.tmpdir = work / "tmp"
        for folder in (self.home / ".config" / "opencode", self.cwd, self.plain, self.tmpdir):
            folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(self.project)], check=True)
        (self.project / "hello.py").write_text(HELLO, encoding="utf-8")

    def env(self, cwd: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE")}
        home = str(self.home)
        env.update({"HOME": home, "XDG_CONFIG_HOME": f"{home}/.config", "XDG_DATA_HOME": f"{home}/.local/share",
                    "XDG_CACHE_HOME": f"{home}/.cache", "XDG_STATE_HOME": f"{home}/.local/state",
                    # OpenCode takes its working directory from PWD, not from the process's cwd.
                    "PWD": str(cwd), "TMPDIR": str(self.tmpdir), "SHELL": "/bin/bash"})
        return env

    def version(self) -> str:
        done = subprocess.run([str(self.opencode), "--version"], capture_output=True, text=True,
                              timeout=self.timeout, env=self.env(self.plain), cwd=self.plain)
        version = done.stdout.strip()
        if done.returncode != 0 or not re.fullmatch(r"\d+\.\d+\.\d+\S*", version):
            raise UserError(f"`{self.opencode} --version` failed (status {done.returncode}): "
                            f"{(done.stdout + done.stderr)[-500:]}")
        return version

    def run(self, rec: Recorder, cwd: Path, agent: str | None) -> list[dict]:
        """One `opencode run` against `rec`; returns the agent requests (title request dropped)."""
        config = rec.opencode_config(PROVIDER, name=MODEL_NAME)
        config["agent"] = {PROMPT_AGENT: {"mode": "primary", "prompt": AGENT_PROMPT},
                           TOOLS_AGENT: {"mode": "primary", "tools": TOOLS_MAP}}
        (self.home / ".config" / "opencode" / "opencode.json").write_text(json.dumps(config, indent=2),
                                                                          encoding="utf-8")
        cmd = [str(self.opencode), "run", "--pure", *(["--agent", agent] if agent else []), "--", *TASK_WORDS]
        try:
            done = subprocess.run(cmd, cwd=cwd, env=self.env(cwd), capture_output=True, text=True,
                                  timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"`opencode run` ({agent or 'build'} agent) did not finish in {self.timeout:.0f} s; "
                            f"the recorder at {rec.base_url} had {len(rec.requests)} request(s)") from None
        if done.returncode != 0:
            raise UserError(f"`opencode run` ({agent or 'build'} agent) failed with status {done.returncode}:\n"
                            f"{(done.stdout + done.stderr)[-2000:]}")
        requests = rec.agent_requests()
        if not requests:
            raise UserError(f"`opencode run` ({agent or 'build'} agent) sent no agent request to {rec.base_url}:\n"
                            f"{(done.stdout + done.stderr)[-2000:]}")
        return requests


def _record_runs(opencode: Path, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="opencode-capture-") as tmp:
        s = _Session(opencode, Path(tmp).resolve(), timeout)
        out: dict[str, Any] = {"version": s.version(), "cwd": str(s.cwd), "root": str(s.project),
                               "plain": str(s.plain), "tmpdir": str(s.tmpdir)}
        dates = {time.strftime(DATE_FORMAT)}
        read_call = ToolCall("read", {"filePath": str(s.project / "hello.py")}, id=call_id(0))
        answered: list[int] = []

        def first_agent_request_reads(index: int, body: dict) -> str | list[ToolCall] | None:
            if is_title_request(body) or answered:
                return None
            answered.append(index)
            return [read_call]

        with Recorder("ok", model=MODEL, respond=first_agent_request_reads) as rec:
            out["default"] = s.run(rec, s.cwd, None)
        with Recorder("ok", model=MODEL) as rec:
            out["agent_prompt"] = s.run(rec, s.plain, PROMPT_AGENT)
        with Recorder("ok", model=MODEL) as rec:
            out["tools_map"] = s.run(rec, s.cwd, TOOLS_AGENT)
        dates.add(time.strftime(DATE_FORMAT))
        out["dates"] = sorted(dates)
        out["read_call"] = read_call
        return out


# ---------------------------------------------------------------- turning requests into data


class ShapeChanged(UserError):
    """The request no longer looks the way this capture understands it."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise ShapeChanged(f"OpenCode's request changed shape: {what}. Inspect the recorded requests "
                           f"(devtools/capture.py) and update the capture for this OpenCode version.")


def _system(body: dict) -> str:
    systems = [m for m in body["messages"] if m.get("role") == "system"]
    _check(len(systems) == 1 and isinstance(systems[0].get("content"), str) and body["messages"][0] is systems[0],
           "expected exactly one system message, first, with string content")
    return systems[0]["content"]


def _replace_once(text: str, value: str, name: str, where: str) -> str:
    _check(text.count(value) == 1, f"{value!r} ({name}) should occur once in {where}, found {text.count(value)}")
    return text.replace(value, "{" + name + "}")


def _no_placeholders(text: str, where: str) -> None:
    found = [p for p in PLACEHOLDERS if "{" + p + "}" in text]
    _check(not found, f"{where} already contains placeholder text {found}")


def _find_date(text: str, dates: Iterable[str]) -> str:
    found = [d for d in dates if d in text]
    _check(len(found) == 1, f"today's date in the form {DATE_FORMAT!r} ({sorted(dates)}) not found once")
    return found[0]


def _template(rest: str, values: dict[str, str], where: str) -> str:
    """Replace each known value by its placeholder; longer values first (a cwd contains its root)."""
    _no_placeholders(rest, where)
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
        rest = _replace_once(rest, value, name, where)
    return rest


def _substitute(obj: Any, values: dict[str, str]) -> Any:
    """Every string inside `obj` with each value replaced by its placeholder (longer values first)."""
    if isinstance(obj, str):
        for name, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
            obj = obj.replace(value, "{" + name + "}")
        return obj
    if isinstance(obj, list):
        return [_substitute(x, values) for x in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, values) for k, v in obj.items()}
    return obj


def _line_diff(expected: str, got: str, where: str) -> list[tuple[str, str]]:
    a, b = expected.split("\n"), got.split("\n")
    _check(len(a) == len(b), f"{where} has {len(b)} lines, expected {len(a)}")
    return [(x, y) for x, y in zip(a, b) if x != y]


def _differing_part(a: str, b: str) -> tuple[str, str]:
    """The parts of two lines between their common prefix and common suffix."""
    p = len(os.path.commonprefix([a, b]))
    s = len(os.path.commonprefix([a[p:][::-1], b[p:][::-1]]))
    return a[p:len(a) - s], b[p:len(b) - s]


def build(raw: dict[str, Any]) -> dict[str, Any]:
    """The versioned data file's content from the recorded runs of `_record_runs`."""
    platform = sys.platform
    provider_model = f"{PROVIDER}/{MODEL}"
    default, layout = raw["default"][0], raw["default"][-1]
    _check(len(raw["default"]) == 2, f"the default run sent {len(raw['default'])} agent requests, expected 2 "
                                     "(the first, and the one after the read tool ran)")
    (prompt_req,), (tools_req,) = raw["agent_prompt"], raw["tools_map"]

    # -- the default prompt and the separator before the model line
    sys_default, sys_prompt = _system(default), _system(prompt_req)
    _check(sys_default.count(MARKER) == 1, f"{MARKER!r} should occur once in the system message")
    _check(sys_prompt.startswith(AGENT_PROMPT), "an agent prompt no longer starts the system message")
    sep = sys_prompt[len(AGENT_PROMPT):sys_prompt.find(MARKER)]
    _check(MARKER in sys_prompt and sep.strip() == "", f"unexpected text between agent prompt and {MARKER!r}")
    head = sys_default[:sys_default.index(MARKER)]
    _check(head.endswith(sep) and head[:len(head) - len(sep)].strip() != "", "the default prompt is missing")
    default_prompt = head[:len(head) - len(sep)]

    # -- the rest of the system message as a template
    date = _find_date(sys_default, raw["dates"])
    values = {"model": MODEL, "provider_model": provider_model, "cwd": raw["cwd"], "root": raw["root"],
              "platform": platform, "date": date}
    template = _template(sys_default[len(head):], {k: v for k, v in values.items() if k != "model"},
                         "the system message after the prompt")
    template = _replace_once(template, MODEL, "model", "the model line")  # after provider_model took its copy

    # -- the skills block: what the run without the skill tool lacks
    sys_tools = _system(tools_req)
    _check(sys_tools.startswith(head), "the tools-map run changed the default prompt")
    tools_template = _template(sys_tools[len(head):], {k: v for k, v in values.items() if k != "model"},
                               "the tools-map run's system message")
    tools_template = _replace_once(tools_template, MODEL, "model", "the tools-map run's model line")
    _check(template.startswith(tools_template) and template != tools_template,
           "switching the skill tool off should only drop a block at the end of the system message")
    skills = template[len(tools_template):]
    template = tools_template + "{skills}"

    # -- git yes/no and the root outside a repository: the agent-prompt run ran in a plain folder
    rest_prompt = sys_prompt[len(AGENT_PROMPT) + len(sep):]
    date_p = _find_date(rest_prompt, raw["dates"])
    partly = fill(template, {"model": MODEL, "provider_model": provider_model, "cwd": raw["plain"],
                              "platform": platform, "date": date_p, "skills": skills})
    lines = _line_diff(partly, rest_prompt, "the agent-prompt run's system message")
    root_lines = [(a, b) for a, b in lines if "{root}" in a]
    other = [(a, b) for a, b in lines if "{root}" not in a]
    _check(len(root_lines) == 1 and len(other) == 1,
           f"outside a git repository, expected the root line and one more line to differ, got {lines}")
    a, b = root_lines[0]
    pre, post = a.split("{root}")
    _check(b.startswith(pre) and b.endswith(post), "the workspace root line changed shape")
    plain_root = b[len(pre):len(b) - len(post)]
    git_yes, git_no = _differing_part(*other[0])
    _check(bool(git_yes) and bool(git_no), "the git line differs in an unexpected way")
    git_line = other[0][0]
    template = template.replace(git_line, git_line.replace(git_yes, "{git}", 1), 1)
    _check(template.count("{git}") == 1, "the git placeholder is not unique")

    # -- tools: OpenCode's definitions, with machine-specific values as placeholders
    tools = default["tools"]
    names = [t["function"]["name"] for t in tools]
    _check(all(t.get("type") == "function" and set(t["function"]) == {"name", "description", "parameters"}
               for t in tools), "a tool is not {type: function, function: {name, description, parameters}}")
    _check(layout["tools"] == tools and prompt_req["tools"] == tools,
           "the tools changed between requests of one version")
    dropped = [t for t in tools if not TOOLS_MAP.get(t["function"]["name"], True)]
    _check(tools_req["tools"] == [t for t in tools if t not in dropped],
           "the tools-map run's tools are not the default tools minus the switched-off ones")
    tool_values = {"tmpdir": raw["tmpdir"], "platform": platform}
    _no_placeholders(json.dumps(tools), "the tool definitions")
    for t in tools:
        for key in ("name", "parameters"):
            _check(_substitute(t["function"][key], tool_values) == t["function"][key],
                   f"machine-specific text in the {key} of tool {t['function']['name']}")
    stored_tools = _substitute(tools, tool_values)

    # -- the message layout after a tool call
    _check(_system(layout) == sys_default, "the system message changed after a tool call")
    messages = copy.deepcopy(layout["messages"])
    messages[0]["content"] = "{system}"
    _no_placeholders(json.dumps(messages[1:]), "the recorded messages")
    messages = _substitute(messages, {"cwd": raw["cwd"], "root": raw["root"], "platform": platform, "date": date})
    call = raw["read_call"]
    roles = [m["role"] for m in messages]
    _check(roles == ["system", "user", "assistant", "tool"], f"message roles after a tool call are {roles}")
    _check(messages[2]["tool_calls"][0]["id"] == call.id and messages[3].get("tool_call_id") == call.id,
           "OpenCode did not keep the tool call id")

    options = {k: v for k, v in default.items() if k not in ("messages", "tools")}
    return {
        "opencode_version": raw["version"],
        "provider": PROVIDER,
        "model": MODEL,
        "model_name": MODEL_NAME,
        "provider_model": provider_model,
        "task": " ".join(TASK_WORDS),
        "request_options": options,
        "tool_choice": default.get("tool_choice"),
        "tools": stored_tools,
        "default_prompt": default_prompt,
        "separator": sep,
        "system_template": template,
        "skills": skills,
        "git": {"true": git_yes, "false": git_no},
        "date_format": DATE_FORMAT,
        "placeholders": {
            "model": "model id as the provider knows it (not the configured display name)",
            "provider_model": "<provider id>/<model id>",
            "cwd": "working directory (OpenCode reads it from PWD)",
            "root": "workspace root: the git worktree root; outside a repository " + json.dumps(plain_root),
            "git": "git repository or not, as in the `git` mapping",
            "platform": "Node's process.platform (linux, darwin, win32)",
            "date": f"today, strftime {DATE_FORMAT!r}",
            "skills": "the skills block; absent when the skill tool is switched off",
            "tmpdir": "TMPDIR of the OpenCode process (bash tool description)",
            "system": "the system message",
        },
        "runs": {
            "agent_prompt": {
                "agent": PROMPT_AGENT, "prompt": AGENT_PROMPT, "cwd_is_git": False, "root": plain_root,
                "system": _substitute(sys_prompt, {"cwd": raw["plain"], "platform": platform, "date": date_p}),
                "tool_names": [t["function"]["name"] for t in prompt_req["tools"]],
            },
            "tools_map": {
                "agent": TOOLS_AGENT, "tools": TOOLS_MAP,
                "tool_names": [t["function"]["name"] for t in tools_req["tools"]],
                "skills_block": skills in sys_tools,
            },
            "tool_call": {
                "reply": {"tool": call.name, "arguments": _substitute(call.arguments, {"root": raw["root"]}),
                          "id": call.id},
                "messages": messages,
            },
        },
        "tool_names": names,
    }


def capture(opencode: Path, *, timeout: float = 180) -> dict[str, Any]:
    """Run the real OpenCode and return the request shape as data (see module docstring)."""
    opencode = Path(opencode)
    if not (opencode.is_file() and os.access(opencode, os.X_OK)):
        raise UserError(f"OpenCode CLI not found at {opencode}: run ./setup.sh --test (installs opencode-ai "
                        "from npm) or pass --opencode PATH")
    return build(_record_runs(opencode, timeout))


def dumps(data: dict[str, Any]) -> str:
    """The data file's exact text: sorted keys, indent 2, final newline."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
