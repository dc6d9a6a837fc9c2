"""The accounted LMs: dspy.LM subclasses whose every request is counted in a Ledger (lib.models.ledger)
and explained when it fails; `make_lm` builds the one for a role from its settings.

`local` is an embedded model (lib.models.catalog) run in-process by llama.cpp (lib.models.llama),
plugged into DSPy as an engine so it shares dspy.LM's cache, retries and history.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import dspy

from lib.core import dspy_internals as internals
from lib.core.errors import UserError
from lib.models.ledger import Ledger, ModelCallFailed, failure_kind
from lib.models.llama import AsyncLlamaEngine, LlamaEngine
from lib.models import catalog
from lib.models.settings import (DEFAULT_ADDRESS, LOCAL_PARSER, check_reachable, litellm_settings, local_model_id,
                                 local_model_path, param_key)

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
        # LiteLLM appends generic advice ("To fix: pass api_key ...") that names its API, not ours.
        detail = " ".join(str(exc).split("To fix:")[0].split())[:300]
        if isinstance(exc, LMAuthError):
            status = getattr(exc, "status", None) or "401/403"
            env = cfg.get("api_key_env")
            fix = (f"check ${env} in the environment or .env" if env else
                   f"if the server needs a key, set {param_key(self._role)}.api_key_env to the variable "
                   f"that holds it")
            raise UserError(f"{where}: access refused (HTTP {status}: {detail}); {fix}") from exc
        if isinstance(exc, LMBillingError):
            raise UserError(f"{where}: the provider refused for billing reasons ({detail}); add credit "
                            f"or choose another model") from exc
        if cfg["provider"] in ("openai-compatible", "ollama"):
            check_reachable(self._role, cfg)  # raises the unreachable / unknown-model UserError
        kind, fix = failure_kind(exc, self._role, cfg)
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

@_with_callbacks
class LocalLM(_Accounted, dspy.LM):
    """An embedded model in-process, as a DSPy LM that uses DSPy's cache like dspy.LM does.

    The model string is `local/<weights file>` (settings.local_model_id); a saved LM finds its
    catalog weights again from it.
    """

    _free = True

    def __init__(self, temperature: float = 0.0, max_tokens: int = 256, num_retries: int = 0,
                 model_path: str | Path | None = None, cache: bool = True, model: str | None = None,
                 parser: str | None = None, **kwargs: Any) -> None:
        kwargs.pop("engine", None)
        kwargs.pop("async_engine", None)
        stem, _, saved_parser = (model or "").partition("+")
        parser = parser or saved_parser or LOCAL_PARSER
        path = Path(model_path) if model_path else _catalog_file(stem)
        engine = LlamaEngine(str(path), parser)
        super().__init__(model=local_model_id(path, parser), temperature=temperature, max_tokens=max_tokens, cache=cache,
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
                "model": self.model, "cache": self.cache, "num_retries": self.num_retries, **state}

    @classmethod
    def load_state(cls, state: dict[str, Any], **_: Any) -> LocalLM:
        state = {k: v for k, v in state.items() if k not in (internals.class_state_key(), "model_type")}
        return cls(**state)


def _catalog_file(model: str | None) -> Path:
    """The weights of a saved LocalLM's model string (local/<file stem>); None: the default model."""
    known = catalog.by_file((model or "").removeprefix("local/"))
    if known:
        return local_model_path({"model": known.name})
    if model:
        raise UserError(f"saved embedded model {model!r} is not in the catalog ({', '.join(catalog.names())}); "
                        f"load it with LocalLM(model_path=...)")
    return local_model_path()


def make_lm(role: str, cfg: dict[str, Any], ledger: Ledger, *, root: Path | None = None,
            parser: str = LOCAL_PARSER) -> dspy.BaseLM:
    """The DSPy LM for models.<role>, its calls counted in `ledger` under `role`; `parser` is the server
    rule an embedded model's native tool calls are read by (a served model's server has its own)."""
    if cfg["provider"] == "local":
        lm: Any = LocalLM(temperature=cfg["temperature"], max_tokens=cfg["max_tokens"],
                          num_retries=cfg["num_retries"], model_path=local_model_path(cfg), parser=parser)
    else:
        name, kwargs = litellm_settings(cfg, role=role, root=root)
        # LiteLLM owns the meaning of these model strings (ollama_chat/ is Ollama's native /api/chat;
        # DSPy's own lm15 engine would send it to an OpenAI-style path), so it makes every remote call.
        lm = AccountedLM(name, engine="litellm", **kwargs)
    lm._ledger, lm._role, lm._cfg = ledger, role, dict(cfg)
    return lm
