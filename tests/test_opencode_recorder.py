"""The recording endpoint (devtools/recorder.py) as a real OpenAI client sees it."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from devtools.recorder import Recorder, ToolCall, is_title_request


def client(rec: Recorder) -> openai.OpenAI:
    return openai.OpenAI(base_url=rec.base_url, api_key="x", max_retries=0)


def test_models_and_unknown_routes():
    with Recorder(model="tiny") as rec:
        assert [m.id for m in client(rec).models.list()] == ["tiny"]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(rec.base_url + "/embeddings", data=b"{}")
        assert err.value.code == 404
    assert rec.requests == []


def test_streamed_and_plain_replies_are_recorded_in_order():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    with Recorder(reply_text="ok") as rec:
        stream = client(rec).chat.completions.create(model="smollm2", messages=messages, stream=True,
                                                     stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "ok"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None
        plain = client(rec).chat.completions.create(model="smollm2", messages=messages[1:], max_tokens=5)
        assert plain.choices[0].message.content == "ok" and plain.choices[0].finish_reason == "stop"
    first, second = rec.requests
    assert first["messages"] == messages and first["stream"] is True
    assert second["messages"] == messages[1:] and second["max_tokens"] == 5


def test_respond_can_answer_with_tool_calls():
    def respond(index, body):
        return [ToolCall("read", {"filePath": "/p/a.py"}, id="call_7")] if index == 0 else None

    tools = [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}]
    with Recorder(reply_text="done", respond=respond) as rec:
        c = client(rec)
        chunks = list(c.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}],
                                                tools=tools, stream=True))
        (call,) = chunks[0].choices[0].delta.tool_calls
        assert (call.id, call.function.name, json.loads(call.function.arguments)) == \
            ("call_7", "read", {"filePath": "/p/a.py"})
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        again = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
        assert again.choices[0].message.content == "done"
    assert len(rec.requests) == 2 and rec.requests[0]["tools"] == tools


def test_title_requests_are_told_apart():
    title = {"messages": [{"role": "system", "content": "You are a title generator. You output ONLY a thread title."},
                         {"role": "user", "content": "x"}]}
    agent = {"messages": [{"role": "system", "content": "You are opencode."}], "tools": []}
    assert is_title_request(title) and not is_title_request(agent)
    with Recorder() as rec:
        for body in (title, agent):
            urllib.request.urlopen(urllib.request.Request(rec.base_url + "/chat/completions",
                                                          data=json.dumps(body).encode(),
                                                          headers={"Content-Type": "application/json"})).read()
        assert rec.agent_requests() == [agent]
        rec.clear()
        assert rec.requests == []


def test_base_url_needs_a_running_recorder():
    rec = Recorder()
    with pytest.raises(RuntimeError, match="not running"):
        rec.base_url
    with rec:
        assert rec.base_url.startswith("http://127.0.0.1:") and rec.base_url.endswith("/v1")
        config = rec.opencode_config("rec")
        assert config["model"] == "rec/smollm2"
        assert config["provider"]["rec"]["options"]["baseURL"] == rec.base_url
