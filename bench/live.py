"""Live benchmark: the task suite inside real OpenCode, exported agent vs OpenCode's default, per model.

    python -m bench.live [--model qwen2.5-coder-0.5b --model qwen2.5-coder-1.5b] [--tasks a,b] [--repeats 1]
                         [--set KEY=VALUE ...]

Runs what the live stage runs (lib.opencode.live.run_all, with live.* from params.yaml and --set), for the
exported agent of outputs/program.json as replay chose it, and prints per model the completion rate of each
agent, the paired difference with its 95% CI, and per task the outcome, calls, tokens and time. Needs
`dvc repro replay` (for the agent) and `./setup.sh --test` (for OpenCode).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lib.config import params as P
from lib.opencode import live
from lib.opencode.agent import agent_entry, agent_name, load_program, read_json, scored_settings
from lib.tools import shape

RERUN = "run `dvc repro replay` first"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", help="an embedded model by catalog name (repeatable)")
    parser.add_argument("--tasks", help="comma-separated task ids (default: live.tasks)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    p = P.load(overrides=P.parse_overrides(args.set))
    cfg = dict(p["live"])
    if args.model:
        cfg["models"] = [{"provider": "local", "model": name} for name in args.model]
    if args.tasks:
        cfg["tasks"] = args.tasks.split(",")
    if args.repeats:
        cfg["repeats"] = args.repeats
    program = load_program(read_json("outputs/program.json", RERUN))
    settings = scored_settings(p, program, read_json("metrics/replay.json", RERUN)["agent"], "dvc repro replay")
    runs = live.run_all(cfg, agent_entry(settings, program, "learned prompt"), agent_name(settings),
                        opencode=live.opencode_cli(), workroot=Path(".cache/live-bench"),
                        known_tools=frozenset(shape.tool_names()))
    print(f"\n{'model':<22} {'task':<18} {'agent':<17} {'outcome':<15} {'calls':>5} {'text':>4} {'steps':>5} "
          f"{'prompt tok':>10} {'compl tok':>9} {'s':>6}")
    for r in runs:
        print(f"{r.model:<22} {r.task:<18} {r.agent:<17} {r.outcome:<15} {r.tool_calls:>5} {r.text_calls:>4} "
              f"{r.steps:>5} {r.prompt_tokens:>10} {r.completion_tokens:>9} {r.wall_s:>6.0f}")
        if r.outcome not in ("completed", "not_completed"):
            print(f"    {' '.join(r.detail.split())[:300]}")
    print()
    for model, entry in live.summarize(runs).items():
        d, e, diff = entry["opencode_default"], entry["exported"], entry["difference"]
        print(f"{model}: OpenCode default {d['completion_rate']:.2f}, exported {e['completion_rate']:.2f} "
              f"({diff['paired']} pairs; {diff['absolute']:+.2f}, 95% CI {diff['ci95'][0]:+.2f}..{diff['ci95'][1]:+.2f}); "
              f"mean prompt tokens {d['mean_prompt_tokens']:.0f} vs {e['mean_prompt_tokens']:.0f}; mean time "
              f"{d['mean_wall_s']:.0f} s vs {e['mean_wall_s']:.0f} s per task; runs with a call printed as text "
              f"{d['runs_with_text_calls']} vs {e['runs_with_text_calls']}")


if __name__ == "__main__":
    main()
