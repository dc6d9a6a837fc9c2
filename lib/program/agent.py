"""The agent's decision as a DSPy program: signature, module, the compact JSON format, and action parsing.

The student is often a very small local model. It cannot reproduce DSPy's field markers, but it
can imitate a short chat in which every assistant turn is one plain JSON object, so the adapter
here renders demonstrations that way and parses replies leniently: a reply it cannot read yields
empty fields (scored 0 by the metric), never an exception that would abort an evaluation.
"""
from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import dspy
import json_repair

from lib.core.dspy_internals import parse_value
from lib.core.errors import UserError
from lib.data.examples import INPUT_FIELDS
from lib.tools.facts import guidance_line

GOLD_KEY = "gold"  # where to_example keeps the structured labels the metric reads

# Tools a model must never be told to call ("invalid" is OpenCode's internal rewrite of a bad call).
INTERNAL_TOOLS = frozenset({"invalid"})

_MAX_PARSE_CHARS = 50_000  # a runaway reply is cut before brace scanning (which is quadratic at worst)
_MAX_CANDIDATES = 64  # '{' positions tried before giving up
_MAX_TOOL_LINES = 24  # tool guidance lines in the system message (MCP servers can add hundreds)


class NextAction(dspy.Signature):
    """You are OpenCode, a coding agent working inside the user's project. Choose the one tool call that
    best moves the task forward now. Use only the listed tools, with OpenCode's camelCase argument names
    (filePath, oldString, newString, command, pattern). Look before you change: read or search a file
    before editing it."""

    task: str = dspy.InputField(desc="what the user asked for")
    context: str = dspy.InputField(desc="project facts: working directory, project type, files")
    history: str = dspy.InputField(desc="earlier messages of the conversation")
    tools: str = dspy.InputField(desc="the tools you may call, comma-separated")
    steps_so_far: str = dspy.InputField(desc="tool calls already made for this task, with their outcome")
    reasoning: str = dspy.OutputField(desc="one or two sentences: why this action, for this task")
    plan: str = dspy.OutputField(desc="JSON list of the tool names still to call, in order, next_action's first")
    next_action: str = dspy.OutputField(
        desc='JSON object {"tool": name, "args": {...}} with OpenCode\'s camelCase argument names')


# The example rows and the signature must agree on the inputs, or demos would silently lose fields.
assert tuple(NextAction.input_fields) == INPUT_FIELDS, "NextAction inputs differ from lib.data.examples.INPUT_FIELDS"


class Agent(dspy.Module):
    """One prediction of the next tool call (and the plan it starts)."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict(NextAction)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        # Missing inputs become "" so a partial row still runs (and scores) instead of warning per call.
        return self.predict(**{name: _text(inputs.get(name)) for name in INPUT_FIELDS})


def mean_score(program: dspy.Module, examples: list[dspy.Example], metric: Any) -> float:
    """The program's mean metric score (0-1) over `examples`, as selection on val computes it.

    An example whose prediction raises scores 0 (as in lib.scoring.evaluate); a UserError (budget,
    dead server, rejected key) propagates: the user must act.
    """
    total = 0.0
    for ex in examples:
        try:
            pred = program(**ex.inputs())
        except UserError:
            raise
        except Exception:
            pred = dspy.Prediction(reasoning="", plan="", next_action="")
        total += float(metric.score(ex, pred))
    return total / len(examples) if examples else 0.0


def to_example(row: dict[str, Any]) -> dspy.Example:
    """An example row (lib.data.examples) -> a dspy.Example with inputs, the program's outputs, and the gold labels."""
    fields: dict[str, Any] = {name: _text(row["inputs"].get(name)) for name in INPUT_FIELDS}
    fields.update({name: _text(value) for name, value in row.get("outputs", {}).items()})
    fields[GOLD_KEY] = row.get("gold") or {}
    if row.get("id") is not None:
        fields["id"] = row["id"]
    return dspy.Example(**fields).with_inputs(*INPUT_FIELDS)


# ---------------------------------------------------------------------------------------------
# Parsing what a model wrote


def parse_action(text: Any) -> dict[str, Any] | None:
    """A valid {"tool": str, "args": dict} from a reply, a JSON string or a dict; None when there is none.

    Accepts the action itself or an object holding it under "next_action"; tool names are stripped.
    """
    if isinstance(text, dict):
        return _action_of(text)
    if not isinstance(text, str):
        return None
    for candidate in _object_candidates(text):
        value = _loads(candidate)
        action = _action_of(value) if isinstance(value, dict) else None
        if action is not None:
            return action
    return None


