"""The parse stage's logic: read every input, redact, filter, de-duplicate, write sorted JSONL.

Memory stays flat however many sessions there are: sessions are spooled to a temporary file as
they are read, and only (id, offset, size) is kept to write them back out sorted by id.
"""
from __future__ import annotations

import datetime as _dt
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.errors import UserError
from lib.files import atomic_open, dumps, write_jsonl
from lib.redact import Redactor
from lib.session import Session
from lib.sources import read_all
from lib.sources.common import Rejected


@dataclass
class SessionFilter:
    """The `sources:` section: which sessions and turns to learn from."""

    project_dirs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    since: str | None = None
    until: str | None = None
    dropped: Counter[str] = field(default_factory=Counter)

    def apply(self, s: Session) -> Session | None:
        if self.project_dirs and not any((s.project or "").startswith(d) for d in self.project_dirs):
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


def _day(ms: int | None) -> str | None:
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).date().isoformat() if ms else None


def _model_matches(model: str | None, wanted: list[str]) -> bool:
    return bool(model) and any(model == w or model.split("/", 1)[-1] == w for w in wanted)


def parse(logs_dir: str, opencode_db: str | None, redact: bool, strict: bool, filt: SessionFilter,
          sessions_out: Path, rejected_out: Path) -> dict[str, Any]:
    """Write sessions.jsonl and rejected.jsonl; return the parse report. Raises UserError."""
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
    kept: dict[str, tuple[str, int]] = {}  # id -> (source, turns) of the copy that is kept
    inputs: dict[str, bool] = {}  # input path -> had a rejection
    duplicates = 0
    with tempfile.TemporaryFile("w+b") as spool:
        for rel, item in read_all(root, extra):
            shown = rel if Path(rel).is_absolute() else (root / rel if root.is_dir() else root).as_posix()
            inputs.setdefault(rel, False)
            if isinstance(item, Rejected):
                inputs[rel] = True
                where = shown + item.path[len(rel):] if item.path.startswith(rel) else item.path
                rejected.append({"path": where, "reason": item.reason})
                continue
            session = filt.apply(item)
            if session is None:
                continue
            n_actions = sum(len(t.actions) for t in session.turns)
            if session.id in index:
                duplicates += 1
                if index[session.id][2] >= n_actions:
                    continue  # keep the fuller copy of a session seen twice
            blob = (dumps(redactor.value(session.to_dict())) + "\n").encode("utf-8")
            offset = spool.seek(0, 2)
            spool.write(blob)
            index[session.id] = (offset, len(blob), n_actions)
            kept[session.id] = (session.source, len(session.turns))

        rejected.sort(key=lambda r: (r["path"], r["reason"]))
        message = ""
        if rejected:
            listing = "\n".join(f"  {r['path']}: {r['reason']}" for r in rejected[:50])
            more = f"\n  ... and {len(rejected) - 50} more (see {rejected_out})" if len(rejected) > 50 else ""
            message = f"{len(rejected)} input(s) rejected:\n{listing}{more}"
            if strict:  # fail before sessions.jsonl is touched: no partial data set
                write_jsonl(rejected_out, rejected)
                raise UserError(message + "\ndata.strict is true: fix or remove these files, or set it to false")
        with atomic_open(sessions_out) as out:
            for sid in sorted(index):
                offset, size, _ = index[sid]
                spool.seek(offset)
                out.write(spool.read(size).decode("utf-8"))
    write_jsonl(rejected_out, rejected)

    report = {
        "files": len(inputs),
        "valid_files": sum(not bad for bad in inputs.values()),
        "invalid_files": sum(inputs.values()),
        "sessions": len(index),
        "turns": sum(turns for _, turns in kept.values()),
        "actions": sum(n_actions for _, _, n_actions in index.values()),
        "duplicates": duplicates,
        "redactions": redactor.total,
        "redactions_by_kind": dict(sorted(redactor.counts.items())),
        "sessions_by_source": dict(sorted(Counter(source for source, _ in kept.values()).items())),
        "filtered_by_sources": dict(sorted(filt.dropped.items())),
    }
    if rejected:
        report["warning"] = f"{len(rejected)} input(s) rejected; see {rejected_out}"
        print(f"warning: {message}")
    if not index:
        raise UserError(f"no usable session in {logs_dir}" + (f" (all {len(rejected)} input(s) rejected, see "
                        f"{rejected_out})" if rejected else "") + "; check data.session_logs_dir and sources:")
    return report
