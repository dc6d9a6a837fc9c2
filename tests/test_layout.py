"""The layout's two promises (devtools/layout.py): stage deps cover every module a stage imports, and
packages import only downward. Each check is also shown to fail on a planted violation."""
import shutil
from pathlib import Path

import pytest

from devtools.layout import closure, direction_problems, stage_problems

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the code and dvc.yaml to plant violations in."""
    for name in ("lib", "stages", "bench", "devtools"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def test_every_stage_dep_covers_its_imports():
    assert stage_problems(ROOT) == []


def test_packages_import_only_downward():
    assert direction_problems(ROOT) == []


def test_closure_follows_imports_transitively():
    found = closure(ROOT, "stages.build_examples")
    # the stage's work is in lib.data.build_examples, which reaches examples, then the tool facts
    assert {"lib.data.build_examples", "lib.data.examples", "lib.tools.facts", "lib", "lib.data"} <= found
    assert not any(name.startswith(("lib.models", "lib.opencode")) for name in found)


def test_a_missing_dep_fails(tree: Path):
    text = (tree / "dvc.yaml").read_text(encoding="utf-8")
    (tree / "dvc.yaml").write_text(text.replace("      - lib/scoring\n", "", 1), encoding="utf-8")
    assert any(p.startswith("baseline: imports lib.scoring.") for p in stage_problems(tree))


def test_an_import_outside_the_deps_fails(tree: Path):
    stage = tree / "stages" / "split.py"
    stage.write_text(stage.read_text(encoding="utf-8") + "\n\ndef _late():\n    from lib.models import lm\n",
                     encoding="utf-8")
    assert any(p.startswith("split: imports lib.models.lm ") for p in stage_problems(tree))


def test_an_upward_import_fails(tree: Path):
    module = tree / "lib" / "data" / "split.py"
    module.write_text(module.read_text(encoding="utf-8") + "\nfrom lib.scoring.metric import Metric\n",
                      encoding="utf-8")
    problems = direction_problems(tree)
    assert problems == ["lib/data/split.py: imports lib.scoring.metric, but lib.data must not import lib.scoring"]


def test_a_package_without_a_declared_order_fails(tree: Path):
    (tree / "lib" / "extra").mkdir()
    (tree / "lib" / "extra" / "__init__.py").write_text('"""Something new."""\n', encoding="utf-8")
    assert direction_problems(tree) == ["lib.extra: its docstring does not say what it must not import "
                                        "(`Must not import ...`)"]


def test_lib_never_imports_stages_or_benches(tree: Path):
    module = tree / "lib" / "core" / "files.py"
    module.write_text(module.read_text(encoding="utf-8") + "\nimport bench.sessions\n", encoding="utf-8")
    assert direction_problems(tree) == ["lib/core/files.py: imports bench.sessions, but lib.core must not import bench"]
