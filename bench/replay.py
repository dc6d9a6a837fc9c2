"""Replay benchmark: the sample test steps as OpenCode sends them, for several ways of shipping the agent.

    python -m bench.replay [--steps 20] [--only default,text,turns,used_tools]

Rows: OpenCode's default prompt; the exported agent with its worked examples as text in the system
prompt (what the agent config ships); the same examples as earlier chat turns (what a plugin could
inject instead); the exported agent with only the tools the recorded sessions used. Then the time
per call of the exported agent with and without reuse of the shared prompt prefix (the system prompt
and tool definitions are the same for every step, so only the first call should pay for them).
Runs on models.student (the embedded model by default). Answers come from the project's model cache
where `dvc repro` already made the same request (so the score rows cost nothing twice); `--no-cache`
makes every call real. The timing rows always make real calls. Needs `dvc repro optimize`.
"""
from __future__ import annotations

import argparse
import statistics
import time


import dspy

from lib.models import ledger as LG
from lib.models import llama as LL
from lib.models import settings as S
from lib.config import params as P
from lib.opencode import render
from lib.opencode import replay as R
from lib.opencode.agent import agent_prompt, export_settings, load_program, read_json
from lib.program.runtime import load_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="test steps replayed per row (a seeded sample)")
    ap.add_argument("--only", default="default,text,turns,used_tools", help="rows to run, comma-separated")
    ap.add_argument("--no-cache", action="store_true", help="make every call for real (s/call then means something)")
    args = ap.parse_args()

    p = P.load()
    program = load_program(read_json("outputs/program.json", "run `dvc repro optimize` first"))
    test = load_rows("test", args.steps, p["data"]["random_seed"])
    student_cfg = {**p["models"]["student"]}
    S.check_reachable("student", student_cfg)
    if args.no_cache:
        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    else:
        S.configure_cache(P.ROOT)
    student = R.make_student("student", student_cfg, LG.Ledger(), p["replay"]["context_window"], p["replay"]["parser"])
    weights = p["replay"]["metric_weights"]

    used_off = R.unused_tools(load_rows("train"))
    settings = export_settings(p, [])
    examples = render.select_examples(program.demos, settings.max_examples, render.enabled_tools())
    turns = tuple({"task": ex.task, "tool": ex.action["tool"], "args": ex.action["args"]} for ex in examples)
    no_examples = render.agent_prompt(program.instructions, program.demos, 0)
    rows = {
        "default": R.Setup("OpenCode default prompt", None),
        "text": R.Setup("exported, examples as text", agent_prompt(settings, program), (), settings.permission),
        "turns": R.Setup("exported, examples as chat turns", no_examples, (), settings.permission, turns),
        "used_tools": R.Setup(f"exported, {len(R.shape.tool_names()) - len(used_off)} tools the sessions used",
                              agent_prompt(export_settings(p, used_off), program), tuple(used_off),
                              settings.permission),
    }
    wanted = [k for k in args.only.split(",") if k]
    print(f"replay of {len(test)} test steps on {student.label} (OpenCode {R.shape.version()}), "
          f"cache {'off' if args.no_cache else 'on'}\n")
    print("| setup | score | valid call | right tool | right target | destructive (run) | over context "
          "| call as text | prompt tokens | s/call | tools called |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in wanted:
        setup = rows[key]
        started = time.perf_counter()
        s = R.replay(test, setup, student, weights).summary()
        per_call = (time.perf_counter() - started) / max(1, len(test))
        top = ", ".join(f"{k} {v}" for k, v in sorted(s["tools_called"].items(), key=lambda kv: -kv[1])[:4])
        print(f"| {setup.name} | {s['score']:.3f} | {s['valid_call_rate']:.0%} | {s['right_tool_rate']:.0%} "
              f"| {s['right_target_rate']:.0%} | {s['destructive']} ({s['destructive_unblocked']}) "
              f"| {s['over_context']} | {s['text_call']} | {s['prompt_tokens_mean']:.0f} | {per_call:.1f} | {top} |", flush=True)

    if student_cfg["provider"] == "local":  # real calls straight to the engine, never from the cache
        llama = LL.load_llama(S.local_model_path(student_cfg))
        setup = rows["text"]
        timings = {}
        for label, reset in (("prefix reused", False), ("no reuse", True)):
            times = []
            llama.reset()  # both start cold
            for row in test[: min(5, len(test))]:
                request = R.build_request(row, setup, student)
                if reset:
                    llama.reset()  # forget the cached prefix: every call decodes the whole prompt
                started = time.perf_counter()
                with LL._llama_lock:
                    LL.tool_reply(llama, request["messages"], request["tools"], "auto", student_cfg["max_tokens"],
                                  {"temperature": 0.0, "seed": S.LOCAL_SEED}, p["replay"]["parser"])
                times.append(time.perf_counter() - started)
            timings[label] = times
        print("\n| prompt prefix | first call s | later calls, mean s |\n|---|---|---|")
        for label, times in timings.items():
            later = statistics.fmean(times[1:]) if len(times) > 1 else float("nan")
            print(f"| {label} | {times[0]:.1f} | {later:.1f} |")


if __name__ == "__main__":
    main()
