#!/usr/bin/env python3
"""Write the sample session logs in data/sessions/ so that `dvc repro` works on a fresh clone.

The sessions are SYNTHETIC (invented projects, tasks, tool output and obviously fake secrets), but every
file follows the real format of the opencode-dspy session-logger plugin, `dspy-<sessionId>.json`
(formats.md section 1), quirks included:

* current variant (totalTurns, successfulTurns, ...) and legacy variant (one file-level `outcome`, no
  `cacheHitRate`, lspDiagnostics that may hold entries); a few files sit in archive/2025-q3/;
* `step` counts across the whole session; saved turns always have success, taskCompleted and
  correctness 1, while efficiency = clamp(ideal/n, 0.1, 1) and minimalEdits follow formats.md 1.7;
* conversationHistory holds every earlier stored message in arrival order, cut to 500 chars and not
  cleaned (inlined "Called the Read tool ... <file>...</file>" dumps, empty tool-only replies); in about
  half the sessions a turn's own first reply arrived before its user message and ends its history;
* `input.task` is cleaned like the plugin does; the first `read` of a session may lack result/success;
  `success` is the plugin's text test, so "0 failed" or a file that mentions errors reads as false;
* context is the end-of-work state, identical in every example of a file; gitStatus is rare;
* some user turns are never saved (a chat turn without tools, a last turn lost with the idle save),
  so totalTurns can exceed totalExamples.

Deterministic (fixed seeds, no clock): running it twice writes identical bytes.
Usage: python scripts/make_samples.py [OUT_DIR]        (default: data/sessions)
"""
from __future__ import annotations

import calendar
import fnmatch
import json
import random
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

SEED = 20251126
OUT = Path(__file__).resolve().parent.parent / "data" / "sessions"
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
T0 = calendar.timegm((2025, 7, 2, 7, 30, 0)) * 1000  # earliest session, epoch ms (UTC)
DAY = 86_400_000
DONE = ("i've completed", "done", "complete", "successfully", "finished", "all set", "has been fixed")
TOOLS = ("read", "edit", "write", "bash", "grep", "glob", "list", "todowrite", "task", "webfetch")

# Per language. Templates use the turn fields of Builder.fields(); literal braces are doubled.
LANG: dict[str, dict[str, str]] = {
    "py": dict(inc="*.py", tests="**/test_*.py", ext=".py", ind="    ", end="", manifest="pyproject.toml",
               defn=r"def {sym}\(", one="pytest -q {test}", suite="pytest -q", newtest="tests/test_{sym}_edges.py",
               head="from __future__ import annotations\n\nimport logging\n\nlog = logging.getLogger(__name__)",
               test="from {mod} import {sym}\n\n\ndef test_{sym}():\n    assert {sym}(SAMPLE) == EXPECTED",
               regress="\n\n\ndef test_{sym}_regression():\n    assert {sym}(EDGE_CASE) == EXPECTED_EDGE",
               mtext='[project]\nname = "{proj}"\nrequires-python = ">=3.10"\n\n[tool.pytest.ini_options]\ntestpaths = ["tests"]',
               ok="{dots} [100%]\n{n} passed in 0.{ms}s",
               fail="{dots}F [100%]\nFAILED {test}::test_{sym} - AssertionError: assert result == expected\n"
                    "1 failed, {n} passed in 0.{ms}s"),
    "go": dict(inc="*.go", tests="**/*_test.go", ext=".go", ind="\t", end="}", manifest="go.mod",
               defn=r"func (\(\w+ \*?\w+\) )?{sym}\(", one="go test ./{testdir}/ -run Test{Sym}", suite="go test ./...",
               newtest="{testdir}/{sym}_edge_test.go", head='package {pkg}\n\nimport (\n\t"net/http"\n\t"time"\n)',
               test='package {pkg}\n\nimport "testing"\n\nfunc Test{Sym}(t *testing.T) {{\n\tif got := run(sample); '
                    'got != want {{\n\t\tt.Fatalf("got %v, want %v", got, want)\n\t}}\n}}',
               regress="\n\nfunc Test{Sym}Regression(t *testing.T) {{\n\tif got := run(edgeCase); got != wantEdge {{\n"
                       '\t\tt.Fatalf("got %v, want %v", got, wantEdge)\n\t}}\n}}',
               mtext="module github.com/devtools/{proj}\n\ngo 1.22\n\nrequire golang.org/x/time v0.5.0",
               ok="ok  \tgithub.com/devtools/{proj}/{testdir}\t0.0{ms}s",
               fail="--- FAIL: Test{Sym} (0.00s)\n    {base}:{line}: got 7, want 5\nFAIL\n"
                    "FAIL\tgithub.com/devtools/{proj}/{testdir}\t0.0{ms}s\nFAIL"),
    "rs": dict(inc="*.rs", tests="tests/*.rs", ext=".rs", ind="    ", end="}", manifest="Cargo.toml",
               defn=r"fn {sym}\b", one="cargo test {sym}", suite="cargo test", newtest="tests/{sym}_edges.rs",
               head="use std::fmt::Write;\n\nuse crate::value::Value;",
               test="use tomlfmt::*;\n\n#[test]\nfn test_{sym}() {{\n    assert_eq!({sym}(SAMPLE), EXPECTED);\n}}",
               regress="\n\n#[test]\nfn test_{sym}_regression() {{\n    assert_eq!({sym}(EDGE_CASE), EXPECTED_EDGE);\n}}",
               mtext='[package]\nname = "{proj}"\nedition = "2021"\n\n[dependencies]\ntoml_edit = "0.22"\nanyhow = "1"',
               ok="running {n} tests\n{dots}\ntest result: ok. {n} passed; 0 failed; 0 ignored; 0 measured; "
                  "0 filtered out; finished in 0.0{ms}s",
               fail="running {n} tests\n{dots}F\nfailures:\n\n---- {sym} stdout ----\nthread '{sym}' panicked at "
                    "{test}:{line}:5:\nassertion `left == right` failed\n\ntest result: FAILED. {n} passed; 1 failed"),
    "ts": dict(inc="*.{{ts,tsx}}", tests="src/**/*.test.ts*", ext=".tsx", ind="  ", end="}", manifest="package.json",
               defn=r"export (async )?function {sym}\b", one="npx vitest run {test}", suite="npm test",
               newtest="src/utils/{sym}.spec.ts",
               head="import type {{ ReactNode }} from 'react';\n\nimport {{ ApiError }} from '../api/errors';",
               test="import {{ describe, expect, it }} from 'vitest';\n\ndescribe('{sym}', () => {{\n  it('handles the default "
                    "case', () => {{\n    expect({sym}(sample)).toEqual(expected);\n  }});\n}});",
               regress="\n\ndescribe('{sym} regression', () => {{\n  it('handles the reported edge case', () => {{\n"
                       "    expect({sym}(edgeCase)).toEqual(expectedEdge);\n  }});\n}});",
               mtext='{{\n  "name": "{proj}",\n  "scripts": {{ "test": "vitest run", "build": "tsc -b && vite build" }}\n}}',
               ok=" \u2713 {test} ({n} tests) {ms}ms\n\n Test Files  1 passed (1)\n      Tests  {n} passed ({n})",
               fail=" \u276f {test} ({n} tests | 1 failed) {ms}ms\n   \u00d7 {sym} > handles the edge case\n"
                    "     \u2192 AssertionError: expected false to be true\n\n      Tests  1 failed | {n} passed"),
    "js": dict(inc="*.js", tests="test/**/*.test.js", ext=".js", ind="  ", end="}", manifest="package.json",
               defn=r"(async )?function {sym}\(", one="npx jest {test}", suite="npm test", newtest="test/{sym}.edge.test.js",
               head="'use strict';\n\nconst {{ sleep }} = require('./util');",
               test="const {{ {sym} }} = require('../{stem}');\n\ntest('{sym} handles the default case', async () => {{\n"
                    "  expect(await {sym}(sample)).toEqual(expected);\n}});",
               regress="\n\ntest('{sym} regression: reported edge case', async () => {{\n"
                       "  expect(await {sym}(edgeCase)).toEqual(expectedEdge);\n}});",
               mtext='{{\n  "name": "{proj}",\n  "main": "index.js",\n  "scripts": {{ "test": "jest", "lint": "eslint ." }}\n}}',
               ok="PASS {test}\nTests:       {n} passed, {n} total\nTime:        0.{ms} s",
               fail="FAIL {test}\n  \u25cf {sym} \u203a handles the edge case\n\n    expect(received).toBe(expected)\n\n"
                    "Tests:       1 failed, {n} passed"),
    "sh": dict(inc="*.sh", tests="tests/*.bats", ext=".sh", ind="  ", end="}", manifest="README.md",
               defn=r"^{sym}\(\)", one="bats {test}", suite="bats tests/", newtest="tests/{sym}_edges.bats",
               head='#!/usr/bin/env bash\nset -euo pipefail\n\nDOTFILES="${{DOTFILES:-$HOME/.dotfiles}}"',
               test='#!/usr/bin/env bats\n\nsetup() {{ load helpers; }}\n\n@test "{sym} is idempotent" {{\n  run {sym}\n'
                    '  [ "$status" -eq 0 ]\n}}',
               regress='\n\n@test "{sym} regression: reported edge case" {{\n  run {sym} --again\n  [ "$status" -eq 0 ]\n}}',
               mtext="# {proj}\n\nRun `./install.sh` to link everything into $HOME.\nSee docs/setup.md for details.",
               ok="1..{n}\nok 1 {sym} works on a clean home\nok 2 {sym} is idempotent",
               fail="1..{n}\nnot ok 1 {sym} is idempotent\n# (in test file {test}, line {line})\n"
                    "#   `[ \"$status\" -eq 0 ]' failed"),
}


