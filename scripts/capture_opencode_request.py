#!/usr/bin/env python3
"""Record what the pinned `opencode` binary sends a model and store it as versioned data.

Runs `opencode run --pure` three times against a loopback recorder (throw-away HOME, no model,
a few seconds each) and writes lib/tools/data/request-opencode-<version>.json: the default
system prompt, the environment block as a template, the skills block, the tool definitions, and
the message layout after a tool call. See devtools/capture.py.

Usage: python scripts/capture_opencode_request.py [--opencode PATH] [--out DIR]
       (defaults: node_modules/.bin/opencode, lib/tools/data)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lib.core.errors import run_stage  # noqa: E402
from lib.core.files import write_text  # noqa: E402
from devtools.capture import capture, data_path, dumps  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opencode", type=Path, default=ROOT / "node_modules" / ".bin" / "opencode",
                    help="the OpenCode CLI (default: node_modules/.bin/opencode)")
    ap.add_argument("--out", type=Path, default=ROOT / "lib" / "tools" / "data",
                    help="folder for request-opencode-<version>.json (default: lib/tools/data)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds per `opencode run` (default 180)")
    args = ap.parse_args()
    data = capture(args.opencode, timeout=args.timeout)
    path = data_path(args.out, data["opencode_version"])
    write_text(path, dumps(data))
    print(f"wrote {path} ({len(data['tools'])} tools, default prompt {len(data['default_prompt'])} chars)",
          file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
