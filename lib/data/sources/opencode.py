"""OpenCode's own session objects -> the normalized model.

`opencode export` JSON, the rows of opencode.db and the older storage/ JSON tree all hold the
same objects: a session info, message infos (user | assistant) and parts (text, tool, patch, ...).
Each reader only finds and rebuilds those objects; this module validates and maps them, so the
three agree by construction.

Mapping rules (why they are what they are):
- Messages are ordered by creation (time.created, then id: ids ascend with time), never by
  storage or arrival order.
- A turn starts at a user message that carries something the user asked for. Synthetic text
  (file dumps OpenCode inlines, "continue with your task" nudges) is not the user's request; a
  user message holding only that continues the current turn.
- History is the text of earlier messages only, so a turn's own replies never become its input.
- Success is left to the `data.success_rule` param; we record finish, error and tool errors.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lib.core.schema import schema_errors
from lib.data.session import (STATUS_ERROR, STATUS_OK, STATUS_UNKNOWN, Action, Context, Message, Outcome, Session,
                         Turn, Usage)
from lib.data.sources.common import as_dict, as_list, clean_task

SCHEMA = "opencode-export.schema.json"

# One rebuilt message: (info, parts).
RawMessage = tuple[dict[str, Any], list[dict[str, Any]]]

_TOOL_STATUS = {"completed": STATUS_OK, "error": STATUS_ERROR}
_PATCH_HEADER = re.compile(r"^\*\*\* (?:Add File|Update File|Delete File|Move to): (.+?)\s*$", re.M)


# ---------------------------------------------------------------- validation


def _problems(instance: Any, definition: str, limit: int = 5) -> list[str]:
    """Problems of one `$defs` entry of the export schema (the DB and tree hold single objects)."""
    return schema_errors(instance, SCHEMA, limit, definition=definition)


def session_problems(info: Any) -> list[str]:
    """What is wrong with a session info object (empty list = usable)."""
    return _problems(info, "session")


def message_problems(info: Any, parts: Any) -> list[str]:
    """What is wrong with one message and its parts, checked against the export schema."""
    return _problems({"info": info, "parts": parts}, "message")


# ---------------------------------------------------------------- mapping


def task_links(messages: Iterable[RawMessage]) -> list[str]:
    """Child session ids this session started through the `task` tool (state.metadata.sessionId)."""
    out = []
    for _, parts in messages:
        for p in parts:
            if p.get("type") == "tool" and p.get("tool") == "task":
                child = as_dict(as_dict(p.get("state")).get("metadata")).get("sessionId")
                if isinstance(child, str) and child:
                    out.append(child)
    return out


def to_session(info: dict[str, Any], messages: list[RawMessage], source: str, rel: str,
               parent_hint: str | None = None, vcs: str | None = None) -> Session | None:
    """Map one session; None when it holds no message at all (nothing to learn, nothing wrong).

    `vcs` is the project's version control as opencode.db records it ("git" or None); without it, a
    project id other than "global" (OpenCode names a git project by its first commit) means git.
    """
    if not messages:
        return None
    ordered = sorted(messages, key=_order)
    directory = info.get("directory") or _first_cwd(ordered)
    turns = _turns(ordered, directory)
    created = as_dict(info.get("time")).get("created")
    if not isinstance(created, (int, float)):
        created = _created(ordered[0][0])  # exports of some builds carry no session time
    return Session(
        id=info["id"],
        source=source,
        path=rel,
        turns=turns,
        # Only the directory: OpenCode stores nothing else about the project at the start.
        context=Context(working_directory=directory, is_git=_is_git(info, vcs), captured="start"),
        parent_id=info.get("parentID") or parent_hint,
        title=info.get("title") or None,
        project=directory,
        time_created=int(created) if created is not None else None,
    )


class ChunkedReader:
    """A reader of OpenCode's own storage that reads sessions in chunks (`units`, `read_unit`) that can
    be read apart, and links subagent sessions to their callers in order after."""

    def units(self, path: Any) -> list[tuple[str, ...]]:
        raise NotImplementedError

    def read_unit(self, path: Any, rel: str, unit: tuple[str, ...]) -> Iterable[tuple[Any, list[str]]]:
        raise NotImplementedError

    def read(self, path: Any, rel: str) -> Iterable[Any]:
        parents: dict[str, str] = {}  # child id -> caller, from task tool metadata
        for unit in self.units(path):
            for item, children in self.read_unit(path, rel, unit):
                if isinstance(item, Session):
                    link(item, children, parents)
                yield item


def link(session: Session, children: list[str], parents: dict[str, str]) -> None:
    """Note the child sessions `session` started and, if it names no caller, take the one that started it.

    Readers that link sessions go parents first, so a caller is always seen before its children;
    sessions may be mapped apart (in other processes) as long as they are linked in that order."""
    for child in children:
        parents.setdefault(child, session.id)
    if session.parent_id is None:
        session.parent_id = parents.get(session.id)


def _order(message: RawMessage) -> tuple[int, str]:
    info = message[0]
    return _created(info) or 0, str(info.get("id") or "")


def _created(info: dict[str, Any]) -> int | None:
    value = as_dict(info.get("time")).get("created")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _first_cwd(messages: list[RawMessage]) -> str | None:
    for info, _ in messages:
        cwd = as_dict(info.get("path")).get("cwd")
        if isinstance(cwd, str) and cwd:
            return cwd
    return None


@dataclass
class _OpenTurn:
    user: dict[str, Any]
    task: str
    history: list[Message]
    replies: list[RawMessage] = field(default_factory=list)


def _turns(messages: list[RawMessage], directory: str | None) -> list[Turn]:
    turns: list[Turn] = []
    history: list[Message] = []
    current: _OpenTurn | None = None
    for info, parts in messages:
        role = info.get("role")
        if role == "user":
            task = user_request(parts)
            if not task:
                continue  # injected only (synthetic text, compaction): the current turn goes on
            if current is not None:
                turns.append(_close(len(turns), current, directory))
            current = _OpenTurn(user=info, task=task, history=list(history))
            history.append(Message(role="user", text=task, time_created=_created(info), id=info.get("id")))
        elif role == "assistant":
            if current is not None:
                current.replies.append((info, parts))
            text = assistant_text(parts)
            if text:
                history.append(Message(role="assistant", text=text, time_created=_created(info), id=info.get("id")))
    if current is not None:
        turns.append(_close(len(turns), current, directory))
    return turns


def user_request(parts: list[dict[str, Any]]) -> str:
    """What the user asked: typed text (not synthetic or ignored), else a subtask's prompt (a /command)."""
    typed = [p.get("text") for p in parts
             if p.get("type") == "text" and not p.get("synthetic") and not p.get("ignored")
             and isinstance(p.get("text"), str)]
    text = clean_task("\n".join(typed))
    if text:
        return text
    prompts = [p.get("prompt") for p in parts if p.get("type") == "subtask" and isinstance(p.get("prompt"), str)]
    return clean_task("\n".join(prompts))


