"""What every input reader shares: the reader contract, rejections, and text/time helpers."""
from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lib.core.errors import UserError
from lib.core.files import loads
from lib.core.schema import schema_errors
from lib.data.session import Session


class InputError(UserError):
    """One input (file or database row) cannot be used; the message says why and what to do."""


@dataclass
class Rejected:
    path: str  # file, or "file#session-id" for one record inside a database or tree
    reason: str


class Reader(Protocol):
    """One input format. `detect` claims a path; `read` yields sessions or rejections.

    A reader of inputs that hold many sessions (opencode.db, the storage tree) may also offer
    `units(path)`, chunks that can be read apart (in other processes), and
    `read_unit(path, rel, unit)`, yielding (session or rejection, child session ids) for `link`.
    """

    name: str
    schema: str  # file name in schemas/

    def detect(self, path: Path) -> bool: ...

    def read(self, path: Path, rel: str) -> Iterator[Session | Rejected]: ...


def read_head(path: Path, size: int) -> bytes | None:
    """The first `size` bytes of a regular file, for cheap format detection; None if unreadable."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return None


def load_json_file(path: Path) -> Any:
    """Parse a JSON file, turning every way it can be unreadable into an InputError."""
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError("empty file (0 bytes or only whitespace); delete it or re-export the session")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"not UTF-8 text (bad byte at offset {exc.start}); re-save the file as UTF-8"
        ) from None
    try:
        return loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg} "
            f"(the file is truncated or was edited by hand)"
        ) from None


def check_schema(data: Any, schema: str) -> None:
    problems = schema_errors(data, schema, limit=5)
    if problems:
        raise InputError(f"does not match schemas/{schema}: " + "; ".join(problems))


_CALLED_TOOL = re.compile(r"Called the .+ tool.*$", re.S)
_FILE_BLOCK = re.compile(r"<file>.*?</file>", re.S)


def clean_task(text: str) -> str:
    """Strip the file dumps OpenCode inlines for @file mentions, as the plugin does."""
    lines = text.split("\n")
    if len(lines) > 1 and "Called the" in lines[1]:
        text = lines[0]
    text = _FILE_BLOCK.sub("", _CALLED_TOOL.sub("", text))
    return text.strip()


def iso_to_ms(value: Any) -> int | None:
    """ISO-8601 string -> epoch ms; None for anything unparseable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = _dt.datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z too
    except ValueError:
        try:
            stamp = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.timezone.utc)
    return int(stamp.timestamp() * 1000)


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def is_vendor_path(path: str) -> bool:
    """Dependency folders say nothing about the user's project."""
    return any(part in path for part in ("node_modules/", ".git/", "__pycache__/", ".venv/", "vendor/", "target/"))
