"""Load and validate params.yaml. Every key's meaning is documented in params.yaml itself.

Validation happens here, once, before any stage does work or calls a model: the
schema (schemas/params.schema.json) checks keys, types and ranges; `_check_semantics`
checks what a schema cannot (ratios summing to 1, date order).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import yaml

from lib.config import custom_metric
from lib.core.errors import UserError
from lib.core.schema import schema_errors

ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = ROOT / "params.yaml"


class ParamsError(UserError):
    """params.yaml is wrong; the message lists every problem with its key and a fix."""


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (dotted keys, YAML values, as `dvc exp run -S` takes them) -> overrides for `load`."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set {item!r}: write KEY=VALUE, e.g. optimization.knn.k=[3]")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ParamsError(f"--set {item!r}: the value is not YAML ({exc})") from None
    return out


def load(path: str | Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read params.yaml (plus dotted-key overrides) and validate it. Raises ParamsError."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the project root, or pass --params FILE)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    for key, value in (overrides or {}).items():
        set_dotted(params, key, value)
    validate(params, source=str(path))
    return params


def set_dotted(params: dict[str, Any], dotted: str, value: Any) -> None:
    """Set params['a']['b'] for 'a.b'; the key must already exist (typos are errors)."""
    node = params
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ParamsError(f"override {dotted}: no section {part!r} in params.yaml")
        node = node[part]
    if parts[-1] not in node:
        raise ParamsError(f"override {dotted}: unknown key {parts[-1]!r} (known: {', '.join(sorted(node))})")
    node[parts[-1]] = value


def validate(params: Any, source: str = "params.yaml") -> None:
    problems = schema_errors(params, "params.schema.json")
    if not problems:
        problems = _check_semantics(params)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ParamsError(f"{source} is invalid ({len(problems)} problem(s)):\n{lines}")


def _check_semantics(p: dict[str, Any]) -> list[str]:
    problems = []
    d = p["data"]
    total = d["train_split"] + d["val_split"] + d["test_split"]
    if abs(total - 1.0) > 1e-6:
        problems.append(
            f"data.train_split + val_split + test_split = {total:g}; they must sum to 1 "
            f"(e.g. 0.6 / 0.2 / 0.2)"
        )
    if d["test_split"] <= 0:
        problems.append("data.test_split: must be > 0, scores are reported on the test split")
    dates = {}
    for key in ("since", "until"):
        value = p["sources"][key]
        if value is not None:
            try:
                dates[key] = _dt.date.fromisoformat(value)
            except ValueError:
                problems.append(f"sources.{key}: {value!r} is not a date; write YYYY-MM-DD")
    if "since" in dates and "until" in dates and dates["since"] > dates["until"]:
        problems.append("sources.since is after sources.until: no session can match")
    mipro = p["optimization"]["mipro"]
    manual = [mipro["num_candidates"], mipro["num_trials"]]
    if mipro["auto"] is None and None in manual:
        problems.append("optimization.mipro: auto is null, so set both num_candidates and num_trials "
                        "(e.g. 4 and 8), or set auto: light")
    if mipro["auto"] is not None and manual != [None, None]:
        problems.append(f"optimization.mipro: auto: {mipro['auto']} sets the search size; set num_candidates "
                        f"and num_trials to null, or auto to null to use them")
    if p["optimization"]["metric"]:
        wrong = custom_metric.problem(p["optimization"]["metric"])  # imports it: the first call must not fail
        if wrong:
            problems.append(wrong)
        elif p["optimization"]["select_on"] == "replay":
            problems.append("optimization.metric: your metric scores the offline answer, but optimization.select_on "
                            "is replay (selection on the replay score); set select_on: offline to select with "
                            "your metric, or set metric: null")
    if not any(p["replay"]["metric_weights"].values()):
        problems.append("replay.metric_weights: all weights are 0; give at least one a positive weight")
    if "short_tools" in p["export"]["formats"]:  # a format until the choice could be made on val
        problems.append("export.formats: short_tools is now export.tool_descriptions: short (or auto, to let the "
                        "replay stage choose on val); remove it from formats")
    disabled = p["export"]["disable_tools"]
    if isinstance(disabled, list):
        from lib.tools import shape  # OpenCode's own tool list, as captured from its requests

        unknown = sorted(set(disabled) - set(shape.tool_names()))
        if unknown:
            problems.append(f"export.disable_tools: {', '.join(unknown)} not among OpenCode's tools "
                            f"({', '.join(shape.tool_names())})")
        elif set(disabled) >= set(shape.tool_names()):
            problems.append("export.disable_tools: every tool is disabled; the agent could do nothing")
    if not any(p["optimization"]["metric_weights"].values()):
        problems.append("optimization.metric_weights: all weights are 0; give at least one a positive weight")
    roles = [(f"models.{role}", p["models"][role]) for role in ("teacher", "student")]
    roles += [(f"replay.students[{i}]", m) for i, m in enumerate(p["replay"]["students"])]
    for role, m in roles:
        if m.get("model_path") and m["provider"] != "local":
            problems.append(f"{role}.model_path: only provider local loads a GGUF file; set it to null")
        if m["provider"] == "local" and (m["api_base"] or m["api_key_env"]):
            problems.append(
                f"{role}: provider local runs the embedded model in-process, so api_base and "
                f"api_key_env do not apply; set them to null, or choose provider openai-compatible / ollama"
            )
        if m["provider"] == "openai-compatible" and not m["api_base"]:
            problems.append(
                f"{role}.api_base: provider openai-compatible needs the server address, "
                f"e.g. http://localhost:8000/v1"
            )
    for i, m in enumerate(p["live"]["models"]):
        role = f"live.models[{i}]"
        if m["provider"] == "local":
            if bool(m.get("model")) == bool(m.get("model_path")):
                problems.append(f"{role}: provider local takes either model (a catalog name, e.g. "
                                f"qwen2.5-coder-0.5b) or model_path (a GGUF file), not both or neither")
            if m.get("api_base") or m.get("api_key_env"):
                problems.append(f"{role}: provider local serves the embedded model itself; set api_base and "
                                f"api_key_env to null")
        elif not m.get("api_base") or not m.get("model"):
            problems.append(f"{role}: provider {m['provider']} needs model and api_base (your server, e.g. "
                            f"http://localhost:11434 for Ollama)")
    return problems
