"""Session-logger plugin files `dspy-<sessionId>.json` (current and legacy variants).

Quirks handled here (see the plugin's capture model): messages are stored in event-arrival
order, so a turn's own first reply can sit at the end of its `conversationHistory`; the
project context is the end-of-work state; `success` of a tool call is a text heuristic.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.data.session import (STATUS_ERROR, STATUS_OK, STATUS_UNKNOWN, Action, Context, Message, Outcome, Session,
                         Turn, Usage)
from lib.data.sources.common import (InputError, Rejected, as_dict, as_list, check_schema, clean_task, is_vendor_path,
                                iso_to_ms, load_json_file)

# History timestamps are plugin-side; allow this much clock skew against turn bounds.
_SKEW_MS = 2000


class PluginReader:
    name = "plugin"
    schema = "plugin-dspy.schema.json"

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.name.startswith("dspy-") and path.suffix == ".json"

    def read(self, path: Path, rel: str) -> Iterator[Session | Rejected]:
        data = load_json_file(path)
        if not isinstance(data, dict) or "examples" not in data:
            raise InputError(
                "not a session-logger dspy file (no top-level 'examples'); only the plugin's "
                "dspy-<sessionId>.json files belong here"
            )
        check_schema(data, self.schema)
        yield to_session(data, rel)


def to_session(data: dict[str, Any], rel: str) -> Session:
    examples = data["examples"]
    file_outcome = as_dict(data.get("outcome"))  # legacy variant: one outcome per file
    context = as_dict(as_dict(examples[0].get("input")).get("context"))
    turns = [_turn(i, ex, file_outcome) for i, ex in enumerate(examples)]
    times = [t.time_start for t in turns if t.time_start]
    return Session(
        id=data["session"],
        source="plugin",
        path=rel,
        turns=turns,
        context=_context(context),
        project=context.get("workingDirectory"),
        time_created=min(times) if times else iso_to_ms(data.get("generated")),
    )


def _context(ctx: dict[str, Any]) -> Context:
    files = [f for f in as_list(ctx.get("relevantFiles")) if isinstance(f, str) and not is_vendor_path(f)]
    git = as_dict(ctx.get("gitStatus"))
    # Captured after the work: uncommitted changes and diagnostics would give the answer away.
    return Context(
        working_directory=ctx.get("workingDirectory"),
        project_type=ctx.get("projectType"),
        files=files,
        file_count=ctx.get("fileCount"),
        git_branch=git.get("branch"),
        captured="end",
    )


def _turn(index: int, ex: dict[str, Any], file_outcome: dict[str, Any]) -> Turn:
    inp = as_dict(ex.get("input"))
    meta = as_dict(ex.get("metadata"))
    agent = as_dict(ex.get("agent"))
    response = as_dict(ex.get("output")).get("response") or ""
    time_end = iso_to_ms(meta.get("timestamp"))
    duration = meta.get("duration") or 0
    time_start = time_end - int(duration * 1000) if time_end and duration > 0 else None
    outcome_raw = as_dict(ex.get("outcome")) or file_outcome
    raw_actions = [a for a in as_list(ex.get("actions")) if isinstance(a, dict)]
    # `step` orders calls reliably; plugin timestamps are only a fallback.
    raw_actions.sort(key=lambda a: (a.get("step") if isinstance(a.get("step"), int) else 0,
                                    iso_to_ms(a.get("timestamp")) or 0))
    actions = [_action(a) for a in raw_actions]
    model = agent.get("model")
    return Turn(
        index=index,
        task=clean_task(inp.get("task") or ""),
        history=_history(as_list(inp.get("conversationHistory")), response, time_start),
        actions=actions,
        response=response,
        agent=agent.get("name"),
        model=None if not model or "undefined" in model else model,
        time_start=time_start,
        time_end=time_end,
        outcome=_outcome(outcome_raw, actions),
        usage=_usage(outcome_raw, agent),
    )


def _action(a: dict[str, Any]) -> Action:
    success = a.get("success")
    # The plugin's `success` is a text test (false when the output mentions "error" or "failed", as a
    # read of many source files does), so only its true is a signal; false says nothing either way.
    status = STATUS_OK if success is True else STATUS_UNKNOWN
    result = a.get("result")
    return Action(
        tool=str(a.get("tool")),
        args=as_dict(a.get("args")),
        result=result if isinstance(result, str) else None,
        status=status,
        call_id=a.get("callID"),
        time_start=iso_to_ms(a.get("timestamp")),
    )


def _history(entries: list[Any], response: str, turn_start: int | None) -> list[Message]:
    """Earlier messages in true order, without this turn's own reply (arrival-order quirk)."""
    own = response.strip()[:500]
    kept: list[Message] = []
    for e in entries:
        if not isinstance(e, dict) or e.get("role") not in ("user", "assistant"):
            continue
        text = e.get("content") if isinstance(e.get("content"), str) else ""
        stamp = iso_to_ms(e.get("timestamp"))
        if e["role"] == "assistant":
            if own and text.strip()[:500] and (own.startswith(text.strip()[:200]) or text.strip() == own):
                continue  # the answer to this very turn
            if turn_start and stamp and stamp >= turn_start - _SKEW_MS:
                continue  # written during this turn
        else:
            text = clean_task(text)
        kept.append(Message(role=e["role"], text=text, time_created=stamp))
    # A reply stored ahead of its own request: move leading assistant messages after the first user one.
    lead = 0
    while lead < len(kept) and kept[lead].role == "assistant":
        lead += 1
    if 0 < lead < len(kept):
        kept = [kept[lead]] + kept[:lead] + kept[lead + 1:]
    elif lead == len(kept):
        kept = []  # only replies and no request: they belong to this turn
    # The same quirk in later turns: a reply stamped just before the request it answers goes after it.
    i = 0
    while i < len(kept) - 1:
        reply, request = kept[i], kept[i + 1]
        if (reply.role == "assistant" and request.role == "user" and reply.time_created and request.time_created
                and 0 <= request.time_created - reply.time_created <= _SKEW_MS):
            kept[i], kept[i + 1] = request, reply
            i += 1
        i += 1
    return kept


def _outcome(raw: dict[str, Any], actions: list[Action]) -> Outcome:
    ev = as_dict(raw.get("evaluation"))
    modified = sorted({str(a.args.get("filePath")) for a in actions
                       if a.tool in ("edit", "write") and a.args.get("filePath")})
    return Outcome(
        success=raw.get("success") if isinstance(raw.get("success"), bool) else None,
        task_completed=raw.get("taskCompleted") if isinstance(raw.get("taskCompleted"), bool) else None,
        correctness=_num(ev.get("correctness")),
        efficiency=_num(ev.get("efficiency")),
        minimal_edits=_num(ev.get("minimalEdits")),
        tool_errors=sum(a.status == STATUS_ERROR for a in actions),
        files_modified=modified,
    )


def _usage(raw: dict[str, Any], agent: dict[str, Any]) -> Usage:
    cost = as_dict(as_dict(raw.get("metrics")).get("tokenCost"))
    return Usage(
        prompt_tokens=int(cost.get("input") or agent.get("promptTokens") or 0),
        completion_tokens=int(cost.get("output") or agent.get("completionTokens") or 0),
    )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
