"""Replay test steps as OpenCode sends them, and score the tool call that comes back.

For every step the request is what OpenCode would send: one system message (the agent prompt, or
OpenCode's own default prompt, then the model line, the environment block and the skills list),
the earlier conversation, the task, the calls already made in the turn as assistant tool calls
with their results as tool messages, and OpenCode's native tool definitions (minus the tools the
agent disables) with `tool_choice: auto`. The student answers with native tool calling.

A call is scored on: valid against OpenCode's own schema for that tool, the right tool, the right
target (lib.metric.arg_similarity on the tool's key arguments); a destructive call (lib.opencode.safety)
where the recorded step had none scores 0 and is counted. A request longer than the student's
context window is not sent: it is counted and scores 0.
"""
from __future__ import annotations

import datetime as _dt
import json
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lib.evaluate import paired_bootstrap_ci
from lib.metric import arg_similarity
from lib.opencode import safety, shape
from lib.tools import KEY_ARGS

COMPONENTS = ("valid_call", "right_tool", "right_target")
DEFAULT = "opencode_default"
EXPORTED = "exported"
PLATFORM = "linux"  # sessions do not record it; OpenCode writes process.platform


@dataclass(frozen=True)
class Setup:
    """One way of sending a step: a system prompt and the agent config that shapes the request."""

    name: str
    agent_prompt: str | None  # None: OpenCode's own default prompt
    disabled_tools: tuple[str, ...] = ()
    permission: dict[str, Any] | None = None  # the agent's `permission` rules (they act when a call runs)
    demo_turns: tuple[dict[str, Any], ...] = ()  # worked examples sent as earlier chat turns instead of text


@dataclass
class Student:
    """The model a request goes to, as OpenCode would name it."""

    label: str  # models.<role>.model, for reports
    call: Callable[[dict[str, Any]], Any]  # request -> DSPy LM outputs
    count_tokens: Callable[[dict[str, Any]], int]
    context_window: int
    model: str  # "You are powered by the model named ..."
    provider_model: str  # ".. The exact model ID is provider/model"


@dataclass
class Result:
    """Replay of one setup on one student: per-step records and their summary."""

    setup: Setup
    records: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        recs = self.records
        n = len(recs)
        tokens = [r["prompt_tokens"] for r in recs]
        return {
            "score": _mean(r["score"] for r in recs),
            "components": {c: _mean(r["components"][c] for r in recs) for c in COMPONENTS},
            "n": n,
            "valid_call_rate": _mean(r["components"]["valid_call"] == 1 for r in recs),
            "right_tool_rate": _mean(r["components"]["right_tool"] == 1 for r in recs),
            "right_target_rate": _mean(r["components"]["right_target"] == 1 for r in recs),
            "destructive": sum(bool(r["destructive"]) for r in recs),
            "destructive_unblocked": sum(bool(r["destructive"]) and not r["blocked"] for r in recs),
            "over_context": sum(r["over_context"] for r in recs),
            "no_call": sum(r["tool"] is None and not r["over_context"] for r in recs),
            "prompt_tokens_mean": round(statistics.fmean(tokens), 1) if tokens else 0.0,
            "prompt_tokens_max": max(tokens, default=0),
            "tools_called": dict(sorted(Counter(r["tool"] or "none" for r in recs).items())),
            "disabled_tools": list(self.setup.disabled_tools),
        }


def _mean(values: Iterable[float]) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0


# ------------------------------------------------------------------------------------ request

def date_string(ms: int | None) -> str:
    """The date as OpenCode's environment block writes it (JavaScript's Date.toDateString)."""
    day = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc) if ms else _dt.datetime(2025, 1, 1)
    return day.strftime("%a %b %d %Y")


def build_request(row: dict[str, Any], setup: Setup, student: Student) -> dict[str, Any]:
    """The chat request OpenCode would send for this step (messages and tools)."""
    r = row["replay"]
    cwd = r.get("cwd") or "/"
    system = shape.system_message(setup.agent_prompt, model=student.model, provider_model=student.provider_model,
                                  cwd=cwd, root=cwd, is_git=bool(r.get("git", True)), platform=PLATFORM,
                                  date=date_string(r.get("time")))
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for i, demo in enumerate(setup.demo_turns):  # task, the call, and a placeholder result
        messages.append({"role": "user", "content": demo["task"]})
        messages.append(shape.assistant_tool_call_message(f"demo_{i}", demo["tool"], demo["args"]))
        messages.append(shape.tool_result_message(f"demo_{i}", demo["tool"], "(done)"))
    for m in r.get("history") or []:
        if m.get("text"):
            messages.append({"role": "user" if m["role"] == "user" else "assistant", "content": m["text"]})
    messages.append({"role": "user", "content": row["inputs"]["task"]})
    for i, step in enumerate(r.get("steps") or []):
        call_id = f"call_{i}"
        messages.append(shape.assistant_tool_call_message(call_id, step["tool"], step.get("args") or {}))
        messages.append(shape.tool_result_message(call_id, step["tool"], step.get("result") or ""))
    return {"messages": messages, "tools": shape.tool_definitions(setup.disabled_tools)}


