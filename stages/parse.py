"""parse: session logs -> data/parsed/sessions.jsonl (+ rejected.jsonl, metrics/parse.json)."""
from pathlib import Path

from lib.config import params as P
from lib.core.errors import run_stage
from lib.core.files import write_json
from lib.data.ingest import SessionFilter, parse


def main() -> None:
    p = P.load()
    d, s = p["data"], p["sources"]
    filt = SessionFilter(project_dirs=s["project_dirs"], models=s["models"], since=s["since"], until=s["until"])
    report = parse(d["session_logs_dir"], d["opencode_db"], d["redact"], d["strict"], filt,
                   Path("data/parsed/sessions.jsonl"), Path("data/parsed/rejected.jsonl"))
    write_json("metrics/parse.json", report)
    print(f"parse: {report['sessions']} sessions, {report['turns']} turns, {report['actions']} actions "
          f"from {report['valid_files']}/{report['files']} inputs; {report['redactions']} secrets redacted")


if __name__ == "__main__":
    run_stage(main)
