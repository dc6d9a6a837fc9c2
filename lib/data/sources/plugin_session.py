"""The session-logger plugin's raw capture `session-<sessionId>.json` (formats.md 1.8).

It is OpenCode data flattened by the plugin: messages hold only their joined text (plus
OpenCode's message `info` when the plugin had it), tool calls are a separate session-wide list.
We rebuild OpenCode-shaped messages and tool parts from it and map them like every other
OpenCode source. Messages are re-ordered by creation time, undoing the plugin's arrival order
(which often puts a reply ahead of the request it answers). A tool call's `success` is the
plugin's text heuristic ("error"/"failed" in the output), the only signal this file has.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.data.session import Session
from lib.data.sources.common import InputError, Rejected, as_dict, as_list, check_schema, iso_to_ms, load_json_file
from lib.data.sources.opencode import RawMessage, to_session, user_request


class PluginSessionReader:
    name = "plugin-session"
    schema = "plugin-session.schema.json"

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.name.startswith("session-") and path.suffix == ".json"

    def read(self, path: Path, rel: str) -> Iterator[Session | Rejected]:
        data = load_json_file(path)
        if not isinstance(data, dict) or "sessionId" not in data:
            raise InputError("not a session-logger raw capture (no top-level 'sessionId'); only the plugin's "
                             "session-<sessionId>.json files belong here under that name")
        check_schema(data, self.schema)
        messages = [_message(i, m) for i, m in enumerate(data["messages"])]
        messages.sort(key=lambda m: (m[0]["time"]["created"], m[0]["id"]))
        _attach_tool_calls(messages, [c for c in as_list(data.get("toolCalls")) if isinstance(c, dict)])
        session = to_session(_session_info(data, messages), messages, self.name, rel)
        if session is not None:
            yield session


def _message(index: int, m: dict[str, Any]) -> RawMessage:
    info = dict(as_dict(m.get("info")))
    info["id"] = info.get("id") or m.get("messageId") or f"msg_{index:06d}"
    info["role"] = m["role"]
    created = as_dict(info.get("time")).get("created")
    if not isinstance(created, (int, float)):
        created = iso_to_ms(m.get("timestamp")) or 0  # plugin clock, only when OpenCode's is missing
    info["time"] = {**as_dict(info.get("time")), "created": created}
    text = m.get("content") if isinstance(m.get("content"), str) else ""
    return info, [{"type": "text", "text": text}] if text else []


def _attach_tool_calls(messages: list[RawMessage], calls: list[dict[str, Any]]) -> None:
    """Put each call into the turn it happened in, after that turn's request, in step order."""
    starts = [(info["time"]["created"], n) for n, (info, parts) in enumerate(messages)
              if info["role"] == "user" and user_request(parts)]
    if not starts:
        return
    calls = sorted(calls, key=lambda c: (c.get("step") if isinstance(c.get("step"), int) else 0,
                                         iso_to_ms(c.get("timestamp")) or 0))
    by_turn: dict[int, list[dict[str, Any]]] = {}
    turn = 0
    for call in calls:
        stamp = iso_to_ms(call.get("timestamp"))
        if stamp is not None:  # else: same turn as the call before it
            turn = max(0, bisect.bisect_right([s for s, _ in starts], stamp) - 1)
        by_turn.setdefault(turn, []).append(_tool_part(call))
    for turn, parts in sorted(by_turn.items()):
        start, user_index = starts[turn]
        end = starts[turn + 1][1] if turn + 1 < len(starts) else len(messages)
        replies = [n for n in range(user_index + 1, end) if messages[n][0]["role"] == "assistant"]
        if replies:
            messages[replies[0]][1][:0] = parts  # tools run before the turn's closing text
        else:
            # The plugin's last saves are often lost: the calls survive, their reply did not.
            user_id = messages[user_index][0]["id"]
            holder = {"id": f"{user_id}~tools", "role": "assistant", "time": {"created": start}}
            messages.insert(user_index + 1, (holder, parts))
            starts[turn + 1:] = [(s, n + 1) for s, n in starts[turn + 1:]]


def _tool_part(call: dict[str, Any]) -> dict[str, Any]:
    result = call.get("result") if isinstance(call.get("result"), str) else ""
    success = call.get("success")
    stamp = iso_to_ms(call.get("timestamp"))
    state: dict[str, Any] = {"input": as_dict(call.get("args"))}
    if success is True:
        state.update(status="completed", output=result)
    elif success is False:
        state.update(status="error", error=result)
    else:
        state["status"] = "running"  # the after-hook had not run before the last save
    if stamp is not None:
        state["time"] = {"start": stamp}
    return {"type": "tool", "tool": call["tool"], "callID": call.get("callID"), "state": state}


def _session_info(data: dict[str, Any], messages: list[RawMessage]) -> dict[str, Any]:
    directory = as_dict(data.get("context")).get("workingDirectory")
    info: dict[str, Any] = {"id": data["sessionId"]}
    if isinstance(directory, str) and directory:
        info["directory"] = directory
    created = [m[0]["time"]["created"] for m in messages if m[0]["time"]["created"]]
    start = data.get("startTime")
    if created or isinstance(start, (int, float)):
        info["time"] = {"created": min(created) if created else start}
    return info
