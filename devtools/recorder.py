"""A loopback OpenAI-compatible endpoint that records what a client (OpenCode) sends it.

Point an OpenCode provider's `baseURL` at `Recorder.base_url` and every chat request body lands in
`Recorder.requests`, in arrival order, exactly as OpenCode serialized it. The recorder answers at
once, so `opencode run` finishes in seconds and no model is needed:

    with Recorder(reply_text="ok", model="smollm2") as rec:
        (home / ".config/opencode/opencode.json").write_text(json.dumps(rec.opencode_config()))
        subprocess.run(["opencode", "run", "--pure", "hello"], env={..., "HOME": str(home), "PWD": str(cwd)},
                       cwd=cwd)
    agent = rec.agent_requests()  # the title-generation side request left out

`rec.opencode_config()` is a provider `local` with the recorder's model, `local/<model>` as the
default model (OpenCode's bundled `@ai-sdk/openai-compatible`). OpenCode takes its working
directory from the PWD variable, not from the process's cwd: set both.

By default every request gets `reply_text` back. `respond` decides the reply per request instead:
it gets the request's position (0-based, title requests included) and its body, and returns text,
a list of `ToolCall`s (OpenCode then runs those tools and sends a follow-up request with their
results), or None for the default text.

Endpoints: `GET /v1/models` (a one-model list) and `POST /v1/chat/completions` (a chunked
server-sent-event stream when the body asks for `stream`, one JSON completion otherwise).
Anything else is a 404. Only 127.0.0.1 is bound; the port is chosen by the system.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TITLE_PREFIX = "You are a title generator"


@dataclass(frozen=True)
class ToolCall:
    """One tool call the recorder answers with (OpenAI `tool_calls` item)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = "call_0"


Reply = str | Sequence[ToolCall]  # assistant text, or tool calls for OpenCode to run
Responder = Callable[[int, dict], Reply | None]


def system_text(body: dict) -> str:
    """The text of a request's system messages, joined by newlines (string or text-part content)."""
    texts = []
    for message in body.get("messages") or []:
        if message.get("role") != "system":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(texts)


def is_title_request(body: dict) -> bool:
    """OpenCode's side request that names the session (system "You are a title generator…")."""
    return system_text(body).lstrip().startswith(TITLE_PREFIX)


class Recorder:
    """Loopback OpenAI-compatible chat endpoint that keeps every request body it receives.

    reply_text: what the assistant answers when `respond` gives nothing.
    model:      the model id `GET /v1/models` lists and the replies name.
    respond:    optional `(index, body) -> text | [ToolCall, ...] | None`, see the module docstring.
    """

    def __init__(self, reply_text: str = "ok", *, model: str = "smollm2", respond: Responder | None = None) -> None:
        self.reply_text = reply_text
        self.model = model
        self.respond = respond
        self._requests: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Recorder":
        if self._server is not None:
            return self
        handler = type("_Handler", (_Handler,), {"recorder": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="opencode-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ results

    @property
    def base_url(self) -> str:
        """The `/v1` URL to give a provider as `baseURL`."""
        if self._server is None:
            raise RuntimeError("the recorder is not running (use it as a context manager or call start())")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[dict]:
        """Every chat request body received so far, parsed, in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._requests)

    def opencode_config(self, provider: str = "local", *, name: str | None = None) -> dict[str, Any]:
        """An `opencode.json` that makes `<provider>/<model>` this recorder and the default model.

        Add `agent`, `plugin`, ... entries to it as needed. `name` is the model's display name
        (default: the model id).
        """
        return {
            "$schema": "https://opencode.ai/config.json",
            "provider": {provider: {"npm": "@ai-sdk/openai-compatible", "name": provider,
                                    "options": {"baseURL": self.base_url, "apiKey": "x"},
                                    "models": {self.model: {"name": name or self.model}}}},
            "model": f"{provider}/{self.model}",
        }

    def agent_requests(self) -> list[dict]:
        """The requests that are not OpenCode's title-generation side request."""
        return [body for body in self.requests if not is_title_request(body)]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # ------------------------------------------------------------------ answering

    def _record(self, body: dict) -> int:
        with self._lock:
            self._requests.append(body)
            return len(self._requests) - 1

    def _reply_for(self, index: int, body: dict) -> Reply:
        reply = self.respond(index, body) if self.respond is not None else None
        return self.reply_text if reply is None else reply


def _tool_call_item(call: ToolCall, index: int) -> dict:
    return {"index": index, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}


def _chunks(model: str, reply: Reply, usage: bool) -> list[dict]:
    """The stream of `chat.completion.chunk` objects for one reply: content or tool calls, then finish."""
    base = {"id": "chatcmpl-recorded", "object": "chat.completion.chunk", "created": 0, "model": model}
    if isinstance(reply, str):
        delta: dict = {"role": "assistant", "content": reply}
        finish = "stop"
    else:
        delta = {"role": "assistant", "content": None,
                 "tool_calls": [_tool_call_item(c, i) for i, c in enumerate(reply)]}
        finish = "tool_calls"
    chunks = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
              {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
    if usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
    return chunks


def _completion(model: str, reply: Reply) -> dict:
    if isinstance(reply, str):
        message: dict = {"role": "assistant", "content": reply}
        finish = "stop"
    else:
        message = {"role": "assistant", "content": None,
                   "tool_calls": [{k: v for k, v in _tool_call_item(c, i).items() if k != "index"}
                                  for i, c in enumerate(reply)]}
        finish = "tool_calls"
    return {"id": "chatcmpl-recorded", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


class _Handler(BaseHTTPRequestHandler):
    recorder: Recorder  # set on the per-recorder subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep stderr quiet
        pass

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [
                {"id": self.recorder.model, "object": "model", "created": 0, "owned_by": "recorder"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_json(400, {"error": {"message": "request body is not JSON"}})
            return
        rec = self.recorder
        index = rec._record(body)
        reply = rec._reply_for(index, body)
        if not body.get("stream"):
            self._send_json(200, _completion(rec.model, reply))
            return
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        payload = "".join(f"data: {json.dumps(c)}\n\n" for c in _chunks(rec.model, reply, usage)) + "data: [DONE]\n\n"
        data = payload.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
