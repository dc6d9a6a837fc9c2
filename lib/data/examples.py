"""Sessions -> training examples (one per turn or one per action), with filters and their counts.

An example's `inputs` are exactly what the agent knew when it chose the action: the task, the
project context (start-of-turn where the source has it), earlier messages in creation order
(never the turn's own reply), the tools, and at step granularity the actions already taken.
`outputs` hold the program's output fields as the program must emit them (labeled demos);
`gold` holds structured labels for the metric.
"""
from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lib.data.session import STATUS_ERROR, STATUS_OK, Action, Session, Turn
from lib.tools.facts import DEFAULT_TOOLS, key_args

INPUT_FIELDS = ("task", "context", "history", "tools", "steps_so_far")
OUTPUT_FIELDS = ("plan", "next_action")

_ARG_CHARS = 200  # long string args (file contents, big edits) are cut in labels
_RESULT_CHARS = 120  # prior action results, as shown in steps_so_far
_MESSAGE_CHARS = 300  # one history message


@dataclass
class Filters:
    require_success: bool
    success_rule: str
    min_correctness: float
    min_efficiency: float | None
    agent_filter: str | None
    removed: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)  # what the data holds, for the notes

    def keep(self, turn: Turn) -> bool:
        o = turn.outcome
        success = o.success if o.success is not None else derive_success(turn, self.success_rule)
        self.seen[f"success={success}"] += 1
        self.seen["correctness=known" if o.correctness is not None else "correctness=unknown"] += 1
        self.seen["efficiency=known" if o.efficiency is not None else "efficiency=unknown"] += 1
        if o.correctness is not None:
            self.seen[f"correctness={o.correctness:g}"] += 1
        checks = [
            ("no_actions", not turn.actions),
            ("empty_task", not turn.task.strip()),
            ("require_success", self.require_success and success is not True),
            ("min_correctness", o.correctness is not None and o.correctness < self.min_correctness),
            ("min_efficiency", self.min_efficiency is not None and o.efficiency is not None
             and o.efficiency < self.min_efficiency),
            ("agent_filter", self.agent_filter is not None and turn.agent != self.agent_filter),
        ]
        for reason, failed in checks:
            if failed:
                self.removed[reason] += 1
                return False
        return True

    def notes(self) -> list[str]:
        """Say which filters could not act on this data (so nobody trusts a filter that did nothing)."""
        total = sum(v for k, v in self.seen.items() if k.startswith("success="))
        notes = []
        if self.require_success and self.seen["success=True"] == total and total:
            notes.append(f"require_success removed nothing: all {total} turns are recorded as successful "
                         f"(the session-logger plugin only saves successful turns)")
        if self.seen["correctness=unknown"] == total and total:
            notes.append("min_correctness cannot act: no turn records a correctness score")
        elif self.seen["correctness=1"] == self.seen["correctness=known"] and self.seen["correctness=known"]:
            notes.append("min_correctness cannot act: every recorded correctness is 1 "
                         "(the plugin saves only successful turns)")
        if self.min_efficiency is not None and self.seen["efficiency=unknown"] == total and total:
            notes.append("min_efficiency cannot act: no turn records an efficiency score")
        return notes


def derive_success(turn: Turn, rule: str) -> bool | None:
    """Success from what OpenCode storage records; None when it records nothing to judge by."""
    o = turn.outcome
    if o.finish is None and o.error is None:
        return None
    ok = o.finish in ("stop", "end_turn") and o.error is None
    if rule == "no_errors":
        ok = ok and o.tool_errors == 0
    return ok


def build(sessions: Iterable[Session], filters: Filters, granularity: str, max_history: int,
          max_chars: int) -> Iterator[dict[str, Any]]:
    """Yield example rows in session order, turn order, step order."""
    for s in sessions:
        tools = ", ".join(_tools(s))
        context = _context(s, max_chars)
        for turn in s.turns:
            if not filters.keep(turn):
                continue
            # What every step of the turn shares is made once a turn, not once a step.
            base = {"task": _cut(turn.task, max_chars), "context": context,
                    "history": _history(turn, max_history, max_chars), "tools": tools}
            response = _cut(turn.response, max_chars)
            scores = {"correctness": turn.outcome.correctness, "efficiency": turn.outcome.efficiency,
                      "minimal_edits": turn.outcome.minimal_edits}
            meta = {"agent": turn.agent, "model": turn.model, "source": s.source}
            request = _replay_turn(s, turn, max_history, max_chars)
            steps = range(len(turn.actions)) if granularity == "step" else range(1)
            rendered = _step_lines(turn.actions) if granularity == "step" else []
            names = [_tool_json(a.tool) for a in turn.actions]
            for step in steps:
                action = turn.actions[step]
                compact = _compact_args(action.args)
                yield {
                    "id": f"{s.id}/t{turn.index}" + (f"/s{step}" if granularity == "step" else ""),
                    "session_id": s.id,
                    "group_id": s.group_id,
                    "turn": turn.index,
                    "step": step if granularity == "step" else None,
                    "inputs": {**base, "steps_so_far": _cut_front("\n".join(rendered[:step]), max_chars)},
                    "outputs": {
                        "plan": "[" + ", ".join(names[step:]) + "]",  # json.dumps of the remaining tools
                        "next_action": _to_json({"tool": action.tool, "args": compact}),
                    },
                    "gold": {
                        "next_action": {"tool": action.tool, "args": compact},
                        "plan": [a.tool for a in turn.actions[step:]],
                        "response": response,
                        "scores": scores,
                    },
                    "meta": meta,
                    "replay": {**request, "call": _replay_call(action, max_chars)},
                }


