"""Paths of the machine a session ran on, made relative to the session's project directory."""
from __future__ import annotations

import re
from typing import Any


def relativize(value: Any, workdir: str | None, *, whole_names: bool = True) -> Any:
    """Paths under `workdir` become relative ones and `workdir` itself becomes '.', in a string or in
    every string of nested dicts and lists.

    whole_names=True leaves alone a longer name that only starts with `workdir` (`/app-old` for
    `/app`). whole_names=False replaces every occurrence, as the shipped plugin
    (lib/opencode/nearest-demos.js) does with its directory: retrieval's query text uses it, so
    Python and the plugin pick the same demos.
    """
    if not workdir:
        return value
    if isinstance(value, str):
        value = value.replace(workdir + "/", "")
        if not whole_names:
            return value.replace(workdir, ".")
        return re.sub(re.escape(workdir) + r"(?![\w.-])", ".", value)
    if isinstance(value, dict):
        return {k: relativize(v, workdir, whole_names=whole_names) for k, v in value.items()}
    if isinstance(value, list):
        return [relativize(v, workdir, whole_names=whole_names) for v in value]
    return value
