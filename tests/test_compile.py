"""lib.optimize.compile: the one entry point that compiles and selects, for the stage and every bench."""
import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from lib.optimize import compile as C
from lib.scoring.metric import Metric

ROOT = Path(__file__).resolve().parent.parent
ROW = {"id": "s/t0/s0", "inputs": {"task": "t", "context": "", "history": "", "tools": "read", "steps_so_far": ""},
       "outputs": {}, "gold": {"next_action": {"tool": "read", "args": {"filePath": "a.py"}}, "plan": ["read"]}}


def params(select_on: str, metric: str | None = None) -> dict:
    return {"data": {"random_seed": 7},
            "optimization": {"select_on": select_on, "optimizer": "labeled", "labeled": {"k": 2}, "knn": {"k": [1]},
                             "num_threads": 1, "metric": metric, "metric_weights": {"tool_validity": 1}}}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list:
    seen: list = []
    monkeypatch.setattr(C, "optimize", lambda name, settings, program, train, val, metric, *rest, **kw:
                        seen.append((name, settings, len(train), len(val), metric, kw.get("ledger"))) or "compiled")
    monkeypatch.setattr(C, "deployed_selection", lambda p, rows, ledger: ("adapter", f"replay metric on {len(rows)}"))
    return seen


RT = SimpleNamespace(teacher=None, student=None, ledger="ledger")


def test_selects_on_replay_where_params_say(calls: list):
    assert C.compile_program(params("replay"), RT, [ROW], [ROW, ROW]) == "compiled"
    assert calls == [("labeled", {"k": 2}, 1, 2, "replay metric on 3", "ledger")]


def test_selects_offline_with_the_params_metric(calls: list):
    C.compile_program(params("offline"), RT, [ROW], [ROW], name="knn")
    name, settings, _, _, metric, _ = calls[0]
    assert (name, settings) == ("knn", {"k": [1]}) and isinstance(metric, Metric)


def test_stage_and_benches_compile_through_the_entry_point():
    """No stage or bench calls an optimizer or the selection itself: what a bench measures is what ships."""
    for path in [ROOT / "stages" / "optimize.py", *sorted((ROOT / "bench").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in ("lib.optimize.optimizers", "lib.optimize.selection"):
                assert {a.name for a in node.names} <= {"OPTIMIZERS"}, f"{path.name} imports {node.module} directly"
