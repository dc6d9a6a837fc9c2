"""Engine benchmark: prefill and decode speed of the embedded model(s) with the llama.cpp build in use.

    python -m bench.engine [--model PATH ...] [--prompt-tokens 3000] [--decode-tokens 64] [--threads 2]

Prints the CPU, the installed build's flags, and per model: load time, prefill tokens/s over a prompt of
--prompt-tokens, decode tokens/s over --decode-tokens (greedy, one token at a time), and the floor a
request of OpenCode's size (~7,700 prompt tokens, 64 answer tokens) costs at these rates. Every model
runs in its own child process, as the probe does, so a crashing build is reported, not fatal.
Default model: the embedded SmolLM2; add GGUF files with --model.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from lib.models import engine

# Timed in a child: load, then prefill the prompt in one eval, then decode greedily one token at a time.
_TIMED = """
import json, sys, time
from llama_cpp import Llama
path, n_prompt, n_decode, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
llm = Llama(model_path=path, n_ctx=n_prompt + n_decode + 16, n_threads=threads, n_batch=512, verbose=False, seed=1)
load_s = time.perf_counter() - t0
text = "def step(state, action):\\n    # apply one action to the agent state and return the next state\\n"
tokens = llm.tokenize(text.encode())
prompt = (tokens * (n_prompt // len(tokens) + 1))[:n_prompt]
t0 = time.perf_counter()
llm.eval(prompt)
prefill_s = time.perf_counter() - t0
t0 = time.perf_counter()
for _ in range(n_decode):
    token = llm.sample(temp=0.0)
    llm.eval([token])
decode_s = time.perf_counter() - t0
print(json.dumps({"load_s": load_s, "prefill_s": prefill_s, "decode_s": decode_s}))
"""

OPENCODE_PROMPT = 7700  # OpenCode 1.18's default request for Qwen2.5-Coder, in tokens
ANSWER = 64


def measure(model: Path, prompt_tokens: int, decode_tokens: int, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _TIMED, str(model), str(prompt_tokens), str(decode_tokens),
                           str(threads)], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="a GGUF file (repeatable)")
    parser.add_argument("--prompt-tokens", type=int, default=3000)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="the pipeline runs the embedded model on 2")
    args = parser.parse_args()
    models = args.model or [engine.embedded_model()]
    print(f"CPU: {engine.cpu_name()}")
    print(f"build: {engine.build_text()}")
    print(f"threads: {args.threads}; prompt {args.prompt_tokens} tokens, decode {args.decode_tokens} tokens\n")
    print(f"{'model':<40} {'load s':>7} {'prefill tok/s':>14} {'decode tok/s':>13} "
          f"{'floor of a 7,700+64-token call':>31}")
    for model in models:
        got = measure(model, args.prompt_tokens, args.decode_tokens, args.threads)
        if "error" in got:
            print(f"{model.name:<40} failed: {got['error']}")
            continue
        prefill = args.prompt_tokens / got["prefill_s"]
        decode = args.decode_tokens / got["decode_s"]
        floor = OPENCODE_PROMPT / prefill + ANSWER / decode
        print(f"{model.name:<40} {got['load_s']:>7.2f} {prefill:>14.1f} {decode:>13.1f} {floor:>29.1f} s")


if __name__ == "__main__":
    main()
