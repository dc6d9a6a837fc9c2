"""Data stages at scale: time and peak memory of parse -> build_examples -> split as history grows.

    python bench/data_scale.py            # 500, 2000 and 8000 sessions
    python bench/data_scale.py 1000 4000

Sessions are copies of the shipped samples under new ids. Linear time and flat memory are the
targets: peak RSS should barely move while the session count grows 16x.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("parse", "build_examples", "split")


def make_logs(dest: Path, n: int) -> int:
    samples = sorted((ROOT / "data" / "sessions").rglob("dspy-*.json"))
    size = 0
    for i in range(n):
        data = json.loads(samples[i % len(samples)].read_text(encoding="utf-8"))
        sid = f"ses_{i:012x}{data['session'][16:]}"
        data["session"] = sid
        for ex in data["examples"]:
            ex.setdefault("metadata", {})["sessionId"] = sid
        path = dest / f"{i // 1000:03d}" / f"dspy-{sid}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        size += path.stat().st_size
    return size


def run_stage(work: Path, stage: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one stage in its own process."""
    code = (f"import resource, runpy, sys; sys.argv=['{stage}']; "
            f"runpy.run_module('stages.{stage}', run_name='__main__'); "
            f"print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{proc.stderr[-2000:]}")
    rss = int(next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("RSS")))
    return wall, rss


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [500, 2000, 8000]
    print("| sessions | input MB | " + " | ".join(f"{s} s / MiB" for s in STAGES) + " | s per 1k sessions |")
    print("|---|---|" + "---|" * len(STAGES) + "---|")
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for name in ("lib", "stages", "schemas"):
                shutil.copytree(ROOT / name, work / name)
            params = (ROOT / "params.yaml").read_text(encoding="utf-8")
            (work / "params.yaml").write_text(params.replace("session_logs_dir: data/sessions",
                                                             "session_logs_dir: logs"), encoding="utf-8")
            size = make_logs(work / "logs", n)
            cells, total = [], 0.0
            for stage in STAGES:
                wall, rss = run_stage(work, stage)
                total += wall
                cells.append(f"{wall:.1f} / {rss / 1024:.0f}")
            print(f"| {n} | {size / 1e6:.1f} | " + " | ".join(cells) + f" | {total / n * 1000:.1f} |", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    main()
