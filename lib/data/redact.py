"""Replace well-known secrets with [REDACTED:<kind>] before anything is written under data/.

Session logs hold whatever the agent read or ran; they go on to a hosted teacher model and a
shared DVC remote. Patterns are ordered: specific token formats first, generic assignments last.

Two ways in:
- text: every match of every pattern, as if each pattern ran over the string in turn.
- values under a key that names a secret (`{"password": ...}`, `{"apiKey": ...}`, an MCP
  server's `{"env": {"AWS_SECRET_ACCESS_KEY": ...}}`) are redacted whatever their shape.

Speed: a session is hundreds of strings and tens of kilobytes, and most of it holds no secret.
Every match of every kind contains a fixed piece of text (its trigger: `sk-`, `AKIA`, `token`,
...) at a known place, so one pass of a multi-string search (Aho-Corasick, compiled code) over
a session's whole JSON line finds the few strings worth a look, and each pattern is then tried
only where its trigger is, with `match` instead of a scan. The result is the same as running
every pattern over every string in turn (a test checks that on real and generated text).
"""
from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import ahocorasick_rs

# Matched case-insensitively, these letters have look-alikes outside ASCII that str.lower() keeps
# apart but the (?i) patterns do not (Kelvin sign, long s, dotted/dotless i). Folding them first
# also keeps str.lower() from changing the length (U+0130 lowers to two characters).
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})

# Secret words in assignments (`password=...`, `"api_key": "..."`) and in key names.
_ASSIGN_WORDS = ("password", "passwd", "pwd", "secret", "token", "api_key", "api-key", "apikey",
                 "access_key", "access-key", "accesskey", "private_key", "private-key", "privatekey")
_RUN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_AFTER_NAME = frozenset("\"' \t:=")


@dataclass(frozen=True)
class _Kind:
    name: str
    pattern: re.Pattern[str]
    # (text, offset of the match start from it): every match holds one of these at that offset.
    # An offset of None means "the start of the [A-Za-z0-9_] run the text ends" (assignments).
    triggers: tuple[tuple[str, int | None], ...]
    folded: bool = False  # triggers are lower case, looked up in the lowered text
    keep_prefix: bool = False  # group 1 (the name and `=`) stays, only the value goes


_KINDS: tuple[_Kind, ...] = (
    _Kind("private_key", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)", re.S),
        (("-----BEGIN ", 0),)),
    _Kind("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{20,}"), (("sk-ant-", 0),)),
    _Kind("openai_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"), (("sk-", 0),)),
    _Kind("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
          tuple((t, 0) for t in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"))),
    _Kind("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
          tuple((f"xox{c}-", 0) for c in "abposr")),
    _Kind("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), (("AKIA", 0), ("ASIA", 0))),
    _Kind("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"), (("AIza", 0),)),
    _Kind("huggingface_token", re.compile(r"\bhf_[A-Za-z0-9]{30,}"), (("hf_", 0),)),
    _Kind("stripe_key", re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,}"), (("k_live_", -1), ("k_test_", -1))),
    _Kind("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"), (("eyJ", 0),)),
    _Kind("bearer_token", re.compile(r"(?i)(?<=bearer )[A-Za-z0-9_\-.=+/]{16,}"), (("bearer ", 7),), folded=True),
    _Kind("aws_secret_key", re.compile(
        r"(?i)(?<=aws_secret_access_key)([\"']?[ \t]*[:=][ \t]*[\"']?)[A-Za-z0-9/+=]{40}"),
        (("aws_secret_access_key", 21),), folded=True, keep_prefix=True),
    # KEY=value / "password": "value" style assignments; keeps the name, hides the value. The value
    # stops at the end of the line: code read with line numbers (`00063| `) keeps its next line.
    _Kind("password", re.compile(
        r"(?i)(?<![A-Za-z0-9])((?:[A-Za-z0-9_]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key"
        r"|private[_-]?key)|[A-Za-z0-9_]*(?-i:_KEY))"
        r"[\"']?[ \t]*[:=][ \t]*[\"']?)"
        # not a reference to where the secret lives (env lookups, getter calls, template variables)
        r"(?!\[REDACTED|process\.env|os\.environ|getenv|[\w.]*get\w*\(|\$|\{|<|None\b|null\b|true\b|false\b)"
        r"([^\s\"'&;,()]{4,})"),
        tuple((w, None) for w in _ASSIGN_WORDS), folded=True, keep_prefix=True),
)
KINDS: tuple[str, ...] = tuple(k.name for k in _KINDS)

