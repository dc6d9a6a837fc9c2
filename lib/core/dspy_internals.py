"""The DSPy internals this project relies on, all in one place (written against DSPy 3.4.1).

DSPy's documented extension points for an LM are a `dspy.BaseLM` subclass that implements
`forward()`, and callbacks (`dspy.utils.callback.BaseCallback`). In DSPy 3.4.1 neither can do what
the ledger (lib.models.ledger, driven by lib.models.lm) needs:

- Serve a cached answer after the call budget is spent, while refusing a real call. That needs the
  cache lookup for a prepared request before it is executed; the public API only offers the whole
  call (`BaseLM.__call__`, which looks up and calls in one step). Callbacks run around the whole
  call too (`on_lm_start` cannot tell a cache hit from a real call).
- Keep DSPy's own request building, cache keys, retries and engines. A `forward()` subclass
  answers a "legacy" call that DSPy neither caches under the same key (the key is built from the
  prepared request, `PreparedCall.key`) nor retries, so every answer cached so far would miss and
  the model would be asked again.
- Run an in-process engine under `dspy.LM`: DSPy 3.4.1 takes an engine object (`engine=`), but
  turning its `Request` into chat-completion arguments and back uses lm15 boundary helpers
  that are not exported from `dspy`.

So the accounted LMs use DSPy's own prepare → execute → finalize pipeline, and only through this
module; tests/test_dspy_api.py fails when DSPy's private or internal names are used anywhere else.
"""
from __future__ import annotations

from typing import Any

import dspy


def prepare(lm: dspy.BaseLM, prompt: Any, messages: Any, kwargs: dict[str, Any]) -> Any:
    """DSPy's prepared call for `lm(prompt, messages=..., **kwargs)`, as BaseLM.__call__ prepares it."""
    from dspy.clients._deprecation import warn_openai_messages
    from dspy.clients.execution import prepare as _prepare

    call = _prepare(lm, prompt, messages, kwargs)
    warn_openai_messages(lm, messages)
    return call


def execute(lm: dspy.BaseLM, call: Any) -> Any:
    """Run a prepared call: cache lookup, engine, retries with backoff (DSPy's CallResult)."""
    from dspy.clients.execution import execute as _execute

    return _execute(lm, call)


def cached(lm: dspy.BaseLM, call: Any) -> Any:
    """The cached CallResult of a prepared call, or None; never calls the model."""
    from dspy.clients.execution import _cached

    return _cached(lm, call, False)


def finalize(lm: dspy.BaseLM, call: Any, result: Any) -> Any:
    """A CallResult as the caller of `lm(...)` gets it (history recorded, outputs shaped)."""
    from dspy.clients.execution import finalize as _finalize

    return _finalize(lm, call, result)


def side_key(name: str, lm: dspy.BaseLM, call: Any) -> dict[str, str]:
    """A key for a side record of a prepared call in DSPy's cache (`name` keeps it apart from the answer)."""
    from dspy.clients.execution import IGNORED_CACHE_KEYS

    return {"_fn_identifier": name, "request": dspy.cache.cache_key(call.key(lm, False), IGNORED_CACHE_KEYS)}


def class_state_key() -> str:
    """The key under which an LM's saved state names its class."""
    from dspy.clients.base_lm import LM_CLASS_STATE_KEY

    return LM_CLASS_STATE_KEY


def chat_body(request: Any) -> dict[str, Any]:
    """An engine Request (checked) as OpenAI chat-completion arguments."""
    from dspy.clients.engines.base import validate_request
    from dspy.clients.lm15_boundary import request_kwargs

    validate_request(request)
    return request_kwargs(request, "chat")


def chat_response(raw: dict[str, Any], model: str) -> Any:
    """An OpenAI chat-completion dict as an engine Response."""
    from dspy.lm15 import response_from_openai_chat

    return response_from_openai_chat(raw, model=model)


def response_events(response: Any) -> Any:
    """A finished engine Response as the stream events an engine's stream() yields."""
    from dspy.lm15 import response_to_events

    return response_to_events(response)


def context_length_error(message: str) -> Exception:
    """The error an engine raises when a request does not fit the context window."""
    from dspy.lm15 import ContextLengthError

    return ContextLengthError(message)


def parse_value(value: Any, annotation: Any) -> Any:
    """A field value parsed to its annotated type, as DSPy's adapters parse output fields."""
    from dspy.adapters.utils import parse_value as _parse_value

    return _parse_value(value, annotation)