class Unit(NamedTuple):
    """A function with a bug: where it lives, its test, the one-line fix, and a new name for renames."""
    file: str
    sym: str
    test: str
    sig: str
    old: str
    new: str
    bug: str
    alt: str


# build: (command, description, passing output, failing output); feature: (what, file to edit, new file,
# oldString, newString); dead: (symbol, file, its code); docs: (file, topic); dep: (package, changelog url).
PROJECTS: dict[str, dict[str, Any]] = {
    "invoice-api": dict(lang="py", files=1187, dir="src/invoice_api", units=[
        Unit("src/invoice_api/config.py", "load_settings", "tests/test_config.py",
             "def load_settings(env: Mapping[str, str]) -> Settings:", 'timeout = int(env["INVOICE_TIMEOUT"])',
             'timeout = int(env.get("INVOICE_TIMEOUT", "30"))', "raises KeyError when INVOICE_TIMEOUT is unset", "read_settings"),
        Unit("src/invoice_api/totals.py", "compute_total", "tests/test_totals.py",
             "def compute_total(lines: list[LineItem]) -> Decimal:", "return sum(line.amount for line in lines)",
             "return sum((line.amount * line.quantity for line in lines), Decimal(0))", "ignores line quantities", "invoice_total"),
        Unit("src/invoice_api/routes.py", "create_invoice", "tests/test_routes.py",
             "async def create_invoice(payload: InvoiceIn, db: Session = Depends(get_db)) -> InvoiceOut:",
             "invoice = Invoice(**payload.dict())", "invoice = Invoice(**payload.model_dump())",
             "returns 500 because payload.dict() is gone in Pydantic v2", "post_invoice")],
        build=("python -m build", "Build sdist and wheel", "Successfully built invoice_api-0.4.1.tar.gz and "
               "invoice_api-0.4.1-py3-none-any.whl", '  File "{file}", line {line}\nSyntaxError: \'(\' was never closed'),
        feature=("pagination (limit and offset) to GET /invoices", "src/invoice_api/routes.py", "tests/test_pagination.py",
                 "async def list_invoices(db: Session = Depends(get_db)) -> list[InvoiceOut]:",
                 "async def list_invoices(limit: int = 50, offset: int = 0, db: Session = Depends(get_db)) -> list[InvoiceOut]:"),
        dead=("format_legacy_id", "src/invoice_api/utils.py", "def format_legacy_id(value: str) -> str:\n    return value.zfill(8)"),
        docs=("README.md", "the INVOICE_TIMEOUT environment variable"),
        dep=("pydantic", "https://docs.pydantic.dev/latest/migration/")),
    "scrapekit": dict(lang="py", files=642, dir="scrapekit", units=[
        Unit("scrapekit/fetch.py", "fetch_page", "tests/test_fetch.py", "def fetch_page(url: str, *, timeout: float = 10.0) -> str:",
             "resp = requests.get(url)", 'resp = requests.get(url, timeout=timeout, headers={"User-Agent": USER_AGENT})',
             "hangs forever on slow servers because the timeout is never passed", "download_page"),
        Unit("scrapekit/parse.py", "extract_links", "tests/test_parse.py", "def extract_links(html: str, base_url: str) -> list[str]:",
             'return [a["href"] for a in soup.find_all("a")]',
             'return [urljoin(base_url, a["href"]) for a in soup.find_all("a", href=True)]',
             "returns relative links and crashes on <a> tags without href", "find_links"),
        Unit("scrapekit/robots.py", "is_allowed", "tests/test_robots.py", "def is_allowed(url: str, agent: str = USER_AGENT) -> bool:",
             "return True", "return _parser_for(url).can_fetch(agent, url)", "always returns True, so robots.txt is ignored",
             "may_fetch")],
        build=("python -m build --wheel", "Build the wheel", "Successfully built scrapekit-1.2.0-py3-none-any.whl",
               '  File "{file}", line {line}\nIndentationError: unexpected indent'),
        feature=("a simple on-disk cache for fetched pages", "scrapekit/fetch.py", "scrapekit/cache.py",
                 "def fetch_page(url: str, *, timeout: float = 10.0) -> str:",
                 "@disk_cache(CACHE_DIR)\ndef fetch_page(url: str, *, timeout: float = 10.0) -> str:"),
        dead=("parse_sitemap_v1", "scrapekit/sitemap.py", "def parse_sitemap_v1(xml: str) -> list[str]:\n    return []"),
        docs=("docs/usage.md", "the --max-depth option"),
        dep=("beautifulsoup4", "https://git.launchpad.net/beautifulsoup/tree/CHANGELOG")),
    "web-dashboard": dict(lang="ts", files=48213, dir="src/components", units=[
        Unit("src/utils/formatDate.ts", "formatDate", "src/utils/formatDate.test.ts",
             "export function formatDate(value: string | Date, locale = 'en-US'): string {",
             "return new Date(value).toLocaleDateString(locale);",
             "return new Date(value).toLocaleDateString(locale, { timeZone: 'UTC' });",
             "shows the previous day for users west of UTC", "formatDay"),
        Unit("src/components/UserTable.tsx", "UserTable", "src/components/UserTable.test.tsx",
             "export function UserTable({ users, onSelect }: UserTableProps) {", "const sorted = users.sort(byName);",
             "const sorted = [...users].sort(byName);", "mutates the users prop when it sorts", "UsersGrid"),
        Unit("src/api/client.ts", "fetchJson", "src/api/client.test.ts",
             "export async function fetchJson<T>(path: string, init?: RequestInit): Promise<T> {", "return res.json();",
             "if (!res.ok) throw new ApiError(res.status, await res.text());\n  return res.json() as Promise<T>;",
             "resolves with an HTML page when the server answers 500", "getJson")],
        build=("npm run build", "Build the production bundle", "> web-dashboard@1.8.0 build\n> tsc -b && vite build\n\n"
               "vite v5.4.10 building for production...\n\u2713 412 modules transformed.\n\u2713 built in 3.21s",
               "{file}({line},5): error TS2345: Argument of type 'string | undefined' is not assignable to type 'string'."),
        feature=("a dark mode toggle to the settings page", "src/pages/Settings.tsx", "src/hooks/useTheme.ts",
                 '<Section title="Display">', '<Section title="Display">\n        <ThemeToggle value={theme} onChange={setTheme} />'),
        dead=("LegacyChart", "src/components/LegacyChart.tsx", "export function LegacyChart(props: ChartProps) {\n  return null;\n}"),
        docs=("README.md", "the VITE_API_URL setting"), dep=("react-router-dom", "https://reactrouter.com/upgrading/v6"),
        relevant=["vite.config.ts", "eslint.config.js", "src/main.tsx", "src/App.tsx"]),
    "slack-notifier": dict(lang="js", files=21877, dir="lib", units=[
        Unit("lib/retry.js", "withRetry", "test/retry.test.js", "async function withRetry(fn, { retries = 3, baseMs = 200 } = {}) {",
             "await sleep(baseMs * attempt);", "await sleep(baseMs * 2 ** attempt);", "backs off linearly, not exponentially",
             "retryAsync"),
        Unit("lib/format.js", "formatAlert", "test/format.test.js", "function formatAlert(alert) {",
             "const color = alert.level === 'critical' ? 'danger' : 'good';",
             "const color = { critical: 'danger', warning: 'warning' }[alert.level] ?? 'good';", "shows warnings in green",
             "renderAlert"),
        Unit("index.js", "handleWebhook", "test/webhook.test.js", "async function handleWebhook(req, res) {",
             "const payload = JSON.parse(req.body);",
             "const payload = typeof req.body === 'string' ? JSON.parse(req.body) : req.body;",
             "crashes with 'Unexpected token o' when express already parsed the body", "onWebhook")],
        build=("npm run lint", "Lint the project with eslint", "> slack-notifier@2.1.0 lint\n> eslint .\n",
               "{file}\n  {line}:7  error  'payload' is assigned a value but never used  no-unused-vars"),
        feature=("a /healthz endpoint", "index.js", "test/healthz.test.js", "app.post('/webhook', handleWebhook);",
                 "app.post('/webhook', handleWebhook);\napp.get('/healthz', (req, res) => res.json({ ok: true }));"),
        dead=("postToHipChat", "lib/hipchat.js", "async function postToHipChat(room, text) {\n  return null;\n}"),
        docs=("README.md", "the SLACK_WEBHOOK_URL variable"),
        dep=("@slack/web-api", "https://github.com/slackapi/node-slack-sdk/releases"),
        relevant=["index.js", "jest.config.js", "lib/format.js"]),
    "ratelimit": dict(lang="go", files=913, dir="internal/limiter", units=[
        Unit("internal/limiter/bucket.go", "Refill", "internal/limiter/bucket_test.go", "func (b *Bucket) Refill(now time.Time) {",
             "elapsed := now.Sub(b.last).Seconds()", "elapsed := math.Max(0, now.Sub(b.last).Seconds())",
             "adds negative tokens when the clock goes backwards", "Replenish"),
        Unit("internal/limiter/keys.go", "KeyFromRequest", "internal/limiter/keys_test.go",
             "func KeyFromRequest(r *http.Request) string {",
             "return r.RemoteAddr", "host, _, _ := net.SplitHostPort(r.RemoteAddr)\n\treturn host",
             "keeps the port, so every connection gets its own bucket", "ClientKey"),
        Unit("cmd/ratelimitd/main.go", "loadConfig", "cmd/ratelimitd/main_test.go", "func loadConfig(path string) (Config, error) {",
             "data, _ := os.ReadFile(path)",
             'data, err := os.ReadFile(path)\n\tif err != nil {\n\t\treturn Config{}, fmt.Errorf("read config: %w", err)\n\t}',
             "silently ignores a missing config file", "readConfig")],
        build=("go build ./...", "Build all packages", "",
               "# github.com/devtools/ratelimit/internal/limiter\n{file}:{line}:9: undefined: clampTokens"),
        feature=("a Prometheus counter for rejected requests", "internal/limiter/middleware.go", "internal/limiter/metrics.go",
                 "if !l.Allow(key) {", "if !l.Allow(key) {\n\t\trejectedTotal.WithLabelValues(route).Inc()"),
        dead=("legacyWindow", "internal/limiter/window.go",
              "func legacyWindow(n int) time.Duration {\n\treturn time.Duration(n) * time.Second\n}"),
        docs=("README.md", "the --burst flag"), dep=("golang.org/x/time", "https://pkg.go.dev/golang.org/x/time/rate")),
    "tomlfmt": dict(lang="rs", files=2304, dir="src", units=[
        Unit("src/parser.rs", "parse_table_header", "tests/parser.rs",
             "pub fn parse_table_header(line: &str) -> Result<Vec<String>, ParseError> {",
             "let parts = line.trim_matches(|c| c == '[' || c == ']').split('.');",
             "let parts = split_dotted_key(line.trim().trim_start_matches('[').trim_end_matches(']'));",
             'splits quoted keys like ["a.b"] on the dot', "parse_header"),
        Unit("src/format.rs", "format_array", "tests/format.rs", "pub fn format_array(items: &[Value], width: usize) -> String {",
             "if items.len() > 3 {", "if rendered_len(items) > width {", "wraps short arrays because it counts items, not width",
             "render_array"),
        Unit("src/main.rs", "run", "tests/cli.rs", "fn run(args: Args) -> anyhow::Result<()> {",
             "let input = fs::read_to_string(&args.path).unwrap();",
             'let input = fs::read_to_string(&args.path).with_context(|| format!("reading {}", args.path.display()))?;',
             "panics instead of printing a message when the file does not exist", "run_cli")],
        build=("cargo build --release", "Build the release binary", "   Compiling tomlfmt v0.3.0 (/home/dev/projects/tomlfmt)\n"
               "    Finished `release` profile [optimized] target(s) in 14.82s",
               "error[E0308]: mismatched types\n --> {file}:{line}:9\n"
               "error: could not compile `tomlfmt` (lib) due to 1 previous error"),
        feature=("a --check mode that exits 1 when a file would be reformatted", "src/main.rs", "tests/check_mode.rs",
                 "let output = format_document(&doc, &opts);",
                 "let output = format_document(&doc, &opts);\n"
                 "    if args.check && output != input {\n        std::process::exit(1);\n    }"),
        dead=("old_escape", "src/escape.rs", "fn old_escape(s: &str) -> String {\n    s.replace('\"', \"\\\\\\\"\")\n}"),
        docs=("README.md", "the --check flag"),
        dep=("toml_edit", "https://github.com/toml-rs/toml/blob/main/crates/toml_edit/CHANGELOG.md")),
    "dotfiles": dict(lang="sh", files=388, dir="scripts", units=[
        Unit("install.sh", "link_file", "tests/install.bats", "link_file() {", 'ln -s "$src" "$dest"', 'ln -sfn "$src" "$dest"',
             "fails when the symlink already exists", "make_link"),
        Unit("scripts/backup.sh", "upload_archive", "tests/backup.bats", "upload_archive() {", 'aws s3 cp "$archive" "s3://$BUCKET/"',
             'aws s3 cp "$archive" "s3://${BACKUP_BUCKET:?}/$(hostname)/"',
             "uploads to the wrong bucket when BUCKET is set in the shell", "push_archive"),
        Unit("scripts/git-cleanup.sh", "prune_branches", "tests/git-cleanup.bats", "prune_branches() {",
             "git branch --merged | xargs git branch -d", "git branch --merged main | grep -vE '^\\*|main$' | xargs -r git branch -d",
             "tries to delete the current branch and main", "prune_merged")],
        build=("shellcheck install.sh scripts/*.sh", "Lint the shell scripts", "",
               "In {file} line {line}:\nln -s $src $dest\n      ^--^ SC2086 (info): Double quote to prevent globbing."),
        feature=("a --dry-run flag to install.sh", "install.sh", "tests/dry_run.bats", 'for src in "$DOTFILES"/home/*; do',
                 'DRY_RUN="${DRY_RUN:-0}"\nfor src in "$DOTFILES"/home/*; do'),
        dead=("setup_vim_plug", "install.sh",
              "setup_vim_plug() {\n  curl -fLo ~/.vim/autoload/plug.vim https://example.invalid/plug.vim\n}"),
        docs=("docs/setup.md", "the Homebrew bundle step"),
        dep=("shellcheck", "https://github.com/koalaman/shellcheck/blob/master/CHANGELOG.md")),
}
NODE_MODULES = [  # relevantFiles of JS projects continue with node_modules paths, as the real listing does
    "@babel/code-frame/lib/index.js", "@babel/helper-string-parser/lib/index.js", "@esbuild/linux-x64/lib/main.js",
    "@types/node/fs.d.ts", "@types/node/http.d.ts", "acorn/dist/acorn.js", "ansi-styles/index.js", "braces/lib/expand.js",
    "chalk/source/index.js", "debug/src/node.js", "esbuild/lib/main.js", "fast-glob/out/index.js", "js-tokens/index.js",
    "micromatch/index.js", "ms/index.js", "picomatch/lib/scan.js", "semver/functions/parse.js", "typescript/lib/typescript.js"]
