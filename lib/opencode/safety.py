"""Which tool calls are destructive, and which of them an agent's `permission` rules would stop.

Destructive: `rm` with both recursive and force flags, `git reset --hard`, a forced `git push`, or
a write, edit or delete of a path outside the project directory. OpenCode's `permission.bash`
rules map command patterns (`*` matches anything) to allow / ask / deny; the last matching rule
decides, as in OpenCode, and a denied or asked call does not run unattended.
"""
from __future__ import annotations

import posixpath
import re
import shlex
from typing import Any

# Default deny rules for the exported agent: the destructive commands above.
DENY_DESTRUCTIVE: dict[str, str] = {
    "*": "allow",
    "rm -rf *": "deny", "rm -fr *": "deny", "rm -r -f *": "deny", "rm -f -r *": "deny",
    "git reset --hard*": "deny",
    "git push --force*": "deny", "git push -f*": "deny", "git push * --force*": "deny", "git push * -f*": "deny",
}

_SEGMENT = re.compile(r"\s*(?:&&|\|\||;|\||\n)\s*")
_FILE_TOOLS = ("write", "edit", "multiedit")


def _file_outside(tool: str, args: dict[str, Any], cwd: str | None) -> str | None:
    """The path a file tool's call writes outside the project, or None."""
    path = args.get("filePath")
    return path if tool in _FILE_TOOLS and isinstance(path, str) and outside(path, cwd) else None


def _words(segment: str) -> list[str]:
    """One command of a chain as the shell splits it (plain whitespace where its quoting is broken)."""
    try:
        return shlex.split(segment)
    except ValueError:
        return segment.split()


def destructive(tool: str, args: dict[str, Any], cwd: str | None) -> str | None:
    """Why the call is destructive (a short reason), or None."""
    if tool in _FILE_TOOLS:
        path = _file_outside(tool, args, cwd)
        return f"{tool} outside the project: {path}" if path else None
    if tool != "bash" or not isinstance(args.get("command"), str):
        return None
    for segment in _SEGMENT.split(args["command"]):
        reason = _destructive_command(segment, cwd)
        if reason:
            return reason
    return None


def _destructive_command(segment: str, cwd: str | None) -> str | None:
    words = _words(segment)
    while words and words[0] in ("sudo", "command", "exec", "nohup"):
        words = words[1:]
    if not words:
        return None
    if words[0] == "rm":
        flags = "".join(w.lstrip("-") for w in words[1:] if w.startswith("-") and not w.startswith("--"))
        long = {w for w in words[1:] if w.startswith("--")}
        recursive = "r" in flags.lower() or "--recursive" in long
        force = "f" in flags or "--force" in long
        if recursive and force:
            return "rm -rf"
        targets = [w for w in words[1:] if not w.startswith("-")]
        if any(outside(t, cwd) for t in targets):
            return "rm outside the project"
        return None
    if words[0] == "git" and len(words) > 1:
        rest = words[1:]
        if rest[0] == "reset" and "--hard" in rest:
            return "git reset --hard"
        if rest[0] == "push" and any(w in ("-f", "--force") or w.startswith("--force") for w in rest):
            return "git push --force"
    return None


def outside(path: str, cwd: str | None) -> bool:
    """True when `path` (absolute, ~, or relative to cwd) points outside the project directory."""
    p = path.strip().strip("'\"")
    if not p:
        return False
    if p.startswith("~"):
        return True
    root = posixpath.normpath(cwd) if cwd else None
    if p.startswith("/"):
        if root is None:
            return True
        full = posixpath.normpath(p)
        return not (full == root or full.startswith(root.rstrip("/") + "/"))
    return posixpath.normpath(p).startswith("..")


def wildcard(pattern: str) -> re.Pattern[str]:
    """OpenCode's permission pattern: `*` any run of characters, `?` one character, the rest literal."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


# Commands whose path arguments OpenCode's bash tool checks against the project directory.
_PATH_COMMANDS = ("cd", "rm", "cp", "mv", "mkdir", "touch", "chmod", "chown", "cat")


def permitted(tool: str, args: dict[str, Any], permission: dict[str, Any] | None, cwd: str | None = None) -> bool:
    """Whether OpenCode would run the call unattended under the agent's `permission` rules.

    As OpenCode 1.18 decides it: a file tool's path, or a path argument of a bash command that touches
    files, outside the project needs `external_directory` (ask by default, so it does not run
    unattended); a bash command is checked segment by segment (`a && b` runs only if every segment is
    allowed), the last matching rule deciding each.
    """
    rules = permission or {}
    if cwd is not None and rules.get("external_directory", "ask") != "allow" and _touches_outside(tool, args, cwd):
        return False
    rule = rules.get(tool)
    if rule is None:
        return True
    if isinstance(rule, str):
        return rule == "allow"
    if tool != "bash" or not isinstance(args.get("command"), str):
        return rule.get("*", "allow") == "allow"
    return all(_verdict(" ".join(segment.split()), rule) == "allow"
               for segment in _SEGMENT.split(args["command"]) if segment.strip())


def _verdict(command: str, rule: dict[str, str]) -> str:
    verdict = "allow"
    for pattern, action in rule.items():  # the last matching rule wins
        if wildcard(pattern).fullmatch(command):
            verdict = action
    return verdict


def _touches_outside(tool: str, args: dict[str, Any], cwd: str) -> bool:
    if tool in _FILE_TOOLS:
        return _file_outside(tool, args, cwd) is not None
    if tool != "bash" or not isinstance(args.get("command"), str):
        return False
    for segment in _SEGMENT.split(args["command"]):
        words = _words(segment)
        if words and words[0] in _PATH_COMMANDS and any(outside(w, cwd) for w in words[1:] if not w.startswith("-")):
            return True
    return False
