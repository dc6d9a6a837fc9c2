"""How good a predicted next action is: five 0-1 components, a weighted composite, and feedback text.

Components (None = the example has no ground truth for it; it is dropped and the weights renormalize):
- tool_validity: the action parses, names an offered tool, and carries that tool's required arguments.
- plan_coherence: F1 of the longest common subsequence of predicted and gold tool names (exact names).
- first_action: 0 for another tool; else half for the tool, half for agreement on its key arguments.
- reasoning_quality: the reasoning names the action's target or purpose and relates to the task, with a
  penalty for unrelated words; it depends only on the *set* of content words, so repetition and filler
  cannot raise it, and an echoed file list counts as unrelated.
- efficiency: min(1, len(gold plan) / len(predicted plan)); an empty plan scores 0.

A prediction whose next_action does not parse scores exactly 0 overall.

A user's own metric (`optimization.metric: module:function`, see lib/config/custom_metric.py) takes over
selection; the composite is still computed and reported, and the user's score sits beside it as
`custom_metric` among the components (with weight 0, so it never enters the composite).
"""
from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections import Counter
from collections.abc import Mapping
from typing import Any

import dspy

from lib.config import custom_metric
from lib.program.agent import GOLD_KEY, INTERNAL_TOOLS, parse_action, parse_plan
from lib.tools.facts import KEY_ARGS, required_args

COMPONENTS = ("tool_validity", "plan_coherence", "first_action", "reasoning_quality", "efficiency")
CUSTOM = "custom_metric"  # the user's metric, reported beside the components

# How a key argument is compared with the gold one.
_PATH_ARGS = frozenset({"filePath", "path"})
_EXACT_ARGS = frozenset({"pattern", "include", "url", "operation", "subagent_type", "name"})
_TOKEN_ARGS = frozenset({"command", "description", "query", "prompt"})
_PATCH_ARGS = frozenset({"patchText", "patch"})
_CUT = "…"  # lib.data.examples cuts long gold strings with this mark

# What each tool is for, in the words a justification would use.
_PURPOSE: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    "read": "read open view inspect look check examine contents understand",
    "edit": "edit change modify fix update replace correct adjust rename refactor",
    "multiedit": "edit change modify fix update replace correct adjust rename refactor",
    "write": "write create add new save generate",
    "apply_patch": "patch edit change modify fix update add create delete",
    "patch": "patch edit change modify fix update add create delete",
    "bash": "run execute test tests install build compile lint verify check command shell",
    "grep": "search find grep locate look occurrences usages references where",
    "glob": "find list locate search match matching names",
    "list": "list directory folder contents structure explore layout",
    "todowrite": "plan todo todos steps track organize break",
    "todoread": "todo todos progress plan remaining",
    "task": "delegate subagent agent investigate explore research",
    "webfetch": "fetch download docs documentation page web url",
    "websearch": "search web online docs documentation look",
    "codesearch": "search examples docs documentation api library usage",
    "lsp": "definition references symbol symbols hover navigate implementation",
    "skill": "skill load",
    "question": "ask clarify question confirm user",
}.items()}

# Words that carry no justification either way (they neither help nor count against).
_GENERIC = frozenset("""
a about above after again all also am an and any are as at be because been before being below between
both but by can could did do does doing done down during each few for from further had has have having
he her here hers him his how i if in into is it its itself just let lets me more most my myself no nor
not now of off on once only or other our ours out over own same she should so some such than that the
their them then there these they this those through to too under until up very was we were what when
which while who whom why will with would you your yours ok okay first next step steps need needs going
want wants make sure start begin get got go able help please try using use used uses thing things way
file files code project task user order current currently already still let's i'll we'll it's that's
py js ts tsx jsx mjs cjs md json yaml yml toml txt go rs java kt c h cc cpp hpp cs rb php sh html css
scss lock cfg ini xml sql content status priority id pending in_progress
""".split())

_ECHO_FILES = 4  # naming this many of the context's files reads as a copied file list, not a reason


def components(gold: Mapping[str, Any], pred: Any, tools: list[str], *, task: str = "",
               context: str = "") -> dict[str, float | None]:
    """Each component in 0-1, or None where the gold has no ground truth for it."""
    return _judge(gold, pred, tools, task, context)[0]


