"""Provider settings: params.yaml `models.<role>` -> a LiteLLM model string and its arguments, API
keys, the embedded model's file, reachability checks before any paid call, and DSPy's cache folder.

Each provider maps to one explicit LiteLLM model string (no guessing from model names). `local` is
an embedded model (lib.models.catalog) run in-process by llama.cpp (lib.models.llama).
"""
from __future__ import annotations

import importlib.util
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import dspy
from dotenv import dotenv_values

from lib.config.params import ROOT
from lib.core.errors import UserError
from lib.models import catalog

PROVIDERS = ("local", "openai", "anthropic", "openai-compatible", "ollama")
OLLAMA_DEFAULT_BASE = "http://localhost:11434"
LOCAL_DEFAULT = "smollm2-135m"  # the engine probe's model, and the fallback of a bare LocalLM
# Tokens of context an embedded model runs with: its trained window, capped to what OpenCode's
# requests need (about 8k) plus history, since the KV cache grows with it.
LOCAL_N_CTX_CAP = 16384
LOCAL_THREADS = 2
LOCAL_SEED = 1234  # llama.cpp reads 0 as "pick a random seed"
# Sent where a server needs no key: the OpenAI client refuses to start without one, and an
# ambient OPENAI_API_KEY must never leak to a third-party server.
NO_KEY = "no-key-needed"
REACH_TIMEOUT = 5.0
DEFAULT_ADDRESS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}

def param_key(role: str) -> str:
    """Where a role's settings live in params.yaml: `models.<role>`, or the full key (e.g. replay.students[0])."""
    return role if "." in role else f"models.{role}"

# ---------------------------------------------------------------- provider settings

def read_api_key(role: str, cfg: dict[str, Any], root: Path | None = None) -> str | None:
    """The key named by `api_key_env`: environment first, then `<root>/.env`. None if none is needed."""
    provider, name = cfg["provider"], cfg.get("api_key_env")
    if not name:
        if provider in ("openai", "anthropic"):
            example = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
            raise UserError(
                f"{param_key(role)}.api_key_env is null, but provider {provider} needs an API key; "
                f"set it to the variable holding the key, e.g. api_key_env: {example}")
        return None
    value = os.environ.get(name)
    env_file = (root or ROOT) / ".env"
    if not value and env_file.is_file():
        value = dotenv_values(env_file).get(name)
    if not value:
        raise UserError(
            f"{param_key(role)} (provider {provider}) needs the API key in ${name}, which is not set; "
            f"export {name}=... or add a line `{name}=...` to {env_file} "
            f"(or set {param_key(role)}.api_key_env to the variable that holds it)")
    return value


def _ollama_openai_base(api_base: str | None) -> bool:
    return bool(api_base) and api_base.rstrip("/").endswith("/v1")


def litellm_settings(cfg: dict[str, Any], *, role: str = "model", root: Path | None = None) -> tuple[str, dict[str, Any]]:
    """(LiteLLM model string, dspy.LM keyword arguments) for a remote provider's settings.

    Raises UserError for `local` (it is not a LiteLLM model), a missing api_base where one is
    required, or a missing key.
    """
    provider, model = cfg["provider"], cfg["model"]
    base = (cfg.get("api_base") or "").rstrip("/") or None
    kwargs: dict[str, Any] = {
        "temperature": cfg["temperature"], "max_tokens": cfg["max_tokens"],
        "timeout": cfg["timeout"], "num_retries": cfg["num_retries"],
    }
    if provider == "openai":
        name = f"openai/{model}"
        if base:  # e.g. a company proxy in front of OpenAI
            kwargs["api_base"] = base
    elif provider == "anthropic":
        name = f"anthropic/{model}"
        if base:
            kwargs["api_base"] = base
    elif provider == "openai-compatible":
        if not base:
            raise UserError(f"{param_key(role)}.api_base: provider openai-compatible needs the server address, "
                            f"e.g. http://localhost:8000/v1")
        name, kwargs["api_base"] = f"openai/{model}", base
    elif provider == "ollama":
        if _ollama_openai_base(base):
            # Ollama's OpenAI-compatible endpoint: the openai route, any key accepted.
            name, kwargs["api_base"] = f"openai/{model}", base
        else:
            name, kwargs["api_base"] = f"ollama_chat/{model}", base or OLLAMA_DEFAULT_BASE
    elif provider == "local":
        raise UserError(f"{param_key(role)}: provider local runs in-process and has no LiteLLM model string")
    else:
        raise UserError(f"{param_key(role)}.provider: unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")

    key = read_api_key(role, cfg, root)
    if key is not None:
        kwargs["api_key"] = key
    elif provider == "openai-compatible" or name.startswith("openai/"):
        kwargs["api_key"] = NO_KEY
    return name, kwargs


# ---------------------------------------------------------------- reachability

