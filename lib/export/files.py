"""Saved program + test metrics -> the files OpenCode reads (agent config, markdown agent, instructions).

An OpenCode agent `prompt` replaces the built-in provider prompt entirely (only the environment
block and instruction files are added to it), so the exported prompt carries everything the model
needs: the optimized instructions, guidance for the tools it will call, and a few short worked
examples taken from the program's demonstrations. Demonstrations are never dumped raw: paths
are made relative to the session's project, and a demo that still holds an absolute path, a
redacted secret, a cut-off label or an OpenCode substitution is left out.

Everything written here is a function of the inputs (no clock), so `dvc repro` is reproducible.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lib.core.errors import UserError
from lib.opencode import plugin, short_tools
from lib.opencode.report import text_call_note
from lib.scoring.metric import COMPONENTS
from lib.opencode.agent import ExportSettings, ModelTarget, Program, agent_entry, agent_name, model_slug, \
    opencode_target, plugin_files

FORMATS = ("agent_config", "instructions", "template", "markdown_agent", "usage_guide", "plugin")
SCHEMA_URL = "https://opencode.ai/config.json"


# ------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Scores:
    """Test-split results the exported files quote (all scores 0-1)."""

    baseline: float
    optimized: float
    n: int
    optimizer: str
    demos: int
    ci95: tuple[float, float] | None = None
    baseline_components: dict[str, float] = field(default_factory=dict)
    optimized_components: dict[str, float] = field(default_factory=dict)
    replay: dict[str, Any] | None = None  # the main student's entry of metrics/replay.json
    live: list[str] = field(default_factory=list)  # a sentence per model of metrics/live.json (opt-in stage)

    @property
    def absolute(self) -> float:
        return self.optimized - self.baseline


def load_scores(baseline: dict[str, Any], optimized: dict[str, Any], replay: dict[str, Any] | None = None,
                live: list[str] | None = None) -> Scores:
    """Scores from metrics/baseline.json and metrics/optimized.json; both must be 0-1 numbers."""
    for name, report in (("metrics/baseline.json", baseline), ("metrics/optimized.json", optimized)):
        score = report.get("score") if isinstance(report, dict) else None
        if not isinstance(score, (int, float)) or not 0 <= score <= 1:
            raise UserError(f"{name}: 'score' must be a number from 0 to 1, found {score!r}; "
                            f"re-create it with `dvc repro`")
    ci = optimized.get("ci95")
    return Scores(
        baseline=float(baseline["score"]), optimized=float(optimized["score"]),
        n=int(optimized.get("n") or baseline.get("n") or 0),
        optimizer=str(optimized.get("optimizer") or "unknown"),
        demos=int(optimized.get("demos") or 0),
        ci95=(float(ci[0]), float(ci[1])) if isinstance(ci, list) and len(ci) == 2 else None,
        baseline_components=_numbers(baseline.get("components")),
        optimized_components=_numbers(optimized.get("components")),
        replay=replay,
        live=list(live or []),
    )


def _numbers(value: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (value or {}).items() if isinstance(v, (int, float))}


def newest_session_date(sessions: Iterable[dict[str, Any]]) -> str | None:
    """ISO date (UTC) of the newest session or turn in data/parsed/sessions.jsonl rows; None if unknown."""
    newest = None
    for s in sessions:
        times = [s.get("time_created")] + [t.get("time_start") for t in s.get("turns") or []]
        for ms in times:
            if isinstance(ms, (int, float)) and ms > 0 and (newest is None or ms > newest):
                newest = ms
    if newest is None:
        return None
    return _dt.datetime.fromtimestamp(newest / 1000, tz=_dt.timezone.utc).date().isoformat()


def comparison_rows(scores: Scores) -> list[dict[str, Any]]:
    """Composite and each component for both runs, one row per (metric, run): the DVC bar plot's data."""
    pairs = [("score", scores.baseline, scores.optimized)]
    pairs += [(name, scores.baseline_components.get(name), scores.optimized_components.get(name))
              for name in COMPONENTS]
    rows = []
    for metric, before, after in pairs:
        for run, value in (("baseline", before), ("optimized", after)):
            if value is not None:
                rows.append({"metric": metric, "run": run, "value": value})
    return rows


# ------------------------------------------------------------------------------------- files

