"""export: outputs/program.json + test metrics -> outputs/prompts/ (OpenCode files) + metrics/comparison.json."""
import os
import shutil
import tempfile
from pathlib import Path

from lib import params as P
from lib.charts import write_comparison_chart
from lib.errors import UserError, run_stage
from lib.export import ExportSettings, comparison_rows, load_program, load_scores, newest_session_date, \
    read_json, render
from lib.files import read_jsonl, write_json, write_text

OUT_DIR = Path("outputs/prompts")
SESSIONS = "data/parsed/sessions.jsonl"  # only the newest session date is read, for the file headers
RERUN = "run `dvc repro` to create it"


def main() -> None:
    p = P.load()
    e = p["export"]
    program = load_program(read_json("outputs/program.json", RERUN))
    scores = load_scores(read_json("metrics/baseline.json", RERUN), read_json("metrics/optimized.json", RERUN))
    settings = ExportSettings(agent=e["agent_name"], mode=e["mode"], formats=tuple(e["formats"]),
                              max_examples=e["max_examples"], student=p["models"]["student"],
                              opencode_model=e["opencode_model"])
    if not Path(SESSIONS).is_file():
        raise UserError(f"{SESSIONS} not found; {RERUN}")
    files = render(settings, program, scores, newest_session_date(read_jsonl(SESSIONS)))

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