def assistant_text(parts: list[dict[str, Any]]) -> str:
    return "\n".join(p["text"] for p in parts if p.get("type") == "text" and isinstance(p.get("text"), str)
                     and not p.get("synthetic") and p["text"].strip()).strip()


def _close(index: int, t: _OpenTurn, directory: str | None) -> Turn:
    actions = [a for _, parts in t.replies for a in _actions(parts)]
    infos = [info for info, _ in t.replies]
    last = infos[-1] if infos else {}
    texts = [assistant_text(parts) for _, parts in t.replies]
    errors = [as_dict(i.get("error")).get("name") for i in infos if as_dict(i.get("error")).get("name")]
    ends = [v for i in infos for v in (as_dict(i.get("time")).get("completed"), _created(i))
            if isinstance(v, (int, float))]
    return Turn(
        index=index,
        task=t.task,
        history=t.history,
        actions=actions,
        response=next((x for x in reversed(texts) if x), ""),
        agent=t.user.get("agent") or next((i.get("agent") or i.get("mode") for i in infos
                                           if i.get("agent") or i.get("mode")), None),
        model=_model(last) or _model(as_dict(t.user.get("model"))),
        time_start=_created(t.user),
        time_end=int(max(ends)) if ends else None,
        outcome=Outcome(
            finish=last.get("finish") if isinstance(last.get("finish"), str) else None,
            error=str(errors[-1]) if errors else None,
            tool_errors=sum(a.status == STATUS_ERROR for a in actions),
            files_modified=files_modified(actions, [p for _, parts in t.replies for p in parts], directory),
        ),
        usage=_usage(infos),
    )