def file_names(agent: str, slug: str) -> dict[str, str]:
    """Format -> path under outputs/prompts/."""
    return {
        "agent_config": f"opencode-{agent}-{slug}.jsonc",
        "instructions": f"OPTIMIZED_{agent.upper()}.md",
        "template": f"{slug}-optimized.txt",
        "markdown_agent": f"agents/{agent}-{slug}.md",
        "usage_guide": f"USAGE_GUIDE_{agent}.md",
        "plugin": plugin.PLUGIN_FILE,
        "short_tools": short_tools.PLUGIN_FILE,
    }


def render_files(settings: ExportSettings, program: Program, scores: Scores, data_date: str | None) -> dict[str, str]:
    """Relative path -> file text, for every file settings.shipped names (nothing is written here)."""
    slug = model_slug(settings.student["model"])
    name = agent_name(settings)
    target = opencode_target(settings.student, settings.opencode_model)
    description = (f"{settings.agent} agent with a prompt optimized for {settings.student['model']} "
                   f"(test score {scores.baseline:.2f} -> {scores.optimized:.2f})")
    entry = agent_entry(settings, program, description)
    prompt = entry["prompt"]
    names = file_names(settings.agent, slug)
    files: dict[str, str] = {}
    for fmt in settings.shipped:
        if fmt == "agent_config":
            files[names[fmt]] = _jsonc(name, entry, settings, scores, data_date, names)
        elif fmt == "instructions":
            files[names[fmt]] = (f"# {settings.agent} agent: optimized guidance for {settings.student['model']}\n\n"
                                 + prompt)
        elif fmt == "template":
            files[names[fmt]] = prompt
        elif fmt == "markdown_agent":
            front = {k: v for k, v in entry.items() if k != "prompt"}
            files[names[fmt]] = ("---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
                                 + "---\n" + prompt)
        elif fmt == "usage_guide":
            files[names[fmt]] = usage_guide(name, settings, target, scores, data_date, names)
    files.update(plugin_files(settings, program))  # formats plugin and short_tools
    return files


def _score_line(scores: Scores) -> str:
    ci = (f", 95% CI {scores.ci95[0]:+.3f}..{scores.ci95[1]:+.3f}" if scores.ci95 else "")
    return (f"test split (n={scores.n}), score 0-1: baseline {scores.baseline:.3f}, "
            f"optimized {scores.optimized:.3f} ({scores.absolute:+.3f}{ci})")


def _replay_line(scores: Scores) -> str | None:
    """The replay result (as OpenCode sends it) beside the offline one; None when there is none."""
    r = scores.replay
    if not r:
        return None
    d, e, diff = r["opencode_default"], r["exported"], r["difference"]

    def one(x: dict[str, Any]) -> str:
        tagged = "" if x.get("strict_call") is None else f", {x['strict_call']} calls in the model's own tags"
        tokens = f", {x['prompt_tokens_mean']:,.0f} prompt tokens a request" if x.get("prompt_tokens_mean") else ""
        return (f"{x['score']:.3f} (right tool {x['right_tool_rate']:.0%}, right target {x['right_target_rate']:.0%}, "
                f"{x['destructive']} destructive{tagged}{tokens})")
    return (f"as OpenCode sends it (replay of n={e['n']} test steps): OpenCode's default prompt {one(d)}, "
            f"this agent {one(e)}; difference {diff['absolute']:+.3f}, 95% CI {diff['ci95'][0]:+.3f}..{diff['ci95'][1]:+.3f}")


def _source_line(scores: Scores, data_date: str | None) -> str:
    data = f"session logs up to {data_date}" if data_date else "session logs of unknown date"
    return (f"outputs/program.json (optimizer {scores.optimizer}, {scores.demos} demonstrations), "
            f"learned from {data}")


