"""Replay test steps as OpenCode sends them, and score the tool call that comes back.

For every step the request is what OpenCode would send: one system message (the agent prompt, or
OpenCode's own default prompt, then the model line, the environment block and the skills list),
the earlier conversation, the task, the calls already made in the turn as assistant tool calls
with their results as tool messages, and OpenCode's native tool definitions (minus the tools the
agent disables) with `tool_choice: auto`. The student answers with native tool calling.

A call is scored on: valid against OpenCode's own schema for that tool, the right tool, the right
target (lib.scoring.metric.arg_similarity on the tool's key arguments); a destructive call (lib.opencode.safety)
where the recorded step had none scores 0 and is counted. A request longer than the student's
context window is not sent: it is counted and scores 0.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lib.models import chat
from lib.models import ledger as LG
from lib.models import llama as LL
from lib.models import lm as L
from lib.models import settings as S
from lib.core.errors import UserError
from lib.scoring.evaluate import Failed, attempt, paired_bootstrap_ci
from lib.scoring.metric import arg_similarity
from lib.opencode import safety, short_tools
from lib.opencode.report import DEFAULT, EXPORTED
from lib.tools import shape
from lib.opencode.agent import agent_prompt, export_settings, opencode_target
from lib.opencode.plugin import demo_bank, injected_text
from lib.config.params import ROOT
from lib.program.runtime import Progress, usage_report
from lib.tools.facts import KEY_ARGS

CALL_COMPONENTS = ("valid_call", "right_tool", "right_target")
PLATFORM = "linux"  # sessions do not record it; OpenCode writes process.platform


@dataclass(frozen=True)
class Setup:
    """One way of sending a step: a system prompt and the agent config that shapes the request."""

    name: str
    agent_prompt: str | None  # None: OpenCode's own default prompt
    disabled_tools: tuple[str, ...] = ()
    permission: dict[str, Any] | None = None  # the agent's `permission` rules (they act when a call runs)
    demo_turns: tuple[dict[str, Any], ...] = ()  # worked examples sent as earlier chat turns instead of text
    demo_bank: dict[str, Any] | None = None  # export format plugin: its nearest examples, as OpenCode sends them
    short_tools: dict[str, str] | None = None  # short descriptions (export.tool_descriptions): tool -> its text


@dataclass
class Student:
    """The model a request goes to, as OpenCode would name it."""

    label: str  # models.<role>.model, for reports
    call: Callable[[dict[str, Any]], Any]  # request -> DSPy LM outputs
    count_tokens: Callable[[dict[str, Any]], int]
    context_window: int
    model: str  # "You are powered by the model named ..."
    provider_model: str  # ".. The exact model ID is provider/model"
    reads_calls: str = "server"  # who makes a reply's calls: its server, replay.parser's rule, or a grammar


@dataclass
class Result:
    """Replay of one setup on one student: per-step records and their summary."""

    setup: Setup
    records: list[dict[str, Any]] = field(default_factory=list)
    syntax_seen: bool = False  # the student's raw replies are read here (a parser rule), so their syntax is known

    def answered(self) -> list[dict[str, Any]]:
        return [r for r in self.records if not r.get("failed")]

    def summary(self) -> dict[str, Any]:
        recs = self.answered()
        n = len(recs)
        tokens = [r["prompt_tokens"] for r in recs]
        return {
            "score": _mean(r["score"] for r in recs),
            "components": {c: _mean(r["components"][c] for r in recs) for c in CALL_COMPONENTS},
            "n": n,
            "valid_call_rate": _mean(r["components"]["valid_call"] == 1 for r in recs),
            "right_tool_rate": _mean(r["components"]["right_tool"] == 1 for r in recs),
            "right_target_rate": _mean(r["components"]["right_target"] == 1 for r in recs),
            "destructive": sum(bool(r["destructive"]) for r in recs),
            "destructive_unblocked": sum(bool(r["destructive"]) and not r["blocked"] for r in recs),
            "over_context": sum(r["over_context"] for r in recs),
            "no_call": sum(r["tool"] is None and not r["over_context"] for r in recs),
            # replies with no call that hold one written as text, which the server did not take
            "text_call": sum(bool(r.get("text_call")) for r in recs),
            # replies whose call is in the template's own <tool_call> syntax, which every server parses;
            # null where the syntax is not seen (a server or a grammar made the call) or not recorded
            "strict_call": (sum(r.get("syntax") == "tagged" for r in recs)
                            if self.syntax_seen and all(r.get("syntax") or not r["tool"] for r in recs) else None),
            "prompt_tokens_mean": round(statistics.fmean(tokens), 1) if tokens else 0.0,
            "prompt_tokens_max": max(tokens, default=0),
            "failed": len(self.records) - n,
            "tools_called": dict(sorted(Counter(r["tool"] or "none" for r in recs).items())),
            "disabled_tools": list(self.setup.disabled_tools),
        }


def _mean(values: Iterable[float]) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0


# ------------------------------------------------------------------------------------ request

def date_string(ms: int | None) -> str:
    """The session's date as OpenCode's environment block writes it (unknown: the first of 2025)."""
    day = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).date() if ms else _dt.date(2025, 1, 1)
    return shape.format_date(day)


def build_request(row: dict[str, Any], setup: Setup, student: Student) -> dict[str, Any]:
    """The chat request OpenCode would send for this step (messages and tools)."""
    r = row["replay"]
    cwd = r.get("cwd") or "/"
    system = shape.system_message(setup.agent_prompt, model=student.model, provider_model=student.provider_model,
                                  cwd=cwd, root=cwd, is_git=bool(r.get("git", True)), platform=PLATFORM,
                                  date=date_string(r.get("time")), disabled=setup.disabled_tools)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    if setup.demo_bank is not None:  # the plugin's output.system text arrives as a second system message
        extra = injected_text(setup.demo_bank, row["inputs"])
        if extra:
            messages.append({"role": "system", "content": extra})
    n = 0
    for demo in setup.demo_turns:  # task, the call, and a placeholder result
        messages.append(shape.user_message(demo["task"]))
        messages.append(shape.assistant_tool_call_message([(shape.call_id(n), demo["tool"], demo["args"])]))
        messages.append(shape.tool_result_message(shape.call_id(n), "(done)"))
        n += 1
    for m in r.get("history") or []:
        if m.get("text"):
            messages.append(shape.user_message(m["text"]) if m["role"] == "user"
                            else {"role": "assistant", "content": m["text"]})
    messages.append(shape.user_message(row["inputs"]["task"]))
    for step in r.get("steps") or []:
        messages.append(shape.assistant_tool_call_message([(shape.call_id(n), step["tool"], step.get("args") or {})]))
        messages.append(shape.tool_result_message(shape.call_id(n), step.get("result") or ""))
        n += 1
    tools = shape.tool_definitions(setup.disabled_tools)
    if setup.short_tools:  # tool_definitions already copies; shorten copies again only when it edits
        tools = short_tools.shorten(tools, setup.short_tools)
    return {"messages": messages, "tools": tools}


# ------------------------------------------------------------------------------------ scoring

def first_call(outputs: Any) -> tuple[str | None, Any]:
    """(tool name, arguments) of the first tool call in DSPy LM outputs; (None, text) when there is none.

    The text of a reply with no call is what OpenCode shows; `chat.holds_call_text` tells whether it
    holds a call the server did not take."""
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


def call_syntax(outputs: Any, rule: str) -> str | None:
    """How the first call of DSPy LM outputs was written (`chat.SYNTAXES`), as `rule` read it; None if unknown.

    The llama.cpp and strict rules take only the template's tagged blocks, so their calls are tagged
    whatever the reply's id says (an answer cached before ids named the syntax)."""
    out = outputs[0] if isinstance(outputs, list) and outputs else outputs
    calls = out.get("tool_calls") if isinstance(out, dict) else None
    if not calls:
        return None
    if rule in ("llama.cpp", "strict"):
        return "tagged"
    call = calls[0]
    return chat.call_syntax(call.get("id") if isinstance(call, dict) else getattr(call, "id", None))


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
    blocked = bool(harm) and not safety.permitted(tool, args, setup.permission, cwd or None)
    total = sum(weights.get(c, 0) for c in CALL_COMPONENTS)
    score = 0.0 if harm or not total else sum(weights.get(c, 0) * components[c] for c in CALL_COMPONENTS) / total
    return {"components": components, "score": score, "destructive": harm, "blocked": blocked}