def composite(scores: Mapping[str, float | None], weights: Mapping[str, float]) -> float:
    """Weighted mean over the components that have a score and a positive weight; 0 when none do."""
    used = [(weights.get(k, 0), v) for k, v in scores.items() if v is not None and weights.get(k, 0) > 0]
    total = sum(w for w, _ in used)
    return 0.0 if total <= 0 else max(0.0, min(1.0, sum(w * v for w, v in used) / total))


class Metric:
    """DSPy metric: `metric(example, pred, trace=None)`; `gepa` is the GEPA feedback form.

    While bootstrapping (trace is not None) it answers whether the prediction is good enough to
    become a demo: score >= threshold and, where the gold says, the right tool; weak predictions
    never teach. With a `custom` metric (`module:function`), that function's score decides instead.
    """

    def __init__(self, weights: Mapping[str, float], threshold: float = 0.5, custom: str | None = None) -> None:
        known = {k: float(weights.get(k, 0) or 0) for k in COMPONENTS}
        if any(w < 0 for w in known.values()):
            raise ValueError(f"metric weights must be >= 0, got {known}")
        if not any(known.values()):
            raise ValueError("at least one metric weight must be positive")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.weights = known
        self.threshold = threshold
        self.custom = custom
        self._custom_fn = custom_metric.load(custom) if custom else None

    @classmethod
    def from_params(cls, optimization: Mapping[str, Any]) -> "Metric":
        """The metric params.yaml's `optimization` section asks for (weights, and the user's metric)."""
        return cls(optimization["metric_weights"], custom=optimization.get("metric"))

    def _run_custom(self, example: Any, pred: Any, trace: Any = None) -> custom_metric.Answer:
        return custom_metric.answer(self.custom, self._custom_fn(example, pred, trace))

    def __call__(self, example: Any, pred: Any, trace: Any = None) -> float | bool:
        if self._custom_fn is not None:
            score = self._run_custom(example, pred, trace).score
            return score if trace is None else score >= self.threshold
        scores = self.components(example, pred)
        value = self.combine(scores)
        if trace is None:
            return value
        # A demo with the wrong tool teaches the wrong habit however well the rest scores.
        return value >= self.threshold and scores.get("first_action") != 0

    def components(self, example: Any, pred: Any) -> dict[str, float | None]:
        """The components this metric uses (weight > 0) for one example, and the custom metric
        under CUSTOM when there is one; None = no ground truth."""
        scores = _judge(*_unpack(example, pred))[0]
        used: dict[str, float | None] = {k: v for k, v in scores.items() if self.weights[k] > 0}
        if self._custom_fn is not None:
            used[CUSTOM] = self._run_custom(example, pred).score
        return used

    def combine(self, scores: Mapping[str, float | None]) -> float:
        """The composite of component scores under this metric's weights."""
        return composite(scores, self.weights)

    def score(self, example: Any, pred: Any) -> float:
        return self.combine(self.components(example, pred))

    def feedback(self, example: Any, pred: Any) -> str:
        """What was wrong with the prediction and why, one sentence per problem."""
        scores, notes = _judge(*_unpack(example, pred))
        return self._feedback(scores, notes)

    def gepa(self, gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
             pred_trace: Any = None) -> dspy.Prediction:
        """GEPA's metric protocol: the same score (never a bool), with the feedback text."""
        scores, notes = _judge(*_unpack(gold, pred))
        used = {k: v for k, v in scores.items() if self.weights[k] > 0}
        if self._custom_fn is not None:
            own = self._run_custom(gold, pred, trace)
            return dspy.Prediction(score=own.score, feedback=own.feedback or self._feedback(scores, notes))
        return dspy.Prediction(score=composite(used, self.weights), feedback=self._feedback(scores, notes))

    def _feedback(self, scores: dict[str, float | None], notes: dict[str, str]) -> str:
        used = {k: v for k, v in scores.items() if self.weights[k] > 0}
        parts = ", ".join(f"{k} {v:.2f}" for k, v in used.items() if v is not None)
        head = f"Score {composite(used, self.weights):.2f} ({parts})."
        problems = [notes[k] for k in ("parse", *COMPONENTS) if k in notes and (k == "parse" or k in used)]
        return " ".join([head, *problems]) if problems else f"{head} The action, plan and reasoning are right."


# ---------------------------------------------------------------------------------------------
# Scoring


