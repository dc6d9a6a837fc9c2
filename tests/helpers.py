"""Shared helpers for the data-stage tests: throw-away project copies and stage runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "plugin"
SAMPLES = ROOT / "data" / "sessions"
PYTHON = sys.executable
SPLIT_FILES = ("train.jsonl", "val.jsonl", "test.jsonl")

# Invalid plugin fixtures, each with a piece of the reason it must be rejected for.
BAD_FIXTURES = {
    "bad-json": "invalid JSON at line",
    "empty": "empty file",
    "null-examples": "examples: None is not of type 'array'",
    "null-in-action": "examples[0].input.context: None is not of type 'object'",
    "wrong-type": "totalExamples: '2' is not of type 'integer'",
    "not-a-session": "not a session-logger dspy file",
    "latin1": "not UTF-8",
    "no-examples": "examples: []",
}


def sample_files() -> list[Path]:
    """The shipped sample session files, in path order."""
    return sorted(SAMPLES.rglob("dspy-*.json"))


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shipped_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def make_project(dest: Path, logs_dir: Path | str | None = None, **data: Any) -> Path:
    """A copy of the code the data stages run (lib, stages, schemas, params.yaml) in `dest`.

    `logs_dir` becomes data.session_logs_dir; other keyword arguments override keys of `data:`.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("lib", "stages", "schemas"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    params = shipped_params()
    params["data"]["session_logs_dir"] = str(logs_dir if logs_dir is not None else SAMPLES)
    params["data"].update(data)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return dest


def project_with_pipeline(dest: Path) -> Path:
    """`make_project` plus dvc.yaml: for commands that could start a run, so they never run in the checkout."""
    project = make_project(dest)
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    return project


def env() -> dict[str, str]:
    """Environment for subprocesses: the project's virtualenv first on PATH, no analytics."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{out.get('PATH', '')}"
    out["DVC_NO_ANALYTICS"] = "1"
    out.pop("PYTHONPATH", None)
    return out


def crashing_engine(folder: Path) -> Path:
    """A libllama.so in `folder` that dies with SIGSEGV as it loads, as a miscompiled engine does at its first
    decode; point LLAMA_CPP_LIB_PATH at the folder to use it."""
    source = folder / "crash.c"
    source.write_text("#include <signal.h>\n__attribute__((constructor)) static void crash(void) { raise(SIGSEGV); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(folder / "libllama.so"), str(source)], check=True)
    return folder


def run_stage(project: Path, stage: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m stages.<stage>` in `project` (as dvc.yaml does); never raises on failure."""
    return subprocess.run([PYTHON, "-m", f"stages.{stage}"], cwd=project, env=env(), capture_output=True,
                          text=True, timeout=600)


def run_data_stages(project: Path) -> None:
    """parse -> build_examples -> split; fails the test with the stage's output when one fails."""
    for stage in ("parse", "build_examples", "split"):
        proc = run_stage(project, stage)
        assert proc.returncode == 0, f"stage {stage} failed:\n{proc.stdout}\n{proc.stderr}"


def split_bytes(project: Path) -> dict[str, bytes]:
    return {name: (project / "data" / "splits" / name).read_bytes() for name in SPLIT_FILES}


# ---------------------------------------------------------------- a misbehaving model server

REPLY = json.dumps({"reasoning": "Read the file the task names first.", "plan": ["read", "edit"],
                    "next_action": {"tool": "read", "args": {"filePath": "README.md"}}})
HANG = None  # a behaviour's answer meaning: never answer


def completion(text: str = REPLY) -> tuple[int, dict, dict]:
    return 200, {}, {"id": "c1", "object": "chat.completion", "created": 0, "model": "smollm2",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}}


def tool_completion(name: str, args: dict, i: int = 0) -> tuple[int, dict, dict]:
    """A chat completion whose answer is one native tool call."""
    call = {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    return 200, {}, {"id": f"c{i}", "object": "chat.completion", "created": 0, "model": "smollm2",
                     "choices": [{"index": 0, "finish_reason": "tool_calls",
                                  "message": {"role": "assistant", "content": None, "tool_calls": [call]}}],
                     "usage": {"prompt_tokens": 900, "completion_tokens": 12, "total_tokens": 912}}


# Answers a user's server may give instead of a completion: llama-server's own error for a prompt longer
# than its context, and a page (a proxy's sign-in) where an API was expected.
CONTEXT_EXCEEDED = (400, {}, {"error": {"code": 400, "type": "exceed_context_size_error", "n_ctx": 2048,
                                        "message": "the request exceeds the available context size, try "
                                                   "increasing it", "n_prompt_tokens": 5000}})
WEB_PAGE = (200, {"Content-Type": "text/html"}, "<html>sign in to the proxy</html>")


def error(status: int, headers: dict | None = None) -> tuple[int, dict, dict]:
    return status, headers or {}, {"error": {"message": f"test server says {status}", "type": "server_error",
                                             "code": status}}


class Loopback:
    """A real HTTP server on 127.0.0.1: lists model `model` on /v1/models and answers each chat
    completion with `behaviour(i)` for the i-th request (0-based): (status, headers, body) or HANG.
    A body that is a string is sent as it is (a reply that is not JSON)."""

    def __init__(self, behaviour: Callable[[int], tuple[int, dict, dict] | None], model: str = "smollm2") -> None:
        self.behaviour = behaviour
        self.posts = 0
        self.requests: list[dict] = []  # the i-th request's JSON body, for a behaviour that answers by it
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, headers: dict, body: dict | str) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, str(value))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {}, {"object": "list", "data": [{"id": model, "object": "model"}]})
                else:
                    self._send(*error(404))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    index = outer.posts
                    outer.posts += 1
                    outer.requests.append(json.loads(body or b"{}"))
                answer = outer.behaviour(index)
                if answer is HANG:
                    outer.release.wait()  # a stuck server: the connection stays open, nothing comes
                    return
                self._send(*answer)

            def log_message(self, *args):
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# The fake secrets planted in the sample sessions (scripts/make_samples.py), by the kind that must catch them.
SAMPLE_SECRETS = {
    "openai_key": "sk-proj-EXAMPLEexampleEXAMPLEexample0123456789abcdefEXAMPLE",
    "bearer_token": "EXAMPLEtokenEXAMPLEtoken0000111122223333",
    "github_token": "ghp_EXAMPLE0123456789EXAMPLE0123456789ab",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "password": "hunter2secret",
    "private_key": "MIIEowIBAAKCAQEAEXAMPLEKEY",
}


def planted_in(text: str) -> set[str]:
    """The kinds of SAMPLE_SECRETS whose value appears in `text` (an oracle independent of the redactor)."""
    return {kind for kind, secret in SAMPLE_SECRETS.items() if secret in text}


def sample_step_rows(redact: bool = True) -> list[dict[str, Any]]:
    """Step rows from the shipped sample sessions, redacted (unless `redact` is false) and filtered as the
    pipeline's defaults do."""
    from lib.data.examples import Filters, build
    from lib.data.redact import Redactor
    from lib.data.session import Session
    from lib.data.sources import read_all
    from lib.data.sources.common import Rejected

    sessions = [Session.from_dict(Redactor(enabled=redact).value(item.to_dict()))
                for _, item in read_all(SAMPLES) if not isinstance(item, Rejected)]
    return list(build(sessions, Filters(True, "finish_stop", 0.0, 0.3, None), "step", 6, 1200))
