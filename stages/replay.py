"""replay: the exported agent scored as OpenCode sends it, against OpenCode's own default prompt.

Reads outputs/program.json and the test split; writes metrics/replay.json (per student: both
prompts' scores, components, destructive and over-context counts, prompt tokens, and the paired
difference with its 95% CI), per-step scores for the plots, a picture of the comparison
(metrics/replay.svg), and the chosen agent config that export ships.
"""
from lib.config import params as P
from lib.charts import write_replay_chart
from lib.core.errors import run_stage
from lib.core.files import write_json
from lib.opencode.agent import load_program, read_json
from lib.opencode.replay import run
from lib.opencode.report import text_call_note
from lib.program.runtime import load_rows

RERUN = "run `dvc repro` to create it"


def _scores(name: str, s: dict) -> str:
    tagged = "" if s.get("strict_call") is None else f", in <tool_call> tags {s['strict_call']}/{s['n']}"
    return (f"{name} {s['score']:.3f} (right tool {s['right_tool_rate']:.0%}, target {s['right_target_rate']:.0%}, "
            f"destructive {s['destructive']}, calls as text {s['text_call']}/{s['n']}{tagged})")


def main() -> None:
    p = P.load()
    r, seed = p["replay"], p["data"]["random_seed"]
    program = load_program(read_json("outputs/program.json", RERUN))
    val = load_rows("val", p["optimization"]["max_val_examples"], seed)  # the same cap as selection in optimize
    report, steps, usage = run(p, program, load_rows("train"), val, load_rows("test", r["max_steps"], seed))
    write_json("metrics/replay.json", report)
    for name, records in steps.items():
        write_json(f"metrics/replay_{name}_steps.json", records)
    write_json("metrics/replay_usage.json", usage)
    write_replay_chart("metrics/replay.svg", report)
    for label, entry in report["students"].items():
        diff = entry["difference"]
        print(f"replay [{label}]: {_scores('OpenCode default', entry['opencode_default'])} vs "
              f"{_scores('exported', entry['exported'])}; {diff['absolute']:+.3f}, "
              f"95% CI {diff['ci95'][0]:+.3f}..{diff['ci95'][1]:+.3f}")
        note = text_call_note(label, entry)
        if note:
            print(f"replay: note: {note}")


if __name__ == "__main__":
    run_stage(main)
