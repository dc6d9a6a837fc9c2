"""The embedded models on this machine: assembly time, prefill and decode speed, OpenCode's request size.

    python -m bench.models                                  # every catalog model
    python -m bench.models qwen2.5-coder-0.5b --prefill 512 --decode 32
    python -m bench.models --fresh                          # assemble again into a temporary cache (timed)

For each model: the time `lib.models.catalog.fetch` takes (0 when cached, unless --fresh), the
prefill speed on a prompt of --prefill tokens, the decode speed over --decode greedy tokens (one
at a time, as generation runs), and how many tokens OpenCode's default request (its default
prompt, the environment block, its 10 tools, one user task) is when rendered with the model's own
chat template. Threads: lib.lm.LOCAL_THREADS, like the pipeline.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from lib.models import catalog, chat
from lib.models.settings import LOCAL_THREADS
from lib.tools import shape

FILLER = ("def add(a, b):\n    return a + b\n\n# The function above adds two numbers; tests cover it.\n")


def opencode_request() -> dict:
    system = shape.system_message(None, model="qwen2.5-coder", provider_model="local/qwen2.5-coder",
                                  cwd="/home/user/project", root="/home/user/project", is_git=True,
                                  platform="linux", date=shape.format_date(datetime.date.today()))
    return {"messages": [{"role": "system", "content": system}, shape.user_message("Fix the failing test in calc.py")],
            "tools": shape.tool_definitions()}


def measure(name: str, prefill: int, decode: int, fresh: bool) -> dict:
    import numpy as np
    from llama_cpp import Llama

    row: dict = {"model": name}
    if fresh and catalog.entry(name).assembled:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ[catalog.CACHE_ENV] = tmp
            start = time.monotonic()
            catalog.fetch(name, log=lambda _line: None)
            row["assemble_s"] = round(time.monotonic() - start, 1)
            os.environ.pop(catalog.CACHE_ENV)
    start = time.monotonic()
    path = catalog.model_path(name, log=lambda _line: None)
    row["resolve_s"] = round(time.monotonic() - start, 2)

    request = opencode_request()
    tmpl = chat.load_template(path)
    prompt = tmpl.render(request["messages"], request["tools"])
    vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    row["opencode_request_tokens"] = len(vocab.tokenize(prompt.encode(), add_bos=False, special=True))

    start = time.monotonic()
    llama = Llama(model_path=str(path), n_ctx=max(2048, prefill + decode + 16), n_threads=LOCAL_THREADS,
                  n_batch=512, verbose=False)
    row["load_s"] = round(time.monotonic() - start, 2)
    text = FILLER * (prefill // 10 + 1)
    tokens = llama.tokenize(text.encode(), add_bos=False)[:prefill]
    llama.reset()
    start = time.monotonic()
    llama.eval(tokens)
    elapsed = time.monotonic() - start
    row["prefill_tokens"] = len(tokens)
    row["prefill_tok_s"] = round(len(tokens) / elapsed, 1)
    start = time.monotonic()
    for _ in range(decode):
        logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),))  # the last token's
        token = int(logits.argmax())
        llama.eval([token])
    elapsed = time.monotonic() - start
    row["decode_tokens"] = decode
    row["decode_tok_s"] = round(decode / elapsed, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=catalog.names())
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--fresh", action="store_true", help="time a fresh assembly into a temporary cache")
    args = ap.parse_args()
    for name in args.models:
        print(json.dumps(measure(name, args.prefill, args.decode, args.fresh)), flush=True)


if __name__ == "__main__":
    main()
