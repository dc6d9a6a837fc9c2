"""The agent prompt as OpenCode receives it: instructions, tool guidance, worked examples.

One rendering serves export (the files a user installs) and replay (the requests that are scored),
so what was scored is byte for byte what ships. Tool guidance covers only the tools OpenCode
offers (from the captured request, minus those the agent disables). Demonstrations are never
dumped raw: paths are made relative to the session's project, and a demo that still holds an
absolute path, a redacted secret, a cut-off label or an OpenCode substitution is left out.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lib.core.paths import relativize
from lib.data.examples import context_workdir
from lib.program.agent import INTERNAL_TOOLS, parse_action, parse_plan
from lib.tools import shape
from lib.data.redact import Redactor
from lib.tools.facts import guidance_line

_MAX_EXAMPLE_ACTION_CHARS = 400  # longer calls (whole files, big edits) make poor examples
_STEP_TOOL = re.compile(r"^\d+\. (\S+)", re.M)
# A path of some machine: under a usual root (/home, /tmp, ...) or two or more segments deep
# (/srv/app), or ~/..., or C:\... . Not URLs, not ./x or a/b, and not a one-segment route like /health.
_ROOTS = "home|Users|root|tmp|var|work|opt|mnt|srv|usr|etc|private|Volumes|workspace|workspaces|builds"
_ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~:/\\-])/(?:(?:" + _ROOTS + r")(?![\w.-])|[\w.@+-]+/[\w.@+-])"
    r"|(?<![\w/])~/|\b[A-Za-z]:\\[\w.]")
# Text OpenCode would substitute inside a config or agent file.
_SUBSTITUTION = re.compile(r"\{(?:env|file):")

EXAMPLES_HEADING = "## Examples"
EXAMPLES_INTRO = (f"{EXAMPLES_HEADING}\n\nThe call to make next for a task, given the calls already done. "
                  "Make the call as a real tool call, not as text.")


@dataclass(frozen=True)
class WorkedExample:
    task: str
    action: dict[str, Any]  # {"tool", "args"} with project-relative paths
    plan: list[str]
    done_before: list[str]  # tools already called in the task (empty for a first step)


def unsafe(text: str) -> bool:
    """True when text must not be exported: a secret, a path of the training machine, a substitution."""
    if "[REDACTED" in text or _ABSOLUTE_PATH.search(text) or _SUBSTITUTION.search(text):
        return True
    probe = Redactor()
    probe.text(text)
    return probe.total > 0


def worked_example(demo: dict[str, Any]) -> WorkedExample | None:
    """A demo (program demo or example-row inputs + outputs) as a short example, or None when unusable or unsafe."""
    task = " ".join(str(demo.get("task") or "").split())
    action = parse_action(demo.get("next_action")) or parse_action((demo.get("gold") or {}).get("next_action"))
    if not task or action is None or action["tool"] in INTERNAL_TOOLS:
        return None
    plan = parse_plan(demo.get("plan")) or [action["tool"]]
    if plan[0] != action["tool"]:
        plan = [action["tool"], *plan]
    workdir = context_workdir(str(demo.get("context") or ""))
    task, action = relativize(task, workdir), relativize(action, workdir)
    done = _STEP_TOOL.findall(str(demo.get("steps_so_far") or ""))
    shown = task + "\n" + json.dumps(action, ensure_ascii=False) + "\n" + " ".join(plan + done)
    if unsafe(shown) or "…" in json.dumps(action, ensure_ascii=False):
        return None  # a secret, a machine path, or a label cut short: not something to imitate
    return WorkedExample(task=task, action=action, plan=plan, done_before=done)


def demo_text(ex: WorkedExample) -> str:
    """One worked example as it appears in the prompt (and in the run-time demo bank)."""
    lines = [f"Task: {ex.task}"]
    if ex.done_before:
        lines.append("Already done: " + ", ".join(ex.done_before))
    lines.append("Call: " + json.dumps(ex.action, ensure_ascii=False))
    lines.append("Then: " + " -> ".join(ex.plan[1:]) if len(ex.plan) > 1 else "Then: reply when done")
    return "\n".join(lines)


def select_examples(demos: list[dict[str, Any]], limit: int, tools: Iterable[str] | None = None) -> list[WorkedExample]:
    """Up to `limit` examples: first steps before later ones, distinct tools first, short ones first.

    With `tools`, an example whose call uses a tool the agent does not have is left out.
    """
    allowed = set(tools) if tools is not None else None
    candidates = []
    for index, demo in enumerate(demos):
        ex = worked_example(demo)
        if ex is None or (allowed is not None and ex.action["tool"] not in allowed):
            continue
        size = len(json.dumps(ex.action, ensure_ascii=False))
        candidates.append(((bool(ex.done_before), size > _MAX_EXAMPLE_ACTION_CHARS,
                            len(ex.task) + size, index), ex))
    candidates.sort(key=lambda c: c[0])
    chosen: list[WorkedExample] = []
    tasks: set[str] = set()
    for distinct in (True, False):  # first pass: one example per tool; second: fill up
        used = {ex.action["tool"] for ex in chosen}
        for _, ex in candidates:
            if len(chosen) >= limit:
                return chosen
            if ex.task in tasks or (distinct and ex.action["tool"] in used):
                continue
            chosen.append(ex)
            tasks.add(ex.task)
            used.add(ex.action["tool"])
    return chosen


def enabled_tools(disabled: Iterable[str] = ()) -> list[str]:
    """The tools OpenCode offers the agent, in OpenCode's order, minus the disabled ones."""
    off = set(disabled)
    return [name for name in shape.tool_names() if name not in off]


def tool_guidance(tools: list[str]) -> str:
    return "\n".join(guidance_line(name) for name in tools if name not in INTERNAL_TOOLS)


def examples_block(examples: list[WorkedExample]) -> str:
    """The examples section; empty when there are none."""
    if not examples:
        return ""
    return "\n\n".join([EXAMPLES_INTRO, *(demo_text(ex) for ex in examples)])


def agent_prompt(instructions: str, demos: list[dict[str, Any]], max_examples: int,
                 disabled_tools: Iterable[str] = ()) -> str:
    """The agent `prompt` OpenCode sends in place of its own: instructions, tools, then worked examples."""
    tools = enabled_tools(disabled_tools)
    parts = [Redactor().text(instructions).strip(), "## Tools\n\n"
             "Act through OpenCode's tool calls, one call at a time, and read each result before "
             "choosing the next. Use these tools with exactly these argument names:\n\n"
             + tool_guidance(tools) + "\n\n"
             "The examples give paths relative to the project root; in a call, put the working "
             "directory from <env> in front of them (OpenCode's file tools take absolute paths). "
             "Read or search a file before you edit it, and after a change run the project's tests or "
             "build with bash. When the task is done, reply with a short summary of what you changed."]
    block = examples_block(select_examples(demos, max_examples, tools))
    if block:
        parts.append(block)
    return "\n\n".join(parts).strip() + "\n"
