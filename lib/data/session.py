"""The normalized session model that every input format maps onto.

Session -> Turn -> Action. Sources build these; everything downstream reads only these.
All times are epoch milliseconds (None when the source does not know them).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lib.core.files import loads

# Outcome of one tool call, from the source's own signal.
STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_UNKNOWN = "unknown"


@dataclass
class Action:
    tool: str
    args: dict[str, Any] = field(default_factory=dict)
    result: str | None = None  # tool output (or error text), possibly truncated
    status: str = STATUS_UNKNOWN  # ok | error | unknown
    call_id: str | None = None
    time_start: int | None = None
    time_end: int | None = None


@dataclass
class Message:
    """A conversation message as the model saw it (text only)."""

    role: str  # user | assistant
    text: str
    time_created: int | None = None
    id: str | None = None


@dataclass
class Outcome:
    """What the data says about how the turn went. None = the source does not say."""

    success: bool | None = None
    task_completed: bool | None = None
    correctness: float | None = None
    efficiency: float | None = None
    minimal_edits: float | None = None
    finish: str | None = None  # last assistant finish reason (stop, tool-calls, length, ...)
    error: str | None = None  # assistant error name, if any
    tool_errors: int = 0
    files_modified: list[str] = field(default_factory=list)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


@dataclass
class Turn:
    index: int  # 0-based position among the session's kept turns
    task: str  # the user's request, cleaned of inlined file dumps
    history: list[Message] = field(default_factory=list)  # strictly before this turn, in creation order
    actions: list[Action] = field(default_factory=list)
    response: str = ""  # final assistant text of the turn
    agent: str | None = None
    model: str | None = None  # "provider/model" that produced the turn
    time_start: int | None = None
    time_end: int | None = None
    outcome: Outcome = field(default_factory=Outcome)
    usage: Usage = field(default_factory=Usage)


@dataclass
class Context:
    """The project as the agent saw it. `captured` says whether it is the start or end state."""

    working_directory: str | None = None
    project_type: str | None = None
    files: list[str] = field(default_factory=list)
    file_count: int | None = None
    git_branch: str | None = None
    is_git: bool | None = None  # a git repository (OpenCode's project vcs); None: unknown, see git_branch
    captured: str = "start"  # start | end (end state must not leak into inputs)


@dataclass
class Session:
    id: str
    source: str  # reader name, e.g. "plugin", "opencode-export"
    path: str  # input file, relative to the logs directory
    turns: list[Turn] = field(default_factory=list)
    context: Context = field(default_factory=Context)
    parent_id: str | None = None  # subagent sessions point at their caller
    title: str | None = None
    project: str | None = None  # project directory
    time_created: int | None = None

    @property
    def group_id(self) -> str:
        """Sessions that must land in the same split (a subagent goes with its parent)."""
        return self.parent_id or self.id

    def to_dict(self) -> dict[str, Any]:
        """The session as plain JSON values; `dataclasses.asdict` gives the same, several times slower."""
        d = dict(vars(self))
        d["context"] = dict(vars(self.context))
        d["turns"] = [_turn_dict(t) for t in self.turns]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Session":
        turns = []
        for t in d.get("turns", []):
            turns.append(
                Turn(
                    **{
                        **t,
                        "history": [Message(**m) for m in t.get("history", [])],
                        "actions": [Action(**a) for a in t.get("actions", [])],
                        "outcome": Outcome(**t.get("outcome", {})),
                        "usage": Usage(**t.get("usage", {})),
                    }
                )
            )
        return cls(**{**d, "turns": turns, "context": Context(**d.get("context", {}))})


def _turn_dict(t: Turn) -> dict[str, Any]:
    d = dict(vars(t))
    d["history"] = [dict(vars(m)) for m in t.history]
    d["actions"] = [dict(vars(a)) for a in t.actions]
    d["outcome"] = dict(vars(t.outcome))
    d["usage"] = dict(vars(t.usage))
    return d


_DECODER = json.JSONDecoder()


def line_ids(line: bytes) -> tuple[str, str | None]:
    """(id, parent_id) of one sessions.jsonl line (UTF-8), without parsing its turns.

    Lines are written with sorted keys, so `context`, `id` and `parent_id` come first and the
    line's head is enough; anything else (a hand-edited line, a huge context) is parsed whole.
    """
    head = line[:8192].decode("utf-8", errors="replace")
    try:
        if head.startswith('{"context":'):
            _, end = _DECODER.raw_decode(head, 11)
            if head.startswith(',"id":"', end):
                sid, end = json.decoder.scanstring(head, end + 7)
                if head.startswith(',"parent_id":', end):
                    parent, _ = _DECODER.raw_decode(head, end + 13)
                    if parent is None or isinstance(parent, str):
                        return sid, parent
    except ValueError:
        pass
    row = loads(line)
    return row["id"], row.get("parent_id")
