"""The parse stage's logic: read every input, redact, filter, de-duplicate, write sorted JSONL.

Memory stays flat however many sessions there are: sessions are spooled to a temporary file as
they are read, and only (id, offset, size) is kept to write them back out sorted by id.
Reading, mapping, filtering, redacting and serializing happen in worker processes, a few inputs
ahead of the writer, which takes their results in input order: the output is the same bytes
however many workers there are.
"""
from __future__ import annotations

import datetime as _dt
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lib.core.errors import UserError
from lib.core.files import atomic_open, copy_range, dumps, loads, write_jsonl
from lib.data.redact import Redactor
from lib.data.session import Session
from lib.data.sources import Task, plan, run
from lib.data.sources.common import Rejected
from lib.core.workers import ordered_map


@dataclass
class SessionFilter:
    """The `sources:` section: which sessions and turns to learn from."""

    project_dirs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    since: str | None = None
    until: str | None = None
    dropped: Counter[str] = field(default_factory=Counter)

    def apply(self, s: Session) -> Session | None:
        if self.project_dirs and not any(_inside(s.project, d) for d in self.project_dirs):
            self.dropped["project_dirs"] += 1
            return None
        day = _day(s.time_created)
        if (self.since and (day is None or day < self.since)) or (self.until and (day is None or day > self.until)):
            self.dropped["date_range"] += 1
            return None
        if self.models:
            kept = [t for t in s.turns if _model_matches(t.model, self.models)]
            self.dropped["models_turns"] += len(s.turns) - len(kept)
            if not kept:
                self.dropped["models"] += 1
                return None
            s.turns = kept
        return s


def _inside(project: str | None, directory: str) -> bool:
    """Is `project` the directory or below it? Whole path components: /repo holds /repo/app, not /repo-old."""
    if not project:
        return False
    base = directory.rstrip("/\\")
    return project == base or project.startswith((base + "/", base + "\\"))


def _day(ms: int | None) -> str | None:
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).date().isoformat() if ms else None


def _model_matches(model: str | None, wanted: list[str]) -> bool:
    return bool(model) and any(model == w or model.split("/", 1)[-1] == w for w in wanted)


# Below this many tasks a process pool costs more than it saves.
_PARALLEL_FROM = 16


