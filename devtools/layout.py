"""Checks that the layout keeps two promises, read from the code itself (no imports are run).

1. Every project module a stage imports, followed transitively, lies inside that stage's `deps` in
   dvc.yaml (a dep names a file or a folder), so `dvc repro` re-runs a stage whenever its code changes.
2. No package in lib/ imports one that its docstring's `Must not import ...` names, and nothing in
   lib/ imports stages, bench or devtools.

`python -m devtools.layout [ROOT]` prints the problems (exit status 1 when there are any).
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

PROJECT = ("lib", "stages", "bench", "devtools")
_FORBIDDEN = re.compile(r"Must not import ((?:lib(?:\.\w+)*)(?:, lib(?:\.\w+)*)*)")


def module_file(root: Path, name: str) -> Path | None:
    """The file of project module `name` (a package's __init__.py), or None if it is not one."""
    if name.split(".")[0] not in PROJECT:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(path: Path, root: Path) -> set[str]:
    """Every module an import statement in `path` names (at any depth: lazy imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names
                         if module_file(root, f"{node.module}.{a.name}"))  # `from lib.core import files`
    return names


def project_imports(root: Path, path: Path) -> set[str]:
    """The project modules `path` imports, with the packages Python runs on the way (their __init__)."""
    found: set[str] = set()
    for name in imported_names(path, root):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if module_file(root, prefix):
                found.add(prefix)
    return found


def closure(root: Path, module: str) -> set[str]:
    """`module` and every project module it imports, transitively."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(root, name)
        if path is not None:
            todo.extend(project_imports(root, path) - seen)
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
    for name in list(seen):
        parts = name.split(".")
        seen.update(".".join(parts[:i]) for i in range(1, len(parts)) if module_file(root, ".".join(parts[:i])))
    return seen


def _covered(rel: str, deps: list[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def stage_problems(root: Path) -> list[str]:
    """Modules a stage imports that its deps in dvc.yaml do not cover."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    problems = []
    for stage, spec in stages.items():
        m = re.fullmatch(r"python -m ([\w.]+)", str(spec.get("cmd", "")).strip())
        if not m:
            problems.append(f"{stage}: cmd is not `python -m <module>`, so its imports cannot be read")
            continue
        deps = [str(d) for d in spec.get("deps", [])]
        for name in sorted(closure(root, m.group(1))):
            rel = module_file(root, name).relative_to(root).as_posix()
            if not _covered(rel, deps):
                problems.append(f"{stage}: imports {name} ({rel}), which its deps in dvc.yaml do not cover")
    return problems


def forbidden(init: Path) -> list[str] | None:
    """The packages a package's docstring says it must not import; None when it says nothing."""
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    m = _FORBIDDEN.search(" ".join(doc.split()))
    return m.group(1).split(", ") if m else None


def direction_problems(root: Path) -> list[str]:
    """Imports against the order the package docstrings declare, and lib imports of stages/bench/devtools."""
    problems = []
    for init in sorted((root / "lib").glob("*/__init__.py")):
        package = f"lib.{init.parent.name}"
        banned = forbidden(init)
        if banned is None:
            problems.append(f"{package}: its docstring does not say what it must not import (`Must not import ...`)")
            continue
        banned += [p for p in PROJECT if p != "lib"]
        for path in sorted(init.parent.rglob("*.py")):
            for name in sorted(imported_names(path, root)):
                hit = next((b for b in banned if name == b or name.startswith(b + ".")), None)
                if hit:
                    problems.append(f"{path.relative_to(root).as_posix()}: imports {name}, but {package} "
                                    f"must not import {hit}")
    for path in sorted((root / "lib").glob("*.py")):
        for name in sorted(imported_names(path, root)):
            if name.split(".")[0] in PROJECT[1:]:
                problems.append(f"{path.relative_to(root).as_posix()}: imports {name}; lib must not import it")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else ".").resolve()
    problems = stage_problems(root) + direction_problems(root)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
