"""OpenCode's SQLite store `opencode.db` (OpenCode 1.2+).

Opened read-only (`mode=ro`): the file is never written, and in WAL mode reading is safe while
OpenCode runs. Sessions are streamed one at a time, because real databases reach gigabytes.
A message or part that does not match the export schema rejects only its session.
The session ids are listed first; chunks of them can then be read in parallel, each over its
own read-only connection, and linked to their callers in order afterwards.
"""
from __future__ import annotations

import json
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.core.files import loads
from lib.data.session import Session
from lib.data.sources.common import InputError, Rejected, read_head
from lib.data.sources.opencode import (SCHEMA, ChunkedReader, RawMessage, message_problems, session_problems, task_links,
                                  to_session)

_MAGIC = b"SQLite format 3\x00"
_NEEDED = ("session", "message", "part")
# How long to wait when OpenCode holds a lock that blocks readers (rollback-journal databases only).
_BUSY_SECONDS = 10.0
# Sessions per unit of work: enough to pay for a connection, few enough to keep memory flat.
_CHUNK = 32

_MESSAGES = """
SELECT m.id, m.data, p.id, p.data
FROM message m LEFT JOIN part p ON p.message_id = m.id
WHERE m.session_id = ? ORDER BY m.time_created, m.id, p.id
"""


class OpenCodeDbReader(ChunkedReader):
    name = "opencode-db"
    schema = SCHEMA  # rebuilt objects are checked against the export schema's definitions

    def detect(self, path: Path) -> bool:
        if path.is_file() and path.name.startswith("opencode") and path.suffix == ".db":
            return True
        return read_head(path, len(_MAGIC)) == _MAGIC

    def units(self, path: Path) -> list[tuple[str, ...]]:
        """Session ids, oldest first (a parent before the children its `task` calls started), in chunks
        that can be read apart, each over its own connection: only ids are held, never sessions."""
        con = connect_readonly(path)
        try:
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            except sqlite3.DatabaseError as exc:
                raise InputError(f"not a readable SQLite database ({exc}); point data.opencode_db at OpenCode's "
                                 f"opencode.db (usually ~/.local/share/opencode/opencode.db)") from None
            missing = [t for t in _NEEDED if t not in tables]
            if missing:
                raise InputError(f"SQLite database without OpenCode's {', '.join(missing)} table(s); "
                                 f"this is not an opencode.db, remove it from the logs folder")
            try:
                ids = [r[0] for r in con.execute("SELECT id FROM session ORDER BY time_created, id")]
            except sqlite3.DatabaseError as exc:
                raise _damaged(0, exc) from None
        finally:
            con.close()
        return [tuple(ids[i:i + _CHUNK]) for i in range(0, len(ids), _CHUNK)]

    def read_unit(self, path: Path, rel: str, ids: tuple[str, ...]
                  ) -> Iterator[tuple[Session | Rejected, list[str]]]:
        """The sessions `ids` in that order, each with the child sessions it started (not yet linked)."""
        con = connect_readonly(path)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            has_newer_messages = "session_message" in tables
            columns = {r[1] for r in con.execute("PRAGMA table_info(session)")}
            wanted = [c for c in ("id", "parent_id", "project_id", "directory", "title", "version",
                                  "time_created", "time_updated") if c in columns]
            try:
                rows = {r[0]: r for r in con.execute(
                    f"SELECT {', '.join(wanted)} FROM session WHERE id IN ({', '.join('?' * len(ids))})", ids)}
            except sqlite3.DatabaseError as exc:
                raise _damaged(0, exc) from None
            for sid in ids:
                if sid not in rows:
                    continue  # deleted since the ids were listed
                info = _session_info(dict(zip(wanted, rows[sid])))
                where = f"{rel}#{info.get('id')}"
                problems = session_problems(info)
                if problems:
                    yield Rejected(where, "session row does not match schemas/" + SCHEMA + ": " + "; ".join(problems)), []
                    continue
                try:
                    messages = _messages(con, info["id"])
                except InputError as exc:
                    yield Rejected(where, str(exc)), []
                    continue
                except sqlite3.DatabaseError as exc:
                    yield Rejected(where, f"its messages cannot be read ({exc}); the database may be damaged"), []
                    continue
                if not messages and has_newer_messages and _in_newer_table(con, info["id"]):
                    yield Rejected(where, "stored only in the newer session_message table, which is not read yet; "
                                          "use `opencode export <id>` for this session"), []
                    continue
                session = to_session(info, messages, self.name, rel, vcs=_vcs(con, tables, info.get("projectID")))
                if session is not None:
                    yield session, task_links(messages)
        finally:
            con.close()


def _vcs(con: sqlite3.Connection, tables: set[str], project: str | None) -> str | None:
    """The project's `vcs` column ("git" or None), or None where the store has no project table."""
    if "project" not in tables or project is None:
        return None
    try:
        row = con.execute("SELECT vcs FROM project WHERE id = ?", (project,)).fetchone()
    except sqlite3.DatabaseError:
        return None  # an older store without the column: decided from the project id instead
    return (row[0] or "") if row else None


def _damaged(done: int, exc: sqlite3.DatabaseError) -> InputError:
    return InputError(f"reading stopped after {done} session(s): {exc}; copy the database with "
                      f"`sqlite3 opencode.db \"VACUUM INTO 'copy.db'\"` and parse the copy")


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open without any right to write: OpenCode may be using the file right now."""
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=_BUSY_SECONDS)
        con.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise InputError(f"cannot open read-only ({exc}); if OpenCode's -wal/-shm files sit in a folder you "
                         f"cannot write, copy the database with `sqlite3 opencode.db \"VACUUM INTO 'copy.db'\"` "
                         f"and parse the copy") from None
    return con


def _session_info(row: dict[str, Any]) -> dict[str, Any]:
    """A session row as the session info object OpenCode exports."""
    info: dict[str, Any] = {"id": row.get("id")}
    for column, key in (("parent_id", "parentID"), ("project_id", "projectID"), ("directory", "directory"),
                        ("title", "title"), ("version", "version")):
        if row.get(column) is not None:
            info[key] = row[column]
    times = {k: row[c] for c, k in (("time_created", "created"), ("time_updated", "updated"))
             if row.get(c) is not None}
    if times:
        info["time"] = times
    return info


def _messages(con: sqlite3.Connection, session_id: str) -> list[RawMessage]:
    """One session's messages rebuilt as OpenCode does: data + the ids kept in columns."""
    messages: list[RawMessage] = []
    last_id = None
    for mid, mdata, pid, pdata in con.execute(_MESSAGES, (session_id,)):
        if mid != last_id:
            if messages:
                _check(*messages[-1])
            info = {**_json(mdata, f"message {mid}"), "id": mid, "sessionID": session_id}
            messages.append((info, []))
            last_id = mid
        if pid is not None:
            messages[-1][1].append({**_json(pdata, f"part {pid} of message {mid}"), "id": pid,
                                    "sessionID": session_id, "messageID": mid})
    if messages:
        _check(*messages[-1])
    return messages


def _check(info: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    problems = message_problems(info, parts)
    if problems:
        raise InputError(f"message {info['id']} does not match schemas/{SCHEMA}: " + "; ".join(problems))


def _json(text: Any, what: str) -> dict[str, Any]:
    try:
        value = loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what}: data column is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{what}: data column is JSON but not an object")
    return value


def _in_newer_table(con: sqlite3.Connection, session_id: str) -> bool:
    return con.execute("SELECT 1 FROM session_message WHERE session_id = ? LIMIT 1", (session_id,)).fetchone() \
        is not None