def _judge(gold: Mapping[str, Any], pred: Any, tools: list[str], task: str,
           context: str) -> tuple[dict[str, float | None], dict[str, str]]:
    gold_action = parse_action(gold.get("next_action")) if gold.get("next_action") else None
    gold_plan = gold.get("plan")
    gold_plan = gold_plan if isinstance(gold_plan, list) else parse_plan(gold_plan or "")
    gold_plan = gold_plan or None
    has_truth = {"tool_validity": True, "plan_coherence": gold_plan is not None,
                 "first_action": gold_action is not None, "reasoning_quality": True,
                 "efficiency": gold_plan is not None}

    raw_action = _get(pred, "next_action")
    action = parse_action(raw_action)
    if action is None:
        shown = " ".join(str(raw_action or "").split())[:120]
        note = ('next_action is ' + (f'not a JSON object {{"tool": ..., "args": {{...}}}} (got "{shown}")'
                                     if shown else "missing")
                + '; such an answer scores 0. Answer with one JSON object with keys reasoning, plan, '
                  'next_action, where next_action is {"tool": name, "args": {...}}.')
        return {k: (0.0 if has_truth[k] else None) for k in COMPONENTS}, {"parse": note}

    plan = parse_plan(_get(pred, "plan"))
    offered = [t for t in tools if t not in INTERNAL_TOOLS] or [t for t in KEY_ARGS if t not in INTERNAL_TOOLS]
    workdir = _workdir(context)
    notes: dict[str, str] = {}
    scores: dict[str, float | None] = {
        "tool_validity": _tool_validity(action, offered, notes),
        "plan_coherence": _plan_coherence(gold_plan, plan, notes) if gold_plan else None,
        "first_action": _first_action(gold_action, action, workdir, notes) if gold_action else None,
        "reasoning_quality": _reasoning_quality(str(_get(pred, "reasoning") or ""), action, task,
                                                _context_files(context), notes),
        "efficiency": _efficiency(gold_plan, plan, notes) if gold_plan else None,
    }
    return scores, notes


def _tool_validity(action: dict[str, Any], offered: list[str], notes: dict[str, str]) -> float:
    tool, args = action["tool"], action["args"]
    if tool not in offered:
        notes["tool_validity"] = f'Tool "{tool}" is not one of the offered tools ({", ".join(offered)}).'
        return 0.0
    required = required_args().get(tool, {})  # OpenCode's schema, as replay checks it
    if not required:
        return 1.0
    missing = [name for name, kind in required.items() if not _has_arg(args, name, kind, tool)]
    if missing:
        notes["tool_validity"] = (f"{tool} needs the argument(s) {', '.join(missing)} "
                                  f"(OpenCode's camelCase names; got {', '.join(sorted(args)) or 'none'}).")
    return 0.5 + 0.5 * (len(required) - len(missing)) / len(required)


def _has_arg(args: dict[str, Any], name: str, kind: type, tool: str) -> bool:
    value = args.get(name)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if not isinstance(value, kind):
        return False
    # An identifying argument must say something; others (e.g. edit's newString) may be empty.
    return bool(value) if name in KEY_ARGS.get(tool, ()) else True


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence of two name lists (exact equality of names)."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            cur = row[j]
            row[j] = prev + 1 if x == y else max(row[j], row[j - 1])
            prev = cur
    return row[-1]


def _plan_coherence(gold: list[str], plan: list[str] | None, notes: dict[str, str]) -> float:
    if not plan:
        notes["plan_coherence"] = ("plan is " + ("empty" if plan == [] else "not a JSON list of tool names")
                                   + f"; expected {json.dumps(gold)}.")
        return 0.0
    common = lcs_length(gold, plan)
    precision, recall = common / len(plan), common / len(gold)
    value = 0.0 if common == 0 else 2 * precision * recall / (precision + recall)
    if value < 1:
        missing = sorted((Counter(gold) - Counter(plan)).elements())
        extra = sorted((Counter(plan) - Counter(gold)).elements())
        said = [f"missing {', '.join(missing)}" if missing else "", f"unneeded {', '.join(extra)}" if extra else ""]
        said = [s for s in said if s] or ["same tools in another order"]
        notes["plan_coherence"] = f"plan {json.dumps(plan)} vs expected {json.dumps(gold)}: {'; '.join(said)}."
    return value


def _efficiency(gold: list[str], plan: list[str] | None, notes: dict[str, str]) -> float:
    if not plan:
        return 0.0
    value = min(1.0, len(gold) / len(plan))
    if value < 1:
        notes["efficiency"] = f"The plan takes {len(plan)} steps where {len(gold)} suffice."
    return value


