"""Replay benchmark: the sample test steps as OpenCode sends them, for several ways of shipping the agent.

    python -m bench.replay [--steps 20] [--only default,text,turns,used_tools,short_tools] [--timed 5]

Rows: OpenCode's default prompt; the exported agent with its worked examples as text in the system
prompt (what the agent config ships); the same examples as earlier chat turns (what a plugin could
inject instead); the exported agent with only the tools the recorded sessions used; the exported agent
with the built-in tools' descriptions in short form (export.tool_descriptions: short). Then the time of
real calls in the replay stage's order (OpenCode's default prompt, then the exported agent, over the
first --timed steps), with and without reuse of the shared prompt prefix, beside the floor: the prompt
tokens no earlier request began with at the prefill rate measured on this machine, plus the answer
tokens at the decode rate.
Runs on models.student (the embedded model by default). Answers come from the project's model cache
where `dvc repro` already made the same request (so the score rows cost nothing twice); `--no-cache`
makes every call real. The timing rows always make real calls. Needs `dvc repro optimize`.
"""
from __future__ import annotations

import argparse
import time


import dspy

from lib.models import ledger as LG
from lib.models import llama as LL
from lib.models import settings as S
from lib.config import params as P
from lib.opencode import render, short_tools
from lib.opencode import replay as R
from lib.opencode.agent import agent_prompt, export_settings, load_program, read_json
from lib.program.runtime import load_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="test steps replayed per row (a seeded sample)")
    ap.add_argument("--only", default="default,text,turns,used_tools,short_tools", help="rows to run, comma-separated")
    ap.add_argument("--no-cache", action="store_true", help="make every call for real (s/call then means something)")
    ap.add_argument("--timed", type=int, default=5, help="test steps in the timing table (real calls, both prompts)")
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
        "short_tools": R.Setup("exported, short tool descriptions", agent_prompt(settings, program), (),
                               settings.permission, short_tools=short_tools.descriptions()),
    }
    wanted = [k for k in args.only.split(",") if k]
    print(f"replay of {len(test)} test steps on {student.label} (OpenCode {R.shape.version()}), "
          f"cache {'off' if args.no_cache else 'on'}\n")
    print("| setup | score | valid call | right tool | right target | destructive (run) | over context "
          "| call as text | call in tags | prompt tokens | s/call | tools called |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in wanted:
        setup = rows[key]
        started = time.perf_counter()
        s = R.replay(test, setup, student, weights).summary()
        per_call = (time.perf_counter() - started) / max(1, len(test))
        top = ", ".join(f"{k} {v}" for k, v in sorted(s["tools_called"].items(), key=lambda kv: -kv[1])[:4])
        print(f"| {setup.name} | {s['score']:.3f} | {s['valid_call_rate']:.0%} | {s['right_tool_rate']:.0%} "
              f"| {s['right_target_rate']:.0%} | {s['destructive']} ({s['destructive_unblocked']}) "
              f"| {s['over_context']} | {s['text_call']} | {'n/a' if s['strict_call'] is None else s['strict_call']} "
              f"| {s['prompt_tokens_mean']:.0f} | {per_call:.1f} | {top} |", flush=True)

    if student_cfg["provider"] == "local" and args.timed > 0:  # real calls straight to the engine, never cached
        timing(student_cfg, [rows["default"], rows["text"]], test[: args.timed], student, p["replay"]["parser"])


def timing(cfg: dict, setups: list, steps: list, student: R.Student, parser: str) -> None:
    """Model time is tokens: the calls in the replay stage's order (each prompt over the steps), timed
    cold with and without reuse of the shared prefix, beside the floor: the tokens no earlier request
    began with, at the prefill rate measured here, plus the answer tokens at the decode rate."""
    llama = LL.load_llama(S.local_model_path(cfg))
    requests = [R.build_request(row, setup, student) for setup in setups for row in steps]
    prompts = [llama.tokenize(LL.tool_prompt(llama, r["messages"], r["tools"]).encode("utf-8"), special=True)
               for r in requests]
    new_any = sum(len(t) - max((LL.shared_prefix(t, o) for o in prompts[:i]), default=0) for i, t in enumerate(prompts))
    new_last = sum(len(t) - (LL.shared_prefix(t, prompts[i - 1]) if i else 0) for i, t in enumerate(prompts))

    with LL._llama_lock:  # the rates, measured on the first prompt: one eval, then greedy decoding
        llama.reset()
        started = time.perf_counter()
        llama.eval(prompts[0])
        prefill = len(prompts[0]) / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(32):
            llama.eval([llama.sample(temp=0.0)])
        decode = 32 / (time.perf_counter() - started)

    print(f"\n{len(requests)} calls ({len(setups)} prompts x {len(steps)} steps), {sum(map(len, prompts)):,} "
          f"prompt tokens; {new_last:,} not shared with the request before, {new_any:,} with any earlier one; "
          f"prefill {prefill:.0f} tok/s, decode {decode:.1f} tok/s")
    print("\n| prompt prefix | real s | answer tokens | floor s (new tokens / prefill + answer / decode) |")
    print("|---|---|---|---|")
    for label, reuse in (("reused, as replay runs", True), ("decoded afresh each call", False)):
        answered, started = 0, time.perf_counter()
        with LL._llama_lock:
            llama.reset()
            for request in requests:
                if not reuse:
                    llama.reset()
                reply = LL.tool_reply(llama, request["messages"], request["tools"], "auto", cfg["max_tokens"],
                                      {"temperature": 0.0, "seed": S.LOCAL_SEED}, parser)
                answered += reply["usage"]["completion_tokens"]
        real = time.perf_counter() - started
        decoded = new_any if reuse else sum(map(len, prompts))
        print(f"| {label} | {real:.1f} | {answered} | {decoded / prefill + answered / decode:.1f} |", flush=True)

if __name__ == "__main__":
    main()