def _action_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    if "tool" not in obj and "next_action" in obj:
        return parse_action(obj["next_action"])
    tool, args = obj.get("tool"), obj.get("args")
    if not isinstance(tool, str) or not tool.strip() or not isinstance(args, dict):
        return None
    return {"tool": tool.strip(), "args": args}


def parse_plan(text: Any) -> list[str] | None:
    """Tool names from a JSON list (strings, or {"tool": ...} objects); None when it is not such a list."""
    value: Any = text
    if isinstance(text, str):
        s = text.strip()
        if not s.startswith("["):
            return None
        value = _loads(s)
    if not isinstance(value, list):
        return None
    names = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("tool")
        if not isinstance(item, str) or not item.strip():
            return None
        names.append(item.strip())
    return names


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first decodable {...} in text (fences, prose, single quotes, Python literals, a cut-off tail)."""
    for candidate in _object_candidates(text):
        value = _loads(candidate)
        if isinstance(value, dict):
            return value
    return None


def _object_candidates(text: str):
    """Balanced {...} spans in order of their opening brace; an unclosed tail last (json_repair closes it)."""
    text = text[:_MAX_PARSE_CHARS]
    starts = [m.start() for m in re.finditer(r"\{", text)][:_MAX_CANDIDATES]
    for start in starts:
        end = _balanced_end(text, start)
        yield text[start:end] if end is not None else text[start:]


def _balanced_end(text: str, start: int) -> int | None:
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return json_repair.loads(text)
    except Exception:  # json_repair is best effort; any failure just means "not JSON"
        return None


# ---------------------------------------------------------------------------------------------
# The compact JSON adapter


class CompactJSONAdapter(dspy.Adapter):
    """System = instructions + tool guidance + answer format; demos = user `name: value` lines, assistant JSON.

    Works for any signature (optimizers run their own proposer signatures through the configured
    adapter); the tool guidance appears only when the signature has a `tools` input.
    """

    # -- formatting --------------------------------------------------------------------------

    def format(self, signature: type[dspy.Signature], demos: list[dict[str, Any]],
               inputs: dict[str, Any]) -> list[dict[str, Any]]:
        messages = [{"role": "system", "content": self.format_system_message(signature, inputs)}]
        messages.extend(self.format_demos(signature, demos))
        messages.append({"role": "user", "content": self.format_user_message_content(signature, inputs)})
        return messages

    def format_system_message(self, signature: type[dspy.Signature], inputs: dict[str, Any] | None = None) -> str:
        parts = [self.format_task_description(signature)]
        guidance = _tool_guidance(_text((inputs or {}).get("tools"))) if "tools" in signature.input_fields else ""
        if guidance:
            parts.append(guidance)
        parts.append(self.format_field_structure(signature))
        return "\n\n".join(p for p in parts if p)

    def format_task_description(self, signature: type[dspy.Signature]) -> str:
        # Optimizers rewrite signature.instructions; using it verbatim is what makes their work reach the model.
        return textwrap.dedent(signature.instructions).strip()

    def format_field_description(self, signature: type[dspy.Signature]) -> str:
        return "\n".join(f"- {name}: {_desc(name, f)}" for name, f in signature.input_fields.items())

    def format_field_structure(self, signature: type[dspy.Signature]) -> str:
        names = list(signature.output_fields)
        lines = [f"Answer with one JSON object with keys {', '.join(names)}."]
        lines += [f"- {name}: {_desc(name, f)}" for name, f in signature.output_fields.items()
                  if _desc(name, f) != name]
        return "\n".join(lines)

    def format_user_message_content(self, signature: type[dspy.Signature], inputs: dict[str, Any],
                                    prefix: str = "", suffix: str = "", main_request: bool = False) -> str:
        lines = [f"{name}: {_render_input(inputs[name])}" for name in signature.input_fields
                 if name in inputs and _render_input(inputs[name])]
        return "\n".join(p for p in (prefix.strip(), "\n".join(lines), suffix.strip()) if p)

    def format_assistant_message_content(self, signature: type[dspy.Signature], outputs: dict[str, Any],
                                         missing_field_message: str | None = None) -> str:
        present = {name: outputs[name] for name in signature.output_fields
                   if name in outputs and outputs[name] is not None and outputs[name] != ""}
        return _dump_outputs(present)

    def format_demos(self, signature: type[dspy.Signature], demos: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each demo with at least one input and one output: a user turn, then an assistant JSON turn.

        Unlike the base class there is no "some fields are missing" preamble: labeled demos carry no
        reasoning, and the JSON simply omits it, which a small model imitates without confusion.
        """
        messages = []
        for demo in demos:
            user = self.format_user_message_content(signature, demo)
            assistant = self.format_assistant_message_content(signature, demo)
            if user and assistant != "{}":
                messages.append({"role": "user", "content": user})
                messages.append({"role": "assistant", "content": assistant})
        return messages

    def format_field_with_value(self, fields_with_values: dict[Any, Any], role: str = "user") -> str:
        """What DummyLM (and tools like it) use to write a reply in this adapter's format."""
        values = {getattr(f, "name", f): v for f, v in fields_with_values.items()}
        if role == "assistant":
            return _dump_outputs(values)
        return "\n".join(f"{k}: {_render_input(v)}" for k, v in values.items())

    # -- parsing -----------------------------------------------------------------------------

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        """Every output field, from the first usable JSON object; missing ones are "" (never raises)."""
        outputs = signature.output_fields
        found = _first_matching_object(completion or "", outputs)
        values: dict[str, Any] = {}
        if found is not None:
            values = {k: v for k, v in found.items() if k in outputs}
            # A bare {"tool", "args"} (or one mixed into the top level) is the action itself.
            if "next_action" in outputs and "next_action" not in values and "tool" in found:
                values["next_action"] = {k: found[k] for k in ("tool", "args") if k in found}
        elif "next_action" not in outputs and _is_str(next(iter(outputs.values()))):
            # An optimizer's proposer (new instruction, description) is useful as plain prose; for the
            # agent's decision prose is a failed answer and stays empty so the metric scores it 0.
            values = {next(iter(outputs)): (completion or "").strip()}
        return {name: _coerce(values.get(name), field) for name, field in outputs.items()}

    def _call_postprocess(self, processed_signature, original_signature, outputs, lm, lm_kwargs):
        # The base class raises on an empty reply; for this student an empty reply is just a wrong answer.
        patched = []
        for out in outputs:
            if isinstance(out, dict) and not out.get("text") and not out.get("tool_calls"):
                out = {**out, "text": " "}
            elif not isinstance(out, dict) and not out:
                out = " "
            patched.append(out)
        return super()._call_postprocess(processed_signature, original_signature, patched, lm, lm_kwargs)


