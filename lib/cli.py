"""Command line: `python -m lib.cli validate | train | clear-cache` (run from the project root).

validate  checks params.yaml, the session logs and both models before anything is spent;
          exits 1 on any problem, printing each with its fix.
train     runs the pipeline as a DVC experiment (`dvc exp run -S ...`) with overrides that are
          validated first, then prints the test-split summary from metrics/ (and, with
          --output-dir, copies the exported files there).
clear-cache  empties the project's model-call cache (.cache/dspy).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from lib.config import params as P
from lib.core.errors import UserError
from lib.models.settings import cache_dir, check_reachable, local_model_path
from lib.models import engine
from lib.config.params import ROOT, ParamsError

# A DVC experiment name becomes a git ref, so it must be a valid ref component.
_EXP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_LISTED = 20  # rejected files listed by validate before "... and N more"


# ------------------------------------------------------------------------------------ validate

class Report:
    """What validate found: lines to show, and the problems among them."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.problems: list[str] = []

    def ok(self, text: str) -> None:
        self.out(f"ok       {text}")

    def note(self, text: str) -> None:
        self.out(f"note     {text}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.out(f"PROBLEM  {text}")


def _resolve(path: str) -> Path:
    """Paths in params.yaml are relative to the project root (where DVC runs the stages)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p


def _raw_params(path: Path) -> dict[str, Any]:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def validate(params_file: Path = P.PARAMS_FILE, overrides: dict[str, Any] | None = None,
             out: Callable[[str], None] = print, source: str | None = None) -> list[str]:
    """Check params, logs and models; print each finding; return the problems (empty = ready to run).

    `overrides` (dotted keys) are applied over `params_file`; `source` names where they came from.
    Every check runs even after a failed one, so a single run lists every problem.
    """
    report = Report(out)
    label = _shown(params_file) + (f" with {source}" if source else "")
    params = _raw_params(params_file)
    if not params:
        report.problem(f"{_shown(params_file)}: missing, unreadable or not a YAML mapping; "
                       f"run from the project root, or restore it from git")
    problems_before = len(report.problems)
    for key, value in (overrides or {}).items():
        try:
            P.set_dotted(params, key, value)
        except ParamsError as exc:
            report.problem(f"{source or 'override'}: {exc}")
    if params:
        try:
            P.validate(params, source=label)
        except ParamsError as exc:
            report.problem(str(exc))
        if len(report.problems) == problems_before:
            report.ok(f"{label}: every key present and valid")
    _check_logs(params.get("data"), report)
    _check_models(params.get("models"), report)
    if report.problems:
        out(f"\n{len(report.problems)} problem(s); fix them and run `python -m lib.cli validate` again.")
    else:
        out("\nready: `dvc repro` (or `python -m lib.cli train`) can run.")
    return report.problems


def _check_logs(data: Any, report: Report) -> None:
    from lib.data.sources import read_all
    from lib.data.sources.common import Rejected

    if not isinstance(data, dict) or not isinstance(data.get("session_logs_dir"), str):
        report.problem("data.session_logs_dir: missing; set it to the folder holding your session logs")
        return
    logs = data["session_logs_dir"]
    root = _resolve(logs)
    if not root.exists():
        report.problem(f"data.session_logs_dir: {logs} does not exist; point it at your session logs "
                       f"(e.g. <project>/.opencode-logs) in params.yaml")
        return
    extra = []
    db = data.get("opencode_db")
    if isinstance(db, str) and db:
        if _resolve(db).is_file():
            extra.append(_resolve(db))
        else:
            report.problem(f"data.opencode_db: {db} is not a file; point it at opencode.db "
                           f"(usually ~/.local/share/opencode/opencode.db) or set it to null")
    files: dict[str, list[str]] = {}  # input -> rejection reasons
    sessions = 0
    for rel, item in read_all(root, extra):  # reads only; nothing is written
        reasons = files.setdefault(rel, [])
        if isinstance(item, Rejected):
            reasons.append(item.reason)
        else:
            sessions += 1
    bad = {rel: reasons for rel, reasons in files.items() if reasons}
    summary = (f"{logs}: {len(files)} input file(s), {len(files) - len(bad)} pass their schemas, "
               f"{len(bad)} rejected; {sessions} session(s)")
    if not files or sessions == 0:
        report.problem(f"{summary}. Add session logs there (the session-logger plugin writes "
                       f"<project>/.opencode-logs/dspy-*.json), or fix data.session_logs_dir")
    elif bad and data.get("strict"):
        report.problem(f"{summary}; data.strict is true, so parse will fail. Fix or move these files, "
                       f"or set data.strict: false to skip them")
    elif bad:
        report.note(f"{summary}; parse will skip the rejected ones (data.strict: false)")
    else:
        report.ok(summary)
    for rel in sorted(bad)[:_MAX_LISTED]:
        report.out(f"           {rel}: {bad[rel][0]}")
    if len(bad) > _MAX_LISTED:
        report.out(f"           ... and {len(bad) - _MAX_LISTED} more")


def _check_models(models: Any, report: Report) -> None:
    probed: dict[str, Any] = {}  # the engine is proven once, fresh, for every local role
    for role in ("student", "teacher"):
        cfg = models.get(role) if isinstance(models, dict) else None
        if not isinstance(cfg, dict) or not {"provider", "model"} <= set(cfg):
            report.problem(f"models.{role}: missing or incomplete; see the models section of params.yaml")
            continue
        if cfg["provider"] == "local":
            if not probed:
                try:
                    probed["found"] = engine.probe(local_model_path())
                except UserError as exc:
                    probed["error"] = exc
            if "error" in probed:
                report.problem(f"models.{role}: {probed['error']}")
                continue
            try:
                weights = local_model_path(cfg, fetch_missing=False)
            except UserError as exc:
                report.problem(f"models.{role}: {exc}")
                continue
            report.ok(f"models.{role}: local {cfg['model']} ({weights.name}); the engine decoded "
                      f"{probed['found'].tokens} tokens in a child process ({engine.build_text()})")
            continue
        try:
            check_reachable(role, cfg, root=ROOT)
        except UserError as exc:
            report.problem(str(exc))
        except Exception as exc:  # a malformed entry (already reported by the params check) must not crash
            report.problem(f"models.{role}: cannot be checked ({type(exc).__name__}: {exc}); fix the entry")
        else:
            where = {"local": "embedded model loads", "openai": "API key found", "anthropic": "API key found"}
            report.ok(f"models.{role}: {cfg['provider']} {cfg['model']}: "
                      f"{where.get(cfg['provider'], 'server answers and serves the model')}")


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------- train

def flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested params -> (dotted key, leaf value); lists are leaves."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten(value, dotted + ".")
        else:
            yield dotted, value


def hydra_value(value: Any) -> str:
    """A value as DVC's `-S key=value` grammar reads it (strings quoted, so ':' and '/' are safe)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    # Backslashes are literal except before a quote or at the end, where they must be doubled.
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("'", "\\'") + "'"


def overrides_from(params_file: Path | None, optimizer: str | None = None,
                   student_model: str | None = None) -> dict[str, Any]:
    """Dotted-key overrides of params.yaml: a --params file's values first, then the options."""
    overrides: dict[str, Any] = {}
    if params_file is not None:
        try:
            tree = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UserError(f"--params {params_file}: cannot be read ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise UserError(f"--params {params_file}: not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise UserError(f"--params {params_file}: expected a mapping like params.yaml "
                            f"(e.g. `optimization: {{optimizer: bootstrap}}`)")
        overrides.update(flatten(tree))
    if optimizer is not None:
        overrides["optimization.optimizer"] = optimizer
    if student_model is not None:
        overrides["models.student.model"] = student_model
    return overrides


def dvc_command(overrides: dict[str, Any], name: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "dvc", "exp", "run"]
    if name:
        cmd += ["--name", name]
    for key, value in overrides.items():
        cmd += ["-S", f"{key}={hydra_value(value)}"]
    return cmd


def _replay_rows(root: Path) -> list[tuple[str, str]]:
    """The replay result per student (as OpenCode sends it): OpenCode's default prompt vs the exported agent."""
    try:
        report = json.loads((root / "metrics" / "replay.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [("replay", "not run (metrics/replay.json missing)")]
    rows = []
    for student, r in sorted((report.get("students") or {}).items()):
        default, ours, diff = r["opencode_default"], r["exported"], r["difference"]
        lo, hi = diff["ci95"]
        rows.append((f"replay, {student}", f"OpenCode default {default['score']:.3f} -> exported "
                     f"{ours['score']:.3f} ({diff['absolute']:+.3f}, 95% CI {lo:+.3f} .. {hi:+.3f}; "
                     f"{ours['n']} steps as OpenCode sends them)"))
    return rows


def summary(root: Path = ROOT) -> str:
    """The test-split results of the last run, as a small table (scores 0-1)."""
    def load(name: str) -> dict[str, Any]:
        path = root / "metrics" / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"metrics/{name} not found; the run did not finish (see the output above)") from None

    base, opt = load("baseline.json"), load("optimized.json")
    # Usage lives beside the scores, in files a re-run may change (calls vs cache hits).
    usage = [load(name).get("lm_usage", {}).get("total", {})
             for name in ("baseline_usage.json", "optimized_usage.json")]
    calls = sum(int(u.get("calls") or 0) for u in usage)
    hits = sum(int(u.get("cache_hits") or 0) for u in usage)
    prompt = sum(int(u.get("prompt_tokens") or 0) for u in usage)
    completion = sum(int(u.get("completion_tokens") or 0) for u in usage)
    cost = sum(float(u.get("cost") or 0) for u in usage)
    gain = opt.get("improvement") or {}
    rel = gain.get("relative")
    ci = opt.get("ci95") or [None, None]
    rows = [
        ("test examples", str(opt.get("n", "?"))),
        ("baseline score", f"{base['score']:.3f}"),
        ("optimized score", f"{opt['score']:.3f}"),
        ("improvement", f"{gain.get('absolute', opt['score'] - base['score']):+.3f}"
                        + (f" ({rel:+.1%})" if isinstance(rel, (int, float)) else "")),
        ("95% CI", f"{ci[0]:+.3f} .. {ci[1]:+.3f}" if None not in ci else "n/a"),
        ("optimizer", f"{opt.get('optimizer', '?')} ({opt.get('demos', 0)} demos)"),
        ("LM calls", f"{calls} ({hits} served from cache)"),
        ("tokens", f"{prompt + completion} ({prompt} prompt + {completion} completion)"),
        ("cost", f"${cost:.4f}"),
    ]
    rows += _replay_rows(root)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append(f"{'prompts'.ljust(width)}  outputs/prompts/ (see its USAGE_GUIDE_*.md)")
    return "\n".join(lines)


PROMPTS_DIR = ROOT / "outputs" / "prompts"


def output_dir(path: Path | None) -> Path | None:
    """Check (and create) --output-dir before the run: a folder outside the pipeline's own outputs."""
    if path is None:
        return None
    target = _resolve(str(path)).resolve()
    outputs = (ROOT / "outputs").resolve()
    if target == outputs or outputs in target.parents:
        raise UserError(f"--output-dir {path}: the pipeline rewrites outputs/ on every run; choose a folder "
                        f"outside it, e.g. --output-dir ~/my-project/.opencode/prompts")
    if target.exists() and not target.is_dir():
        raise UserError(f"--output-dir {path}: is a file; give a folder (it is created if missing)")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output-dir {path}: cannot create it ({exc.strerror or exc}); "
                        f"choose a folder you can write to") from None
    return target


def copy_prompts(target: Path, source: Path = PROMPTS_DIR) -> list[str]:
    """Copy the exported files into `target` (same names; other files there are left alone)."""
    if not source.is_dir():
        raise UserError(f"{_shown(source)} not found; the export stage did not run (see the output above)")
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    for rel in files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target / rel)
    return [str(rel) for rel in files]


def train(args: argparse.Namespace) -> int:
    if args.experiment_name is not None and not _EXP_NAME.match(args.experiment_name):
        print(f"error: --experiment-name {args.experiment_name!r}: use letters, digits, '.', '_' or '-', "
              f"starting with a letter or digit (it becomes a git ref)", file=sys.stderr)
        return 1
    try:
        overrides = overrides_from(args.params, args.optimizer, args.student_model)
        P.load(P.PARAMS_FILE, overrides)  # every override is checked before DVC starts anything
        target = output_dir(args.output_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cmd = dvc_command(overrides, args.experiment_name)
    print("running: dvc " + " ".join(cmd[3:]), flush=True)
    # The stages run `python -m stages.X`: put this interpreter's folder first so they use this virtualenv.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if rc != 0:
        print(f"error: `dvc exp run` failed (exit {rc}); see its output above", file=sys.stderr)
        return rc
    try:
        print("\n" + summary(ROOT))
        if target is not None:
            copied = copy_prompts(target)
            print(f"\nexported files copied to {target}: {', '.join(copied)}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\ncompare runs: dvc exp show   |   plots: dvc plots show")
    return 0


# --------------------------------------------------------------------------------- clear-cache

def clear_cache(path: Path) -> tuple[int, int]:
    """Delete everything inside `path` (the folder stays); returns (files, bytes) removed."""
    if not path.is_dir():
        return 0, 0
    files = size = 0
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            files += 1
            size += item.stat().st_size
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return files, size


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def clear(_: argparse.Namespace) -> int:
    path = cache_dir()
    files, size = clear_cache(path)
    where = _shown(path)
    if files == 0:
        print(f"model cache {where} is already empty")
    else:
        print(f"removed {files} file(s), {_human(size)}, from the model cache {where}; "
              f"the next run calls the models again")
    return 0


# ---------------------------------------------------------------------------------------- main

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lib.cli", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    params_help = ("YAML file laid out like params.yaml (all of it or any part); its values override "
                   "params.yaml for this command (--config is another name for it)")
    v = sub.add_parser("validate", help="check params, session logs and models; exit 1 on any problem")
    v.add_argument("--params", "--config", dest="params", type=Path, help=params_help)
    t = sub.add_parser("train", help="run the pipeline as a DVC experiment and print the results")
    t.add_argument("--experiment-name", "-n", help="name of the DVC experiment")
    t.add_argument("--optimizer", help="optimization.optimizer for this run, e.g. bootstrap")
    t.add_argument("--student-model", help="models.student.model for this run, e.g. qwen2.5-coder:1.5b")
    t.add_argument("--params", "--config", dest="params", type=Path, help=params_help)
    t.add_argument("--output-dir", type=Path,
                   help="also copy the exported OpenCode files (outputs/prompts/) into this folder after the run")
    sub.add_parser("clear-cache", help="empty the model-call cache (.cache/dspy)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "validate":
        try:
            overrides = overrides_from(args.params)
        except UserError as exc:
            print(f"PROBLEM  {exc}\n\n1 problem(s); fix it and run `python -m lib.cli validate` again.")
            return 1
        source = f"--params {args.params}" if args.params else None
        return 1 if validate(P.PARAMS_FILE, overrides, source=source) else 0
    if args.command == "train":
        return train(args)
    return clear(args)


if __name__ == "__main__":
    raise SystemExit(main())