LSP = {  # lspDiagnostics entry that some legacy files carry: (message, severity)
    "py": ('Import "requests" could not be resolved from source', "warning"), "go": ("unusedparams: unused parameter: r", "warning"),
    "ts": ("Property 'timeZone' does not exist on type 'Options'.", "error"), "rs": ("unused variable: `opts`", "warning"),
    "js": ("'payload' is assigned a value but never used.", "warning"), "sh": ("SC2086: Double quote to prevent globbing.", "warning")}

# Turn kinds: (user message, first reply, action codes, final reply). The n-th turn of a kind uses variant n.
SCENARIOS: dict[str, list[tuple[str, str, str, str]]] = {
    "fix": [
        ("`{sym}` in {file} {bug}. Can you fix it?", "I'll read {file} first to see how `{sym}` is implemented.",
         "read file, edit fix, bash one",
         "The bug has been fixed: `{sym}` now uses `{newl}` instead of `{oldl}`, and `{one}` passes."),
        ("Fix the failing test in {test}", "Let me run {test} first to see the failure.", "bash one!, read file, edit fix, bash one",
         "Done. {test} failed because `{sym}` {bug}. I changed that line in {file} and the test passes now."),
        ("there's an error somewhere in {sym}, it {bug}. please fix", "I'll search for where `{sym}` is defined.",
         "grep defn, read file, edit fix, bash suite", "Fixed in {file}: `{oldl}` became `{newl}`. The suite passes successfully."),
        ("fix @{file}: {sym} {bug}{mention}", "The attached file shows the problem: `{oldl}`. I'll change that line.",
         "edit fix, bash one", "All set: `{oldl}` is now `{newl}` and the related tests pass."),
        ("Users report that {sym} {bug}. Look at {file} and {test}, fix the code and make sure the tests pass.",
         "I'll read {file} and {test} first.", "read file, read test, edit fix, bash one",
         "I've completed the fix. The root cause was `{oldl}` in `{sym}`; {test} passes with the new code.")],
    "runtests": [
        ("run the tests", "Running the full test suite with `{suite}`.", "bash suite", "Done. All tests pass."),
        ("Can you run the test suite and check that everything still passes?", "Running `{suite}`.", "bash suite",
         "Finished: the whole suite passes."),
        ("run only {test}", "Running {test}.", "bash one", "Done, {test} passes."),
        ("quick sanity check: do the {sym} tests still pass after that change?", "Running `{one}`.", "bash one",
         "Yes, all good. The {sym} tests complete without failures.")],
    "where": [
        ("Where is `{sym}` defined?", "I'll search the codebase for the definition of `{sym}`.", "grep defn, read file@",
         "`{sym}` is defined in `{file}` around line {line}. Its key line is `{oldl}`. Search complete."),
        ("how does {sym} work? walk me through it", "Let me find `{sym}` first.", "grep defn, read file",
         "`{sym}` lives in {file}. Signature: `{sig}`; the work happens in `{oldl}`. That completes the walkthrough."),
        ("which file has the {sym} function", "I'll grep for it.", "grep defn", "Found it: `{file}`, line {line}. Done."),
        ("find all the places that use {sym}", "I'll search for every use of `{sym}`.", "grep uses",
         "`{sym}` is defined in {file} and used in {test}. Search complete.")],
    "files": [
        ("What files are in {dir}?", "Listing {dir}.", "list dir", "Done. {dir} contains:\n{dirfiles}"),
        ("show me all the test files in this repo", "I'll glob for test files.", "glob tests", "Done. Test files:\n{testfiles}"),
        ("what's the layout of this project? I just cloned it", "I'll list the project root and read the manifest.",
         "list root, read manifest", "Done. The code is under {dir}, tests next to it; `{suite}` runs them."),
        ("list every {ext} file under {dir}", "I'll glob under {dir}.", "glob ext", "Done:\n{dirfiles}")],
    "feature": [
        ("Add {feat}.", "This takes a few steps, so I'll plan them with a todo list first.",
         "todo start, read ffile, edit feature, write nfile, bash suite, todo done",
         "I've completed {feat}: the change is in {ffile} and {nfile}, and the test suite passes."),
        ("I need {feat}; that means creating {nfile}. Make sure the tests still pass.", "I'll break this into steps first.",
         "todo start, read ffile, write nfile, edit feature, bash suite",
         "Done. {feat} is implemented in {nfile} and wired into {ffile}; tests pass."),
        ("We need {feat}. Can you implement that? Keep the change small.", "Planning the steps first.",
         "todo start, read ffile, edit feature, bash suite",
         "Finished: {feat} with a small change to {ffile}. Tests pass.")],
    "refactor": [
        ("Refactor `{sym}` in {file}: pull the validation out into a small helper",
         "I'll read {file} to see how `{sym}` is structured.",
         "read file, edit helper, edit fix, bash one", "Done. The validation in `{sym}` is now a separate helper and the tests pass."),
        ("rename {sym} to {alt} everywhere", "I'll find every use of `{sym}` first.", "grep uses, edit rename, bash suite",
         "Renamed `{sym}` to `{alt}` in every file that used it. The suite passes successfully."),
        ("{file} has gotten messy. Can you improve the naming and structure of {sym} without changing behaviour?",
         "Let me read {file}.", "read file, edit fix, bash one", "Finished the cleanup of `{sym}`: same behaviour, tests green.")],
    "tests": [
        ("Write unit tests for `{sym}` in {file}", "I'll read {file} to see what `{sym}` does.", "read file, write newtest, bash one",
         "Done. I wrote {newtest} covering `{sym}`; all tests pass."),
        ("We have no tests covering the edge cases of {sym}. Create a test file for them.",
         "Let me look at `{sym}` and the existing tests.", "read file, glob tests, write newtest, bash one",
         "Created {newtest} with edge-case tests for `{sym}`. They pass, so the task is complete."),
        ("Add a regression test to {test} for the case where {sym} {bug}", "I'll read {test} first.",
         "read test, edit regress, bash one", "Added the regression test to {test}. It passes; done.")],
    "delete": [
        ("Remove the unused `{dsym}` function from {dfile}", "I'll check that nothing references `{dsym}` first.",
         "grep dead, edit dead, bash suite", "Done. `{dsym}` is gone and the tests still pass."),
        ("Delete {dfile}, nothing imports it anymore", "Let me confirm nothing imports it.", "grep stem, bash gitrm, bash suite",
         "Done. {dfile} is removed and the suite passes."),
        ("{dsym} is dead code, get rid of it", "Checking for references to `{dsym}`.", "grep dead, edit dead, bash suite",
         "Done, `{dsym}` is removed; nothing referenced it.")],
    "deletelong": [
        ("delete the deprecated {dsym} and anything that only exists to support it, then make sure the build and tests are clean",
         "I'll check where `{dsym}` is still referenced before removing anything.",
         "grep dead, read dfile, read file, grep stem, edit dead, edit caller, bash suite, bash build",
         "Done. `{dsym}` and its helper code are gone; the build and the tests are clean."),
        ("Please remove {dsym} from {dfile} along with its callers, and check nothing else breaks",
         "Let me map out every reference to `{dsym}` first.",
         "grep dead, read dfile, read file, grep stem, edit dead, edit caller, bash suite, bash build",
         "Finished: `{dsym}` is deleted together with its last caller, and the build and tests pass.")],
    "docs": [
        ("Update {doc} to document {topic}", "I'll read {doc} first.", "read doc, edit doc", "Done. {doc} now documents {topic}."),
        ("The install section of {doc} is out of date: the build command is `{build}` now. Fix it please.", "Let me read {doc}.",
         "read doc, edit docbuild", "Done, the install section uses `{build}`."),
        ("Add a short note about upgrading {dep} to {doc}, based on {url}", "I'll fetch {url} to see what changed.",
         "webfetch, read doc, edit docdep", "Done. {doc} has an upgrade note for {dep} with a link to the changelog.")],
    "build": [
        ("run the build", "Running `{build}`.", "bash build", "The build finished successfully."),
        ("Does it still build? Run `{build}` and fix whatever breaks.", "Running `{build}` first.",
         "bash build!, read file, edit fix, bash build", "Done: the build broke in {file} at line {line}; now `{build}` passes.")],
    "explore": [
        ("Find every place that calls {sym} and tell me which callers pass unvalidated user input",
         "I'll hand the search to a subagent so it can look through the whole codebase.", "task callers",
         "Done. `{sym}` has two callers; only the one in {ffile} passes request data, and it is validated upstream."),
        ("Investigate why {test} is flaky in CI. Look at the test and its fixtures before changing anything.",
         "I'll start a subagent to investigate, then read the test myself.", "task flaky, read test",
         "Finished investigating: {test} depends on wall-clock time, which explains the flakiness. Nothing changed yet.")],
    "upgrade": [
        ("Check the release notes at {url} and tell me whether upgrading {dep} breaks anything for us",
         "I'll fetch {url} first.", "webfetch, grep dep",
         "Review complete: we only use {dep} in {file}, and none of the removed APIs, so the upgrade looks safe."),
        ("Is there anything in the {dep} changelog ({url}) we need to worry about?", "Fetching the changelog.",
         "webfetch, grep dep, read file", "Review complete: nothing in the changelog affects how {file} uses {dep}.")],
}
MIDDLE = {"bash": "Now let me run it.", "edit": "I see the problem, fixing it now.", "read": "Let me look at that file.",
          "grep": "Let me search for it.", "write": "Now the new file.", "todowrite": "Updating the todo list."}
