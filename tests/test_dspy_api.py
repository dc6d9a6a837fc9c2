"""The project uses DSPy through its public API; the internals it cannot do without live in
lib/core/dspy_internals.py alone, where each one is explained (DSPy 3.4.1)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INTERNALS = ROOT / "lib" / "core" / "dspy_internals.py"
# Public: what `dspy` itself exports, and its documented utility and callback packages.
PUBLIC_MODULES = {"dspy", "dspy.utils"}


def dspy_problems(path: Path) -> list[str]:
    """Uses of DSPy outside its public API in one file: imports of internal modules or private names,
    and private attributes reached through `dspy.`."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dspy":
            if node.module not in PUBLIC_MODULES:
                problems.append(f"{path.name}:{node.lineno}: imports from {node.module}")
            problems += [f"{path.name}:{node.lineno}: imports private {a.name}" for a in node.names
                         if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            problems += [f"{path.name}:{node.lineno}: imports {a.name}" for a in node.names
                         if a.name.startswith("dspy.") and a.name not in PUBLIC_MODULES]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id == "dspy":
                problems.append(f"{path.name}:{node.lineno}: uses dspy...{node.attr}")
    return problems


def project_files() -> list[Path]:
    return [p for folder in ("lib", "stages", "bench", "devtools") for p in sorted((ROOT / folder).rglob("*.py"))
            if p != INTERNALS]


@pytest.mark.parametrize("path", project_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_dspy_only_through_its_public_api(path: Path):
    assert dspy_problems(path) == []


def test_a_private_dspy_use_is_caught(tmp_path: Path):
    planted = tmp_path / "planted.py"
    planted.write_text("import dspy\nfrom dspy.clients.execution import _cached, execute\n"
                       "x = dspy.settings._lock\n", encoding="utf-8")
    assert dspy_problems(planted) == ["planted.py:2: imports from dspy.clients.execution",
                                      "planted.py:2: imports private _cached", "planted.py:3: uses dspy..._lock"]
    assert dspy_problems(INTERNALS)  # the one place allowed to, and it does