def _first_action(gold: dict[str, Any], action: dict[str, Any], workdir: str, notes: dict[str, str]) -> float:
    expected = f'{gold["tool"]} {json.dumps(_key_args(gold), ensure_ascii=False)}'
    if action["tool"] != gold["tool"]:
        notes["first_action"] = f'The next action should be {expected}, not {action["tool"]}.'
        return 0.0
    names = [k for k in KEY_ARGS.get(gold["tool"], ()) if k in gold["args"] or k in action["args"]]
    if gold["tool"] not in KEY_ARGS:  # unknown tool: every argument identifies the call
        names = sorted(set(gold["args"]) | set(action["args"]))
    if not names:
        return 1.0
    sims = {k: arg_similarity(k, gold["args"].get(k), action["args"].get(k), workdir) for k in names}
    wrong = [f'{k} {json.dumps(action["args"].get(k), ensure_ascii=False)}' for k, v in sims.items() if v < 1]
    if wrong:
        notes["first_action"] = f"Right tool, but {', '.join(wrong)} differs from the expected {expected}."
    return 0.5 + 0.5 * sum(sims.values()) / len(sims)


def arg_similarity(name: str, gold: Any, pred: Any, workdir: str = "") -> float:
    """0-1 agreement of one argument: paths normalized, commands by token overlap, patterns exactly."""
    if name in _PATH_ARGS:
        return _path_similarity(gold, pred, workdir)
    if gold is None or pred is None:
        return 1.0 if gold == pred else 0.0
    if name in _PATCH_ARGS and isinstance(gold, str) and isinstance(pred, str):
        g, p = _patch_paths(gold, workdir), _patch_paths(pred, workdir)
        if g:
            return _jaccard(g, p)
    if name in _EXACT_ARGS and isinstance(gold, str) and isinstance(pred, str):
        return 1.0 if _same_text(gold, pred) else 0.0
    if isinstance(gold, str) and isinstance(pred, str):
        if gold.endswith(_CUT) and len(pred) >= len(gold):
            pred = pred[: len(gold) - 1] + _CUT  # compare only what the stored gold kept
        return _jaccard(_tokens(gold), _tokens(pred))
    return _jaccard(_tokens(json.dumps(gold, ensure_ascii=False)), _tokens(json.dumps(pred, ensure_ascii=False)))


def _path_similarity(gold: Any, pred: Any, workdir: str) -> float:
    g, p = _norm_path(gold, workdir), _norm_path(pred, workdir)
    if g is None or p is None:
        return 0.0
    if g == p:
        return 1.0
    # Without a known working directory, an absolute path matches the relative path it ends with.
    if g.startswith("/") != p.startswith("/"):
        absolute, relative = (g, p) if g.startswith("/") else (p, g)
        if relative != "." and absolute.endswith("/" + relative):
            return 1.0
    return 0.0


def _norm_path(value: Any, workdir: str) -> str | None:
    """'./src//a.py', '/work/proj/src/a.py' (under workdir /work/proj) -> 'src/a.py'; absent -> '.'."""
    if value is None:
        return "."  # an omitted path argument means the working directory
    if not isinstance(value, str):
        return None
    p = value.strip().strip("'\"").replace("\\", "/").rstrip(_CUT)
    if not p:
        return "."
    if workdir:
        root = posixpath.normpath(workdir.replace("\\", "/"))
        if p == root or p.startswith(root.rstrip("/") + "/"):
            p = posixpath.relpath(p, root)
    p = posixpath.normpath(p)
    return p[2:] if p.startswith("./") else p


def _patch_paths(text: str, workdir: str) -> set[str]:
    found = re.findall(r"^\*\*\* (?:Add File|Update File|Delete File|Move to):\s*(.+?)\s*$", text, re.M)
    return {p for p in (_norm_path(f, workdir) for f in found) if p}


def _same_text(gold: str, pred: str) -> bool:
    g, p = gold.strip(), pred.strip()
    if g.endswith(_CUT):  # the gold was cut for storage: agreeing on the kept part is agreement
        return p.startswith(g[:-1])
    return g.rstrip("/") == p.rstrip("/")


def _tokens(text: str) -> set[str]:
    cut = text.rstrip().endswith(_CUT)
    try:
        parts = shlex.split(text.rstrip().rstrip(_CUT))
    except ValueError:  # unbalanced quotes in a cut command
        parts = text.rstrip().rstrip(_CUT).split()
    if cut and parts:
        parts = parts[:-1]  # the last token of a cut string is probably partial
    return set(parts)


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _key_args(action: dict[str, Any]) -> dict[str, Any]:
    keys = KEY_ARGS.get(action["tool"])
    return dict(action["args"]) if keys is None else {k: action["args"][k] for k in keys if k in action["args"]}