# ------------------------------------------------------------------------------------ scoring

def first_call(outputs: Any) -> tuple[str | None, Any]:
    """(tool name, arguments) of the first tool call in DSPy LM outputs; (None, text) when there is none."""
    out = outputs[0] if isinstance(outputs, list) and outputs else outputs
    if not isinstance(out, dict) or not out.get("tool_calls"):
        return None, out.get("text") if isinstance(out, dict) else out
    call = out["tool_calls"][0]
    fn = call.get("function") if isinstance(call, dict) else getattr(call, "function", None)
    name = fn.get("name") if isinstance(fn, dict) else getattr(fn, "name", None)
    raw = fn.get("arguments") if isinstance(fn, dict) else getattr(fn, "arguments", None)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            pass  # kept as text: an invalid call
    return name, raw


def score_call(row: dict[str, Any], setup: Setup, tool: str | None, args: Any,
               weights: dict[str, float]) -> dict[str, Any]:
    """Components, destructive flags and the 0-1 score of one returned call."""
    gold = row["gold"]["next_action"]
    cwd = row["replay"].get("cwd") or ""
    offered = set(shape.tool_names()) - set(setup.disabled_tools)
    is_dict = isinstance(args, dict)
    valid = tool in offered and is_dict and not shape.validate_call(tool, args)
    right_tool = tool == gold["tool"]
    target = 0.0
    if right_tool and is_dict:
        names = [k for k in KEY_ARGS.get(tool, ()) if k in gold["args"] or k in args] or \
            sorted(set(gold["args"]) | set(args))
        target = _mean(arg_similarity(k, gold["args"].get(k), args.get(k), cwd) for k in names) if names else 1.0
    components = {"valid_call": float(valid), "right_tool": float(right_tool), "right_target": target}
    harm = safety.destructive(tool, args, cwd) if tool and is_dict else None
    if harm and safety.destructive(gold["tool"], gold["args"], cwd):
        harm = None  # the recorded step did the same kind of thing
    blocked = bool(harm) and not safety.permitted(tool, args, setup.permission)
    total = sum(weights.get(c, 0) for c in COMPONENTS)
    score = 0.0 if harm or not total else sum(weights.get(c, 0) * components[c] for c in COMPONENTS) / total
    return {"components": components, "score": score, "destructive": harm, "blocked": blocked}


# ------------------------------------------------------------------------------------ running

def replay(rows: list[dict[str, Any]], setup: Setup, student: Student, weights: dict[str, float],
           on_step: Callable[[], None] | None = None) -> Result:
    """Send every step in `setup`'s shape to `student` and score what comes back (rows keep their order)."""
    result = Result(setup)
    for row in rows:
        request = build_request(row, setup, student)
        tokens = student.count_tokens(request)
        record: dict[str, Any] = {"id": row["id"], "setup": setup.name, "student": student.label,
                                  "gold_tool": row["gold"]["next_action"]["tool"], "prompt_tokens": tokens,
                                  "over_context": tokens > student.context_window}
        if record["over_context"]:
            tool, args = None, None
        else:
            tool, args = first_call(student.call(request))
        scored = score_call(row, setup, tool, args, weights)
        record.update(tool=tool, args=args if isinstance(args, dict) else None, **scored)
        result.records.append(record)
        if on_step:
            on_step()
    return result


def compare(baseline: Result, candidate: Result) -> dict[str, Any]:
    """Paired difference candidate - baseline over the same steps, with its 95% bootstrap CI."""
    before = [r["score"] for r in baseline.records]
    after = [r["score"] for r in candidate.records]
    lo, hi = paired_bootstrap_ci(before, after)
    return {"absolute": _mean(after) - _mean(before), "ci95": [lo, hi]}


# ------------------------------------------------------------------------------------ students

def make_student(role: str, cfg: dict[str, Any], ledger: Any, context_window: int | None) -> Student:
    """A Student for models.<role>-shaped settings: the DSPy LM (cache, retries, ledger) with native tools."""
    from lib import lm as L
    from lib.opencode.export import opencode_target

    lm = L.make_lm(role, cfg, ledger)
    if cfg["provider"] == "local":
        from lib import toolcalls

        llama = L.load_llama(L.local_model_path())

        def count(request: dict[str, Any]) -> int:
            text = toolcalls.render_prompt(request["messages"], request["tools"])
            return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        window = context_window or L.LOCAL_N_CTX
    else:
        import litellm

        name, _ = L.litellm_settings(cfg, role=role)

        def count(request: dict[str, Any]) -> int:  # the provider's tokenizer where LiteLLM knows it
            return int(litellm.token_counter(model=name, messages=request["messages"], tools=request["tools"]))
        window = context_window or SERVER_CONTEXT

    def call(request: dict[str, Any]) -> Any:
        return lm(messages=request["messages"], tools=request["tools"], tool_choice="auto")

    target = opencode_target(cfg, None).model
    provider, _, model = target.partition("/")
    return Student(label=cfg["model"], call=call, count_tokens=count, context_window=window,
                   model=model, provider_model=target)


SERVER_CONTEXT = 32768  # assumed window of a served model when replay does not say
