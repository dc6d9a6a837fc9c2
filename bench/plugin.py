"""Time the exported OpenCode plugin (nearest-demos.js) on a large demo bank.

    python -m bench.plugin              # 1,000 demos, 200 turns
    python -m bench.plugin --demos 5000 --turns 500

Builds a bank of N demos from the sample sessions (their step rows, repeated with extra task
words so every entry differs), writes it with the plugin to a temp folder, and runs node: the
plugin's start-up (reading and indexing the bank) once, then for each turn both hooks OpenCode
calls before a model call (messages.transform picks the demos, system.transform adds them), on
OpenCode-shaped messages with a task and two finished tool calls. Prints the bank size, the
start-up time and the per-turn times (mean, p50, p95, max).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from lib.program.agent import to_example
from lib.data.examples import Filters, build
from lib.opencode import plugin
from lib.data.redact import Redactor
from lib.data.session import Session
from lib.data.sources import read_all
from lib.data.sources.common import Rejected

RUNNER = r"""
import { readFileSync } from "node:fs"
import { performance } from "node:perf_hooks"
const [pluginUrl, inputPath] = process.argv.slice(2)
const { tasks } = JSON.parse(readFileSync(inputPath, "utf8"))
const t0 = performance.now()
const { NearestDemos } = await import(pluginUrl)
const hooks = await NearestDemos({ client: { app: { log: async () => {} } }, directory: "/home/me/app" })
const startup = performance.now() - t0
if (!hooks["experimental.chat.messages.transform"]) throw new Error("the plugin did not load its bank")
const times = []
let added = 0
for (const [i, task] of tasks.entries()) {
  const messages = [
    { info: { role: "user", sessionID: `ses_${i}` }, parts: [{ type: "text", text: task }] },
    { info: { role: "assistant", sessionID: `ses_${i}` }, parts: [
      { type: "tool", tool: "grep", state: { status: "completed", input: { pattern: "def main", include: "*.py" }, output: "src/app/main.py:12: def main():" } },
      { type: "tool", tool: "read", state: { status: "completed", input: { filePath: "/home/me/app/src/app/main.py" }, output: "00001| import sys\n00002| def main():\n00003|     return run(sys.argv)" } },
    ] },
  ]
  const start = performance.now()
  await hooks["experimental.chat.messages.transform"]({}, { messages })
  const out = { system: ["You are OpenCode."] }
  await hooks["experimental.chat.system.transform"]({ sessionID: `ses_${i}` }, out)
  times.push(performance.now() - start)
  added += out.system.length - 1
}
times.sort((a, b) => a - b)
const pct = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))]
console.log(JSON.stringify({ startup, added, mean: times.reduce((a, b) => a + b, 0) / times.length,
  p50: pct(0.5), p95: pct(0.95), max: times[times.length - 1] }))
"""


def demo_rows() -> list[dict]:
    sessions = []
    for _, item in read_all(ROOT / "data" / "sessions"):
        if not isinstance(item, Rejected):
            sessions.append(Session.from_dict(Redactor().value(item.to_dict())))
    return [dict(to_example(r)) for r in build(sessions, Filters(True, "finish_stop", 0.0, 0.3, None), "step", 6, 1200)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", type=int, default=1000, help="demos in the bank (default 1000)")
    ap.add_argument("--turns", type=int, default=200, help="turns to time (default 200)")
    ap.add_argument("--k", type=int, default=6, help="demos per turn (default 6)")
    args = ap.parse_args()
    node = shutil.which("node")
    if node is None:
        sys.exit("node not found: install Node.js (./setup.sh --test installs OpenCode with npm)")
    rows = demo_rows()
    rng = random.Random(0)
    words = sorted({w for r in rows for w in str(r["task"]).split() if w.isalpha()})
    demos = []
    for i in range(args.demos):
        base = dict(rows[i % len(rows)])
        extra = " ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
        base.update(id=f"bench-{i:06d}", task=f"{base['task']} {extra}".strip())
        demos.append(base)
    files = plugin.files(demos, {"k": args.k, "fields": ["task", "steps_so_far"]}, args.k, 1200)
    tasks = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 40))) for _ in range(args.turns)]
    with tempfile.TemporaryDirectory(prefix="bench-plugin-") as tmp:
        folder = Path(tmp)
        for rel, text in files.items():
            (folder / Path(rel).name).write_text(text, encoding="utf-8")
        (folder / "input.json").write_text(json.dumps({"tasks": tasks}), encoding="utf-8")
        (folder / "run.mjs").write_text(RUNNER, encoding="utf-8")
        size = (folder / "nearest-demos.json").stat().st_size
        kept = len(json.loads(files[plugin.BANK_FILE])["demos"])
        done = subprocess.run([node, str(folder / "run.mjs"), (folder / "nearest-demos.js").as_uri(),
                               str(folder / "input.json")], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(done.stderr)
    r = json.loads(done.stdout)
    print(f"bank: {kept} demos (of {args.demos}; unsafe ones are left out), {size / 1e6:.2f} MB, k={args.k}")
    print(f"plugin start-up (import, read and index the bank): {r['startup']:.1f} ms")
    print(f"per turn over {args.turns} turns (pick + inject): mean {r['mean']:.2f} ms, p50 {r['p50']:.2f} ms, "
          f"p95 {r['p95']:.2f} ms, max {r['max']:.2f} ms; examples added on {r['added']}/{args.turns} turns")


if __name__ == "__main__":
    main()