# ------------------------------------------------------------------------------------ running

def replay(rows: list[dict[str, Any]], setup: Setup, student: Student, weights: dict[str, float],
           on_step: Callable[[], None] | None = None) -> Result:
    """Send every step in `setup`'s shape to `student` and score what comes back (rows keep their order)."""
    result = Result(setup, syntax_seen=student.reads_calls in chat.PARSERS)
    for row in rows:
        request = build_request(row, setup, student)
        tokens = student.count_tokens(request)
        record: dict[str, Any] = {"id": row["id"], "setup": setup.name, "student": student.label,
                                  "gold_tool": row["gold"]["next_action"]["tool"], "prompt_tokens": tokens,
                                  "over_context": tokens > student.context_window}
        syntax = None
        if record["over_context"]:
            tool, args = None, None
        else:
            outputs = attempt(lambda: student.call(request))
            if isinstance(outputs, Failed):  # allowed by optimization.max_failed_calls: left out, counted
                record.update(tool=None, args=None, failed=outputs.kind, score=None)
                result.records.append(record)
                if on_step:
                    on_step()
                continue
            tool, args = first_call(outputs)
            syntax = call_syntax(outputs, student.reads_calls)
        scored = score_call(row, setup, tool, args, weights)
        text_call = tool is None and isinstance(args, str) and chat.holds_call_text(args)
        record.update(tool=tool, args=args if isinstance(args, dict) else None, failed=None, text_call=text_call,
                      syntax=syntax, **scored)
        result.records.append(record)
        if on_step:
            on_step()
    return result


