"""JSON Schema validation against the files in schemas/, with errors a person can act on."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def location(path: Any) -> str:
    """JSON path like examples[0].actions[2].tool from a jsonschema error path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_errors(instance: Any, name: str, limit: int = 10) -> list[str]:
    """Human-readable problems of `instance` against schema `name`, most specific first."""
    return problems(validator(name), instance, limit)


def problems(checker: jsonschema.protocols.Validator, instance: Any, limit: int = 10) -> list[str]:
    """`location: message` for each error of `checker` on `instance`, in path order."""
    errors = sorted(checker.iter_errors(instance), key=lambda e: (list(e.absolute_path), e.message))
    return [f"{location(e.absolute_path)}: {_short(e.message)}" for e in errors[:limit]]


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