# `password: string`, `self.token = token`, `apiKey = config.apiKey`: code, not secrets.
_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_TYPE_WORDS = {"string", "str", "number", "int", "bool", "boolean", "any", "bytes", "optional"}
_NAME = re.compile(r"[A-Za-z0-9_-]*")
# Line numbers of code as tools print it (`00063| `, `63: `, cat -n): kept when a key block is cut out.
_LINE_NUMBER = re.compile(r"\n([ \t]*\d+(?:\| ?|: |\t))")

# Key names: the words of `apiKey`, `AWS_SECRET_ACCESS_KEY`, `x-api-key`, `passwordField`.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SECRET_LAST_WORDS = {"password", "passwd", "pwd", "passphrase", "secret", "token", "credential", "credentials",
                      "authorization", "apikey", "accesskey", "privatekey", "secretkey"}
_SECRET_KEY_PAIRS = {"api", "access", "private", "secret"}  # <word> key
_ENV_SUFFIXES = {"key", "token", "secret"}  # MY_SERVICE_KEY and friends (upper case only)
# Where a secret is only referred to: ${VAR}, $VAR, {env:VAR} (OpenCode config), process.env.X.
_VALUE_REFERENCE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\{(?:env|file):[^}]*\}|process\.env\.\w+"
                              r"|os\.environ.*|<[^<>]*>|\[REDACTED:[a-z_]+\]")
_MARKER = re.compile(r"\[REDACTED:([a-z_]+)\]")

# Every key name secret_key() accepts holds one of these (lower-cased), or `_KEY`.
_KEY_TRIGGERS = ("passw", "pwd", "passphrase", "secret", "token", "credential", "authorization", "apikey",
                 "api_key", "api-key", "accesskey", "access_key", "access-key", "privatekey", "private_key",
                 "private-key")
_PLAIN_TRIGGERS = frozenset({t for k in _KINDS if not k.folded for t, _ in k.triggers} | {"_KEY"})
_FOLDED_TRIGGERS = frozenset({t for k in _KINDS if k.folded for t, _ in k.triggers} | set(_KEY_TRIGGERS))
# One automaton finds every trigger in one pass over the lowered text (case-sensitive ones are
# then checked against the text itself): C speed, however many triggers there are.
_NEEDLES = sorted({t.lower() for t in _PLAIN_TRIGGERS} | _FOLDED_TRIGGERS)
_AUTOMATON = ahocorasick_rs.AhoCorasick(_NEEDLES)
_PLAIN_BY_NEEDLE = {n: [t for t in _PLAIN_TRIGGERS if t.lower() == n] for n in _NEEDLES}
# trigger -> (index of a kind it starts, offset of the match start); key-name triggers start none.
_BY_TRIGGER: dict[str, list[tuple[int, int | None]]] = {t: [] for t in _PLAIN_TRIGGERS | _FOLDED_TRIGGERS}
for _index, _kind in enumerate(_KINDS):
    for _trigger, _offset in _kind.triggers:
        _BY_TRIGGER[_trigger].append((_index, _offset))
_BY_TRIGGER["_KEY"].append((KINDS.index("password"), None))  # upper-case NAME_KEY=..., case-sensitive

@functools.lru_cache(maxsize=4096)
def secret_key(name: str) -> bool:
    """Does this key name a secret? `password`, `apiKey`, `AWS_SECRET_ACCESS_KEY` yes; `passwordField`,
    `max_tokens`, `token_count` no (only the last word counts, and plurals are counts)."""
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words:
        return False
    last = words[-1]
    if last in _SECRET_LAST_WORDS:
        return True
    if last == "key" and len(words) > 1 and words[-2] in _SECRET_KEY_PAIRS:
        return True
    return last in _ENV_SUFFIXES and len(words) > 1 and name.upper() == name