def compare(baseline: Result, candidate: Result) -> dict[str, Any]:
    """Paired difference candidate - baseline over the same steps, with its 95% bootstrap CI."""
    ids = {r["id"] for r in baseline.answered()} & {r["id"] for r in candidate.answered()}
    before = [r["score"] for r in baseline.records if r["id"] in ids]
    after = [r["score"] for r in candidate.records if r["id"] in ids]
    lo, hi = paired_bootstrap_ci(before, after)
    return {"absolute": _mean(after) - _mean(before), "ci95": [lo, hi]}


# ------------------------------------------------------------------------------------ students

def make_student(role: str, cfg: dict[str, Any], ledger: Any, context_window: int | None,
                 parser: str = S.LOCAL_PARSER) -> Student:
    """A Student for models.<role>-shaped settings: the DSPy LM (cache, retries, ledger) with native tools.

    `context_window` (replay.context_window) applies to served models; an embedded model's is its own.
    `parser` is the server rule that reads an embedded model's native calls (a served model's server
    reads its own).
    """
    lm = L.make_lm(role, cfg, ledger, parser=parser)
    if cfg["provider"] == "local":
        llama = LL.load_llama(S.local_model_path(cfg))

        def count(request: dict[str, Any]) -> int:
            text = LL.tool_prompt(llama, request["messages"], request["tools"])
            return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        window = llama.n_ctx()
        # A template with tools: free text read by the server's rule; else grammar-constrained calls.
        reads = parser if LL.native_template(llama) else "grammar"
    else:
        import litellm

        name, _ = S.litellm_settings(cfg, role=role)

        def count(request: dict[str, Any]) -> int:  # the provider's tokenizer where LiteLLM knows it
            return int(litellm.token_counter(model=name, messages=request["messages"], tools=request["tools"]))
        window = context_window or SERVER_CONTEXT
        reads = "server"

    def call(request: dict[str, Any]) -> Any:
        return lm(messages=request["messages"], tools=request["tools"], tool_choice="auto")

    if cfg["provider"] == "local" and not cfg["temperature"]:
        call = once_per_prompt(call, lambda request: LL.tool_prompt(llama, request["messages"], request["tools"]))
    target = opencode_target(cfg, None).model
    provider, _, model = target.partition("/")
    return Student(label=cfg["model"], call=call, count_tokens=count, context_window=window,
                   model=model, provider_model=target,
                   reads_calls=reads)


SERVER_CONTEXT = 32768  # assumed window of a served model when replay does not say


def once_per_prompt(send: Callable[[dict[str, Any]], Any], render: Callable[[dict[str, Any]], str]
                    ) -> Callable[[dict[str, Any]], Any]:
    """`send`, asked once per prompt text: greedy, an embedded model's answer depends only on the prompt it
    reads, so requests that render the same (tool descriptions its format does not show) share one call."""
    answers: dict[bytes, Any] = {}  # keyed by the prompt's digest: a test split can hold thousands of prompts

    def call(request: dict[str, Any]) -> Any:
        key = hashlib.sha256(render(request).encode("utf-8")).digest()
        if key not in answers:
            answers[key] = send(request)
        return answers[key]
    return call


# ------------------------------------------------------------------------------------ the stage

def step_records(result: Result) -> list[dict[str, Any]]:
    """Per-step rows for the plots: id, score, the call made and the recorded one."""
    return [{"id": r["id"], "score": r["score"], "tool": r["tool"] or "none", "gold_tool": r["gold_tool"],
             "destructive": bool(r["destructive"])} for r in result.answered()]


def unused_tools(train: list[dict[str, Any]]) -> list[str]:
    """OpenCode's tools that no recorded training step called (a candidate set to switch off)."""
    used = {row["gold"]["next_action"]["tool"] for row in train}
    used |= {s["tool"] for row in train for s in (row.get("replay") or {}).get("steps") or []}
    return [name for name in shape.tool_names() if name not in used]


