"""Deterministic, atomic output files: a reader never sees a half-written file."""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, IO

import orjson

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS  # dataclasses go through `default`
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """One canonical JSON line: sorted keys, no spaces, UTF-8 kept readable.

    `default` turns other objects into JSON values (`vars` writes a dataclass as its fields).
    """
    return dumps_bytes(obj, default).decode("utf-8")


def dumps_bytes(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """`dumps` as UTF-8 bytes (orjson: the data stages write hundreds of MB of it)."""
    try:
        return orjson.dumps(obj, default=default, option=_SORTED)
    except TypeError:  # what orjson does not write (integers over 64 bits, non-string keys): the json module
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                          default=default).encode("utf-8")


def loads(data: str | bytes) -> Any:
    """Parse JSON text; raises json.JSONDecodeError (with line and column) when it is not JSON.

    orjson reads strict JSON fast; what only the json module accepts (NaN, a lone surrogate
    escape such as a cut-off emoji) is read by it, and a lone surrogate becomes U+FFFD, since
    it cannot be written as UTF-8 and would stop every later stage.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _scrub(json.loads(data))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def atomic_open(path: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path`, then rename over it on success (text: UTF-8, \\n)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n")) as fh:
            yield fh
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Stream rows to a JSONL file atomically; returns the row count."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(dumps(row) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream rows from a JSONL file (constant memory)."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield loads(line)


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty, sorted JSON (metrics files are read by people and by `dvc metrics`)."""
    with atomic_open(path) as fh:
        fh.write(json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def copy_range(src: IO[bytes], dest: IO[bytes], offset: int, length: int) -> None:
    """Append bytes [offset, offset + length) of file `src` to file `dest` at its file position, in the
    kernel where it can (no trip through Python for hundreds of MB). `dest` must have nothing buffered."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src.fileno(), dest.fileno(), length - done, offset + done)
            if n == 0:
                break
            done += n
    except (AttributeError, OSError):  # not Linux, or a file system that cannot: copy through memory
        src.seek(offset + done)
        while done < length:
            chunk = src.read(min(1 << 20, length - done))
            if not chunk:
                break
            os.write(dest.fileno(), chunk)
            done += len(chunk)
    if done < length:
        raise OSError(f"{getattr(src, 'name', src)}: ended {length - done} bytes early while copying")


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)