def _model(info: dict[str, Any]) -> str | None:
    provider, model = info.get("providerID"), info.get("modelID")
    return f"{provider}/{model}" if provider and model else None


def _actions(parts: list[dict[str, Any]]) -> list[Action]:
    out = []
    for p in parts:
        if p.get("type") != "tool":
            continue
        state = as_dict(p.get("state"))
        status = state.get("status")
        result = state.get("output") if status == "completed" else state.get("error") if status == "error" else None
        times = as_dict(state.get("time"))
        out.append(Action(
            tool=str(p.get("tool")),
            args=as_dict(state.get("input")),
            result=result if isinstance(result, str) else None,
            status=_TOOL_STATUS.get(status, STATUS_UNKNOWN),  # pending/running: never finished
            call_id=p.get("callID") if isinstance(p.get("callID"), str) else None,
            time_start=_int(times.get("start")),
            time_end=_int(times.get("end")),
        ))
    return out


def files_modified(actions: list[Action], parts: list[dict[str, Any]], directory: str | None) -> list[str]:
    """Files a turn changed: successful edit/write calls, patch headers, and the steps' patch parts."""
    files: set[str] = set()
    for a in actions:
        if a.status == STATUS_ERROR:
            continue  # a failed edit changed nothing
        if a.tool in ("edit", "write", "multiedit") and isinstance(a.args.get("filePath"), str):
            files.add(a.args["filePath"])
        if a.tool == "multiedit":
            files.update(e["filePath"] for e in as_list(a.args.get("edits"))
                         if isinstance(e, dict) and isinstance(e.get("filePath"), str))
        if a.tool in ("apply_patch", "patch") and isinstance(a.args.get("patchText"), str):
            files.update(_PATCH_HEADER.findall(a.args["patchText"]))
    for p in parts:
        if p.get("type") == "patch":  # the snapshot diff of a step: catches changes made through bash too
            files.update(f for f in as_list(p.get("files")) if isinstance(f, str))
    return sorted({_relative(f, directory) for f in files if f})


def _relative(path: str, directory: str | None) -> str:
    """Tools report absolute paths, patch headers relative ones: compare them in one form."""
    if directory:
        base = directory.rstrip("/") + "/"
        if path.startswith(base):
            return path[len(base):]
    return path


def _usage(infos: list[dict[str, Any]]) -> Usage:
    prompt = completion = 0
    cost = 0.0
    for info in infos:
        tokens = as_dict(info.get("tokens"))
        prompt += _int(tokens.get("input")) or 0
        completion += _int(tokens.get("output")) or 0
        c = info.get("cost")
        cost += float(c) if isinstance(c, (int, float)) and not isinstance(c, bool) else 0.0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cost=cost)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _is_git(info: dict[str, Any], vcs: str | None) -> bool | None:
    """Whether OpenCode told the model "Is directory a git repo: yes" for this session's project."""
    if vcs is not None:
        return vcs == "git"
    project = info.get("projectID")
    return None if project is None else project != "global"