def best_on_val(scores: dict[str, float], tokens: dict[str, float]) -> str:
    """The candidate with the best val score; at a tie the shorter request (fewer tokens at no loss of score)."""
    return max(scores, key=lambda k: (scores[k], -tokens[k]))


def run(params: dict[str, Any], program: Any, train: list[dict[str, Any]], val: list[dict[str, Any]],
        test: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The replay stage: check every student, choose the agent config on val, score both prompts on test.

    Returns (metrics/replay.json, per-step rows per prompt of the main student, usage).
    """
    r = params["replay"]
    if not test:
        raise UserError("replay: data/splits/test.jsonl is empty; add session logs or change data.*_split")
    students = [("student", params["models"]["student"])]
    students += [(f"replay.students[{i}]", m) for i, m in enumerate(r["students"])]
    for role, cfg in students:  # every model answers before the first paid call
        S.check_reachable(role, cfg)
    S.configure_cache(ROOT)
    opt = params["optimization"]
    ledger = LG.Ledger(max_calls=opt["max_lm_calls"], max_failed_calls=opt["max_failed_calls"])
    made = [make_student(role, cfg, ledger, r["context_window"], r["parser"]) for role, cfg in students]
    weights = r["metric_weights"]
    main = made[0]

    def scored(rows: list[dict[str, Any]], setup: Setup, student: Student, label: str) -> Result:
        with Progress(f"replay {label}", len(rows), ledger, unit="step") as bar:
            return replay(rows, setup, student, weights, on_step=bar.update)

    e = params["export"]
    # With the plugin exported, every exported request carries its nearest examples too.
    bank = None
    if "plugin" in e["formats"]:
        bank = demo_bank(program.bank_demos, program.retrieval, e["max_examples"], params["data"]["max_field_chars"])
    # The agent config, chosen on val where asked to: which tools it keeps, how they are described.
    if e["disable_tools"] == "auto":
        unused = unused_tools(train)
        tool_sets = {"all tools": [], "tools the sessions used": unused} if unused else {"all tools": []}
    else:
        tool_sets = {"": [] if e["disable_tools"] == "none" else list(e["disable_tools"])}
    described = {"full descriptions": False, "short descriptions": True} if e["tool_descriptions"] == "auto" \
        else {"": e["tool_descriptions"] == "short"}
    choice: dict[str, Any] = {}
    tokens: dict[str, float] = {}
    picked: dict[str, tuple[str, str]] = {}

    def on_val(tools: str, desc: str) -> None:
        name = ", ".join(n for n in (tools, desc) if n)
        if name in choice:
            return
        off, short = tool_sets[tools], described[desc]
        settings = export_settings(params, off, short)
        setup = Setup(EXPORTED, agent_prompt(settings, program), tuple(off), settings.permission,
                      demo_bank=bank, short_tools=short_tools.sent(short))
        summary = scored(val, setup, main, f"val, {name}").summary()
        choice[name], tokens[name], picked[name] = summary["score"], summary["prompt_tokens_mean"], (tools, desc)

    # One choice after the other (3 val passes where every pair would take 4): the tool set, with the first
    # descriptions candidate; then the descriptions, for the tool set chosen.
    tools, desc = next(iter(tool_sets)), next(iter(described))
    if val and len(tool_sets) > 1:
        for name in tool_sets:
            on_val(name, desc)
        tools = picked[best_on_val(choice, tokens)][0]
    if val and len(described) > 1:
        for name in described:
            on_val(tools, name)
    if choice:
        tools, desc = picked[best_on_val(choice, tokens)]
    disabled, short = tool_sets[tools], described[desc]
    settings = export_settings(params, disabled, short)
    prompt = agent_prompt(settings, program)
    exported = Setup(EXPORTED, prompt, tuple(disabled), settings.permission, demo_bank=bank,
                     short_tools=short_tools.sent(short))
    default = Setup(DEFAULT, None)

    report: dict[str, Any] = {
        "opencode_version": shape.version(),
        "parser": r["parser"],
        "agent": {"disable_tools": disabled, "tool_descriptions": "short" if short else "full",
                  "permission": e["permission"],
                  "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
                  "val_scores": choice, "val_prompt_tokens": tokens},
        "students": {},
    }
    steps: dict[str, list[dict[str, Any]]] = {}
    for student in made:
        base = scored(test, default, student, f"{student.label}, OpenCode default")
        ours = scored(test, exported, student, f"{student.label}, exported")
        report["students"][student.label] = {DEFAULT: base.summary(), EXPORTED: ours.summary(),
                                             "difference": compare(base, ours), "calls_read_by": student.reads_calls}
        if student is main:
            steps = {DEFAULT: step_records(base), EXPORTED: step_records(ours)}
    ledger.check()
    return report, steps, usage_report(ledger)