def local_model_path(cfg: dict[str, Any] | None = None, *, fetch_missing: bool = True) -> Path:
    """The GGUF file of a provider-local role: its `model_path`, else its catalog `model` (assembled once
    when missing, unless `fetch_missing` is false); None = the default embedded model. Raises UserError
    naming the fix."""
    if cfg is None:
        return catalog.model_path(LOCAL_DEFAULT, fetch_missing=fetch_missing)
    return catalog.model_path(None if cfg.get("model_path") else cfg["model"], cfg.get("model_path"),
                              fetch_missing=fetch_missing)


LOCAL_PARSER = "llama.cpp"  # the server rule an embedded model's native calls are read by, unless said


def local_model_id(path: Path, parser: str = LOCAL_PARSER) -> str:
    """The model string of an embedded model: the weights file's name (and a rule other than llama.cpp's),
    so the answer cache keys on the weights and on how a reply was read."""
    return f"local/{path.name.removesuffix('.gguf')}" + ("" if parser == LOCAL_PARSER else f"+{parser}")


def local_n_ctx(path: Path) -> int:
    """The context window an embedded model runs with: its catalog window (a GGUF of your own: the cap)."""
    known = catalog.by_file(path.name)
    return min(known.context_window if known else LOCAL_N_CTX_CAP, LOCAL_N_CTX_CAP)


def _get_json(url: str, key: str | None) -> Any:
    headers = {"Accept": "application/json"}
    if key and key != NO_KEY:
        headers["Authorization"] = f"Bearer {key}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=REACH_TIMEOUT) as resp:
        return json.loads(resp.read().decode("utf-8"))


def _served(model: str, ids: list[str]) -> bool:
    # Ollama names carry a tag; "llama3" is served as "llama3:latest".
    return model in ids or f"{model}:latest" in ids or any(i.removesuffix(":latest") == model for i in ids)


def check_reachable(role: str, cfg: dict[str, Any], *, root: Path | None = None) -> None:
    """Fail fast, before any paid call, when the model for `role` cannot be used. Raises UserError.

    local: the weights exist and load. openai-compatible/ollama: the server answers its model list
    and serves the model. openai/anthropic: the key is present (their APIs are not called here).
    """
    provider = cfg["provider"]
    if provider == "local":
        from lib.models.llama import load_llama  # noqa: PLC0415 (llama.py needs these settings)

        try:
            path = local_model_path(cfg)
        except UserError as exc:
            raise UserError(f"{param_key(role)}: {exc}") from None
        load_llama(path)
        return
    name, kwargs = litellm_settings(cfg, role=role, root=root)
    if provider in ("openai", "anthropic"):
        return
    base = kwargs["api_base"]
    native_ollama = name.startswith("ollama_chat/")
    url = f"{base}/api/tags" if native_ollama else f"{base}/models"
    hint = "is Ollama running? start it with `ollama serve`" if provider == "ollama" else \
        "is the server running? e.g. `ollama serve`, `vllm serve MODEL` or LM Studio's server"
    try:
        listing = _get_json(url, kwargs.get("api_key"))
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            env = cfg.get("api_key_env")
            fix = f"check ${env} (environment or .env)" if env else \
                f"it needs a key: set {param_key(role)}.api_key_env to the variable that holds it"
            raise UserError(f"{param_key(role)}: the {provider} server at {base} refused access "
                            f"(HTTP {exc.code}); {fix}") from None
        shape = "http://HOST:11434 (native) or http://HOST:11434/v1" if provider == "ollama" else \
            "the address up to /v1, e.g. http://localhost:8000/v1"
        raise UserError(f"{param_key(role)}: the {provider} server at {base} answered {url} with HTTP {exc.code}; "
                        f"check {param_key(role)}.api_base, which should be {shape}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"{param_key(role)}: cannot reach the {provider} server at {base} ({reason}); {hint}, "
                        f"or fix {param_key(role)}.api_base") from None
    if native_ollama:
        ids = [m.get("name") or m.get("model") for m in (listing or {}).get("models", [])]
    else:
        ids = [m.get("id") for m in (listing or {}).get("data", [])]
    ids = sorted(i for i in ids if isinstance(i, str))
    if not _served(cfg["model"], ids):
        fix = f"`ollama pull {cfg['model']}` or " if provider == "ollama" else ""
        raise UserError(f"{param_key(role)}.model: unknown model {cfg['model']!r} at {base}; it serves "
                        f"{', '.join(ids) or 'no models'}. Use {fix}one of those names")


# ---------------------------------------------------------------- cache

def cache_dir(root: Path = ROOT) -> Path:
    """Where DSPy's disk cache lives for the project at `root` (git- and DVC-ignored)."""
    return root / ".cache" / "dspy"


def configure_cache(root: Path = ROOT) -> Path:
    """Point DSPy's disk cache into the project (memory cache on) and return its folder."""
    path = cache_dir(root)
    path.mkdir(parents=True, exist_ok=True)
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(path))
    return path