CHAT = ["thanks! why did that happen in the first place?", "ok makes sense. is there a reason it was written that way?",
        "cool, what would you do next?"]
LOST = ["great, now commit this with a good message", "can you also open a PR for it?", "now do the same for the other modules"]

# Fake secrets for the redaction feature: obviously fake, but matching the usual detectors.
FAKE = {"openai": "sk-proj-EXAMPLEexampleEXAMPLEexample0123456789abcdefEXAMPLE",
        "bearer": "EXAMPLEtokenEXAMPLEtoken0000111122223333", "ghp": "ghp_EXAMPLE0123456789EXAMPLE0123456789ab",
        "aws": "00001| AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n00002| AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
               "00003| BACKUP_BUCKET=dev-backups-staging",
        "rsa": "00001| -----BEGIN RSA PRIVATE KEY-----\n" + "".join(
            f"0000{i}| MIIEowIBAAKCAQEAEXAMPLEKEYEXAMPLEKEYEXAMPLEKEYEXAMPLEKEYEXAMPLEK\n" for i in range(2, 6))
               + "00006| EXAMPLEKEYEXAMPLEKEY==\n00007| -----END RSA PRIVATE KEY-----"}
# Hand-written turns that carry secrets. Actions: ("read", path[, file text]), ("edit", path, old, new),
# ("bash", command, description, output).
SECRET_TURNS: dict[str, tuple[str, str, list[tuple], str]] = {
    "s_openai": ("The OpenAI smoke test in scripts/smoke_llm.py fails with a 401, can you check how it reads the key?",
                 "I'll read scripts/smoke_llm.py first.", [
                     ("read", "scripts/smoke_llm.py"),
                     ("edit", "scripts/smoke_llm.py", 'os.environ["OPENAI_KEY"]', 'os.environ["OPENAI_API_KEY"]'),
                     ("bash", f"export OPENAI_API_KEY={FAKE['openai']} && python scripts/smoke_llm.py",
                      "Run the smoke test with the key", "smoke test ok: model=gpt-4o-mini, 1 completion")],
                 "Fixed: the script read OPENAI_KEY instead of OPENAI_API_KEY. The smoke test now completes successfully."),
    "s_password": ("did the 0007 migration run on my local db?", "I'll query the local database.", [
                       ("bash", "mysql -h 127.0.0.1 -u invoices --password=hunter2secret -e 'SELECT version FROM schema_migrations "
                                "ORDER BY version DESC LIMIT 3' invoices_dev",
                        "Check applied migrations in local DB", "version\n0007\n0006\n0005")],
                   "Yes, 0007 is applied; the check is complete."),
    "s_bearer": ("the /api/notify endpoint returns 403 for the staging token, can you check the auth middleware in lib/auth.js",
                 "I'll call the endpoint and read lib/auth.js.", [
                     ("bash", f'curl -s -H "Authorization: Bearer {FAKE["bearer"]}" http://localhost:3000/api/notify',
                      "Call notify endpoint with staging token", '{"status":403,"reason":"scope notify:write missing"}'),
                     ("read", "lib/auth.js"), ("edit", "lib/auth.js", "requireScope('notify:admin')", "requireScope('notify:write')")],
                 "Done. The route required notify:admin; staging tokens carry notify:write, which is the intended scope."),
    "s_ghp": (f"The release workflow can't push tags. I exported GITHUB_TOKEN={FAKE['ghp']} locally and git push --tags works, "
              "so fix .github/workflows/release.yml", "I'll read the workflow file.", [
                  ("read", ".github/workflows/release.yml"),
                  ("edit", ".github/workflows/release.yml", "permissions:\n  contents: read", "permissions:\n  contents: write")],
              "Fixed: the job only had `contents: read`; with `contents: write` the default token can push tags. Done."),
    "s_aws": ("backups land in the wrong bucket, check scripts/backup.sh and deploy/staging.env", "I'll read both files.", [
                  ("read", "scripts/backup.sh"), ("read", "deploy/staging.env", FAKE["aws"]),
                  ("edit", "scripts/backup.sh", 'aws s3 cp "$archive" "s3://$BUCKET/"',
                   'aws s3 cp "$archive" "s3://${BACKUP_BUCKET:?}/"')],
              "Done. The script used $BUCKET, which your shell also sets; it now uses BACKUP_BUCKET from deploy/staging.env."),
    "s_rsa": ("the deploy script can't ssh to staging, check the key setup in scripts/deploy.sh",
              "I'll read scripts/deploy.sh and the key it points at.", [
                  ("read", "scripts/deploy.sh"), ("read", "keys/staging_deploy.pem", FAKE["rsa"]),
                  ("bash", "chmod 600 keys/staging_deploy.pem && "
                           "ssh -i keys/staging_deploy.pem -o BatchMode=yes deploy@staging.internal true",
                   "Fix key permissions and test ssh", "")],
              "Done. ssh refused the key because it was world-readable; after chmod 600 the connection succeeds."),
}

