"""Input readers, one per format. Adding a format = one module here + one schema + one entry below."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.data.session import Session
from lib.data.sources.claude_code import ClaudeCodeReader
from lib.data.sources.common import InputError, Reader, Rejected
from lib.data.sources.opencode import link
from lib.data.sources.opencode_db import OpenCodeDbReader
from lib.data.sources.opencode_export import OpenCodeExportReader
from lib.data.sources.opencode_storage import OpenCodeStorageReader
from lib.data.sources.plugin_logger import PluginReader
from lib.data.sources.plugin_session import PluginSessionReader

# First reader whose `detect` claims a path wins; order from most to least specific
# (file names first, then SQLite's magic header, directory layout, and JSON content last).
READERS: list[Reader] = [
    PluginReader(),
    PluginSessionReader(),
    OpenCodeDbReader(),
    OpenCodeStorageReader(),
    ClaudeCodeReader(),
    OpenCodeExportReader(),
]
_BY_NAME = {r.name: r for r in READERS}

# Folders that never hold sessions: OpenCode's data dir keeps git snapshots and binaries beside storage/.
_IGNORED_DIRS = {"snapshot", "bin", "log", "node_modules", "__pycache__"}

# Files that are never session data (logs, editor and OS litter).
_IGNORED_SUFFIXES = {".log", ".md", ".txt", ".gitignore", ".dvc", ".wal", ".shm", ".db-wal", ".db-shm"}


def walk(root: Path) -> Iterator[tuple[Path, Reader | None]]:
    """Every input under root in sorted order, with the reader that claims it (None = unknown).

    A directory claimed by a reader (e.g. an OpenCode storage tree) is handed over whole.
    """
    claimed = _claim(root)
    if root.is_file() or claimed is not None:  # e.g. logs_dir pointing straight at a storage/ tree
        yield root, claimed
        return
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        reader = _claim(entry)
        if entry.is_dir() and reader is None:
            if entry.name not in _IGNORED_DIRS:
                yield from walk(entry)
        elif reader is not None or (entry.is_file() and entry.suffix not in _IGNORED_SUFFIXES
                                    and not entry.name.endswith(("-wal", "-shm"))):
            yield entry, reader


def _claim(path: Path) -> Reader | None:
    return next((r for r in READERS if r.detect(path)), None)


_UNKNOWN = ("not a recognised session file (expected the plugin's dspy-<id>.json or session-<id>.json, an "
            "`opencode export` JSON, an OpenCode storage/ tree, opencode.db or a Claude Code .jsonl transcript); "
            "move it out of the logs folder")


@dataclass(frozen=True)
class Task:
    """One unit of reading: a whole input, or one chunk of an input that holds many sessions.

    Tasks are independent (they can run in other processes) except for linking subagent sessions
    to their callers, which `link` does in task order afterwards.
    """

    path: Path
    rel: str  # the input, relative to the logs directory
    reader: str | None  # None: no reader claims the input
    unit: Any = None  # the reader's chunk (database session ids, storage session files); None = all of it
    error: str | None = None  # the input could not even be split into chunks


def plan(root: Path, extra: Iterable[Path] = ()) -> Iterator[Task]:
    """Every input under root (then `extra`), in sorted order, as tasks."""
    for file, reader in [*walk(root)] + [(p, _claim(p)) for p in extra]:
        rel = _relative(file, root)
        units = getattr(reader, "units", None)
        if reader is None or units is None:
            yield Task(file, rel, reader.name if reader else None)
            continue
        try:
            chunks = units(file)
        except InputError as exc:
            yield Task(file, rel, reader.name, error=str(exc))
            continue
        except OSError as exc:
            yield Task(file, rel, reader.name, error=f"cannot be read: {exc.strerror or exc}")
            continue
        for chunk in chunks:
            yield Task(file, rel, reader.name, unit=chunk)


def run(task: Task) -> Iterator[tuple[Session | Rejected, list[str] | None]]:
    """The sessions and rejections of one task. A session read from a chunk comes with the ids of
    the child sessions it started (for `link`); otherwise with None. Never raises for bad input."""
    if task.error is not None:
        yield Rejected(task.rel, task.error), None
        return
    if task.reader is None:
        yield Rejected(task.rel, _UNKNOWN), None
        return
    reader = _BY_NAME[task.reader]
    try:
        if task.unit is None:
            for item in reader.read(task.path, task.rel):
                yield item, None
        else:
            yield from reader.read_unit(task.path, task.rel, task.unit)
    except InputError as exc:
        yield Rejected(task.rel, str(exc)), None
    except OSError as exc:
        yield Rejected(task.rel, f"cannot be read: {exc.strerror or exc}"), None


def read_all(root: Path, extra: Iterable[Path] = ()) -> Iterator[tuple[str, Session | Rejected]]:
    """Yield (relative path, session or rejection) for every input; one bad input never stops the rest."""
    parents: dict[str, dict[str, str]] = {}  # per input: child id -> caller
    for task in plan(root, extra):
        for item, children in run(task):
            if children is not None and isinstance(item, Session):
                link(item, children, parents.setdefault(task.rel, {}))
            yield task.rel, item


def _relative(path: Path, root: Path) -> str:
    try:
        base = root if root.is_dir() and path != root else root.parent
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()
