#!/usr/bin/env bash
# The pipeline in CI, sharing its results through the team's DVC remote.
# Called by .github/workflows/prompts.yml after ./setup.sh; runs the same anywhere (a laptop, a
# self-hosted runner). Every step is plain DVC, so what it does can be repeated by hand.
#
#   scripts/ci_pipeline.sh [BASE_REV]
#
# 1. restore: data, program, prompts and DVC's run-cache from the remote (`dvc pull --run-cache`);
#    stages whose inputs match a run already on the remote are then restored, not recomputed,
#    so no model is called for them;
# 2. run: `dvc repro`; with PIPELINE_SET, `dvc exp run -S ...` (the same, with params overrides);
#    with PIPELINE_SWEEP, a queued sweep (`dvc exp run --queue ...`, then `dvc exp run --run-all`);
# 3. push: outputs and run-cache back to the remote (`dvc push --run-cache`);
# 4. report: REPORT_DIR/report.md with `dvc metrics diff BASE_REV --md` (default BASE_REV: HEAD)
#    and the pictures (metrics/*.svg) beside it, for the change's comment.
#
# Environment:
#   DVC_REMOTE_URL  the remote (a path, s3://..., ssh://..., gs://...); set as the default remote in
#                   .dvc/config.local. Unset: the default remote of .dvc/config. Credentials come the
#                   usual DVC way (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...).
#   PIPELINE_SET    params overrides for this run, space-separated key=value, e.g.
#                   "models.student.provider=openai-compatible models.student.api_base=http://gpu:8000/v1"
#   PIPELINE_SWEEP  a file with one experiment per line, each a space-separated list of key=value
#   REPORT_DIR      where the report goes (default: ci-report)
# API keys reach the stages as the environment variables named by models.*.api_key_env.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
# The stages run `python -m stages.X`: this interpreter's folder goes first on PATH.
PATH="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PATH DVC_NO_ANALYTICS=1
dvc() { "$PY" -m dvc "$@"; }
step() { echo; echo "== $*"; }

BASE_REV=${1:-HEAD}
REPORT_DIR=${REPORT_DIR:-ci-report}
mkdir -p "$REPORT_DIR"

step "remote"
if [ -n "${DVC_REMOTE_URL:-}" ]; then
  dvc remote add --local --force --default ci "$DVC_REMOTE_URL"
fi
if ! remote=$(dvc remote default 2>/dev/null) || [ -z "$remote" ]; then
  echo "error: no DVC remote: set DVC_REMOTE_URL, or add one with \`dvc remote add -d NAME URL\` and commit .dvc/config" >&2
  exit 1
fi
echo "using DVC remote '$remote'"

step "restore from the remote"
dvc pull --run-cache --allow-missing

step "run"
if [ -n "${PIPELINE_SWEEP:-}" ]; then
  [ -f "$PIPELINE_SWEEP" ] || { echo "error: PIPELINE_SWEEP=$PIPELINE_SWEEP is not a file" >&2; exit 1; }
  dvc repro  # the committed params first: the baseline every experiment is compared with
  while read -r line; do
    [ -n "${line// }" ] && [ "${line:0:1}" != "#" ] || continue
    args=()
    for kv in $line; do args+=(-S "$kv"); done
    dvc exp run --queue "${args[@]}"
  done < "$PIPELINE_SWEEP"
  dvc exp run --run-all --jobs 1
  dvc exp show --md --drop 'lm_usage|components' > "$REPORT_DIR/sweep.md" || true
elif [ -n "${PIPELINE_SET:-}" ]; then
  args=()
  for kv in $PIPELINE_SET; do args+=(-S "$kv"); done
  dvc exp run "${args[@]}"
else
  dvc repro
fi

step "push to the remote"
dvc push --run-cache

step "report"
{
  echo "### Prompt learning: test-split metrics"
  echo
  echo "Against \`$BASE_REV\` (workspace = this run). Scores are 0-1."
  echo
  dvc metrics diff "$BASE_REV" --all --md --precision 3 --targets metrics/baseline.json metrics/optimized.json \
    | grep -v -E 'lm_usage|cached_' || true
  if [ -f "$REPORT_DIR/sweep.md" ]; then
    echo; echo "#### Sweep"; echo; cat "$REPORT_DIR/sweep.md"
  fi
  echo
  for svg in metrics/*.svg; do
    [ -f "$svg" ] || continue
    cp "$svg" "$REPORT_DIR/"
    echo "Picture: \`$svg\` (in the run's artifacts)"
  done
} > "$REPORT_DIR/report.md"
cat "$REPORT_DIR/report.md"