# The sessions, one per line: project, its user turns in order, then options. Turn kinds are the keys of
# SCENARIOS and SECRET_TURNS (s_*, with fake secrets), plus "chat" (text-only turn, never saved) and "lost"
# (last turn whose final reply was never saved). Options: "plan" / "no-agent" (agent.name plan / key dropped),
# "undefined-model" (the last turn's reply carried no provider/model: "undefined/undefined").
SESSIONS: list[list[str]] = [line.split() for line in """
invoice-api     fix runtests
invoice-api     where refactor
invoice-api     feature
invoice-api     s_openai s_password
invoice-api     tests chat delete
invoice-api     docs lost
invoice-api     build fix
scrapekit       fix                          no-agent
scrapekit       files tests
scrapekit       upgrade                      plan
scrapekit       feature runtests
scrapekit       deletelong
web-dashboard   fix tests
web-dashboard   explore                      plan
web-dashboard   feature chat build
web-dashboard   refactor runtests
web-dashboard   where                        plan
web-dashboard   delete lost
web-dashboard   docs fix
slack-notifier  s_bearer fix
slack-notifier  files where                  plan
slack-notifier  tests                        no-agent
slack-notifier  refactor
slack-notifier  feature docs
ratelimit       s_ghp runtests
ratelimit       fix refactor runtests
ratelimit       explore fix                  undefined-model
ratelimit       upgrade build
ratelimit       deletelong
ratelimit       tests lost
tomlfmt         fix chat tests
tomlfmt         where                        plan
tomlfmt         feature
tomlfmt         build fix
tomlfmt         files explore                plan
dotfiles        s_aws s_rsa
dotfiles        docs
dotfiles        docs upgrade
dotfiles        fix deletelong
dotfiles        files refactor
web-dashboard   files where                  plan
""".strip().splitlines()]
MODELS = (["anthropic/claude-sonnet-4-5"] * 5 + ["opencode/claude-sonnet-4-5"] * 2 + ["openai/gpt-4o"] * 2
          + ["anthropic/claude-opus-4-1"])
# Sessions get date slots 0..40 (3.5 days apart from T0); these slot sets pick variant, folder and gitStatus.
LEGACY_SLOTS, ARCHIVE_SLOTS, GIT_SLOTS = range(10), {3, 7, 12, 17, 22}, {5, 14, 27, 36}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_ms(text: str) -> int:
    return calendar.timegm(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timetuple()) * 1000 + int(text[-4:-1])


def clean_task(text: str) -> str:
    """The plugin's task cleaning (formats.md 1.3)."""
    lines = text.split("\n")
    if len(lines) > 1 and "Called the" in lines[1]:
        text = lines[0]
    text = re.sub(r"Called the .+ tool.*$", "", text, flags=re.S)
    return re.sub(r"<file>.*?</file>", "", text, flags=re.S).strip()


