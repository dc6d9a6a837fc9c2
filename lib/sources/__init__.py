"""Input readers, one per format. Adding a format = one module here + one schema + one entry below."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lib.session import Session
from lib.sources.claude_code import ClaudeCodeReader
from lib.sources.common import InputError, Reader, Rejected
from lib.sources.opencode_db import OpenCodeDbReader
from lib.sources.opencode_export import OpenCodeExportReader
from lib.sources.opencode_storage import OpenCodeStorageReader
from lib.sources.plugin import PluginReader
from lib.sources.plugin_session import PluginSessionReader

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


def read_all(root: Path, extra: list[Path] = ()) -> Iterator[tuple[str, Session | Rejected]]:
    """Yield (relative path, session or rejection) for every input; one bad input never stops the rest."""
    for path in [*walk(root)] + [(p, _claim(p)) for p in extra]:
        file, reader = path
        rel = _relative(file, root)
        if reader is None:
            yield rel, Rejected(rel, "not a recognised session file (expected the plugin's dspy-<id>.json or "
                                     "session-<id>.json, an `opencode export` JSON, an OpenCode storage/ tree, "
                                     "opencode.db or a Claude Code .jsonl transcript); "
                                     "move it out of the logs folder")
            continue
        try:
            for item in reader.read(file, rel):
                yield rel, item
        except InputError as exc:
            yield rel, Rejected(rel, str(exc))
        except OSError as exc:
            yield rel, Rejected(rel, f"cannot be read: {exc.strerror or exc}")


def _relative(path: Path, root: Path) -> str:
    try:
        base = root if root.is_dir() and path != root else root.parent
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()