def parse(logs_dir: str, opencode_db: str | None, redact: bool, strict: bool, filt: SessionFilter,
          sessions_out: Path, rejected_out: Path, workers: int | None = None) -> dict[str, Any]:
    """Write sessions.jsonl and rejected.jsonl; return the parse report. Raises UserError.

    Inputs are read, mapped, filtered and redacted in `workers` processes (default: one per CPU);
    what is written does not depend on how many.
    """
    root = Path(logs_dir).expanduser()
    if not root.exists():
        raise UserError(f"data.session_logs_dir: {logs_dir} does not exist; point it at your session logs "
                        f"(e.g. <project>/.opencode-logs) in params.yaml")
    extra = []
    if opencode_db:
        db = Path(opencode_db).expanduser()
        if not db.is_file():
            raise UserError(f"data.opencode_db: {opencode_db} is not a file; point it at opencode.db "
                            f"(usually ~/.local/share/opencode/opencode.db) or set it to null")
        extra.append(db)

    redactor = Redactor(enabled=redact)
    rejected: list[dict[str, str]] = []
    index: dict[str, tuple[int, int, int]] = {}  # id -> (offset, size, n_actions)
    kept: dict[str, tuple[str, int, dict[str, int]]] = {}  # id -> (source, turns, redactions) of the kept copy
    inputs: dict[str, bool] = {}  # input path -> had a rejection
    parents: dict[str, dict[str, str]] = {}  # per input: child id -> caller (subagent links)
    duplicates = 0
    tasks = list(plan(root, extra))
    with tempfile.TemporaryFile("w+b") as spool:
        for task, outcomes in ordered_map(_prepare, tasks, (filt, redact), workers, _PARALLEL_FROM, batch=8):
            rel = task.rel
            shown = rel if Path(rel).is_absolute() else (root / rel if root.is_dir() else root).as_posix()
            for out in outcomes:
                inputs.setdefault(rel, False)
                if isinstance(out, Rejected):
                    inputs[rel] = True
                    where = shown + out.path[len(rel):] if out.path.startswith(rel) else out.path
                    rejected.append({"path": where, "reason": out.reason})
                    continue
                if out.children is not None:  # link subagents in reading order, as one process would
                    links = parents.setdefault(rel, {})
                    for child in out.children:
                        links.setdefault(child, out.id)
                    if out.has_parent is False and out.id in links:
                        out = _with_parent(out, links[out.id], redact)
                filt.dropped.update(out.dropped)
                if out.blob is None:
                    continue  # filtered out
                if out.id in index:
                    duplicates += 1
                    if index[out.id][2] >= out.n_actions:
                        continue  # keep the fuller copy of a session seen twice
                    redactor.counts.subtract(kept[out.id][2])
                offset = spool.seek(0, 2)
                spool.write(out.blob)
                index[out.id] = (offset, len(out.blob), out.n_actions)
                kept[out.id] = (out.source, out.n_turns, out.redactions)
                redactor.counts.update(out.redactions)

        rejected.sort(key=lambda r: (r["path"], r["reason"]))
        message = ""
        if rejected:
            listing = "\n".join(f"  {r['path']}: {r['reason']}" for r in rejected[:50])
            more = f"\n  ... and {len(rejected) - 50} more (see {rejected_out})" if len(rejected) > 50 else ""
            message = f"{len(rejected)} input(s) rejected:\n{listing}{more}"
            if strict:  # fail before sessions.jsonl is touched: no partial data set
                write_jsonl(rejected_out, rejected)
                raise UserError(message + "\ndata.strict is true: fix or remove these files, or set it to false")
        spool.flush()
        with atomic_open(sessions_out, binary=True) as out:
            for sid in sorted(index):
                offset, size, _ = index[sid]
                copy_range(spool, out, offset, size)
    write_jsonl(rejected_out, rejected)

    counts = +redactor.counts  # drop kinds whose only copies were replaced
    report = {
        "files": len(inputs),
        "valid_files": sum(not bad for bad in inputs.values()),
        "invalid_files": sum(inputs.values()),
        "sessions": len(index),
        "turns": sum(turns for _, turns, _ in kept.values()),
        "actions": sum(n_actions for _, _, n_actions in index.values()),
        "duplicates": duplicates,
        "redactions": sum(counts.values()),
        "redactions_by_kind": dict(sorted(counts.items())),
        "sessions_by_source": dict(sorted(Counter(source for source, _, _ in kept.values()).items())),
        "filtered_by_sources": dict(sorted(filt.dropped.items())),
    }
    if rejected:
        report["warning"] = f"{len(rejected)} input(s) rejected; see {rejected_out}"
        print(f"warning: {message}")
    if not index:
        raise UserError(f"no usable session in {logs_dir}" + (f" (all {len(rejected)} input(s) rejected, see "
                        f"{rejected_out})" if rejected else "") + "; check data.session_logs_dir and sources:")
    return report


@dataclass
class _Prepared:
    """One session, ready to write: the work that can happen in another process is done."""

    id: str
    source: str
    n_turns: int
    n_actions: int
    blob: bytes | None  # its JSON line, redacted; None when the sources: filter dropped it
    redactions: dict[str, int]
    dropped: dict[str, int]  # what the sources: filter removed, by reason
    children: list[str] | None  # child sessions it started, where the reader links them afterwards
    has_parent: bool


def _prepare(task: Task, settings: tuple[SessionFilter, bool]) -> list[Rejected | _Prepared]:
    """Read one task and turn each of its sessions into a redacted JSON line (runs in a worker)."""
    template, redact = settings
    out: list[Rejected | _Prepared] = []
    for item, children in run(task):
        if isinstance(item, Rejected):
            out.append(item)
            continue
        filt = SessionFilter(template.project_dirs, template.models, template.since, template.until)
        has_parent = item.parent_id is not None
        session = filt.apply(item)
        redactor = Redactor(enabled=redact)
        blob = None
        n_actions = 0
        if session is not None:
            n_actions = sum(len(t.actions) for t in session.turns)
            # vars: each dataclass is written as its fields, as session.to_dict() would give them, uncopied
            blob = (redactor.json_line(dumps(session, default=vars)) + "\n").encode("utf-8")
        out.append(_Prepared(item.id, item.source, len(item.turns), n_actions, blob, dict(redactor.counts),
                             dict(filt.dropped), children, has_parent))
    return out


def _with_parent(p: _Prepared, parent: str, redact: bool) -> _Prepared:
    """The session with the caller its reader found through a `task` call (rare: the row names none)."""
    if p.blob is None:
        return p
    row = loads(p.blob)
    redactor = Redactor(enabled=redact)
    row["parent_id"] = redactor.text(parent)
    counts = Counter(p.redactions)
    counts.update(redactor.counts)
    return replace(p, blob=(dumps(row) + "\n").encode("utf-8"), redactions=dict(counts))
