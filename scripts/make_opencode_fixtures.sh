#!/usr/bin/env bash
# Regenerate the real-OpenCode fixtures: drive the real `opencode` CLI against a local
# OpenAI-compatible model server, then keep each session's `opencode export` JSON and a
# compact copy of opencode.db.
#
#   LLAMA_URL  the server's /v1 URL           (default http://127.0.0.1:18080/v1)
#   MODEL      model name the server answers  (default smollm2)
#   OUT        where the fixtures go          (default tests/fixtures/opencode/real)
#   OPENCODE   the CLI                        (default node_modules/.bin/opencode)
#   QUICK=1    skip the optional third session (the test suite uses this)
#
# State lives in a throw-away HOME, so the user's own OpenCode data is never touched.
# The first run installs @ai-sdk/openai-compatible from npm into that HOME (about a minute).
set -euo pipefail
set -f  # messages are split into words below; never glob them
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OPENCODE=${OPENCODE:-$ROOT/node_modules/.bin/opencode}
LLAMA_URL=${LLAMA_URL:-http://127.0.0.1:18080/v1}
MODEL=${MODEL:-smollm2}
OUT=${OUT:-$ROOT/tests/fixtures/opencode/real}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3

[ -x "$OPENCODE" ] || { echo "error: OpenCode CLI not found at $OPENCODE (run ./setup.sh --test)" >&2; exit 1; }
"$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/models', timeout=5)" "$LLAMA_URL" \
  || { echo "error: no model server answers at $LLAMA_URL (start llama_cpp.server first)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/opencode-fixtures.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export HOME=$WORK/home
# OpenCode follows the XDG variables; pin them inside the throw-away HOME too.
export XDG_CONFIG_HOME=$HOME/.config XDG_DATA_HOME=$HOME/.local/share XDG_CACHE_HOME=$HOME/.cache \
       XDG_STATE_HOME=$HOME/.local/state
unset OPENCODE_CONFIG OPENCODE_CONFIG_DIR OPENCODE_CONFIG_CONTENT
mkdir -p "$XDG_CONFIG_HOME/opencode" "$WORK/proj"

# A local provider, a short output limit (keeps a 135M model from rambling for minutes), and a
# command that runs in a subagent: that makes OpenCode itself call the `task` tool, so the
# fixtures hold a real tool part and a real child session even though the model calls no tools.
cat > "$XDG_CONFIG_HOME/opencode/opencode.json" <<JSON
{
  "\$schema": "https://opencode.ai/config.json",
  "provider": {
    "local": {
      "npm": "@ai-sdk/openai-compatible",
      "name": "local",
      "options": {"baseURL": "$LLAMA_URL", "apiKey": "x"},
      "models": {"$MODEL": {"name": "$MODEL", "limit": {"context": 8192, "output": 160}}}
    }
  },
  "model": "local/$MODEL",
  "command": {
    "summarize": {
      "description": "Summarize a file in a subagent",
      "template": "Summarize the file \$ARGUMENTS in one sentence.",
      "agent": "general",
      "subtask": true
    }
  }
}
JSON

cd "$WORK/proj"
printf 'def greet(name):\n    return "Hello, " + name\n\n\nprint(greet("world"))\n' > hello.py

run() {  # run <message> [opencode run options...]
  local message=$1; shift
  local -a words
  # `opencode run` wraps every argument that contains a space in quotes; one word per argument
  # keeps the stored message exactly as typed.
  read -r -a words <<< "$message"
  echo "opencode run $* -- $message" >&2
  timeout "$RUN_TIMEOUT" "$OPENCODE" run --pure "$@" -- "${words[@]}" > "$WORK/last-run.txt" 2>&1 \
    || { echo "error: opencode run failed or timed out:" >&2; tail -n 30 "$WORK/last-run.txt" >&2; exit 1; }
}

run "What does hello.py print?" --title "What hello.py prints"
run "Answer in one word: which function does it call?" --continue
# Not `--file`: it sends multi-part message content, which llama_cpp.server's chat template
# rejects, and OpenCode then retries without pause, writing an empty assistant message each time.
if [ "${QUICK:-0}" != 1 ]; then
  run "What is the name of the function defined in hello.py?" --title "Name the function"
fi
run "hello.py" --command summarize

DB=$XDG_DATA_HOME/opencode/opencode.db
[ -f "$DB" ] || { echo "error: OpenCode wrote no database at $DB" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/export-*.json "$OUT/opencode.db"

# Every session, subagent children included (`opencode session list` shows only top-level ones).
ids=$("$PY" - "$DB" <<'PY'
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print("\n".join(r[0] for r in con.execute("SELECT id FROM session ORDER BY time_created, id")))
PY
)
for id in $ids; do
  # Progress text goes to stderr; the JSON is stdout only.
  "$OPENCODE" export "$id" > "$OUT/export-$id.json" 2> "$WORK/export.err" \
    || { echo "error: opencode export $id failed:" >&2; cat "$WORK/export.err" >&2; exit 1; }
done

# A compact, consistent copy (the live file has -wal/-shm beside it); the original is only read.
"$PY" - "$DB" "$OUT/opencode.db" <<'PY'
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
con.execute("VACUUM INTO ?", (sys.argv[2],))
con.close()
PY

# Generated locally, so nothing private is expected; still, no path of this machine outside the
# throw-away HOME should end up in a committed fixture.
if grep -rl --fixed-strings "$ROOT" "$OUT" >/dev/null 2>&1; then
  echo "warning: $OUT mentions $ROOT:" >&2
  grep -rl --fixed-strings "$ROOT" "$OUT" >&2
fi
echo "wrote $(echo "$ids" | wc -w) session export(s) and opencode.db to $OUT" >&2