def task_ideal(raw: str) -> int:
    """Ideal tool-call count of the plugin's task type (formats.md 1.7)."""
    for pattern, ideal in (("remove|delete", 2), ("fix|error", 3), ("add|create", 4)):
        if re.search(pattern, raw.lower()):
            return ideal
    return 3


def jsnum(v: Any) -> Any:
    """Whole floats as ints, as JSON.stringify writes them."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: jsnum(x) for k, x in v.items()}
    return [jsnum(x) for x in v] if isinstance(v, list) else v


class Builder:
    """One session's project, random stream and helpers that make (tool, args, result) actions."""

    def __init__(self, idx: int, proj: str) -> None:
        self.idx, self.name, self.P, self.L = idx, proj, PROJECTS[proj], LANG[PROJECTS[proj]["lang"]]
        self.rng = random.Random(f"{SEED}:{idx}")
        self.wd = f"/home/dev/projects/{proj}"
        self.abs = self.rng.random() < 0.7  # absolute filePath args in most sessions, relative in the rest
        self.units = self.rng.sample(self.P["units"], len(self.P["units"]))
        self.now = T0  # start of the turn being built, epoch ms

    def ident(self, prefix: str, ms: int, desc: bool = False) -> str:
        """OpenCode id: 12 hex of (ms * 0x1000 + counter), bits inverted for sessions, then 14 base62."""
        n = ms * 0x1000 + self.rng.randrange(0x1000)
        return f"{prefix}_{(~n if desc else n) & 0xFFFFFFFFFFFF:012x}" + "".join(self.rng.choices(B62, k=14))

    def fields(self) -> dict[str, Any]:
        """Template fields for one turn: the next bug unit plus project facts."""
        self.units.append(u := self.units.pop(0))
        P, rng = self.P, self.rng
        tree = sorted({self.L["manifest"], P["dead"][1], P["docs"][0], P["feature"][1]} | {x.file for x in P["units"]}
                      | {x.test for x in P["units"]})
        d = dict(u._asdict(), proj=self.name, Sym=u.sym[0].upper() + u.sym[1:], testdir=u.test.rsplit("/", 1)[0],
                 base=u.test.rsplit("/", 1)[-1], oldl=u.old.split("\n")[0], newl=u.new.split("\n")[-1].strip(),
                 line=rng.randint(12, 140), n=rng.randint(4, 31), ms=rng.randint(11, 97), dir=P["dir"], ext=self.L["ext"],
                 suite=self.L["suite"], build=P["build"][0], dsym=P["dead"][0], dfile=P["dead"][1], doc=P["docs"][0],
                 topic=P["docs"][1], dep=P["dep"][0], url=P["dep"][1], feat=P["feature"][0], ffile=P["feature"][1],
                 nfile=P["feature"][2], tree=tree, stem=P["dead"][1].rsplit("/", 1)[-1].split(".")[0],
                 mod=u.file.removeprefix("src/").removesuffix(".py").replace("/", "."))
        d |= dict(dots="." * d["n"], one=self.L["one"].format(**d), newtest=self.L["newtest"].format(**d))
        d["under"] = [t for t in tree if t.startswith(P["dir"] + "/")]
        d["tests"] = [t for t in tree if fnmatch.fnmatch(t, self.L["tests"])]
        d["dirfiles"] = "\n".join(f"- `{t}`" for t in d["under"])
        d["testfiles"] = "\n".join(f"- `{t}`" for t in d["tests"])
        d["mention"] = (f'\nCalled the Read tool with the following input: {{"filePath":"{self.wd}/{u.file}"}}\n'
                        + self.read(u.file)[2])
        return d

    def path(self, rel: str) -> str:
        return f"{self.wd}/{rel}" if self.abs else rel

    def text(self, rel: str) -> str:
        """Contents of a project file, as far as the samples need them."""
        fmt = dict(pkg=rel.rsplit("/", 2)[-2] if "/" in rel and not rel.endswith("main.go") else "main", proj=self.name)
        head = self.L["head"].format(**fmt)
        for u in self.P["units"]:
            if rel == u.file:
                body = "\n".join(self.L["ind"] + x for x in u.old.split("\n"))
                return f"{head}\n\n{u.sig}\n{body}\n{self.L['end']}".rstrip()
            if rel == u.test:
                stem = u.file.rsplit(".", 1)[0]
                return self.L["test"].format(**fmt, sym=u.sym, Sym=u.sym[0].upper() + u.sym[1:], stem=stem,
                                             mod=u.file.removeprefix("src/").removesuffix(".py").replace("/", "."))
        if rel == self.L["manifest"]:
            return self.L["mtext"].format(**fmt)
        dead = f"\n\n{self.P['dead'][2]}" if rel == self.P["dead"][1] else ""
        comment = "#" if self.P["lang"] in ("py", "sh") else "//"
        return f"{head}\n\n{comment} {rel}: see {self.P['docs'][0]}{dead}"

    def read(self, rel: str, offset: int | None = None, numbered: str | None = None) -> tuple:
        args: dict[str, Any] = {"filePath": self.path(rel)} | ({"offset": offset, "limit": 40} if offset else {})
        lines = (numbered or self.text(rel)).split("\n")
        body = numbered or "\n".join(f"{i + 1:05d}| {x}" for i, x in enumerate(lines) if i + 1 >= (offset or 1))
        return ("read", args, f"<file>\n{body}\n\n(End of file - total {len(lines)} lines)\n</file>")

    def edit(self, rel: str, old: str, new: str, replace_all: bool = False) -> tuple:
        args = {"filePath": self.path(rel), "oldString": old, "newString": new} | ({"replaceAll": True} if replace_all else {})
        return ("edit", args, "Edit applied successfully.")

    def bash(self, cmd: str, desc: str, out: str) -> tuple:
        return ("bash", {"command": cmd, "description": desc}, out)

    def grep(self, pattern: str, hits: list[str], shown: str, include: bool = True) -> tuple:
        args = {"pattern": pattern} | ({"path": self.wd} if self.rng.random() < 0.5 else {})
        args |= {"include": self.L["inc"].format()} if include else {}
        body = "\n\n".join(f"{self.wd}/{h}:\n  Line {self.rng.randint(3, 120)}: {shown}" for h in hits)
        return ("grep", args, f"Found {len(hits)} matches\n{body}" if hits else "No files found")

    def todowrite(self, items: list[str], done: int) -> tuple:
        todos = [{"content": c, "status": "completed" if i < done else "in_progress" if i == done else "pending",
                  "priority": ["high", "high", "medium", "low"][i], "id": str(i + 1)} for i, c in enumerate(items)]
        return ("todowrite", {"todos": todos}, json.dumps(todos, indent=2))

    def task(self, desc: str, prompt: str, agent: str, answer: str) -> tuple:
        child = self.ident("ses", self.now + 3000, desc=True)
        return ("task", {"description": desc, "prompt": prompt, "subagent_type": agent},
                f"{answer}\n\n<task_metadata>\nsession_id: {child}\n</task_metadata>")


def _ok(b: Builder, d: dict, passed: bool = True) -> str:
    return b.L["ok" if passed else "fail"].format(**d)


