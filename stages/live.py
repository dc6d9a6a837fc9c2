"""live (opt-in, live.enabled): real OpenCode on scripted tasks, exported agent vs OpenCode's default.

Reads outputs/program.json and the agent replay chose (metrics/replay.json); writes metrics/live.json
(per model and agent: completion rate, counts, and the paired difference with its 95% CI),
metrics/live_runs.json (one record per run) and metrics/live.svg.
"""
from pathlib import Path

from lib.config import params as P
from lib.charts import write_bar_chart
from lib.core.errors import run_stage
from lib.core.files import write_json
from lib.opencode import live
from lib.opencode.agent import agent_entry, agent_name, load_program, plugin_files, read_json, scored_settings
from lib.tools import shape

RERUN = "run `dvc repro` to create it"
WORKROOT = Path(".cache/live")  # scratch repos and homes, reused at fixed paths (see lib/opencode/live.py)


def main() -> None:
    p = P.load()
    cfg = p["live"]
    runs: list[live.Run] = []
    if cfg["enabled"]:
        program = load_program(read_json("outputs/program.json", RERUN))
        replay = read_json("metrics/replay.json", RERUN)
        settings = scored_settings(p, program, replay["agent"], "dvc repro replay live")
        entry = agent_entry(settings, program, f"{settings.agent} agent (learned prompt)")
        runs = live.run_all(cfg, entry, agent_name(settings), opencode=live.opencode_cli(), workroot=WORKROOT,
                            known_tools=frozenset(shape.tool_names()), plugins=plugin_files(settings, program))
    report = {"enabled": cfg["enabled"], "models": live.summarize(runs)}
    write_json("metrics/live.json", report)
    write_json("metrics/live_runs.json", [r.record() for r in runs])
    write_bar_chart("metrics/live.svg", live.chart_rows(report["models"]), group="model", series="agent",
                    value="value", title="Tasks finished inside real OpenCode: default agent vs exported",
                    y_title="completion rate (0-1)")
    for model, entry in report["models"].items():
        d, e, diff = entry.get("opencode_default"), entry.get("exported"), entry.get("difference")
        if d and e and diff:
            print(f"live [{model}]: OpenCode default {d['completion_rate']:.2f} vs exported "
                  f"{e['completion_rate']:.2f} of {d['runs']} runs; {diff['absolute']:+.2f}, 95% CI "
                  f"{diff['ci95'][0]:+.2f}..{diff['ci95'][1]:+.2f}")
    if not cfg["enabled"]:
        print("live: not run (live.enabled: false)")


if __name__ == "__main__":
    run_stage(main)