def _first_matching_object(text: str, output_fields: dict[str, Any]) -> dict[str, Any] | None:
    """The first JSON object naming an output field (or a tool, for next_action); else the first object."""
    first = None
    for candidate in _object_candidates(text):
        value = _loads(candidate)
        if not isinstance(value, dict):
            continue
        if any(k in output_fields for k in value) or ("next_action" in output_fields and "tool" in value):
            return value
        first = first if first is not None else value
    return first


def _coerce(value: Any, field: Any) -> Any:
    """A parsed value as the field's type; structured values for str fields become compact JSON text."""
    if _is_str(field):
        if value is None:
            return ""
        if isinstance(value, str):
            return value.strip()
        return json.dumps(value, ensure_ascii=False)
    if value is None or value == "":
        return None
    try:
        return parse_value(value, field.annotation)
    except Exception:  # a typed field the model got wrong stays raw rather than aborting the call
        return value


def _is_str(field: Any) -> bool:
    return getattr(field, "annotation", str) is str


def _dump_outputs(values: dict[str, Any]) -> str:
    """One JSON object; string fields that hold JSON lists/objects are embedded as real JSON."""
    out = {}
    for name, value in values.items():
        if isinstance(value, str):
            s = value.strip()
            if s[:1] in "[{":
                try:
                    parsed = json.loads(s)
                except ValueError:
                    parsed = None
                if isinstance(parsed, (list, dict)):
                    value = parsed
        out[name] = _jsonable(value)
    return json.dumps(out, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
        return value
    return str(value)


def _render_input(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(_jsonable(value), ensure_ascii=False)


def _desc(name: str, field: Any) -> str:
    desc = (getattr(field, "json_schema_extra", None) or {}).get("desc") or name
    return name if desc == f"${{{name}}}" else desc


def _tool_guidance(tools: str) -> str:
    """One line per offered tool: its description, or its argument names when none is written."""
    names = [t.strip() for t in tools.split(",") if t.strip() and t.strip() not in INTERNAL_TOOLS]
    lines = [guidance_line(name) for name in dict.fromkeys(names)]
    if not lines:
        return ""
    more = len(lines) - _MAX_TOOL_LINES
    lines = lines[:_MAX_TOOL_LINES] + ([f"- ... and {more} more"] if more > 0 else [])
    return 'Tools (call one as {"tool": name, "args": {...}}):\n' + "\n".join(lines)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
