"""Optimizers select on what ships: the agent's decision run as OpenCode sends it, scored by replay.

`DeployedAdapter` makes the program's predictor speak OpenCode's request: the system prompt is the
agent prompt export writes (instructions, tool guidance, the predictor's demos as worked examples),
the step goes in as OpenCode's messages with its native tool definitions, and the answer is the
tool call that comes back. `ReplayMetric` scores that call as the replay stage does. Any other
signature (an optimizer's own proposer calls) goes to the compact JSON adapter unchanged.

Example rows carry the structured request data (`replay`) that DSPy's string inputs do not, so
both find a row by its rendered inputs.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import dspy

from lib.models import chat
from lib.program.agent import CompactJSONAdapter, parse_action
from lib.data.examples import INPUT_FIELDS
from lib.opencode import render, short_tools
from lib.opencode.agent import export_settings
from lib.opencode.replay import (CALL_COMPONENTS, EXPORTED, Setup, Student, build_request, first_call, make_student,
                                 score_call)


def _key(inputs: Any) -> tuple[str, ...]:
    return tuple(str(inputs.get(name) or "") for name in INPUT_FIELDS)


class Steps:
    """Example rows by their rendered inputs."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = {_key(r["inputs"]): r for r in rows}

    def find(self, inputs: Any) -> dict[str, Any] | None:
        return self._rows.get(_key(inputs))


class DeployedAdapter(dspy.Adapter):
    """The agent's decision as OpenCode sends it; every other signature as compact JSON."""

    def __init__(self, steps: Steps, student: Student, max_examples: int, disabled_tools: tuple[str, ...] = (),
                 permission: dict[str, Any] | None = None, short_tools: dict[str, str] | None = None) -> None:
        super().__init__()
        self.steps, self.student, self.max_examples = steps, student, max_examples
        self.disabled, self.permission, self.short_tools = tuple(disabled_tools), permission, short_tools
        self.fallback = CompactJSONAdapter()

    def setup(self, signature: type[dspy.Signature], demos: list[Any]) -> Setup:
        prompt = render.agent_prompt(signature.instructions, [dict(d) for d in demos], self.max_examples,
                                     self.disabled)
        return Setup(EXPORTED, prompt, self.disabled, self.permission, short_tools=self.short_tools)

    def __call__(self, lm: dspy.BaseLM, lm_kwargs: dict[str, Any], signature: type[dspy.Signature],
                 demos: list[Any], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        row = self.steps.find(inputs) if "next_action" in signature.output_fields else None
        if row is None:
            return self.fallback(lm, lm_kwargs, signature, demos, inputs)
        request = build_request(row, self.setup(signature, demos), self.student)
        empty = {name: "" for name in signature.output_fields}
        if self.student.count_tokens(request) > self.student.context_window:
            return [empty]  # OpenCode could not send it either: no answer, scored 0
        kwargs = {k: v for k, v in lm_kwargs.items() if k not in ("tools", "tool_choice")}
        outputs = lm(messages=request["messages"], tools=request["tools"], tool_choice="auto", **kwargs)
        tool, args = first_call(outputs)
        if tool is None:
            return [{**empty, "reasoning": str(args or "")} if "reasoning" in empty else empty]
        action = json.dumps({"tool": tool, "args": args if isinstance(args, dict) else {}}, ensure_ascii=False)
        return [{**empty, "next_action": action, **({"plan": json.dumps([tool])} if "plan" in empty else {})}]

    async def acall(self, lm: dspy.BaseLM, lm_kwargs: dict[str, Any], signature: type[dspy.Signature],
                    demos: list[Any], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.__call__, lm, lm_kwargs, signature, demos, inputs)


class ReplayMetric:
    """The replay score (0-1) of a prediction's tool call, with DSPy's metric signature."""

    def __init__(self, steps: Steps, weights: dict[str, float], disabled_tools: tuple[str, ...] = (),
                 permission: dict[str, Any] | None = None, threshold: float = 0.5) -> None:
        self.steps, self.weights, self.threshold = steps, weights, threshold
        self.setup = Setup(EXPORTED, None, tuple(disabled_tools), permission)

    def _scored(self, example: Any, pred: Any) -> dict[str, Any]:
        row = self.steps.find(example)
        if row is None:
            raise KeyError("example not among the rows the replay metric was built from")
        action = parse_action(pred.get("next_action", "") if hasattr(pred, "get") else "") or {}
        return score_call(row, self.setup, action.get("tool"), action.get("args"), self.weights)

    def score(self, example: Any, pred: Any) -> float:
        return self._scored(example, pred)["score"]

    def __call__(self, example: Any, pred: Any, trace: Any = None) -> float | bool:
        s = self.score(example, pred)
        return s >= self.threshold if trace is not None else s  # bootstrapping keeps good demos only

    def components(self, example: Any, pred: Any) -> dict[str, float | None]:
        return dict(self._scored(example, pred)["components"])

    def combine(self, scores: dict[str, float | None]) -> float:
        total = sum(self.weights.get(c, 0) for c in CALL_COMPONENTS)
        return sum(self.weights.get(c, 0) * (scores.get(c) or 0.0) for c in CALL_COMPONENTS) / total if total else 0.0

    def gepa(self, gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
             pred_trace: Any = None) -> dspy.Prediction:
        scored = self._scored(gold, pred)
        want = self.steps.find(gold)["gold"]["next_action"]
        got = parse_action(pred.get("next_action", "")) or {}
        notes = []
        if scored["destructive"]:
            notes.append(f"The call was destructive ({scored['destructive']}); never do that unasked.")
        shown = str(pred.get("reasoning") or "") if got.get("tool") is None else ""
        if shown and chat.holds_call_text(shown):  # what OpenCode would only show, never run
            notes.append(f"The reply wrote the call as text ({' '.join(shown.split())[:120]}); the server does "
                         f"not run that, OpenCode only shows it. Make the call itself, as a native tool call.")
        elif not scored["components"]["valid_call"]:
            notes.append("Make one valid tool call with OpenCode's argument names.")
        if got.get("tool") != want["tool"]:
            notes.append(f"The next call should use {want['tool']}, not {got.get('tool') or 'no tool'}.")
        elif scored["components"]["right_target"] < 1:
            notes.append(f"Right tool, but aim it at {json.dumps(want['args'], ensure_ascii=False)[:200]}.")
        return dspy.Prediction(score=scored["score"], feedback=" ".join(notes) or "Correct.")


def deployed_selection(params: dict[str, Any], rows: list[dict[str, Any]], ledger: Any
                       ) -> tuple[DeployedAdapter, ReplayMetric]:
    """The adapter and metric that make an optimizer select on the replay score (optimization.select_on: replay).

    The agent config is export's where it is fixed (a list in export.disable_tools, export.tool_descriptions:
    short); `auto` is decided later by the replay stage, so selection sees all of OpenCode's tools and their
    full descriptions.
    """
    wanted = params["export"]["disable_tools"]
    settings = export_settings(params, list(wanted) if isinstance(wanted, list) else [])
    student = make_student("student", params["models"]["student"], ledger, params["replay"]["context_window"],
                           params["replay"]["parser"])
    steps = Steps(rows)
    adapter = DeployedAdapter(steps, student, settings.max_examples, settings.disabled_tools, settings.permission,
                              short_tools.sent(settings.short_tools))
    metric = ReplayMetric(steps, params["replay"]["metric_weights"], settings.disabled_tools, settings.permission)
    return adapter, metric
