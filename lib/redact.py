"""Replace well-known secrets with [REDACTED:<kind>] before anything is written under data/.

Session logs hold whatever the agent read or ran; they go on to a hosted teacher model and a
shared DVC remote. Patterns are ordered: specific token formats first, generic assignments last.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private_key", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)", re.S)),
    ("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{20,}")),
    ("openai_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}")),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}")),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}")),
    ("huggingface_token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("stripe_key", re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}")),
    ("bearer_token", re.compile(r"(?i)(?<=bearer )[A-Za-z0-9_\-.=+/]{16,}")),
    # KEY=value / "password": "value" style assignments; keeps the name, hides the value.
    ("password", re.compile(
        r"(?i)(?<![A-Za-z0-9])((?:[A-Za-z0-9_]*(?:password|passwd|pwd|secret|token|api[_-]?key))"
        r"[\"']?\s*[:=]\s*[\"']?)"
        # not a reference to where the secret lives (env lookups, getter calls, template variables)
        r"(?!\[REDACTED|process\.env|os\.environ|getenv|[\w.]*get\w*\(|\$|\{|<|None\b|null\b|true\b|false\b)"
        r"([^\s\"'&;,()]{4,})")),
    ("aws_secret_key", re.compile(r"(?i)(?<=aws_secret_access_key)(\s*[:=]\s*)[A-Za-z0-9/+=]{40}")),
]


# `password: string`, `self.token = token`, `apiKey = config.apiKey`: code, not secrets.
_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_TYPE_WORDS = {"string", "str", "number", "int", "bool", "boolean", "any", "bytes", "optional"}


def _looks_secret(prefix: str, value: str) -> bool:
    """Quoted literals and shell-style NAME=value are secrets; names, types and attribute paths are not."""
    if prefix.rstrip().endswith(("'", '"')):
        return True
    name = re.match(r"[A-Za-z0-9_-]*", prefix).group(0)
    if _REFERENCE.fullmatch(value) or value.lower() in _TYPE_WORDS or value.lower() == name.lower():
        return False
    if prefix.endswith("=") and not prefix[:-1].endswith(" "):
        return True  # NAME=value, --password=value
    return any(c.isdigit() for c in value)


class Redactor:
    """Redacts strings and nested JSON values, counting what it replaced per kind."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.counts: Counter[str] = Counter()

    def text(self, value: str) -> str:
        if not self.enabled or not value:
            return value
        for kind, pattern in _PATTERNS:
            value = pattern.sub(lambda m, kind=kind: self._replace(kind, m), value)
        return value

    def _replace(self, kind: str, match: re.Match[str]) -> str:
        if kind == "password" and not _looks_secret(match.group(1), match.group(2)):
            return match.group(0)
        self.counts[kind] += 1
        keep = match.group(1) if kind in ("password", "aws_secret_key") else ""
        return f"{keep}[REDACTED:{kind}]"

    def value(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value (dict keys are kept)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    @property
    def total(self) -> int:
        return sum(self.counts.values())
