"""The agent program: signature, compact JSON adapter (format and lenient parse), action parsing, examples."""
from __future__ import annotations

import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for LiteLLM's cost map

import dspy  # noqa: E402
import pytest  # noqa: E402
from dspy.utils import DummyLM  # noqa: E402

from lib.program.agent import (  # noqa: E402
    GOLD_KEY, Agent, CompactJSONAdapter, NextAction, parse_action, parse_plan, to_example)
from lib.data.examples import INPUT_FIELDS  # noqa: E402
from lib.scoring.metric import Metric  # noqa: E402

ADAPTER = CompactJSONAdapter()
EMPTY = {"reasoning": "", "plan": "", "next_action": ""}
READ_AUTH = {"tool": "read", "args": {"filePath": "src/auth.py"}}


def row(task: str = "Fix the failing login test", action: dict | None = None,
        plan: list[str] | None = None, steps: str = "") -> dict:
    action = action or READ_AUTH
    plan = plan or ["read", "edit", "bash"]
    return {
        "id": "s1/t0/s0",
        "inputs": {"task": task, "context": "working directory: /home/u/app\nfiles: src/auth.py, tests/test_auth.py",
                   "history": "", "tools": "read, edit, write, bash, grep", "steps_so_far": steps},
        "outputs": {"plan": json.dumps(plan), "next_action": json.dumps(action)},
        "gold": {"next_action": action, "plan": plan, "response": "", "scores": {}},
    }


class RawReply:
    """Makes DummyLM answer with fixed raw text, the way a small model really replies."""

    def __init__(self, text: str) -> None:
        self.text = text

    def format_field_with_value(self, fields_with_values, role: str = "user") -> str:
        return self.text


def run_agent(reply_text: str, program: Agent | None = None) -> tuple[dspy.Prediction, DummyLM]:
    lm = DummyLM([{}], adapter=RawReply(reply_text))
    program = program or Agent()
    with dspy.context(lm=lm, adapter=CompactJSONAdapter()):
        pred = program(**row()["inputs"])
    return pred, lm


# --- parse ------------------------------------------------------------------------------------

def test_parse_fenced_json_with_prose_around() -> None:
    text = ('Sure! Here is my answer:\n```json\n{"reasoning": "Look at auth first.", "plan": ["read", "edit"], '
            '"next_action": {"tool": "read", "args": {"filePath": "src/auth.py"}}}\n```\nHope this helps {:}')
    out = ADAPTER.parse(NextAction, text)
    assert out["reasoning"] == "Look at auth first."
    assert json.loads(out["plan"]) == ["read", "edit"]
    assert json.loads(out["next_action"]) == READ_AUTH
    assert all(isinstance(v, str) for v in out.values())


def test_parse_bare_action_object_becomes_next_action() -> None:
    out = ADAPTER.parse(NextAction, 'I will read it. {"tool": "read", "args": {"filePath": "src/auth.py"}} done')
    assert parse_action(out["next_action"]) == READ_AUTH
    assert out["reasoning"] == "" and out["plan"] == ""


def test_parse_python_dict_single_quotes_and_cut_off_reply() -> None:
    out = ADAPTER.parse(NextAction, "{'reasoning': 'run it', 'plan': ['bash'], "
                                    "'next_action': {'tool': 'bash', 'args': {'command': 'pytest -q', 'x': True}}}")
    assert parse_action(out["next_action"]) == {"tool": "bash", "args": {"command": "pytest -q", "x": True}}
    cut = ADAPTER.parse(NextAction, '{"reasoning": "r", "plan": ["read"], "next_action": {"tool": "read", '
                                    '"args": {"filePath": "a.py"')
    assert parse_action(cut["next_action"]) == {"tool": "read", "args": {"filePath": "a.py"}}


def test_parse_skips_braces_that_are_not_json() -> None:
    out = ADAPTER.parse(NextAction, 'Use {braces} like {this}. {"next_action": {"tool": "grep", '
                                    '"args": {"pattern": "def }main"}}}')
    assert parse_action(out["next_action"]) == {"tool": "grep", "args": {"pattern": "def }main"}}


@pytest.mark.parametrize("text", ["", "   ", "I cannot help with that.", "def main():\n    print('hi')",
                                  "{", "}{", "[1, 2, 3]", '{"unrelated": 1}', "{" * 500, "```json\n```"])
def test_parse_garbage_gives_empty_fields_without_raising(text: str) -> None:
    assert ADAPTER.parse(NextAction, text) == EMPTY


def test_parse_action_and_plan() -> None:
    assert parse_action('{"tool": " read ", "args": {"filePath": "a"}}') == {"tool": "read", "args": {"filePath": "a"}}
    assert parse_action('{"next_action": {"tool": "glob", "args": {"pattern": "*.py"}}}')["tool"] == "glob"
    assert parse_action('prose {"x": 1} then {"tool": "list", "args": {}}') == {"tool": "list", "args": {}}
    for bad in ("", "read", '{"tool": "read"}', '{"tool": "", "args": {}}', '{"tool": "read", "args": "a.py"}',
                '{"tool": 3, "args": {}}', None):
        assert parse_action(bad) is None
    assert parse_plan('["read", "edit"]') == ["read", "edit"]
    assert parse_plan('[{"tool": "read"}, "bash"]') == ["read", "bash"]
    assert parse_plan("['read', 'edit']") == ["read", "edit"]
    assert parse_plan("[]") == []
    for bad in ("read, edit", "", '{"plan": 1}', "[1, 2]", '["read", ""]'):
        assert parse_plan(bad) is None