def _replay_turn(s: Session, turn: Turn, max_history: int, max_chars: int) -> dict[str, Any]:
    """What OpenCode's request for any step of the turn holds as structured data: the project
    directory, when the turn started, and earlier messages. Each row adds its own call with its
    result (`call`); a step's earlier calls are its turn's earlier rows (`with_earlier_steps`), so a
    row's size does not grow with its step."""
    history = turn.history[-max_history:] if max_history else []
    return {
        "cwd": s.context.working_directory or s.project,
        "git": s.context.is_git if s.context.is_git is not None else s.context.git_branch is not None,
        "time": turn.time_start,
        "history": [{"role": m.role, "text": _cut(m.text, max_chars)} for m in history],
    }


def _replay_call(action: Action, max_chars: int) -> dict[str, Any]:
    return {"tool": action.tool, "args": {k: (_cut(v, max_chars) if isinstance(v, str) else v)
                                          for k, v in sorted(action.args.items())},
            "result": _cut(action.result or "", max_chars)}


def with_earlier_steps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each row `replay.steps`: the calls its turn made before it (with their results), taken from
    the turn's earlier rows. Every step of a kept turn is a row of the same split (splits are by
    session), so the rows of a whole split hold them all. The lists share the calls: no copies."""
    calls: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for r in rows:
        if r.get("step") is not None:
            calls.setdefault((r["session_id"], r["turn"]), {})[r["step"]] = r["replay"]["call"]
    for r in rows:
        turn = calls.get((r["session_id"], r["turn"]), {})
        r["replay"]["steps"] = [turn[i] for i in range(r.get("step") or 0) if i in turn]
    return rows


@functools.lru_cache(maxsize=1024)
def _tool_json(name: str) -> str:
    return json.dumps(name)


_to_json = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(..., ensure_ascii=False), built once


def _compact_args(args: dict[str, Any]) -> dict[str, Any]:
    return {k: (_cut(v, _ARG_CHARS) if isinstance(v, str) else v) for k, v in sorted(args.items())}


def _tools(s: Session) -> list[str]:
    # `invalid` is OpenCode's rewrite of a malformed call, never a tool to offer.
    seen = {a.tool for t in s.turns for a in t.actions} - {"invalid"}
    return list(DEFAULT_TOOLS) + sorted(seen - set(DEFAULT_TOOLS))


_WORKDIR = re.compile(r"^working directory: (.+)$", re.M)


def context_workdir(context: str) -> str | None:
    """The working directory an example's context names (as `_context` writes it), without a trailing
    slash; None when it names none."""
    match = _WORKDIR.search(context)
    return match.group(1).strip().rstrip("/") if match else None


def _context(s: Session, max_chars: int) -> str:
    c = s.context
    lines = []
    if c.working_directory:
        lines.append(f"working directory: {c.working_directory}")
    if c.project_type:
        lines.append(f"project type: {c.project_type}")
    if c.git_branch:
        lines.append(f"git branch: {c.git_branch}")
    if c.files:
        lines.append("files: " + ", ".join(c.files[:20]))
    if c.file_count is not None:
        lines.append(f"file count: {c.file_count}")
    return _cut("\n".join(lines), max_chars)


def _history(turn: Turn, max_messages: int, max_chars: int) -> str:
    if max_messages == 0:
        return ""
    recent = turn.history[-max_messages:]
    return _cut_front("\n".join(f"{m.role}: {_cut(' '.join(m.text.split()), _MESSAGE_CHARS)}" for m in recent),
                      max_chars)


def _step_lines(actions: list[Action]) -> list[str]:
    """One line per action as shown in steps_so_far: the first k lines are the steps before step k."""
    lines = []
    for i, a in enumerate(actions, 1):
        outcome = {STATUS_ERROR: "error", STATUS_OK: "ok"}.get(a.status, "done")
        result = _cut(_squeeze(a.result or "", _RESULT_CHARS), _RESULT_CHARS)
        lines.append(f"{i}. {a.tool} {_to_json(key_args(a.tool, a.args))} -> {outcome}"
                     + (f": {result}" if result else ""))
    return lines


def _squeeze(text: str, limit: int) -> str:
    """Whitespace collapsed to single spaces, or a prefix of that longer than `limit`: enough to cut,
    without collapsing a tool output of megabytes."""
    head = " ".join(text[:8 * limit + 64].split())
    return head if len(head) > limit else " ".join(text.split())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_front(text: str, limit: int) -> str:
    """Keep the end: the latest messages and actions matter most for the next one."""
    return text if len(text) <= limit else "…" + text[len(text) - limit + 1:]
