"""JSON Schema validation against the files in schemas/, with errors a person can act on.

Every input file is checked, so the check must cost little next to reading the JSON: each schema
is compiled once into Python code (fastjsonschema) that only answers "valid or not". Only when
it says no does `jsonschema` walk the instance again, to list every problem with its location.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastjsonschema

if TYPE_CHECKING:
    import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


@functools.cache
def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


@functools.cache
def validator(name: str, definition: str | None = None) -> jsonschema.protocols.Validator:
    """The explaining validator of schema `name`, or of one entry of its `$defs`."""
    import jsonschema  # only to explain a failure: importing it costs more than checking most inputs

    schema = _schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    full = cls(schema, format_checker=cls.FORMAT_CHECKER)
    if definition is None:
        return full
    return full.evolve(schema={"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"})


@functools.cache
def _compiled(name: str, definition: str | None = None) -> Callable[[Any], Any]:
    schema = _schema(name)
    if definition is not None:
        schema = {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    # Our schemas set no defaults, so the compiled check never changes the instance.
    return fastjsonschema.compile({k: v for k, v in schema.items() if k not in ("$schema", "$id")})


def is_valid(instance: Any, name: str, definition: str | None = None) -> bool:
    """The fast check alone: does `instance` match schema `name` (or its `$defs` entry)?"""
    try:
        _compiled(name, definition)(instance)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def location(path: Any) -> str:
    """JSON path like examples[0].actions[2].tool from a jsonschema error path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_errors(instance: Any, name: str, limit: int = 10, definition: str | None = None) -> list[str]:
    """Human-readable problems of `instance` against schema `name` (or a `$defs` entry); [] = valid."""
    if is_valid(instance, name, definition):
        return []
    return problems(validator(name, definition), instance, limit)


def problems(checker: jsonschema.protocols.Validator, instance: Any, limit: int = 10) -> list[str]:
    """`location: message` for each error of `checker` on `instance`, in path order."""
    errors = sorted(checker.iter_errors(instance), key=lambda e: (list(e.absolute_path), e.message))
    return [f"{location(e.absolute_path)}: {_short(e.message)}" for e in errors[:limit]]


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