STEPS = ["Add the new code", "Wire it into the existing module", "Write tests", "Run the test suite"]
ACTIONS: dict[str, Callable[[Builder, dict[str, Any]], list[tuple]]] = {  # action code -> actions
    "read file": lambda b, d: [b.read(d["file"])],
    "read file@": lambda b, d: [b.read(d["file"], offset=max(1, d["line"] - 5))],
    "read test": lambda b, d: [b.read(d["test"])],
    "read ffile": lambda b, d: [b.read(d["ffile"])],
    "read dfile": lambda b, d: [b.read(d["dfile"])],
    "read doc": lambda b, d: [b.read(d["doc"])],
    "read manifest": lambda b, d: [b.read(b.L["manifest"])],
    "edit fix": lambda b, d: [b.edit(d["file"], d["old"], d["new"])],
    "edit helper": lambda b, d: [b.edit(d["file"], d["sig"], d["sig"] + "\n" + b.L["ind"] + "_validate_input(args)")],
    "edit rename": lambda b, d: [b.edit(d["file"], d["sig"], d["sig"].replace(d["sym"], d["alt"]))] + [
        b.edit(f, d["sym"], d["alt"], replace_all=True) for f in [d["test"]] + [u.file for u in b.P["units"] if u.file != d["file"]]],
    "edit regress": lambda b, d: [b.edit(d["test"], last := b.text(d["test"]).split("\n")[-1], last + b.L["regress"].format(**d))],
    "edit caller": lambda b, d: [b.edit(d["file"], f"{b.L['ind']}{d['dsym']}(result)\n", "")],
    "edit feature": lambda b, d: [b.edit(d["ffile"], *b.P["feature"][3:])],
    "edit dead": lambda b, d: [b.edit(d["dfile"], b.P["dead"][2], "")],
    "edit doc": lambda b, d: [b.edit(d["doc"], "## Usage", f"## Configuration\n\nSee {d['topic']}.\n\n## Usage")],
    "edit docbuild": lambda b, d: [b.edit(d["doc"], "make install", d["build"])],
    "edit docdep": lambda b, d: [b.edit(d["doc"], "## Usage", f"## Upgrading {d['dep']}\n\nSee {d['url']}.\n\n## Usage")],
    "write newtest": lambda b, d: [("write", {"content": b.text(d["test"]), "filePath": b.path(d["newtest"])},
                                    "Wrote file successfully.")],
    "write nfile": lambda b, d: [("write", {"content": f"{b.L['head'].format(pkg=d['dir'].rsplit('/')[-1], proj='')}\n\n"
                                           f"{'#' if b.P['lang'] in ('py', 'sh') else '//'} {d['feat']}\n",
                                           "filePath": b.path(d["nfile"])}, "Wrote file successfully.")],
    "bash one": lambda b, d: [b.bash(d["one"], b.rng.choice(["Run the tests for this module", f"Run {d['base']}",
                                                              "Verify the change with the tests"]), _ok(b, d))],
    "bash one!": lambda b, d: [b.bash(d["one"], "Run the failing test", _ok(b, d, False))],
    "bash suite": lambda b, d: [b.bash(d["suite"], b.rng.choice(["Run the full test suite", "Run all tests"]), _ok(b, d))],
    "bash build": lambda b, d: [b.bash(d["build"], b.P["build"][1], b.P["build"][2])],
    "bash build!": lambda b, d: [b.bash(d["build"], b.P["build"][1], b.P["build"][3].format(**d))],
    "bash gitrm": lambda b, d: [b.bash(f"git rm {d['dfile']}", "Remove the unused file from git", f"rm '{d['dfile']}'")],
    "grep defn": lambda b, d: [b.grep(b.L["defn"].format(sym=d["sym"]), [d["file"]], d["sig"])],
    "grep uses": lambda b, d: [b.grep(rf"\b{d['sym']}\b", [d["file"], d["test"]], d["sig"], include=False)],
    "grep dead": lambda b, d: [b.grep(rf"\b{d['dsym']}\b", [d["dfile"]], b.P["dead"][2].split("\n")[0], include=False)],
    "grep stem": lambda b, d: [b.grep(d["stem"], [], "", include=False)],
    "grep dep": lambda b, d: [b.grep(d["dep"].split("/")[-1].replace("beautifulsoup4", "bs4"), [d["file"]], d["dep"], include=False)],
    "list dir": lambda b, d: [("list", {"path": f"{b.wd}/{d['dir']}"},
                               f"{b.wd}/{d['dir']}/\n" + "\n".join("  " + t.split("/")[-1] for t in d["under"]))],
    "list root": lambda b, d: [("list", {"path": b.wd}, f"{b.wd}/\n" + "\n".join("  " + t for t in d["tree"]))],
    "glob tests": lambda b, d: [("glob", {"pattern": b.L["tests"]}, "\n".join(f"{b.wd}/{t}" for t in d["tests"]))],
    "glob ext": lambda b, d: [("glob", {"pattern": f"**/*{d['ext']}", "path": f"{b.wd}/{d['dir']}"},
                               "\n".join(f"{b.wd}/{t}" for t in d["under"]))],
    "todo start": lambda b, d: [b.todowrite(STEPS, 0)],
    "todo done": lambda b, d: [b.todowrite(STEPS, 4)],
    "task callers": lambda b, d: [b.task(f"Find callers of {d['sym']}", f"Search {b.wd} for every call of {d['sym']}. For each "
                                         "call site report file, line and whether the argument comes from user input. Do not "
                                         "modify files.", "explore", f"{d['sym']} is called from {d['test']} and {d['ffile']}. "
                                         "Only the latter passes request data.")],
    "task flaky": lambda b, d: [b.task("Investigate flaky test", f"Read {d['test']} and its fixtures and find sources of "
                                       "nondeterminism (time, ordering, network). Report findings only.", "general",
                                       f"The test depends on wall-clock time in {d['file']}; it fails when a run crosses a "
                                       "second boundary.")],
    "webfetch": lambda b, d: [("webfetch", {"url": d["url"], "format": "markdown"},
                               f"# {d['dep']}\n\n## Breaking changes\n\n- Deprecated APIs removed\n- New default timeouts")],
}


def build_turn(b: Builder, kind: str, n: int) -> tuple[str, str, list[tuple], str]:
    """(raw user message, first reply, actions, final reply) for the n-th turn of this kind."""
    if kind in SECRET_TURNS:
        task, plan, specs, resp = SECRET_TURNS[kind]
        make = {"read": lambda p, body=None: b.read(p, numbered=body), "edit": b.edit, "bash": b.bash}
        return task, plan, [make[s[0]](*s[1:]) for s in specs], resp
    task, plan, codes, resp = SCENARIOS[kind][n % len(SCENARIOS[kind])]
    d = b.fields()
    return task.format(**d), plan.format(**d), [a for c in codes.split(", ") for a in ACTIONS[c](b, d)], resp.format(**d)