# --- format -----------------------------------------------------------------------------------

def test_demos_render_as_user_and_assistant_turns() -> None:
    demo = to_example(row())
    inputs = row(task="Add a --verbose flag")["inputs"]
    messages = ADAPTER.format(NextAction, [demo], inputs)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    user, assistant, final = messages[1]["content"], messages[2]["content"], messages[3]["content"]
    assert user.splitlines()[0] == "task: Fix the failing login test"
    assert "steps_so_far" not in user and "history" not in user  # empty inputs are skipped
    answer = json.loads(assistant)  # the assistant turn is exactly one JSON object
    assert answer == {"plan": ["read", "edit", "bash"], "next_action": READ_AUTH}  # real JSON, no reasoning
    assert "gold" not in assistant and "s1/t0" not in user
    assert final.startswith("task: Add a --verbose flag")


def test_demo_with_reasoning_includes_it_first() -> None:
    demo = {**row()["inputs"], "reasoning": "Read auth first.", "plan": '["read"]',
            "next_action": json.dumps(READ_AUTH)}
    content = ADAPTER.format_demos(NextAction, [demo])[1]["content"]
    assert list(json.loads(content)) == ["reasoning", "plan", "next_action"]
    assert json.loads(content)["reasoning"] == "Read auth first."


def test_system_message_uses_signature_instructions_and_tool_guidance() -> None:
    rewritten = NextAction.with_instructions("Pick the single best OpenCode tool call. Be brief.")
    system = ADAPTER.format(rewritten, [], row()["inputs"])[0]["content"]
    assert system.startswith("Pick the single best OpenCode tool call. Be brief.")
    assert NextAction.instructions.split(".")[0] not in system
    assert "Answer with one JSON object with keys reasoning, plan, next_action" in system
    assert '- read: read a file: {"filePath"' in system and "- grep:" in system
    assert "- webfetch" not in system  # only the offered tools
    assert "invalid" not in ADAPTER.format(NextAction, [], {**row()["inputs"], "tools": "read, invalid"})[0]["content"]


def test_baseline_instruction_is_short_and_leaves_the_format_to_the_adapter() -> None:
    # The instruction is exported into OpenCode prompts, where the model makes real tool calls:
    # the JSON answer format belongs to the adapter's system message, not to the instruction.
    assert "JSON" not in NextAction.instructions
    assert "one JSON object" in CompactJSONAdapter().format_system_message(NextAction)
    assert len(NextAction.instructions) < 600
    assert list(NextAction.output_fields) == ["reasoning", "plan", "next_action"]
    assert tuple(NextAction.input_fields) == INPUT_FIELDS


# --- the program through DSPy -----------------------------------------------------------------

def test_agent_call_through_dummy_lm_returns_parsed_prediction() -> None:
    lm = DummyLM([{"reasoning": "Read auth.py to see the login check.", "plan": '["read", "edit"]',
                   "next_action": json.dumps(READ_AUTH)}], adapter=CompactJSONAdapter())
    with dspy.context(lm=lm, adapter=CompactJSONAdapter()):
        pred = Agent()(**row()["inputs"])
    assert isinstance(pred, dspy.Prediction)
    assert pred.reasoning == "Read auth.py to see the login check."
    assert parse_plan(pred.plan) == ["read", "edit"]
    assert parse_action(pred.next_action) == READ_AUTH
    sent = lm.history[-1]["messages"]
    assert sent[0]["role"] == "system" and NextAction.instructions.split(".")[0] in sent[0]["content"]
    assert sent[-1]["content"].startswith("task: Fix the failing login test")


@pytest.mark.parametrize("reply", ["", "I think you should open the file.", "```python\nprint(1)\n```"])
def test_agent_call_with_unusable_reply_gives_empty_fields(reply: str) -> None:
    pred, _ = run_agent(reply)
    assert (pred.reasoning, pred.plan, pred.next_action) == ("", "", "")


def test_agent_call_with_messy_reply_still_parses() -> None:
    pred, _ = run_agent("Okay!\n```json\n{'tool': 'bash', 'args': {'command': 'pytest -q', "
                        "'description': 'Run the tests'}}\n```")
    assert parse_action(pred.next_action)["args"]["command"] == "pytest -q"


def test_evaluate_scores_a_failed_reply_as_zero_not_an_error() -> None:
    devset = [to_example(row())]
    metric = Metric({"tool_validity": 3, "plan_coherence": 2, "first_action": 2, "reasoning_quality": 1,
                     "efficiency": 1})
    lm = DummyLM([{}], adapter=RawReply("no idea"))
    with dspy.context(lm=lm, adapter=CompactJSONAdapter()):
        result = dspy.Evaluate(devset=devset, metric=metric, num_threads=1, display_progress=False,
                               max_errors=0)(Agent())
    assert result.score == 0.0
    assert result.results[0][2] == 0.0


