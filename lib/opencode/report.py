"""Reading metrics/replay.json: the names of its two prompts and what its counts ask the user to do.

Shared by the replay stage, which writes the report, and export, which quotes it (so export does not
depend on the model code).
"""
from __future__ import annotations

from typing import Any

DEFAULT = "opencode_default"  # OpenCode's own default prompt
EXPORTED = "exported"  # the exported agent


def text_call_note(label: str, entry: dict[str, Any]) -> str | None:
    """What to do when most replies with the exported agent hold a call that is never run (None otherwise)."""
    e = entry[EXPORTED]
    text = e.get("text_call", 0)  # absent in a report written before it was counted
    if not e.get("n") or text * 2 < e["n"]:
        return None
    rule = entry.get("calls_read_by", "server")
    reader = "its server" if rule == "server" else f"the {rule} rule (replay.parser)"
    note = (f"{label}: {text} of {e['n']} replies with the exported agent hold a tool call written as "
            f"text, which {reader} does not take; OpenCode shows such a call and never runs it. ")
    if rule == "server":
        return note + ("Check that the server parses this model's calls: llama-server --jinja, vLLM "
                       "--enable-auto-tool-choice with the model's --tool-call-parser, an Ollama model whose "
                       "template has tools.")
    only = ("only a model that writes its chat template's own call syntax can act inside OpenCode "
            "(README: Real coding models, embedded).")
    if rule == "llama.cpp":
        return note + ("A llama.cpp server built before its autoparser runs bare JSON calls: if yours is one, "
                       f"set replay.parser: hermes-2-pro. Otherwise {only}")
    return note + only[0].upper() + only[1:]
