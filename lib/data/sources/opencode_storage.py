"""OpenCode's JSON storage tree (about 0.4 to 1.1.x): `storage/` under ~/.local/share/opencode.

    session/<projectID>/<sessionID>.json    session info
    message/<sessionID>/<messageID>.json    message info
    part/<messageID>/<partID>.json          part

The walk hands the whole directory to this reader. A bad file rejects only its session.
The older per-project layout (`session/info/...`, before ~0.4) is claimed too, but only to
reject it once with a way forward instead of once per file.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.data.session import Session
from lib.data.sources.common import InputError, Rejected, load_json_file
from lib.data.sources.opencode import (SCHEMA, ChunkedReader, RawMessage, message_problems, session_problems, task_links,
                                  to_session)

_CHUNK = 32  # session files per unit of work


class OpenCodeStorageReader(ChunkedReader):
    name = "opencode-storage"
    schema = SCHEMA  # the files hold the same objects as an export

    def detect(self, path: Path) -> bool:
        return path.is_dir() and (path / "session").is_dir() and (
            (path / "message").is_dir() or (path / "session" / "info").is_dir())

    def units(self, path: Path) -> list[tuple[str, ...]]:
        """Session files in chunks that can be read apart (and linked to their callers in order after)."""
        if not (path / "message").is_dir():
            raise InputError("OpenCode storage from before ~0.4 (session/info/ layout) is not supported; open "
                             "the project once with a current OpenCode, which migrates it, and parse opencode.db")
        # Session ids descend with time: reverse order reads parents before the children they started.
        files = sorted((path / "session").glob("*/*.json"), key=lambda f: f.stem, reverse=True)
        names = [f.relative_to(path).as_posix() for f in files]
        return [tuple(names[i:i + _CHUNK]) for i in range(0, len(names), _CHUNK)]

    def read_unit(self, path: Path, rel: str, names: tuple[str, ...]
                  ) -> Iterator[tuple[Session | Rejected, list[str]]]:
        for name in names:
            file = path / name
            where = f"{rel}#{file.stem}"
            try:
                info, messages = _load(path, file)
            except InputError as exc:
                yield Rejected(where, str(exc)), []
                continue
            except OSError as exc:
                yield Rejected(where, f"cannot be read: {exc}"), []
                continue
            session = to_session(info, messages, self.name, rel)
            if session is not None:
                yield session, task_links(messages)


def _load(root: Path, file: Path) -> tuple[dict[str, Any], list[RawMessage]]:
    info = _object(root, file)
    problems = session_problems(info)
    if problems:
        raise InputError(f"{_rel(root, file)} does not match schemas/{SCHEMA}: " + "; ".join(problems))
    messages: list[RawMessage] = []
    for mfile in sorted((root / "message" / info["id"]).glob("*.json")):
        minfo = _object(root, mfile)
        parts = [_object(root, p) for p in sorted((root / "part" / mfile.stem).glob("*.json"))]
        problems = message_problems(minfo, parts)
        if problems:
            raise InputError(f"message {mfile.stem} ({_rel(root, mfile)} and its parts) does not match "
                             f"schemas/{SCHEMA}: " + "; ".join(problems))
        messages.append((minfo, parts))
    return info, messages


def _object(root: Path, file: Path) -> dict[str, Any]:
    try:
        value = load_json_file(file)
    except InputError as exc:
        raise InputError(f"{_rel(root, file)}: {exc}") from None
    if not isinstance(value, dict):
        raise InputError(f"{_rel(root, file)}: expected a JSON object; the file is damaged, delete it")
    return value


def _rel(root: Path, file: Path) -> str:
    return file.relative_to(root).as_posix()
