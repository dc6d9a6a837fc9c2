"""Data stages at scale: time, CPU time and peak memory of parse -> build_examples -> split.

    python -m bench.data_scale                  # 1,000, 5,000 and 10,000 real-sized plugin sessions
    python -m bench.data_scale 1000 2000        # other counts
    python -m bench.data_scale --db 1000 10000  # sessions in an opencode.db that OpenCode writes to meanwhile
    python -m bench.data_scale --cores 2        # pin the stages to 2 cores (on a bigger machine)

Target: 10,000 real-sized sessions (about 330 MB of plugin files, 33 KB a session as real logs
are; bench/sessions.py makes them) through the three data stages in under 12 s on 2 cores, with
peak memory flat and time linear in sessions. Each stage runs in its own process, as `dvc repro`
runs it; CPU s counts the stage and its worker processes, so a shared (busy) machine can be read
too: wall time there is not the stages' own.

With --db, the sessions are rows of an opencode.db (the real fixture's rows copied, their text
and tool parts made real-sized) and parse reads it while another process keeps inserting
sessions into it in WAL mode, as a running OpenCode does.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from bench.sessions import _Gen, write_logs

STAGES = ("parse", "build_examples", "split")
TARGET_S = 12.0
REAL_DB = ROOT / "tests" / "fixtures" / "opencode" / "real" / "opencode.db"


def run_stage(work: Path, stage: str, cores: set[int] | None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (with worker processes) and peak RSS in KiB of one stage."""
    code = (f"import resource, runpy, sys; sys.argv=['{stage}']; "
            f"runpy.run_module('stages.{stage}', run_name='__main__'); "
            f"print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            f"resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    main_rss, worker_rss = (int(x) for x in next(line.split()[1:] for line in proc.stderr.splitlines()
                                                  if line.startswith("RSS")))
    return wall, cpu, max(main_rss, worker_rss)


def project(work: Path, logs: Path, db: Path | None) -> None:
    for name in ("lib", "stages", "schemas"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = (ROOT / "params.yaml").read_text(encoding="utf-8")
    params = params.replace("session_logs_dir: data/sessions", f"session_logs_dir: {logs}")
    if db is not None:
        params = params.replace("opencode_db: null", f"opencode_db: {db}")
    (work / "params.yaml").write_text(params, encoding="utf-8")


# ---------------------------------------------------------------- a large opencode.db


def _samples(con: sqlite3.Connection, where: str = "") -> tuple[dict, dict, dict, dict]:
    """A session row (as a column dict), a user and an assistant message and a tool part to copy from."""
    columns = [r[1] for r in con.execute("PRAGMA table_info(session)")]
    template = dict(zip(columns, con.execute(f"SELECT * FROM session {where} LIMIT 1").fetchone()))

    def first(table: str, path: str, value: str) -> dict:
        row = con.execute(f"SELECT data FROM {table} WHERE json_extract(data, '{path}') = ? LIMIT 1", (value,))
        return json.loads(row.fetchone()[0])
    return template, first("message", "$.role", "user"), first("message", "$.role", "assistant"), \
        first("part", "$.type", "tool")


def make_db(path: Path, n: int, seed: int = 11) -> int:
    """An opencode.db with n sessions: the real fixture's schema and rows, copied with new ids, their
    text and tool parts replaced by real-sized ones (the same content bench/sessions.py writes)."""
    src = sqlite3.connect(f"file:{REAL_DB}?mode=ro", uri=True)
    src.execute(f"VACUUM INTO '{path}'")
    src.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode = WAL")
    template, user, assistant, tool = _samples(con, "WHERE parent_id IS NULL")
    for table in ("part", "message", "session_context_epoch", "session_input", "todo", "session_message",
                  "session_share", "session"):
        con.execute(f"DELETE FROM {table}")
    for i in range(n):
        insert_session(con, list(template), template, user, assistant, tool, _Gen(seed * 1_000_003 + i).session(i), i)
        if i % 500 == 499:
            con.commit()
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path.stat().st_size


def insert_session(con: sqlite3.Connection, columns: list[str], template: dict, user: dict, assistant: dict,
                   tool: dict, s: dict, i: int) -> None:
    sid = f"ses_{i:08x}{s['id'][-14:]}"
    t0 = s["turns"][0][3]
    row = dict(template, id=sid, slug=f"bench-{i}", directory=s["directory"], title=s["turns"][0][0][:60],
               time_created=t0, time_updated=s["turns"][-1][4])
    con.execute(f"INSERT INTO session ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [row[c] for c in columns])
    provider, model = s["model"].split("/", 1)
    for n, (task, calls, reply, start, end) in enumerate(s["turns"]):
        uid, aid = f"msg_{start:012x}{n:03d}u{i:08x}", f"msg_{start + 1:012x}{n:03d}a{i:08x}"
        udata = dict(user, time={"created": start}, model={"providerID": provider, "modelID": model})
        adata = dict(assistant, parentID=uid, time={"created": start + 1, "completed": end}, modelID=model,
                     providerID=provider, path={"cwd": s["directory"], "root": s["directory"]})
        con.execute("INSERT INTO message (id, session_id, time_created, time_updated, data) VALUES (?, ?, ?, ?, ?)",
                    (uid, sid, start, start, json.dumps(udata)))
        con.execute("INSERT INTO message (id, session_id, time_created, time_updated, data) VALUES (?, ?, ?, ?, ?)",
                    (aid, sid, start + 1, end, json.dumps(adata)))
        parts = [(uid, {"type": "text", "text": task})]
        for k, (name, args, result, ms) in enumerate(calls):
            state = dict(tool["state"], input=args, output=result, title=name, metadata={},
                         time={"start": ms, "end": ms + 300})
            parts.append((aid, dict(tool, callID=f"call_{i:08x}_{n}_{k}", tool=name, state=state)))
        parts.append((aid, {"type": "text", "text": reply}))
        for k, (mid, data) in enumerate(parts):
            con.execute("INSERT INTO part (id, message_id, session_id, time_created, time_updated, data) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (f"prt_{start:012x}{n:03d}{k:04d}{i:08x}", mid, sid, start,
                                                      start, json.dumps(data)))


class Writer(threading.Thread):
    """OpenCode at work: inserts a session every few milliseconds until stopped."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db, self.stop, self.written = db, threading.Event(), 0

    def run(self) -> None:
        con = sqlite3.connect(self.db, timeout=30)
        con.execute("PRAGMA journal_mode = WAL")
        template, user, assistant, tool = _samples(con)
        i = 10_000_000
        while not self.stop.is_set():
            insert_session(con, list(template), template, user, assistant, tool, _Gen(i).session(i), i)
            con.commit()
            self.written += 1
            i += 1
            time.sleep(0.05)
        con.close()


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("counts", nargs="*", type=int, default=[1000, 5000, 10000])
    ap.add_argument("--db", action="store_true", help="sessions in an opencode.db written to meanwhile")
    ap.add_argument("--cores", type=int, default=None, help="pin the stages to this many cores")
    args = ap.parse_args()
    cores = set(sorted(os.sched_getaffinity(0))[:args.cores]) if args.cores else None
    print(f"cores: {len(cores) if cores else len(os.sched_getaffinity(0))}; "
          f"load average before: {os.getloadavg()[0]:.1f}; target: 10,000 sessions under {TARGET_S:.0f} s")
    head = "| sessions | input MB | " + " | ".join(f"{s} s (CPU s)" for s in STAGES) + \
           " | total s | CPU s | peak RSS MiB | s per 1k |"
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.counts:
            work = tmp / f"run-{n}"
            work.mkdir()
            logs, db, writer = work / "logs", None, None
            logs.mkdir()
            if args.db:
                db = work / "opencode.db"
                size = make_db(db, n)
            else:
                size = write_logs(logs, n)
            project(work, logs, db)
            if db is not None:
                writer = Writer(db)
                writer.start()
            cells, total, cpu_total, peak = [], 0.0, 0.0, 0
            for stage in STAGES:
                wall, cpu, rss = run_stage(work, stage, cores)
                if writer is not None and stage == "parse":
                    writer.stop.set()
                    writer.join()
                total += wall
                cpu_total += cpu
                peak = max(peak, rss)
                cells.append(f"{wall:.1f} ({cpu:.1f})")
            sessions = json.loads((work / "metrics" / "parse.json").read_text())["sessions"]
            assert sessions == n if writer is None else sessions >= n, f"parse kept {sessions} of {n} sessions"
            extra = f" (OpenCode wrote {writer.written} sessions meanwhile)" if writer else ""
            print(f"| {n} | {size / 1e6:.0f} | " + " | ".join(cells) +
                  f" | {total:.1f} | {cpu_total:.1f} | {peak / 1024:.0f} | {total / n * 1000:.2f} |{extra}",
                  flush=True)
            shutil.rmtree(work)


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    main()