def _looks_secret(prefix: str, value: str) -> bool:
    """Quoted literals and shell-style NAME=value are secrets; names, types and attribute paths are not."""
    if prefix.rstrip().endswith(("'", '"')):
        return True
    name = _NAME.match(prefix).group(0)
    if _REFERENCE.fullmatch(value) or value.lower() in _TYPE_WORDS or value.lower() == name.lower():
        return False
    if prefix.endswith("=") and not prefix[:-1].endswith(" "):
        return True  # NAME=value, --password=value
    return any(c.isdigit() for c in value)


def _lower(text: str) -> str:
    """Lower case with every position kept, so a hit in it is a hit at the same place in `text`."""
    return text.lower() if text.isascii() else text.translate(_FOLD).lower()


def _hits(text: str, lowered: str) -> list[tuple[int, str]]:
    """(position, trigger) of every trigger in `text`, in order of position."""
    out = []
    for n, start, _ in _AUTOMATON.find_matches_as_indexes(lowered, overlapping=True):
        needle = _NEEDLES[n]
        if needle in _FOLDED_TRIGGERS:
            out.append((start, needle))
        for trigger in _PLAIN_BY_NEEDLE[needle]:
            if text.startswith(trigger, start):
                out.append((start, trigger))
    out.sort()
    return out


def _run_start(text: str, end: int) -> int:
    """Start of the run of [A-Za-z0-9_] characters that ends at `end`."""
    start = end
    while start > 0 and text[start - 1] in _RUN:
        start -= 1
    return start


def _starts(text: str, hits: list[tuple[int, str]]) -> dict[int, list[int]]:
    """kind index -> every place a match of that kind can start, in order."""
    starts: dict[int, set[int]] = {}
    for i, trigger in hits:
        for kind, offset in _BY_TRIGGER[trigger]:
            if offset is not None:
                if i + offset >= 0:
                    starts.setdefault(kind, set()).add(i + offset)
            elif i + len(trigger) >= len(text) or text[i + len(trigger)] in _AFTER_NAME:
                starts.setdefault(kind, set()).add(_run_start(text, i))  # the name is the run ending in the word
    return {kind: sorted(found) for kind, found in starts.items()}