def test_labeled_demos_reach_the_prompt_and_survive_save_load(tmp_path) -> None:
    train = [to_example(row()), to_example(row(task="Run the tests", action={"tool": "bash", "args": {
        "command": "pytest -q", "description": "Run the tests"}}, plan=["bash"]))]
    program = dspy.LabeledFewShot(k=2).compile(Agent(), trainset=train)
    path = tmp_path / "program.json"
    program.save(str(path))
    loaded = Agent()
    loaded.load(str(path))
    pred, lm = run_agent(json.dumps({"next_action": READ_AUTH}), loaded)
    roles = [m["role"] for m in lm.history[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assistant_turns = [json.loads(m["content"]) for m in lm.history[-1]["messages"] if m["role"] == "assistant"]
    assert {t["next_action"]["tool"] for t in assistant_turns} == {"read", "bash"}
    assert parse_action(pred.next_action) == READ_AUTH


def test_bootstrapped_demo_keeps_reasoning_and_passes_the_metric() -> None:
    good = {"reasoning": "Read src/auth.py to find why the login test fails.", "plan": '["read", "edit", "bash"]',
            "next_action": json.dumps(READ_AUTH)}
    metric = Metric({"tool_validity": 3, "plan_coherence": 2, "first_action": 2, "reasoning_quality": 1,
                     "efficiency": 1})
    teacher_lm = DummyLM([good, good], adapter=CompactJSONAdapter())
    with dspy.context(lm=teacher_lm, adapter=CompactJSONAdapter()):
        program = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=1, max_labeled_demos=0,
                                        max_rounds=1).compile(Agent(), trainset=[to_example(row())])
    demos = program.predict.demos
    assert len(demos) == 1 and demos[0]["reasoning"] == good["reasoning"]
    rendered = ADAPTER.format_demos(NextAction, demos)
    assert json.loads(rendered[1]["content"])["reasoning"] == good["reasoning"]


def test_generic_signature_works_for_optimizer_proposers() -> None:
    lm = DummyLM([{"answer": "blue"}], adapter=CompactJSONAdapter())
    with dspy.context(lm=lm, adapter=CompactJSONAdapter()):
        assert dspy.Predict("question -> answer")(question="Sky colour?").answer == "blue"
    plain = DummyLM([{}], adapter=RawReply("A better instruction, in plain prose."))
    with dspy.context(lm=plain, adapter=CompactJSONAdapter()):
        assert dspy.Predict("question -> proposed_instruction")(question="q").proposed_instruction == \
            "A better instruction, in plain prose."
    plain = DummyLM([{}], adapter=RawReply("A better instruction, in plain prose."))
    with dspy.context(lm=plain, adapter=CompactJSONAdapter()):
        two = dspy.Predict("question -> proposed_instruction, proposed_prefix_for_output_field")(question="q")
    assert (two.proposed_instruction, two.proposed_prefix_for_output_field) == (
        "A better instruction, in plain prose.", "")


def test_to_example_keeps_inputs_outputs_and_gold() -> None:
    ex = to_example({**row(), "inputs": {**row()["inputs"], "history": None}})
    assert set(ex.inputs().keys()) == set(INPUT_FIELDS)
    assert ex.history == ""
    assert json.loads(ex.next_action) == READ_AUTH and json.loads(ex.plan) == ["read", "edit", "bash"]
    assert ex[GOLD_KEY]["next_action"] == READ_AUTH
    assert set(ex.labels().keys()) >= {"plan", "next_action", GOLD_KEY}


def test_instruction_optimizer_runs_through_the_adapter() -> None:
    # COPRO asks its proposer for several completions at once, through whatever adapter is configured.
    answer = {"reasoning": "Read src/auth.py for the login test.", "plan": '["read", "edit", "bash"]',
              "next_action": json.dumps(READ_AUTH), "proposed_instruction": "Pick one OpenCode tool call.",
              "proposed_prefix_for_output_field": "Next action:"}
    lm = DummyLM([answer] * 200, adapter=CompactJSONAdapter())
    metric = Metric({"tool_validity": 3, "plan_coherence": 2, "first_action": 2, "reasoning_quality": 1,
                     "efficiency": 1})
    with dspy.context(lm=lm, adapter=CompactJSONAdapter()):
        program = dspy.COPRO(metric=metric, breadth=2, depth=1).compile(
            Agent(), trainset=[to_example(row())], eval_kwargs={"num_threads": 1, "display_progress": False})
    instructions = program.predict.signature.instructions
    # The proposal came back through the adapter and was scored as a candidate; the kept one ranks first.
    tried = [c["instruction"] for c in program.candidate_programs]
    assert "Pick one OpenCode tool call." in tried, tried
    assert instructions == program.candidate_programs[0]["instruction"]
    system = ADAPTER.format(program.predict.signature, [], row()["inputs"])[0]["content"]
    assert system.startswith(instructions.split("\n")[0])