def _jsonc(name: str, entry: dict[str, Any], settings: ExportSettings, scores: Scores,
           data_date: str | None, names: dict[str, str]) -> str:
    config = {"$schema": SCHEMA_URL, "agent": {name: entry}}
    guide = (f"; see {names['usage_guide']}" if "usage_guide" in settings.formats else "")
    header = [
        f"OpenCode agent \"{name}\": the {settings.agent} agent's prompt optimized for {settings.student['model']}.",
        f"Source: {_source_line(scores, data_date)}.",
        f"Result on the {_score_line(scores)}.",
        *([f"Result {_replay_line(scores)}."] if scores.replay else []),
        f"Merge the \"agent\" entry into your opencode.json(c), or load this file with OPENCODE_CONFIG{guide}.",
    ]
    return "".join(f"// {line}\n" for line in header) + json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def usage_guide(name: str, settings: ExportSettings, target: ModelTarget, scores: Scores,
                data_date: str | None, names: dict[str, str]) -> str:
    """How to use each written file, with commands that work as written (run from the project root)."""
    have = set(settings.shipped)
    out = "outputs/prompts"
    note = text_call_note(settings.student["model"], scores.replay) if scores.replay else None
    g = [f"# Using the optimized `{settings.agent}` prompt in OpenCode", "",
         f"Agent `{name}` for model `{settings.student['model']}` "
         f"(OpenCode model `{target.model}`, temperature {settings.student['temperature']}).", "",
         f"- Source: {_source_line(scores, data_date)}.",
         f"- Result on the {_score_line(scores)}.",
         *([f"- Result {_replay_line(scores)}."] if scores.replay else []),
         *([f"- **Calls written as text.** {note}"] if note else []),
         *(f"- {line}" for line in scores.live),
         "- Scores are the pipeline's composite metric for choosing the next tool call, "
         "measured on held-out sessions.", "",
         "## Files", ""]
    what = {
        "agent_config": "OpenCode config with the agent (prompt inline); merge into `opencode.json(c)`",
        "markdown_agent": "the same agent as a markdown agent file for `.opencode/agents/`",
        "instructions": "the guidance as an instructions file, added on top of OpenCode's built-in prompt",
        "template": "the full prompt text, for `\"prompt\": \"{file:...}\"` or other tools",
        "usage_guide": "this guide",
        "plugin": "an OpenCode plugin (and its demo bank `nearest-demos.json` beside it) that adds the "
                  "learned examples nearest to each task to the system prompt",
        "short_tools": "an OpenCode plugin (and `short-tools.json` beside it) that sends the built-in tools' "
                       "descriptions in short form",
    }
    for fmt in settings.shipped:
        g.append(f"- `{out}/{names[fmt]}`: {what[fmt]}")
    g += ["", "The commands below run from this pipeline's folder; `PROJECT` is the project you use "
          "OpenCode in:", "", "```sh", "PROJECT=$HOME/code/myapp   # change this", "```", "",
          "## 1. Make the model available to OpenCode", "", target.setup, ""]
    if target.provider_block:
        g += ["```json", json.dumps({"$schema": SCHEMA_URL, "provider": target.provider_block}, indent=2), "```", "",
              "Put this in `$PROJECT/opencode.json` (or merge its `provider` entry into the one you have).", ""]
    step = 2
    if "agent_config" in have:
        cfg = f"{out}/{names['agent_config']}"
        g += [f"## {step}. Add the agent from the config file", "",
              "Try it without touching any config, by naming the file in `OPENCODE_CONFIG` "
              "(OpenCode merges it over your other config):", "",
              "```sh", f"OPENCODE_CONFIG=\"$PWD/{cfg}\" opencode debug agent {name}", "```", "",
              "To keep it, copy the file into the project if it has no `opencode.json(c)` yet, or "
              f"merge its `agent.{name}` entry into the one it has:", "",
              "```sh", f"[ -e \"$PROJECT/opencode.jsonc\" ] || [ -e \"$PROJECT/opencode.json\" ] || "
              f"cp {cfg} \"$PROJECT/opencode.jsonc\"", "```", "",
              "For every project, merge it into `~/.config/opencode/opencode.json` instead.", ""]
        step += 1
    if "markdown_agent" in have:
        md = f"{out}/{names['markdown_agent']}"
        g += [f"## {step}. Or add it as a markdown agent", "",
              "The file name is the agent name. Install it for one project or for all of them:", "",
              "```sh", "mkdir -p \"$PROJECT/.opencode/agents\"", f"cp {md} \"$PROJECT/.opencode/agents/\"",
              "# or: mkdir -p ~/.config/opencode/agents && cp " + md + " ~/.config/opencode/agents/", "```", "",
              "Use either the config entry or the markdown file for the agent, not both.", ""]
        step += 1
    if "instructions" in have:
        ins = names["instructions"]
        g += [f"## {step}. Or keep OpenCode's own prompt and add the guidance as instructions", "",
              "Instruction files are added to whatever agent and prompt you use:", "",
              "```sh", f"cp {out}/{ins} \"$PROJECT/\"", "```", "",
              f"then list it in `$PROJECT/opencode.json`: `\"instructions\": [\"{ins}\"]`. "
              f"Or append it to the project's AGENTS.md: `cat {out}/{ins} >> \"$PROJECT/AGENTS.md\"`.", ""]
        step += 1
    if "template" in have:
        tpl = names["template"]
        g += [f"## {step}. Or point any agent at the prompt file", "",
              "```sh", "mkdir -p \"$PROJECT/prompts\"", f"cp {out}/{tpl} \"$PROJECT/prompts/\"", "```", "",
              f"and set `\"prompt\": \"{{file:./prompts/{tpl}}}\"` on an agent in `$PROJECT/opencode.json` "
              "(the path is relative to that file).", ""]
        step += 1
    if "plugin" in have:
        g += [f"## {step}. Add the nearest examples to every turn (plugin)", "",
              "The plugin adds, before each model call, the learned worked examples nearest to the current "
              "task to the system prompt (with any agent). Install it for one project:", "",
              "```sh", f"mkdir -p \"$PROJECT/.opencode/plugin\" && cp {out}/plugin/nearest-demos.* "
              "\"$PROJECT/.opencode/plugin/\"", "```", "",
              "Turn it off for one run with `OPENCODE_NEAREST_DEMOS=off opencode ...`, or for good by deleting "
              "the two `nearest-demos.*` files. Without a usable `nearest-demos.json` it adds nothing and says "
              "why in OpenCode's log.", ""]
        step += 1
    if "short_tools" in have:
        g += [f"## {step}. Send shorter tool descriptions (plugin)", "",
              "The plugin replaces the long descriptions of OpenCode's built-in tools with their first "
              "paragraph (the tools and their parameters are unchanged), for every agent of the project. "
              "The scores above were measured with them, so install it with the agent:", "",
              "```sh", f"mkdir -p \"$PROJECT/.opencode/plugin\" && cp {out}/plugin/short-tools.* "
              "\"$PROJECT/.opencode/plugin/\"", "```", "",
              "Turn it off for one run with `OPENCODE_SHORT_TOOLS=off opencode ...`, or for good by deleting "
              "the two `short-tools.*` files.", ""]
        step += 1
    g += [f"## {step}. Check and use it", "",
          "In the project (`cd \"$PROJECT\"`):", "",
          "```sh",
          f"opencode debug agent {name}    # the resolved agent: prompt, model and temperature",
          "opencode debug config 2>&1 | grep -A5 'Configuration is invalid' || echo 'config OK'",
          f"opencode run --agent {name} \"List the files in this project and summarize them\"",
          "```", ""]
    if settings.mode == "subagent":
        g += [f"The agent is a subagent: mention it as `@{name}` in a message, or let a primary agent "
              "delegate to it.", ""]
    else:
        g += [f"In the TUI (`opencode`), press Tab to switch to `{name}`.", ""]
    g += ["Read the output of `opencode debug config`: some OpenCode versions exit 0 even when the "
          "config is invalid.", "",
          "An agent prompt replaces OpenCode's built-in prompt for that agent, which is why the prompt "
          "includes tool guidance. The instructions file instead adds to the built-in prompt.", "",
          f"## {step + 1}. Re-run the pipeline", "",
          "After new sessions land in the logs folder, or to try another model or optimizer:", "",
          "```sh", ". .venv/bin/activate",
          "dvc repro                         # re-runs only the stages whose inputs changed",
          "python -m lib.cli train --experiment-name try-bootstrap --optimizer bootstrap",
          "dvc exp show                      # compare runs",
          "```", "",
          "Only the files chosen by `export.formats` in params.yaml are written. "
          "Re-export without re-optimizing with `dvc repro export`.", ""]
    return "\n".join(g)


def live_lines(report: dict[str, Any]) -> list[str]:
    """metrics/live.json in a sentence per model, for the usage guide; [] when the live stage did not run."""
    lines = []
    for model, entry in sorted((report or {}).get("models", {}).items()):
        d, e, diff = entry.get("opencode_default"), entry.get("exported"), entry.get("difference")
        if not (d and e and diff):
            continue
        lo, hi = diff["ci95"]
        lines.append(f"Inside real OpenCode on {model}, the scripted tasks were finished "
                     f"{e['completion_rate']:.0%} of the time with this agent and {d['completion_rate']:.0%} with "
                     f"OpenCode's default agent ({diff['paired']} paired runs; difference {diff['absolute']:+.2f}, "
                     f"95% CI {lo:+.2f}..{hi:+.2f}; runs where the model printed a call as text instead of making "
                     f"it: {e['runs_with_text_calls']} vs {d['runs_with_text_calls']}).")
    return lines