class Redactor:
    """Redacts strings and nested JSON values, counting what it replaced per kind."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def text(self, value: str) -> str:
        """The string with every secret in it replaced by its marker."""
        if not self.enabled or len(value) < 8:  # the shortest secret is `pwd=abcd`
            return value
        hits = _hits(value, _lower(value))
        if not hits:
            return value
        starts = _starts(value, hits)
        # Kinds run in order, each over the text the earlier ones left, as re.sub would.
        for index, kind in enumerate(_KINDS):
            if index not in starts:
                continue
            pieces: list[str] = []
            copied = 0  # value[:copied] is in pieces
            done = 0  # end of the last match: like re.sub, matches never overlap
            for start in starts[index]:
                if start < done:
                    continue
                m = kind.pattern.match(value, start)
                if m is None:
                    continue
                new = self._replace(kind, m)
                if new != m.group(0):
                    pieces += [value[copied:start], new]
                    copied = m.end()
                done = m.end()
            if pieces:
                value = "".join(pieces) + value[copied:]
                starts = _starts(value, _hits(value, _lower(value)))
        return value

    def _replace(self, kind: _Kind, m: re.Match[str]) -> str:
        if kind.name == "password" and not _looks_secret(m.group(1), m.group(2)):
            return m.group(0)
        self.counts[kind.name] += 1
        keep = m.group(1) if kind.keep_prefix else ""
        # A key block printed with line numbers keeps them: the code around it keeps its numbering.
        lines = "".join("\n" + n for n in _LINE_NUMBER.findall(m.group(0))) if kind.name == "private_key" else ""
        return f"{keep}[REDACTED:{kind.name}]{lines}"

    def value(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value; keys are kept, values under secret keys go."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self._keyed(v) if self.enabled and isinstance(k, str) and secret_key(k) else self.value(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def _keyed(self, value: Any) -> Any:
        """A value filed under a secret's name, whatever its shape: only empty values and references stay."""
        if value is None or isinstance(value, bool) or value in ("", [], {}):
            return value
        if isinstance(value, str):
            stripped = value.strip()
            if len(stripped) < 4 or _VALUE_REFERENCE.fullmatch(stripped):
                return self.text(value)
            probe = Redactor()
            out = probe.text(value)
            if _MARKER.fullmatch(out):  # the whole value is a known kind of key: name it
                self.counts.update(probe.counts)
                return out
        self.counts["password"] += 1
        return "[REDACTED:password]"

    def json_line(self, line: str) -> str:
        """`line` (JSON text as json.dumps(..., ensure_ascii=False) writes it) with `value()` applied.

        Byte for byte what dumping the redacted value gives, at a fraction of the cost: only the
        string literals that hold a trigger are decoded, redacted and written back.
        """
        if not self.enabled:
            return line
        hits = _hits(line, _lower(line))
        if not hits:
            return line
        pieces: list[str] = []
        copied = 0  # line[:copied] is in pieces
        n = 0
        while n < len(hits):
            # Triggers hold no character JSON escapes, and outside strings JSON has no letters:
            # every hit lies inside one string literal.
            start = _literal_start(line, hits[n][0])
            text, end = _scanstring(line, start + 1)
            first = n
            while n < len(hits) and hits[n][0] < end:
                n += 1
            if end < len(line) and line[end] == ":":  # a key: its value may be a secret whatever it holds
                if not secret_key(text):
                    continue
                value_at = end + 1
                while line[value_at] in " \t\r\n":
                    value_at += 1
                value, value_end = _DECODER.raw_decode(line, value_at)
                while n < len(hits) and hits[n][0] < value_end:
                    n += 1
                new = self._keyed(value)
                if new is not value:
                    pieces += [line[copied:value_at], json.dumps(new, ensure_ascii=False)]
                    copied = value_end
                continue
            if not any(_may_start(line, i, trigger) for i, trigger in hits[first:n]):
                continue  # e.g. `token` in prose or code, never followed by `=` or `:`
            new = self.text(text)
            if new != text:
                pieces += [line[copied:start], json.dumps(new, ensure_ascii=False)]
                copied = end
        return "".join(pieces) + line[copied:] if pieces else line


_DECODER = json.JSONDecoder()
_scanstring = json.decoder.scanstring  # (decoded string, index past its closing quote)
_BEARER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.=+/")


def _may_start(line: str, i: int, trigger: str) -> bool:
    """Can the trigger at `i` of JSON text `line` start a match? A cheap necessary condition, read
    on the JSON text: `name` + optional quote and blanks + `:` or `=` for assignments, 16 token
    characters after `bearer `. Other kinds are rare enough to be always looked at."""
    for kind, offset in _BY_TRIGGER[trigger]:
        if offset is None:
            j = i + len(trigger)
            if line.startswith('\\"', j):
                j += 2
            elif line.startswith("'", j):
                j += 1
            while line.startswith((" ", "\\t"), j):
                j += 1 if line[j] == " " else 2
            if line.startswith((":", "="), j):
                return True
        elif _KINDS[kind].name == "bearer_token":
            token = line[i + offset:i + offset + 16]
            if len(token) == 16 and all(c in _BEARER_CHARS for c in token):
                return True
        else:
            return True
    return False


def _escaped(line: str, quote: int) -> bool:
    """Is the quote at `quote` escaped (an odd number of backslashes before it)?"""
    n = 0
    while quote - n - 1 >= 0 and line[quote - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _literal_start(line: str, inside: int) -> int:
    q = line.rfind('"', 0, inside)
    while _escaped(line, q):
        q = line.rfind('"', 0, q)
    return q
