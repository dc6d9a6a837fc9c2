"""Claude Code transcripts: `~/.claude/projects/<encoded-cwd>/<session>.jsonl` (formats.md 6).

One JSON record per line, appended as the session runs. Anthropic changes the layout without
notice, so only user/assistant records are read, each checked against schemas/claude-code.schema.json,
and everything else is skipped. Records are rebuilt as OpenCode messages and tool parts (tool
names and arguments translated to OpenCode's) and mapped like every OpenCode source.

Subagents live in `<session>/subagents/agent-<id>.jsonl` (all records `isSidechain`, carrying the
parent's `sessionId`); each becomes its own session whose parent is the calling session.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.core.files import loads
from lib.core.schema import schema_errors
from lib.data.session import Session
from lib.data.sources.common import InputError, Rejected, as_dict, as_list, iso_to_ms, read_head
from lib.data.sources.opencode import RawMessage, to_session

SCHEMA = "claude-code.schema.json"

_KNOWN_TYPES = {"user", "assistant", "system", "summary", "progress", "attachment", "file-history-snapshot",
                "queue-operation", "ai-title", "last-prompt"}
_HEAD_BYTES = 65536

# Claude Code tool -> (OpenCode tool, argument renames). Arguments not listed keep their name;
# `None` drops one OpenCode has no counterpart for. Read/Edit/Write/Bash/Task/WebFetch follow
# formats.md; the rest map by the same snake_case -> camelCase pattern.
_TOOLS: dict[str, tuple[str, dict[str, str | None]]] = {
    "Read": ("read", {"file_path": "filePath"}),
    "Edit": ("edit", {"file_path": "filePath", "old_string": "oldString", "new_string": "newString",
                      "replace_all": "replaceAll"}),
    "MultiEdit": ("multiedit", {"file_path": "filePath"}),
    "Write": ("write", {"file_path": "filePath"}),
    "Bash": ("bash", {"run_in_background": None}),
    "Glob": ("glob", {}),
    "Grep": ("grep", {"glob": "include", "output_mode": None, "type": None, "head_limit": None, "multiline": None,
                      "-n": None, "-i": None, "-A": None, "-B": None, "-C": None}),
    "LS": ("list", {}),
    "Task": ("task", {}),
    "Agent": ("task", {}),
    "TodoWrite": ("todowrite", {}),
    "WebFetch": ("webfetch", {"prompt": None}),
    "WebSearch": ("websearch", {}),
}
_EDIT_KEYS = {"old_string": "oldString", "new_string": "newString", "replace_all": "replaceAll"}

# User records that are not a request someone typed: they continue the current turn.
_NOT_TYPED = re.compile(r"^\s*(?:<command-|<local-command-|Caveat: The messages below|\[Request interrupted|"
                        r"This session is being continued from a previous conversation)")


class ClaudeCodeReader:
    name = "claude-code"
    schema = SCHEMA

    def detect(self, path: Path) -> bool:
        if path.is_file() and path.name.startswith("agent-") and path.name.endswith(".meta.json"):
            return path.with_name(path.name[: -len(".meta.json")] + ".jsonl").is_file()
        head = read_head(path, _HEAD_BYTES) if path.suffix == ".jsonl" else None
        if head is None:
            return False
        for line in head.splitlines()[:20]:
            try:
                record = loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("type") in _KNOWN_TYPES:
                return True
        return False

    def read(self, path: Path, rel: str) -> Iterator[Session | Rejected]:
        if path.name.endswith(".meta.json"):
            return  # a subagent's description, read together with its transcript
        records = list(_records(path))
        chat = [(n, r) for n, r in records if r.get("type") in ("user", "assistant")]
        if not chat:
            return  # only metadata records (e.g. a summary-only file): nothing to learn
        subagent = all(r.get("isSidechain") for _, r in chat)
        if not subagent:
            chat = [(n, r) for n, r in chat if not r.get("isSidechain")]
        meta = _meta(path) if subagent else {}
        first = chat[0][1]
        session_id = str(first.get("sessionId") or path.stem)
        cwd = next((r["cwd"] for _, r in chat if isinstance(r.get("cwd"), str) and r["cwd"]), None)
        agent = meta.get("agentType") if isinstance(meta.get("agentType"), str) else None
        info: dict[str, Any] = {"id": session_id, "directory": cwd}
        if subagent:
            agent_id = first.get("agentId") or path.stem.removeprefix("agent-")
            info.update(id=f"{session_id}-agent-{agent_id}", parentID=session_id,
                        title=meta.get("description") if isinstance(meta.get("description"), str) else None)
        else:
            info["title"] = next((r.get("title") for _, r in records if r.get("type") == "ai-title"
                                  and isinstance(r.get("title"), str)), None)
        session = to_session(info, _messages(chat, agent), self.name, rel)
        if session is not None:
            yield session


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            if n - 1 == last and not raw.endswith(b"}"):
                return  # the last line is still being written by a running session
            raise InputError(f"line {n} is not valid JSON ({exc}); the transcript is damaged, "
                             f"remove that line or the file") from None
        if not isinstance(record, dict):
            raise InputError(f"line {n} is not a JSON object; this is not a Claude Code transcript")
        if record.get("type") in ("user", "assistant"):
            problems = schema_errors(record, SCHEMA, limit=5)
            if problems:
                raise InputError(f"line {n} does not match schemas/{SCHEMA}: " + "; ".join(problems))
        yield n, record


def _meta(path: Path) -> dict[str, Any]:
    meta = path.with_name(path.stem + ".meta.json")
    try:
        return as_dict(loads(meta.read_bytes()))
    except (OSError, ValueError):
        return {}  # optional: only names the subagent


def _messages(chat: list[tuple[int, dict[str, Any]]], agent: str | None) -> list[RawMessage]:
    """OpenCode-shaped messages: one per user record, one per API message (records share its id)."""
    messages: list[RawMessage] = []
    replies: dict[str, RawMessage] = {}
    tool_parts: dict[str, dict[str, Any]] = {}
    for n, r in chat:
        msg = as_dict(r.get("message"))
        created = iso_to_ms(r.get("timestamp")) or 0
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else \
            [b for b in as_list(content) if isinstance(b, dict)]
        if r["type"] == "user":
            for b in blocks:
                if b.get("type") == "tool_result" and b.get("tool_use_id") in tool_parts:
                    _finish(tool_parts[b["tool_use_id"]], b, created)
            texts = [b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]
            if texts:
                synthetic = bool(r.get("isMeta")) or bool(_NOT_TYPED.match(texts[0]))
                info = {"id": f"cc_{n:08d}", "role": "user", "time": {"created": created}}
                if agent:
                    info["agent"] = agent
                messages.append((info, [{"type": "text", "text": t, "synthetic": synthetic} for t in texts]))
            continue
        key = str(msg.get("id") or f"line-{n}")
        if key not in replies:
            info = {"id": f"cc_{n:08d}", "role": "assistant", "time": {"created": created},
                    "providerID": "anthropic"}
            if agent:
                info["agent"] = agent
            replies[key] = (info, [])
            messages.append(replies[key])
        info, parts = replies[key]
        info["time"]["completed"] = created
        if isinstance(msg.get("model"), str) and msg["model"] != "<synthetic>":
            info["modelID"] = msg["model"]
        if msg.get("stop_reason"):
            info["finish"] = msg["stop_reason"]  # end_turn counts as a clean stop downstream
        if r.get("isApiErrorMessage"):
            info["error"] = {"name": "APIError"}
        usage = as_dict(msg.get("usage"))
        if usage:  # repeated on every record of the message: keep the latest, never add them up
            info["tokens"] = {"input": usage.get("input_tokens") or 0, "output": usage.get("output_tokens") or 0}
        for b in blocks:
            if b.get("type") == "text" and isinstance(b.get("text"), str):
                parts.append({"type": "text", "text": b["text"]})
            elif b.get("type") == "tool_use":
                part = _tool_part(b, created)
                tool_parts[str(b.get("id"))] = part
                parts.append(part)
    return messages


def _tool_part(block: dict[str, Any], created: int) -> dict[str, Any]:
    name = str(block.get("name"))
    tool, renames = _TOOLS.get(name, (name, {}))
    args: dict[str, Any] = {}
    for key, value in as_dict(block.get("input")).items():
        new = renames.get(key, key)
        if new is None:
            continue
        if key == "edits" and isinstance(value, list):
            value = [{_EDIT_KEYS.get(k, k): v for k, v in as_dict(e).items()} for e in value]
        args[new] = value
    return {"type": "tool", "tool": tool, "callID": block.get("id"),
            "state": {"status": "running", "input": args, "time": {"start": created}}}


def _finish(part: dict[str, Any], result: dict[str, Any], ended: int) -> None:
    content = result.get("content")
    if isinstance(content, list):
        content = "\n".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")
    text = content if isinstance(content, str) else ""
    state = part["state"]
    state["time"]["end"] = ended
    if result.get("is_error"):
        state.update(status="error", error=text)
    else:
        state.update(status="completed", output=text)
