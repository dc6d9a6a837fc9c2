"""llama.cpp's own OpenAI-compatible server (`llama-server`), built from the engine's vendored sources.

This is what a user's Ollama, vLLM or LM Studio looks like from OpenCode: an OpenAI-compatible API that
renders each request with the model's own chat template and parses tool calls in that model's own
syntax (`--jinja`). It is built from the llama.cpp sources vendored in the llama-cpp-python sdist the
engine pins, with the engine's CPU flags (never AMX, see lib/models/engine.py), once per (version,
flags) into the engine's cache (`llama-server-<version>-<flags>/`), and only when something asks for it (the
live stage, its tests, the parity test). The web UI is not in the sdist and is not built.

    python -m lib.models.server build             build it if missing; print its path
    python -m lib.models.server serve MODEL.gguf  run it on 127.0.0.1 until Ctrl-C
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from lib.core.errors import UserError
from lib.models import engine

BINARY = "llama-server"
# The server's own targets only: no tests, examples, UI (its assets are not in the sdist) or HTTPS.
SERVER_ARGS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
               "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF",
               "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_CCACHE=OFF")


def folder(build: engine.Build | None = None) -> Path:
    build = build or engine.plan()
    return engine.CACHE / build.name.replace(engine.DIST, BINARY, 1)


def binary(build: engine.Build | None = None) -> Path | None:
    """The built server for this machine's flags, or None."""
    path = folder(build) / BINARY
    return path if path.is_file() and (path.parent / engine.MANIFEST).is_file() else None


def _tool(name: str) -> str:
    """cmake/ninja from the project's virtualenv (pinned in requirements.txt), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if not found:
        raise engine.EngineError(f"building {BINARY} needs {name}: run ./setup.sh (requirements.txt pins it)")
    return found


def build(python: str = sys.executable) -> Path:
    """The server binary for this machine, compiled once (about 8 minutes on 2 cores) and kept."""
    plan = engine.plan()
    found = binary(plan)
    if found:
        return found
    target = folder(plan)
    engine.CACHE.mkdir(parents=True, exist_ok=True)
    print(f"building {BINARY} from the llama.cpp sources in {engine.PACKAGE} {engine.VERSION} with\n"
          f"  {' '.join(plan.cmake_args)}\n  once, into {target} "
          f"(about 8 minutes on 2 cores)", flush=True)
    with tempfile.TemporaryDirectory(dir=engine.CACHE, prefix=".building-") as tmp:
        work = Path(tmp)
        subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "--no-cache-dir", "-d", str(work), f"{engine.PACKAGE}=={engine.VERSION}"], check=True)
        (sdist,) = work.glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(work / "src", filter="data")
        (source,) = (work / "src").glob("*/vendor/llama.cpp")
        env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        log = work / "build.log"
        engine.run_logged([_tool("cmake"), "-S", str(source), "-B", str(work / "build"), "-G", "Ninja",
                           f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}", *SERVER_ARGS, *plan.cmake_args], env,
                          work / "configure.log", f"configuring {BINARY}")
        engine.run_logged([_tool("cmake"), "--build", str(work / "build"), "--target", BINARY], env, log,
                          f"building {BINARY}")
        out = work / "out"
        out.mkdir()
        shutil.copy2(work / "build" / "bin" / BINARY, out / BINARY)
        (out / engine.MANIFEST).write_text(json.dumps({**plan.manifest(), "binary": BINARY}, indent=2,
                                                      sort_keys=True) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(out, target)  # atomic: a half-built folder never looks finished
    return target / BINARY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model: Path, alias: str, *, ctx: int = 8192, threads: int = 2, log: Path | None = None,
          extra: tuple[str, ...] = (), start_timeout: float = 180.0,
          port: int | None = None) -> Iterator[tuple[str, Callable[[], str | None]]]:
    """Run the server for `model` on a loopback port (None: a free one). Yields its OpenAI base URL (…/v1)
    and a function that says why the server is gone (its exit and log), or None while it runs."""
    exe = build()
    port = port or free_port()
    log = log or Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    cmd = [str(exe), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "--jinja", "-c", str(ctx),
           "-t", str(threads), "--alias", alias, "--no-webui", *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise UserError(f"{BINARY} did not start for {model.name} (log {log}):\n{tail}")
            time.sleep(0.5)

        def gone() -> str | None:
            if proc.poll() is None:
                return None
            return f"{BINARY} exited with {proc.returncode}; log {log}:\n{log.read_text(errors='replace')[-1500:]}"

        yield base + "/v1", gone
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End a server process: SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.models.server", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the server if missing and print its path")
    run = sub.add_parser("serve", help="serve a GGUF file on 127.0.0.1 until interrupted")
    run.add_argument("model", type=Path)
    run.add_argument("--alias", default="local", help="the model name clients ask for")
    run.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    run.add_argument("--ctx", type=int, default=32768, help="context window in tokens")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
        else:
            with serve(args.model, args.alias, ctx=args.ctx, port=args.port, log=Path("/dev/stderr")) as (url, _):
                print(f"serving {args.model.name} as '{args.alias}' at {url}", flush=True)
                while True:
                    time.sleep(3600)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
