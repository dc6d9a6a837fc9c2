"""The llama.cpp engine: its build flags, the wheel kept per flags, and the child-process proof."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lib.models import engine
from conftest import ROOT, need
from helpers import crashing_engine, env, make_project, run_data_stages

AMX_XEON = frozenset("fpu sse4_2 avx f16c fma avx2 bmi2 avx512f avx512cd avx512vl avx512dq avx512bw "
                     "avx512vbmi avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16".split())
LAPTOP = frozenset("fpu sse4_2 avx f16c fma avx2 bmi2 avx_vnni".split())


@pytest.fixture
def x86(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "is_x86_64", lambda: True)


def test_an_amx_xeon_gets_every_level_it_reports_but_never_amx(x86: None) -> None:
    build = engine.plan(AMX_XEON, user_args="")
    args = set(build.cmake_args)
    assert {"-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= args
    assert not [a for a in args if "AMX" in a and a.endswith("=ON")]
    assert {"-DGGML_AVX2=ON", "-DGGML_AVX512=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AVX_VNNI=OFF"} <= args
    assert "amx_tile" not in build.requires and "avx512f" in build.requires
    assert build.name.endswith("-x86-sse42-avx-f16c-fma-avx2-bmi2-avx512-vbmi-vnni-bf16")


def test_a_laptop_without_avx512_gets_no_avx512_code(x86: None) -> None:
    build = engine.plan(LAPTOP, user_args="")
    assert "-DGGML_AVX512=OFF" in build.cmake_args and "-DGGML_AVX_VNNI=ON" in build.cmake_args
    assert not [f for f in build.requires if f.startswith("avx512")]
    # AVX-512 needs all five of its parts: one missing part keeps it off.
    partial = engine.plan(LAPTOP | {"avx512f", "avx512cd", "avx512vl", "avx512dq"}, user_args="")
    assert "-DGGML_AVX512=OFF" in partial.cmake_args


def test_the_build_folder_changes_with_the_flags(x86: None) -> None:
    names = {engine.plan(AMX_XEON, user_args="").name, engine.plan(LAPTOP, user_args="").name,
             engine.plan(LAPTOP, user_args="-DGGML_CUDA=ON").name}
    assert len(names) == 3
    cuda = engine.plan(LAPTOP, user_args="-DGGML_CUDA=ON")
    assert cuda.cmake_args[-1] == "-DGGML_CUDA=ON"  # last, so the user's flags win in CMake
    assert engine.plan(LAPTOP, user_args="-DGGML_CUDA=ON").name == cuda.name  # and stable


def test_build_progress_is_read_from_ninja_and_make_lines() -> None:
    assert engine._progress("  [70/140] /usr/bin/g++ -c ggml.c") == 50
    assert engine._progress("[ 30%] Building C object") == 30
    assert engine._progress("-- Configuring done") is None


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 amx_tile\n")
    assert engine.cpu_flags(info) == {"fpu", "avx2", "amx_tile"}
    assert engine.cpu_name(info) == "Some Xeon"
    assert engine.cpu_flags(tmp_path / "absent") == frozenset()


def test_a_built_wheel_is_reused_not_recompiled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, x86: None) -> None:
    monkeypatch.setattr(engine, "CACHE", tmp_path)
    build = engine.plan(LAPTOP, user_args="")
    build.folder.mkdir(parents=True)
    wheel = build.folder / f"{engine.DIST}-{engine.VERSION}-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"wheel")
    (build.folder / engine.MANIFEST).write_text(json.dumps(build.manifest()))

    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("recompiled although the wheel for these flags exists")
    monkeypatch.setattr(subprocess, "Popen", no_compiling)
    assert engine.build_wheel(build) == wheel
    # Another set of flags has no wheel yet: a folder without its manifest does not count as built.
    other = engine.plan(AMX_XEON, user_args="")
    other.folder.mkdir()
    (other.folder / wheel.name).write_bytes(b"half")
    assert engine.wheel_of(other) is None


def test_a_build_for_features_this_cpu_lacks_is_refused_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "installed_build",
                        lambda: {"version": engine.VERSION, "cmake_args": ["-DGGML_AVX512=ON"], "requires": ["avx512f"]})
    monkeypatch.setattr(engine, "cpu_flags", lambda cpuinfo=None: LAPTOP)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("the probe ran a build this CPU cannot run"))
    with pytest.raises(engine.EngineError) as err:
        engine.probe(Path("model.gguf"))
    message = str(err.value)
    assert "lacks (avx512f)" in message and "-DGGML_AVX512=ON" in message and "./setup.sh" in message


# ------------------------------------------------------------------------ the real engine, in a child

def test_set_up_installed_the_build_planned_for_this_cpu() -> None:
    manifest = engine.installed_build()
    need(manifest is not None, "llama-cpp-python was not installed by ./setup.sh")
    assert manifest["cmake_args"] == list(engine.plan().cmake_args)
    assert set(manifest["requires"]) <= engine.cpu_flags()


def test_the_embedded_model_decodes_in_a_child_process(smollm_path: Path) -> None:
    found = engine.probe(smollm_path)
    assert found.tokens >= 1
    # The build in use has no AMX kernels, whatever this CPU reports.
    assert "AMX_INT8 = 1" not in found.system_info and "CPU" in found.system_info


@pytest.fixture(scope="module")
def broken_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crashing_engine(tmp_path_factory.mktemp("broken-engine"))


def test_a_crashing_engine_is_reported_with_the_fix(broken_engine: Path, smollm_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_CPP_LIB_PATH", str(broken_engine))
    with pytest.raises(engine.EngineError) as err:
        engine.probe(smollm_path)
    message = str(err.value)
    assert "died with SIGSEGV" in message and str(broken_engine) in message
    assert "CPU:" in message and "build:" in message and "CMAKE_ARGS=" in message and "TROUBLESHOOTING.md" in message


def _run(args: list[str], broken: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env={**env(), "LLAMA_CPP_LIB_PATH": str(broken)},
                          capture_output=True, text=True, timeout=600)


def test_validate_and_the_check_command_fail_on_a_crashing_engine(broken_engine: Path, smollm_path: Path) -> None:
    check = _run(["-m", "lib.models.engine", "check"], broken_engine)
    assert check.returncode == 1 and "died with SIGSEGV" in check.stderr and "fix:" in check.stderr
    validate = _run(["-m", "lib.cli", "validate"], broken_engine)
    assert validate.returncode == 1
    assert "models.student:" in validate.stdout and "died with SIGSEGV" in validate.stdout
    assert "Segmentation fault" in validate.stdout and "./setup.sh" in validate.stdout


def test_a_stage_on_a_crashing_engine_ends_with_the_fix_not_a_bare_segfault(
        broken_engine: Path, smollm_path: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    run_data_stages(project)
    done = _run(["-m", "stages.baseline"], broken_engine, cwd=project)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "error: " in done.stderr and "llama.cpp engine" in done.stderr and "died with SIGSEGV" in done.stderr
    assert "fix:" in done.stderr and not (project / "metrics" / "baseline.json").exists()
