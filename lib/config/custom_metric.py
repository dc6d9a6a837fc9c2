"""A user's own metric, named in params.yaml as `optimization.metric: module:function`.

The function has DSPy's metric signature, `metric(example, prediction, trace=None)`, and returns a
score from 0 to 1 (a bool counts as 0 or 1), or, for GEPA's textual feedback, an object with `score`
and `feedback` (`dspy.Prediction(score=..., feedback=...)` or a dict). The module is one inside the
project (e.g. `my_metrics.py` in the project root) or any importable one.

This module only finds and checks the callable and reads its answers; lib/scoring/metric.py decides how it
is used (selection) and where it is reported (beside the built-in composite).
"""
from __future__ import annotations

import importlib
import inspect
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from lib.core.errors import UserError

KEY = "optimization.metric"
ROOT = Path(__file__).resolve().parents[2]
_SIGNATURE = "def my_metric(example, prediction, trace=None) -> float"


class Answer(NamedTuple):
    score: float
    feedback: str | None


def problem(spec: str) -> str | None:
    """What is wrong with `module:function` (import, attribute, signature), with the fix; None = fine."""
    try:
        load(spec)
    except UserError as exc:
        return str(exc)
    return None


def load(spec: str) -> Callable[..., Any]:
    """The callable `spec` names, checked to accept (example, prediction, trace). Raises UserError."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{KEY}: {spec!r} is not `module:function`; write e.g. `my_metrics:tool_match` "
                        f"for a function tool_match in my_metrics.py in the project root")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # a module inside the project, whatever the working directory
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserError(f"{KEY}: no module {module_name!r}; put {module_name.replace('.', '/')}.py in the "
                            f"project root or install the package that provides it") from None
        raise UserError(f"{KEY}: importing {module_name!r} failed: {exc}; install what it imports") from None
    except Exception as exc:  # the user's module itself is broken
        raise UserError(f"{KEY}: importing {module_name!r} failed ({type(exc).__name__}: {exc}); "
                        f"fix that module") from None
    fn = getattr(module, attr, None)
    if fn is None:
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise UserError(f"{KEY}: module {module_name!r} has no {attr!r}"
                        + (f" (it defines {', '.join(names)})" if names else "")
                        + f"; name a function defined as `{_SIGNATURE}`")
    if not callable(fn):
        raise UserError(f"{KEY}: {spec} is a {type(fn).__name__}, not a function; "
                        f"name a function defined as `{_SIGNATURE}`")
    try:
        inspect.signature(fn).bind(None, None, None)
    except TypeError:
        raise UserError(f"{KEY}: {spec}{_shown_signature(fn)} cannot be called as DSPy calls a metric, "
                        f"fn(example, prediction, trace); define it as `{_SIGNATURE}`") from None
    except ValueError:  # no signature to inspect (some builtins): let the first call tell
        pass
    return fn


def answer(spec: str, value: Any) -> Answer:
    """Read what the metric returned: a 0-1 number, a bool, or an object with score (and feedback)."""
    feedback = None
    if isinstance(value, dict) and "score" in value:
        value, feedback = value["score"], value.get("feedback")
    elif not isinstance(value, (int, float)) and hasattr(value, "score"):
        value, feedback = getattr(value, "score"), getattr(value, "feedback", None)
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise UserError(f"{KEY}: {spec} returned {value!r}; a metric must return a number from 0 to 1 "
                        f"(or dspy.Prediction(score=..., feedback=...) for GEPA)")
    return Answer(float(value), None if feedback is None else str(feedback))


def _shown_signature(fn: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return ""
