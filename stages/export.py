"""export: outputs/program.json + test, replay and live metrics -> outputs/prompts/ (OpenCode files) + metrics/comparison.json.

The agent config (tools switched off, permission rules) is the one the replay stage chose and
scored; the prompt written here must be byte for byte the one it scored.
"""
import os
import shutil
import tempfile
from pathlib import Path

from lib.config import params as P
from lib.charts import write_comparison_chart
from lib.core.errors import UserError, run_stage
from lib.core.files import read_jsonl, write_json, write_text
from lib.export.files import comparison_rows, live_lines, load_scores, newest_session_date, render_files
from lib.opencode.agent import load_program, read_json, scored_settings

OUT_DIR = Path("outputs/prompts")
SESSIONS = "data/parsed/sessions.jsonl"  # only the newest session date is read, for the file headers
RERUN = "run `dvc repro` to create it"
LIVE = "metrics/live.json"  # the opt-in live stage's result; absent or not run = nothing to quote


def main() -> None:
    p = P.load()
    program = load_program(read_json("outputs/program.json", RERUN))
    replay = read_json("metrics/replay.json", RERUN)
    settings = scored_settings(p, program, replay["agent"], "dvc repro replay export")
    main_student = replay["students"].get(p["models"]["student"]["model"])
    scores = load_scores(read_json("metrics/baseline.json", RERUN), read_json("metrics/optimized.json", RERUN),
                         main_student, live_lines(read_json(LIVE, RERUN) if Path(LIVE).is_file() else {}))
    if not Path(SESSIONS).is_file():
        raise UserError(f"{SESSIONS} not found; {RERUN}")
    files = render_files(settings, program, scores, newest_session_date(read_jsonl(SESSIONS)))

    # Build the folder beside the old one and swap it in, so files of formats no longer chosen vanish
    # and a reader never sees half an export.
    OUT_DIR.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=OUT_DIR.parent, prefix=".prompts."))
    staging.chmod(0o755)  # mkdtemp makes it private; the export is meant to be shared
    try:
        for rel, text in sorted(files.items()):
            write_text(staging / rel, text)
            (staging / rel).chmod(0o644)
        if OUT_DIR.exists():
            shutil.rmtree(OUT_DIR)
        os.replace(staging, OUT_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json("metrics/comparison.json", comparison_rows(scores))
    write_comparison_chart("metrics/comparison.svg", comparison_rows(scores))
    print(f"export: {len(files)} file(s) in {OUT_DIR}: " + ", ".join(sorted(files)))


if __name__ == "__main__":
    run_stage(main)