def make_session(idx: int, row: list[str], slot: int, seen: dict[str, int]) -> tuple[str, dict[str, Any]]:
    """One dspy file from a SESSIONS row: (path relative to the output folder, JSON object).

    `slot` is the session's date slot; `seen` counts the turns built so far per kind (picks the variant)."""
    proj, kinds = row[0], [w for w in row[1:] if w in SCENARIOS or w in SECRET_TURNS or w in ("chat", "lost")]
    opts = set(row[1:]) - set(kinds)
    b = Builder(idx, proj)
    rng, legacy = b.rng, slot in LEGACY_SLOTS
    start = T0 + slot * 35 * DAY // 10 + rng.randint(0, 9 * 3_600_000)
    sid = b.ident("ses", start, desc=True)
    quirk, drop_first_read = rng.random() < 0.5, rng.random() < 0.3  # reply-before-user order; unfinished first read
    model = rng.choice(MODELS)
    agent = None if "no-agent" in opts else "plan" if "plan" in opts else "build"
    stored: list[dict[str, Any]] = []  # messages in plugin arrival order
    examples: list[dict[str, Any]] = []
    step, t, cache, read_seen, modified = 0, start, rng.randint(9000, 16000), False, set()

    def message(text: str, created: int) -> dict[str, Any]:
        nonlocal cache
        cache += rng.randint(300, 2600)
        claude = "claude" in model
        tok = dict(input=rng.randint(2, 40) if claude else rng.randint(1500, 6000), output=rng.randint(40, 700),
                   read=cache if claude else cache // 2, write=rng.randint(150, 3000) if claude else 0)
        return dict(role="assistant", content=text, ts=created + rng.randint(100, 900), id=b.ident("msg", created), tok=tok)

    for k, kind in enumerate(kinds):
        user = dict(role="user", ts=t + rng.randint(100, 400), id=b.ident("msg", t))  # ts: plugin-side arrival
        if kind in ("chat", "lost"):  # no tool calls / no final reply: never saved, but still stored
            user["content"] = (CHAT if kind == "chat" else LOST)[idx % 3]
            first = message("It comes from the original implementation, which assumed the input was always valid."
                            if kind == "chat" else "Sure, let me check the current state first.", t + rng.randint(600, 1200))
            if quirk:
                user["ts"] = first["ts"] + rng.randint(50, 400)
            stored += [first, user] if quirk else [user, first]
            t += rng.randint(30_000, 120_000)
            continue
        b.now = t
        raw, plan, acts, resp = build_turn(b, kind, seen.get(kind, 0))
        seen[kind] = seen.get(kind, 0) + 1
        assert any(p in resp.lower() for p in DONE), resp  # else the plugin would not have saved the turn
        user["content"] = raw
        groups: list[list[tuple]] = []  # one assistant message per group; some reads/greps run in parallel
        for a in acts:
            parallel = groups and a[0] in ("read", "grep") and groups[-1] == [groups[-1][0]] and groups[-1][0][0] == a[0]
            groups[-1].append(a) if parallel and rng.random() < 0.5 else groups.append([a])
        cur, msgs, calls = t + rng.randint(1800, 4500), [], []
        for gi, group in enumerate(groups):
            text = plan if gi == 0 else rng.choice(["", MIDDLE.get(group[0][0], "")])
            msgs.append(message(text, max(t + 600, cur - rng.randint(900, 1600))))
            for tool, args, result in group:
                step += 1
                call = dict(step=step, tool=tool, callID="toolu_01" + "".join(rng.choices(B62, k=22)), args=args, timestamp=iso(cur))
                if not (tool == "read" and not read_seen and drop_first_read and k == 0):  # after-hook not run yet
                    call |= dict(result=result, success=not ("error" in result.lower() or "failed" in result.lower()))
                read_seen |= tool == "read"
                calls.append(call)
                cur += rng.randint(40, 300)
            cur += rng.randint(1500, 9000)
        msgs.append(final := message(resp, cur))
        end = cur + rng.randint(2500, 8000)
        if quirk:
            user["ts"] = msgs[0]["ts"] + rng.randint(50, 400)
        history = stored + msgs[:1] if quirk else list(stored)  # quirk: own first reply stored before the user message
        stored += [msgs[0], user, *msgs[1:]] if quirk else [user, *msgs]
        turn_msgs = msgs[1:] if quirk else msgs
        tok = {key: sum(m["tok"][key] for m in turn_msgs) for key in ("input", "output", "read", "write")}
        files = {c["args"]["filePath"] for c in calls if c["tool"] in ("edit", "write")}
        files |= {"bash-delete" for c in calls if c["tool"] == "bash" and "rm" in c["args"]["command"]}
        modified |= {f.removeprefix(b.wd + "/") for f in files if f != "bash-delete"}
        secs = (end - t) / 1000
        metrics: dict[str, Any] = dict(
            lspErrorsCleared=False, filesModified=len(files), timeToCompletion=secs, toolCallCount=len(calls),
            tokenCost=dict(input=tok["input"], output=tok["output"], cache=dict(read=tok["read"], write=tok["write"])))
        if not legacy:
            metrics["cacheHitRate"] = tok["read"] / (tok["input"] + tok["read"]) if tok["input"] + tok["read"] else 0
        undefined = "undefined-model" in opts and k == len(kinds) - 1
        agent_info = ({"name": agent} if agent else {}) | dict(
            model="undefined/undefined" if undefined else model, temperature=0,
            promptTokens=0 if undefined else final["tok"]["input"], completionTokens=0 if undefined else final["tok"]["output"])
        examples.append({
            "input": {"task": clean_task(raw), "context": None, "conversationHistory": [
                dict(role=m["role"], content=m["content"][:500], timestamp=iso(m["ts"])) for m in history]},
            "actions": calls,
            "output": {"response": resp, "finalMessage": final["id"]},
            "outcome": dict(success=True, taskCompleted=True, metrics=metrics, evaluation=dict(
                correctness=1, efficiency=min(1.0, max(0.1, task_ideal(raw) / len(calls))),
                minimalEdits=min(1.0, 3 / len(files)) if files else 1)),
            "agent": agent_info,
            "metadata": dict(timestamp=iso(end + rng.randint(50, 400)), sessionId=sid, duration=secs, messageCount=1 + len(turn_msgs)),
        })
        t = end + rng.randint(20_000, 240_000)

    context = project_context(b, legacy, slot, kinds[0], modified)  # collected again at every save: end-of-work state
    for ex in examples:
        ex["input"]["context"] = context
    last = max([m["ts"] for m in stored] + [iso_ms(ex["metadata"]["timestamp"]) for ex in examples])
    generated = iso(last + rng.randint(200, 4000))  # time of the last save
    n_calls = sum(len(ex["actions"]) for ex in examples)
    top: dict[str, Any] = dict(session=sid, generated=generated, totalExamples=len(examples))
    if legacy:  # one outcome for the whole session
        top["outcome"] = session_outcome(examples, modified)
    else:
        top |= dict(totalTurns=len(kinds), successfulTurns=len(examples), overallSuccess=True, totalToolCalls=n_calls)
    top["examples"] = examples
    return ("archive/2025-q3/" if slot in ARCHIVE_SLOTS else "") + f"dspy-{sid}.json", top


def project_context(b: Builder, legacy: bool, slot: int, first_kind: str, modified: set[str]) -> dict[str, Any]:
    """ProjectContext as the plugin collects it after the work (formats.md 1.5); legacy files use the old key order."""
    relevant = b.P.get("relevant")
    diag: dict[str, list] = {"errors": [], "warnings": []}
    if legacy and b.idx % 2 == 0:
        msg, sev = LSP[b.P["lang"]]
        diag[sev + "s"].append({"file": b.P["units"][0].file, "line": 10 + b.idx, "message": msg, "severity": sev})
    git = {"branch": "main" if b.idx % 3 else f"wip/{first_kind}-{b.units[0].sym.lower()}", "uncommittedChanges": len(modified),
           "status": "".join(f" M {f}\n" for f in sorted(modified))} if slot in GIT_SLOTS else None
    parts = dict(workingDirectory=b.wd, projectType="javascript" if relevant else None,
                 relevantFiles=(relevant + ["node_modules/" + p for p in NODE_MODULES])[:20] if relevant else [],
                 lspDiagnostics=diag, gitStatus=git, fileCount=b.P["files"] + b.rng.randint(0, 40))
    order = ("workingDirectory", "projectType", "relevantFiles", "lspDiagnostics", "gitStatus", "fileCount") if legacy else (
        "workingDirectory", "relevantFiles", "lspDiagnostics", "fileCount", "projectType", "gitStatus")
    return {key: parts[key] for key in order if parts[key] is not None}


def session_outcome(examples: list[dict[str, Any]], modified: set[str]) -> dict[str, Any]:
    """The legacy variant's single file-level OutcomeMetrics, summed over the saved turns."""
    ms = [ex["outcome"]["metrics"] for ex in examples]
    n_calls = sum(m["toolCallCount"] for m in ms)
    return dict(success=True, taskCompleted=True, metrics=dict(
        lspErrorsCleared=False, filesModified=len(modified), timeToCompletion=round(sum(m["timeToCompletion"] for m in ms), 3),
        toolCallCount=n_calls, tokenCost={key: sum(m["tokenCost"][key] for m in ms) for key in ("input", "output")} | {
            "cache": {key: sum(m["tokenCost"]["cache"][key] for m in ms) for key in ("read", "write")}}),
        evaluation=dict(correctness=1, efficiency=min(1.0, max(0.1, task_ideal(examples[0]["input"]["task"]) / n_calls)),
                        minimalEdits=min(1.0, 3 / len(modified)) if modified else 1))


def generate() -> dict[str, bytes]:
    """All sample files as {relative path: file bytes}, sorted by path."""
    slots = random.Random(SEED).sample(range(len(SESSIONS)), len(SESSIONS))
    seen: dict[str, int] = {}
    files = {}
    for idx, row in enumerate(SESSIONS):
        rel, obj = make_session(idx, row, slots[idx], seen)
        files[rel] = json.dumps(jsnum(obj), indent=2, ensure_ascii=False).encode()  # JSON.stringify(x, null, 2)
    return dict(sorted(files.items()))


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT
    files = generate()
    tools: dict[str, int] = {}
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        for ex in json.loads(data)["examples"]:
            for a in ex["actions"]:
                tools[a["tool"]] = tools.get(a["tool"], 0) + 1
    legacy = sum("outcome" in json.loads(data) for data in files.values())
    print(f"{len(files)} files ({len(files) - legacy} current, {legacy} legacy), {sum(map(len, files.values()))} bytes -> {out}")
    print("tool calls:", ", ".join(f"{k}={v}" for k, v in sorted(tools.items())))
    others = sorted(str(p.relative_to(out)) for p in out.rglob("dspy-*.json") if str(p.relative_to(out)) not in files)
    if others:
        print("left alone (not written by this script):", *others, sep="\n  ")
    rare = [t for t in TOOLS if tools.get(t, 0) < 2]
    assert not rare, f"tools used fewer than twice: {rare}"
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
