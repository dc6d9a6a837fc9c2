"""lib/models (settings, ledger, llama, lm): provider mapping, keys, reachability, ledger and budget, the embedded model, a real server."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import dspy
import pytest

from lib.models import ledger as LG
from lib.models import llama as LL
from lib.models import lm as L
from lib.models import settings as S
from lib.core.errors import UserError


def cfg(provider: str, model: str = "m", api_base: str | None = None, api_key_env: str | None = None,
        **over) -> dict:
    return {"provider": provider, "model": model, "api_base": api_base, "api_key_env": api_key_env,
            "temperature": 0.0, "max_tokens": 8, "timeout": 30, "num_retries": 1, **over}


@pytest.fixture
def no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with no .env, and none of the usual key variables set."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MY_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(S, "ROOT", tmp_path)
    return tmp_path


@pytest.fixture
def project_cache(tmp_path: Path):
    """DSPy's cache in a throw-away project; the process-wide cache is restored afterwards."""
    before = dspy.cache
    path = S.configure_cache(tmp_path)
    yield path
    dspy.cache = before


# ---------------------------------------------------------------- provider mapping

@pytest.mark.parametrize("settings, model, extra", [
    (cfg("openai", "gpt-4o-mini", api_key_env="MY_KEY"), "openai/gpt-4o-mini", {"api_key": "sk-1"}),
    (cfg("anthropic", "claude-3-5-haiku-latest", api_key_env="MY_KEY"), "anthropic/claude-3-5-haiku-latest",
     {"api_key": "sk-1"}),
    (cfg("openai-compatible", "qwen", api_base="http://gpu:8000/v1/"), "openai/qwen",
     {"api_base": "http://gpu:8000/v1", "api_key": S.NO_KEY}),
    (cfg("openai-compatible", "qwen", api_base="http://gpu:8000/v1", api_key_env="MY_KEY"), "openai/qwen",
     {"api_base": "http://gpu:8000/v1", "api_key": "sk-1"}),
    (cfg("ollama", "qwen2.5-coder:1.5b"), "ollama_chat/qwen2.5-coder:1.5b",
     {"api_base": "http://localhost:11434"}),
    (cfg("ollama", "llama3", api_base="http://box:11434"), "ollama_chat/llama3", {"api_base": "http://box:11434"}),
    (cfg("ollama", "llama3", api_base="http://box:11434/v1"), "openai/llama3",
     {"api_base": "http://box:11434/v1", "api_key": S.NO_KEY}),
])
def test_litellm_settings_per_provider(settings, model, extra, no_dotenv, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-1")
    monkeypatch.setenv("OPENAI_API_KEY", "ambient-must-not-leak")
    name, kwargs = S.litellm_settings(settings, role="student")
    assert name == model
    assert kwargs == {"temperature": 0.0, "max_tokens": 8, "timeout": 30, "num_retries": 1, **extra}


def test_native_ollama_without_key_sends_none(no_dotenv):
    _, kwargs = S.litellm_settings(cfg("ollama", "llama3"))
    assert "api_key" not in kwargs


def test_local_is_not_a_litellm_model():
    with pytest.raises(UserError, match="in-process"):
        S.litellm_settings(cfg("local"), role="teacher")


def test_openai_compatible_needs_api_base():
    with pytest.raises(UserError, match=r"models\.teacher\.api_base.*http://localhost:8000/v1"):
        S.litellm_settings(cfg("openai-compatible"), role="teacher")


def test_make_lm_builds_dspy_lm_with_timeout_and_retries(no_dotenv, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-1")
    lm = L.make_lm("teacher", cfg("anthropic", "claude-x", api_key_env="MY_KEY", timeout=12, num_retries=4),
                   LG.Ledger())
    assert isinstance(lm, dspy.LM)
    assert lm.model == "anthropic/claude-x"
    assert lm.num_retries == 4
    assert lm.kwargs["timeout"] == 12 and lm.kwargs["api_key"] == "sk-1"
    assert "api_key" not in lm.dump_state()  # keys never land in saved programs


# ---------------------------------------------------------------- keys

def test_missing_key_names_variable_role_and_fix(no_dotenv):
    with pytest.raises(UserError) as err:
        S.litellm_settings(cfg("openai", "gpt-4o-mini", api_key_env="OPENAI_API_KEY"), role="teacher")
    message = str(err.value)
    assert "models.teacher" in message and "$OPENAI_API_KEY" in message
    assert "export OPENAI_API_KEY=" in message and str(no_dotenv / ".env") in message


def test_hosted_provider_with_null_key_env_fails(no_dotenv):
    with pytest.raises(UserError, match=r"models\.student\.api_key_env is null.*ANTHROPIC_API_KEY"):
        S.check_reachable("student", cfg("anthropic", "claude-x"))


def test_key_from_dotenv_and_environment_wins(no_dotenv, monkeypatch):
    (no_dotenv / ".env").write_text("# keys\nMY_KEY=from-dotenv\nOTHER=x\n")
    settings = cfg("openai", "gpt-4o-mini", api_key_env="MY_KEY")
    assert S.litellm_settings(settings)[1]["api_key"] == "from-dotenv"
    S.check_reachable("teacher", settings)  # key present: passes without any network
    monkeypatch.setenv("MY_KEY", "from-env")
    assert S.litellm_settings(settings)[1]["api_key"] == "from-env"


# ---------------------------------------------------------------- ledger and budget

def result(hit: bool = False, prompt: int = 10, completion: int = 5, cost: float | None = 0.01):
    usage = {} if hit else {"prompt_tokens": prompt, "completion_tokens": completion}
    return SimpleNamespace(cache_hit=hit, usage=usage, cost=None if hit else cost,
                           original_usage={"prompt_tokens": prompt, "completion_tokens": completion, "cost": cost}
                           if hit else None)


def test_ledger_counts_real_calls_and_hits_separately():
    ledger = LG.Ledger()
    ledger.run("student", lambda: result(), lambda: None)
    ledger.run("student", lambda: result(hit=True), lambda: None)
    ledger.run("teacher", lambda: result(cost=None, prompt=7), lambda: None)
    s = ledger.summary()["lm_usage"]
    assert s["student"]["calls"] == 1 and s["student"]["cache_hits"] == 1
    assert s["student"]["prompt_tokens"] == 10 and s["student"]["cached_prompt_tokens"] == 10
    assert s["student"]["cost"] == pytest.approx(0.01) and s["student"]["cached_cost"] == pytest.approx(0.01)
    assert s["teacher"]["unpriced_calls"] == 1 and s["teacher"]["cost"] == 0
    assert s["total"]["calls"] == 2 and s["total"]["prompt_tokens"] == 17
    assert json.loads(json.dumps(s)) == s  # plain numbers only
    assert ledger.totals() == {"calls": 2, "cache_hits": 1, "tokens": 27, "failed": 0}


def test_budget_refuses_the_call_that_would_exceed_it():
    ledger = LG.Ledger(max_calls=2)
    made = []

    def call():
        made.append(1)
        return result()

    ledger.run("student", call, lambda: None)
    ledger.run("teacher", call, lambda: None)
    with pytest.raises(LG.BudgetExceeded) as err:
        ledger.run("student", call, lambda: None)
    assert len(made) == 2  # the refused call never ran
    assert isinstance(err.value, UserError)
    assert "optimization.max_lm_calls = 2 reached after 2 calls" in str(err.value)
    assert "cheaper optimizer" in str(err.value)
    # A cache hit is still served once the budget is spent, and is not a call.
    ledger.run("student", call, lambda: result(hit=True))
    assert ledger.summary()["lm_usage"]["total"]["calls"] == 2
    with pytest.raises(LG.BudgetExceeded):
        ledger.check()


def test_failed_calls_count_against_the_budget():
    ledger = LG.Ledger(max_calls=1)

    def boom():
        raise TimeoutError("slow server")

    with pytest.raises(TimeoutError):
        ledger.run("student", boom, lambda: None)
    assert ledger.summary()["lm_usage"]["student"]["failed_calls"] == 1
    with pytest.raises(LG.BudgetExceeded):
        ledger.run("student", lambda: result(), lambda: None)


def test_budget_holds_under_threads():
    ledger = LG.Ledger(max_calls=5)
    gate = threading.Barrier(12)
    outcomes = []

    def worker():
        gate.wait()
        try:
            ledger.run("student", lambda: result(), lambda: None)
            outcomes.append("ok")
        except LG.BudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 5 and outcomes.count("refused") == 7
    assert ledger.summary()["lm_usage"]["student"]["calls"] == 5


# ---------------------------------------------------------------- reachability (no model needed)

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


@pytest.mark.parametrize("provider, base", [("openai-compatible", "/v1"), ("ollama", ""), ("ollama", "/v1")])
def test_unreachable_server_names_provider_address_and_fix(provider, base, no_dotenv):
    address = f"http://127.0.0.1:{closed_port()}{base}"
    with pytest.raises(UserError) as err:
        S.check_reachable("student", cfg(provider, "smollm2", api_base=address))
    message = str(err.value)
    assert f"cannot reach the {provider} server at {address}" in message
    assert "ollama serve" in message and "models.student.api_base" in message


def test_server_gone_mid_run_is_a_user_error(no_dotenv, project_cache):
    ledger = LG.Ledger()
    address = f"http://127.0.0.1:{closed_port()}/v1"
    lm = L.make_lm("student", cfg("openai-compatible", "smollm2", api_base=address, num_retries=0), ledger)
    with pytest.raises(UserError, match=f"cannot reach the openai-compatible server at {address}"):
        lm("hello")
    s = ledger.summary()["lm_usage"]["student"]
    assert s["calls"] == 1 and s["failed_calls"] == 1


@pytest.fixture
def fake_server():
    """A tiny HTTP server answering the model lists of an OpenAI-compatible server and of Ollama."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            bodies = {"/v1/models": {"object": "list", "data": [{"id": "qwen"}, {"id": "llama3:8b"}]},
                      "/api/tags": {"models": [{"name": "qwen2.5-coder:1.5b"}, {"name": "llama3:latest"}]}}
            if self.path not in bodies:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(bodies[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_unknown_model_lists_served_models(fake_server, no_dotenv):
    base, _ = fake_server
    with pytest.raises(UserError) as err:
        S.check_reachable("teacher", cfg("openai-compatible", "gpt-4o", api_base=base + "/v1"))
    assert "unknown model 'gpt-4o'" in str(err.value) and "llama3:8b, qwen" in str(err.value)
    S.check_reachable("teacher", cfg("openai-compatible", "qwen", api_base=base + "/v1"))


def test_ollama_native_checks_api_tags(fake_server, no_dotenv, monkeypatch):
    base, seen = fake_server
    S.check_reachable("student", cfg("ollama", "llama3", api_base=base))  # llama3 = llama3:latest
    with pytest.raises(UserError, match=r"unknown model 'mistral'.*llama3:latest, qwen2.5-coder:1.5b.*ollama pull"):
        S.check_reachable("student", cfg("ollama", "mistral", api_base=base))
    monkeypatch.setenv("MY_KEY", "sk-9")
    S.check_reachable("student", cfg("openai-compatible", "qwen", api_base=base + "/v1", api_key_env="MY_KEY"))
    assert seen[0][0] == "/api/tags" and seen[-1] == ("/v1/models", "Bearer sk-9")
    with pytest.raises(UserError, match="HTTP 404"):
        S.check_reachable("student", cfg("ollama", "llama3", api_base=base + "/nowhere/v1"))


# ---------------------------------------------------------------- the embedded model

def test_configure_cache_lives_in_the_project(tmp_path, project_cache):
    assert project_cache == tmp_path / ".cache" / "dspy" == S.cache_dir(tmp_path)
    assert dspy.cache.disk_cache_dir == str(project_cache) and dspy.cache.enable_memory_cache


@pytest.mark.timeout(120)
def test_local_lm_real_call_returns_text_and_usage(smollm_path, project_cache):
    S.check_reachable("student", cfg("local", "smollm2-135m"))
    ledger = LG.Ledger()
    lm = L.make_lm("student", cfg("local", "smollm2-135m", max_tokens=6), ledger)
    assert isinstance(lm, dspy.BaseLM)
    out = lm("Name one colour.")
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], str) and out[0].strip()
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 6
    s = ledger.summary()["lm_usage"]["student"]
    assert s["calls"] == 1 and s["prompt_tokens"] == usage["prompt_tokens"] and s["cost"] == 0
    assert s["unpriced_calls"] == 0


@pytest.mark.timeout(180)
def test_local_sampling_is_reproducible(smollm_path, project_cache):
    ledger = LG.Ledger()
    lm = L.make_lm("teacher", cfg("local", "smollm2-135m", temperature=1.0, max_tokens=8), ledger)
    first = lm("Write a word.", cache=False)
    again = lm("Write a word.", cache=False)
    assert first == again  # seed derived from the request
    assert ledger.summary()["lm_usage"]["teacher"]["calls"] == 2


@pytest.mark.timeout(180)
def test_cache_hit_makes_no_model_call_even_in_a_new_process(smollm_path, tmp_path, project_cache, monkeypatch):
    ledger = LG.Ledger(max_calls=1)
    lm = L.make_lm("student", cfg("local", "smollm2-135m", max_tokens=6), ledger)
    first = lm("Say yes.")
    made = ledger.summary()["lm_usage"]["student"]

    def no_model(self, request):
        raise AssertionError("the model was called for a cached request")

    monkeypatch.setattr(LL.LlamaEngine, "complete", no_model)
    assert lm("Say yes.") == first
    # A fresh cache object on the same folder stands for a re-run in a new process.
    S.configure_cache(tmp_path)
    assert lm("Say yes.") == first
    s = ledger.summary()["lm_usage"]["student"]
    assert s["calls"] == 1 and s["cache_hits"] == 2
    assert s["prompt_tokens"] == made["prompt_tokens"]  # hits add no real-call tokens...
    assert s["cached_prompt_tokens"] == 2 * made["prompt_tokens"] > 0  # ...but are reported as served
    # The budget (1 call) is spent: hits are still served, a new request is refused.
    with pytest.raises(LG.BudgetExceeded, match="max_lm_calls = 1"):
        lm("Say no.")


def test_rollout_id_becomes_a_sampling_seed():
    lm = L.LocalLM(temperature=1.0)
    assert lm._call_kwargs({"rollout_id": 3}) == {"rollout_id": 3, "seed": 3}
    assert lm.copy(rollout_id=4)._call_kwargs({}) == {"seed": 4}
    assert lm._call_kwargs({}) == {}


def test_local_lm_state_round_trip():
    lm = L.LocalLM(temperature=0.3, max_tokens=11, num_retries=2)
    state = lm.dump_state()
    assert "model_path" not in json.dumps(state)
    back = dspy.BaseLM.load_state(state, allow_custom_lm_class=True)
    assert isinstance(back, L.LocalLM) and back.kwargs["max_tokens"] == 11 and back.num_retries == 2
    assert back.model == S.local_model_id(S.local_model_path())


def test_an_unknown_embedded_model_is_named_with_the_choices_before_any_load():
    with pytest.raises(UserError) as err:
        S.check_reachable("student", {"provider": "local", "model": "qwen9-coder"})
    assert "models.student" in str(err.value) and "'qwen9-coder'" in str(err.value)
    assert "qwen2.5-coder-0.5b" in str(err.value) and "model_path" in str(err.value)


def test_local_lm_names_its_weights_and_server_rule_and_reloads_them():
    path = S.local_model_path({"model": "qwen2.5-coder-0.5b"})
    lm = L.LocalLM(model_path=path, parser="strict")
    assert lm.model == "local/qwen2.5-coder-0.5b-instruct-q4_k_m+strict"  # the answer cache keys on both
    assert L.LocalLM(model_path=path).model == "local/qwen2.5-coder-0.5b-instruct-q4_k_m"
    back = dspy.BaseLM.load_state(lm.dump_state(), allow_custom_lm_class=True)
    assert back.model == lm.model and back.engine.model_path == str(path) and back.engine.parser == "strict"
    with pytest.raises(UserError, match="not in the catalog"):
        L.LocalLM(model="local/some-other-model")


# ---------------------------------------------------------------- a real OpenAI-compatible server

class WholeReplyAdapter(dspy.ChatAdapter):
    """The whole reply is the answer: a 135M model rarely writes DSPy's field markers, and this
    test is about the provider path, not output parsing."""

    def parse(self, signature, completion):
        return {"answer": completion.strip()}


@pytest.mark.timeout(400)
def test_openai_compatible_end_to_end(llama_server, project_cache, no_dotenv):
    settings = cfg("openai-compatible", "smollm2", api_base=llama_server, max_tokens=24)
    S.check_reachable("student", settings)
    with pytest.raises(UserError, match="unknown model 'gpt-4o'.*serves smollm2"):
        S.check_reachable("student", {**settings, "model": "gpt-4o"})
    ledger = LG.Ledger(max_calls=10)
    lm = L.make_lm("student", settings, ledger)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm, adapter=WholeReplyAdapter()):
        pred = predict(question="What is 2 + 2?")
    assert pred.answer
    s = ledger.summary()["lm_usage"]["student"]
    assert s["calls"] == 1 and s["failed_calls"] == 0
    assert s["prompt_tokens"] > 0 and s["completion_tokens"] > 0
    with dspy.context(lm=lm, adapter=WholeReplyAdapter()):
        assert predict(question="What is 2 + 2?").answer == pred.answer
    again = ledger.summary()["lm_usage"]["student"]
    assert again["calls"] == s["calls"] and again["cache_hits"] == s["calls"]
    assert again["cached_prompt_tokens"] == s["prompt_tokens"]


@pytest.mark.timeout(300)
def test_local_answer_does_not_depend_on_earlier_requests(smollm_path, project_cache):
    # A shared prefix longer than one llama.cpp batch (512 tokens) makes the engine reuse its KV cache.
    prefix = "Here are notes about a project.\n" + "\n".join(
        f"Note {i}: the file src/module_{i}.py defines function handler_{i} used by the CLI." for i in range(40))
    first, second = prefix + "\nWhich file defines handler_7?", prefix + "\nWhich file defines handler_31?"
    lm = L.make_lm("student", cfg("local", "smollm2-135m", max_tokens=24), LG.Ledger())
    a1 = lm(first, cache=False)
    b_after_a = lm(second, cache=False)
    a2 = lm(first, cache=False)
    LL.load_llama(S.local_model_path()).reset()  # nothing cached: a fresh start
    b_fresh = lm(second, cache=False)
    assert a1 == a2
    assert b_after_a == b_fresh