# ---------------------------------------------------------------------------------------------
# Reasoning


def terms(text: str) -> set[str]:
    """Lower-case content words (2+ characters) of a text, without generic filler."""
    return {w for w in re.findall(r"[a-z0-9_]+", text.lower()) if len(w) > 1 and w not in _GENERIC}


def _reasoning_quality(reasoning: str, action: dict[str, Any], task: str, files: list[str],
                       notes: dict[str, str]) -> float:
    words = terms(reasoning)
    if not words:
        notes["reasoning_quality"] = "The reasoning is empty; say in a sentence why this action serves the task."
        return 0.0
    target = _target_terms(action)
    purpose = _PURPOSE.get(action["tool"], frozenset(terms(action["tool"])))
    wanted = terms(task)
    mentioned = [f for f in files if _mentions(reasoning, f)]
    echo = len(mentioned) >= _ECHO_FILES
    if echo:
        # A copied file list is no justification: its words count as unrelated, even the target's.
        listed = set().union(*(terms(f) for f in mentioned))
        target, purpose, wanted = target - listed, purpose - listed, wanted - listed

    target_hit = 1.0 if words & target else 0.5 if words & purpose else 0.0
    if wanted:
        task_hit = min(1.0, len(words & wanted) / min(2, len(wanted)))
        base = 0.5 * target_hit + 0.5 * task_hit
    else:
        task_hit, base = 1.0, target_hit
    on_topic = words & (target | purpose | wanted)
    focus = min(1.0, 2 * len(on_topic) / len(words))  # up to half the words may be free prose
    value = base * focus

    problems = []
    if echo:
        problems.append("lists project files instead of justifying the action")
    if target_hit < 1:
        what = ", ".join(sorted(target)[:4])
        problems.append(f"does not name what the action acts on{f' ({what})' if what else ''}")
    if task_hit < 1:
        problems.append("does not connect the action to the task's terms")
    if focus < 1:
        problems.append("is mostly words unrelated to the task and the action")
    if problems:
        notes["reasoning_quality"] = "The reasoning " + "; ".join(problems) + "."
    return value


def _target_terms(action: dict[str, Any]) -> set[str]:
    """Words naming what the action acts on: its key arguments (paths from patch headers)."""
    args = action["args"]
    out: set[str] = set()
    for name, value in _key_args(action).items():
        if name in _PATCH_ARGS and isinstance(value, str):
            out |= set().union(set(), *(terms(p) for p in _patch_paths(value, "")))
        elif isinstance(value, str):
            out |= terms(value)
        else:
            out |= terms(json.dumps(value, ensure_ascii=False))
    if not out and args:
        out = terms(json.dumps(args, ensure_ascii=False))
    return out - terms(action["tool"])


def _mentions(text: str, path: str) -> bool:
    base = posixpath.basename(path.strip().rstrip("/")).lower()
    return bool(base) and re.search(r"(?<![\w.-])" + re.escape(base) + r"(?![\w-])", text.lower()) is not None


def _context_files(context: str) -> list[str]:
    for line in context.splitlines():
        if line.lower().startswith("files:"):
            return [f.strip().rstrip(_CUT) for f in line.split(":", 1)[1].split(",") if f.strip().rstrip(_CUT)]
    return []


def _workdir(context: str) -> str:
    for line in context.splitlines():
        if line.lower().startswith("working directory:"):
            return line.split(":", 1)[1].strip()
    return ""


# ---------------------------------------------------------------------------------------------
# Reading examples and predictions


def _unpack(example: Any, pred: Any) -> tuple[dict[str, Any], Any, list[str], str, str]:
    gold = _get(example, GOLD_KEY)
    if not isinstance(gold, Mapping):
        # No structured labels: fall back to the program outputs the row carries.
        gold = {"next_action": _get(example, "next_action"), "plan": _get(example, "plan")}
    tools = [t.strip() for t in str(_get(example, "tools") or "").split(",") if t.strip()]
    return dict(gold), pred, tools, str(_get(example, "task") or ""), str(_get(example, "context") or "")


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    try:
        return obj[name]
    except (KeyError, TypeError, IndexError, AttributeError):
        return getattr(obj, name, None)
