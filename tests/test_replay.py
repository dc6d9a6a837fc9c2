"""The replay: requests built as OpenCode sends them, tool calls scored, the stage on real models.

Pure parts (request layout, scoring, destructive calls, permissions) are checked against the
captured OpenCode request shape; the stage runs on the embedded model and, as an extra student,
a real llama.cpp server speaking OpenAI's tool-calling API.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import dspy
import json5
import pytest
import yaml

from lib.models.server import free_port
from conftest import need
from helpers import Loopback, completion, error, make_project, read_jsonl, run_data_stages, run_stage, tool_completion
from lib.models import llama as LL
from lib.models import toolcalls
from lib.program.agent import Agent, to_example
from lib.opencode import replay as R
from lib.opencode import safety
from lib.opencode.report import text_call_note
from lib.tools import shape

pytestmark = pytest.mark.timeout(900)

CWD = "/home/dev/app"


def row(gold_tool="read", gold_args=None, steps=(), task="Fix the bug in src/app.py") -> dict:
    return {"id": "s/t0/s0", "inputs": {"task": task},
            "gold": {"next_action": {"tool": gold_tool, "args": gold_args or {"filePath": f"{CWD}/src/app.py"}}},
            "replay": {"cwd": CWD, "git": True, "time": 1763566723778,
                       "history": [{"role": "user", "text": "earlier question"},
                                   {"role": "assistant", "text": "earlier answer"}],
                       "steps": list(steps)}}


STUDENT = R.Student(label="m", call=lambda request: None, count_tokens=lambda request: 10, context_window=100,
                    model="smollm2-135m", provider_model="local/smollm2-135m")
WEIGHTS = {"valid_call": 1, "right_tool": 1, "right_target": 1}


# ------------------------------------------------------------------------------ the request

def test_request_is_opencodes_own_shape():
    steps = [{"tool": "grep", "args": {"pattern": "def main"}, "result": "src/app.py:3: def main():"}]
    req = R.build_request(row(steps=steps), R.Setup("exported", "AGENT PROMPT", ("webfetch", "task")), STUDENT)
    system = req["messages"][0]
    assert system["role"] == "system"
    assert system["content"] == shape.system_message(
        "AGENT PROMPT", model="smollm2-135m", provider_model="local/smollm2-135m", cwd=CWD, root=CWD,
        is_git=True, platform="linux", date="Wed Nov 19 2025", disabled=("webfetch", "task"))
    assert system["content"].startswith("AGENT PROMPT\n") and "<env>" in system["content"]
    roles = [m["role"] for m in req["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "tool"]
    call = req["messages"][4]
    assert call == shape.assistant_tool_call_message([(shape.call_id(0), "grep", {"pattern": "def main"})])
    assert req["messages"][5] == shape.tool_result_message(shape.call_id(0), "src/app.py:3: def main():")
    assert req["messages"][3]["content"] == "Fix the bug in src/app.py"
    names = [t["function"]["name"] for t in req["tools"]]
    assert names == [n for n in shape.tool_names() if n not in ("webfetch", "task")]
    assert req["tools"] == shape.tool_definitions(("webfetch", "task"))


def test_default_setup_sends_opencodes_default_prompt():
    req = R.build_request(row(), R.Setup("opencode_default", None), STUDENT)
    assert req["messages"][0]["content"].startswith(shape.default_prompt())
    assert len(req["tools"]) == len(shape.tool_names()) == 10


def test_chat_turn_demos_come_before_the_conversation():
    demo = {"task": "Read the readme", "tool": "read", "args": {"filePath": "README.md"}}
    req = R.build_request(row(), R.Setup("turns", "P", demo_turns=(demo,)), STUDENT)
    assert [m["role"] for m in req["messages"][:4]] == ["system", "user", "assistant", "tool"]
    assert req["messages"][1]["content"] == "Read the readme"
    assert req["messages"][2]["tool_calls"][0]["function"]["name"] == "read"


# ------------------------------------------------------------------------------ scoring

def score(tool, args, gold_tool="read", gold_args=None, setup=R.Setup("x", "P")):
    return R.score_call(row(gold_tool, gold_args), setup, tool, args, WEIGHTS)


def test_right_tool_and_target_relative_or_absolute():
    for path in (f"{CWD}/src/app.py", "src/app.py", "./src/app.py"):
        s = score("read", {"filePath": path})
        assert s["components"] == {"valid_call": 1.0, "right_tool": 1.0, "right_target": 1.0}, path
        assert s["score"] == 1.0
    wrong = score("read", {"filePath": "src/other.py"})
    assert wrong["components"]["right_target"] == 0.0 and wrong["score"] == pytest.approx(2 / 3)


def test_invalid_calls_score_low():
    assert score("read", {"path": "src/app.py"})["components"]["valid_call"] == 0.0  # OpenCode's schema: filePath
    assert score("list", {"path": "."})["components"]["valid_call"] == 0.0  # not offered by OpenCode 1.18
    assert score(None, "just text")["score"] == 0.0
    disabled = score("read", {"filePath": "src/app.py"}, setup=R.Setup("x", "P", ("read",)))
    assert disabled["components"]["valid_call"] == 0.0


def test_destructive_call_scores_zero_and_permission_blocks_it():
    call = {"command": "rm -rf dist", "description": "Clean"}
    open_agent = score("bash", call)
    assert open_agent["score"] == 0.0 and open_agent["destructive"] == "rm -rf" and not open_agent["blocked"]
    # Outside the project OpenCode asks first (external_directory), whatever the agent's rules.
    assert score("bash", {"command": "rm -rf /var/log/app.log", "description": "Clean"})["blocked"]
    guarded = score("bash", call, setup=R.Setup("x", "P", permission={"bash": safety.DENY_DESTRUCTIVE}))
    assert guarded["destructive"] and guarded["blocked"]
    # The recorded step did the same: not counted against the model.
    same = score("bash", call, gold_tool="bash", gold_args={"command": "rm -rf build", "description": "x"})
    assert same["destructive"] is None and same["score"] > 0


@pytest.mark.parametrize("tool,args,harmful", [
    ("bash", {"command": "rm -fr node_modules"}, True),
    ("bash", {"command": "cd x && rm -r -f dist"}, True),
    ("bash", {"command": "sudo rm --recursive --force /"}, True),
    ("bash", {"command": "rm build/a.o"}, False),
    ("bash", {"command": "rm /etc/hosts"}, True),
    ("bash", {"command": "git reset --hard HEAD~1"}, True),
    ("bash", {"command": "git push origin main --force"}, True),
    ("bash", {"command": "git push -f"}, True),
    ("bash", {"command": "git push origin main"}, False),
    ("bash", {"command": "git status"}, False),
    ("write", {"filePath": "/etc/passwd", "content": "x"}, True),
    ("write", {"filePath": f"{CWD}/src/new.py", "content": "x"}, False),
    ("edit", {"filePath": "../other/app.py", "oldString": "a", "newString": "b"}, True),
    ("read", {"filePath": "/etc/passwd"}, False),
])
def test_destructive_rules(tool, args, harmful):
    assert bool(safety.destructive(tool, args, CWD)) is harmful


def test_permission_last_matching_rule_wins():
    rules = {"bash": {"*": "allow", "rm *": "deny", "rm -i *": "allow"}}
    assert safety.permitted("bash", {"command": "ls -la"}, rules)
    assert not safety.permitted("bash", {"command": "rm  x"}, rules)  # whitespace is normalized
    assert safety.permitted("bash", {"command": "rm -i x"}, rules)
    assert not safety.permitted("edit", {"filePath": "a"}, {"edit": "deny"})
    assert safety.permitted("edit", {"filePath": "a"}, None)


def test_permission_checks_each_command_of_a_chain_and_paths_outside_the_project():
    """As real OpenCode decided it (tests/test_live.py runs the same calls through it)."""
    rules = {"bash": dict(safety.DENY_DESTRUCTIVE)}
    assert not safety.permitted("bash", {"command": "touch a && rm -rf build"}, rules)
    assert safety.permitted("bash", {"command": "touch a && ls"}, rules)
    for tool, args in (("write", {"filePath": "/etc/x", "content": ""}), ("bash", {"command": "rm /tmp/x"})):
        assert not safety.permitted(tool, args, None, CWD) and not safety.permitted(tool, args, rules, CWD)
        assert safety.permitted(tool, args, {"external_directory": "allow"}, CWD)
    assert safety.permitted("write", {"filePath": f"{CWD}/src/a.py", "content": ""}, None, CWD)


def test_over_context_is_counted_and_scored_zero_without_a_call():
    calls = []
    student = R.Student("m", calls.append, lambda request: 500, 100, "m", "local/m")
    result = R.replay([row()], R.Setup("x", "P"), student, WEIGHTS)
    assert calls == [] and result.records[0]["score"] == 0.0
    assert result.summary()["over_context"] == 1 and result.summary()["n"] == 1


def test_a_call_written_as_text_makes_no_call_and_is_counted():
    bare = '{"name": "read", "arguments": {"filePath": "/home/dev/app/src/app.py"}}'
    for text, held in ((bare, True), ("```json\n" + bare + "\n```", True), ("I will read the file first.", False)):
        student = R.Student("m", lambda request, t=text: [{"text": t}], lambda request: 10, 100, "m", "local/m")
        result = R.replay([row()], R.Setup("x", "P"), student, WEIGHTS)
        record, summary = result.records[0], result.summary()
        assert record["tool"] is None and record["score"] == 0.0 and record["text_call"] is held, text
        assert summary["no_call"] == 1 and summary["text_call"] == int(held)


def test_strict_syntax_is_counted_where_the_rule_reads_the_reply():
    def answers(*ids):
        it = iter(ids)
        return lambda request: [{"text": None, "tool_calls": [
            {"id": next(it), "type": "function", "function": {"name": "read", "arguments": "{}"}}]}]

    rows = [row(), {**row(), "id": "s/t0/s1"}, {**row(), "id": "s/t0/s2"}]
    # hermes-2-pro takes bare and tagged calls alike: the id says which was which
    student = R.Student("m", answers("call_0_tagged", "call_0_bare", "call_0_fenced"), lambda request: 10, 100,
                        "m", "local/m", reads_calls="hermes-2-pro")
    result = R.replay(rows, R.Setup("x", "P"), student, WEIGHTS)
    assert [r["syntax"] for r in result.records] == ["tagged", "bare", "fenced"]
    assert result.summary()["strict_call"] == 1
    # an id that names no syntax (an answer cached before): unknown, so no count rather than a wrong one
    student.call = answers("call_0_tagged", "call_0", "call_0_bare")
    assert R.replay(rows, R.Setup("x", "P"), student, WEIGHTS).summary()["strict_call"] is None
    # llama.cpp's rule takes only tagged blocks: every call it made is in the strict syntax
    student.call, student.reads_calls = answers("call_0", "call_1", "call_2"), "llama.cpp"
    assert R.replay(rows, R.Setup("x", "P"), student, WEIGHTS).summary()["strict_call"] == 3
    # a server or a grammar made the calls: the syntax was never seen
    for reads in ("server", "grammar"):
        student.call, student.reads_calls = answers("call_0_tagged", "call_1_tagged", "call_2_tagged"), reads
        assert R.replay(rows, R.Setup("x", "P"), student, WEIGHTS).summary()["strict_call"] is None


def test_a_greedy_embedded_student_is_asked_once_per_prompt_text():
    sent = []
    call = R.once_per_prompt(lambda request: sent.append(request) or len(sent),
                             lambda request: request["messages"][0]["content"])  # what the model would read
    same = [{"messages": [{"content": "P"}], "tools": [{"d": d}]} for d in ("long", "short")]
    assert call(same[0]) == call(same[1]) == 1 and len(sent) == 1
    assert call({"messages": [{"content": "Q"}], "tools": []}) == 2 and len(sent) == 2


def test_tool_choice_on_val_prefers_the_score_then_the_shorter_request():
    assert R.best_on_val({"all": 0.3, "used": 0.3}, {"all": 7300.0, "used": 5900.0}) == "used"
    assert R.best_on_val({"all": 0.4, "used": 0.3}, {"all": 7300.0, "used": 5900.0}) == "all"


def test_unused_tools_come_from_the_training_steps():
    train = [row("read", steps=[{"tool": "bash", "args": {"command": "ls"}, "result": ""}]), row("edit")]
    assert R.unused_tools(train) == [t for t in shape.tool_names() if t not in ("read", "bash", "edit")]


# ------------------------------------------------------------------------------ the embedded model

def test_embedded_model_answers_with_a_native_tool_call(smollm_path):
    llama = LL.load_llama(smollm_path)
    tools = shape.tool_definitions(("webfetch", "task", "skill", "todowrite", "write", "edit"))
    messages = [{"role": "system", "content": "You are a coding agent. Call a tool."},
                {"role": "user", "content": "Find the files named *.py in this project"}]
    out = toolcalls.complete(llama, messages, tools, "required", 96, {"temperature": 0.0})
    assert out["usage"]["prompt_tokens"] > 100 and out["choices"][0]["finish_reason"] == "tool_calls"
    # The grammar allows only offered tools, with schema-valid arguments.
    call = out["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] in {t["function"]["name"] for t in tools}
    assert not shape.validate_call(call["name"], json.loads(call["arguments"]))
    # "none" forbids a call: a message comes back.
    plain = toolcalls.complete(llama, messages, tools, "none", 32, {"temperature": 0.0})["choices"][0]
    assert plain["finish_reason"] == "stop" and "tool_calls" not in plain["message"] and plain["message"]["content"]
    forced = toolcalls.complete(llama, messages, tools, {"type": "function", "function": {"name": "glob"}},
                                96, {"temperature": 0.0})
    call = forced["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "glob" and not shape.validate_call("glob", json.loads(call["arguments"]))
    # Earlier tool results reach the prompt (llama.cpp's own handler drops them).
    text = toolcalls.render_prompt(messages + [
        shape.assistant_tool_call_message([("call_0", "glob", {"pattern": "**/*.py"})]),
        shape.tool_result_message("call_0", "src/app.py")], tools)
    assert "functions.glob:" in text and "<|im_start|>tool\nsrc/app.py<|im_end|>" in text


@pytest.fixture(scope="module")
def qwen_small_cfg() -> dict:
    from lib.core.errors import UserError
    from lib.models import catalog

    try:
        catalog.model_path("qwen2.5-coder-0.5b")
    except UserError as exc:
        need(False, f"cannot assemble qwen2.5-coder-0.5b: {exc}")  # in CI: a failure, never a skip
    return {"provider": "local", "model": "qwen2.5-coder-0.5b", "api_base": None, "api_key_env": None,
            "temperature": 0.0, "max_tokens": 96, "timeout": 300, "num_retries": 0}


def test_qwen_reply_is_read_by_the_chosen_server_rule(qwen_small_cfg, tmp_path):
    """Qwen2.5-Coder-0.5B in OpenCode's own request, rendered with its template: the same reply is text
    under llama.cpp's rule and a call under the earlier hermes-2-pro rule, which takes bare JSON; the
    answer cache keeps the two apart. The agent switches off four tools, which shortens the request
    by a third and leaves the reply as it is with all ten (with only bash and read it answers in prose)."""
    from lib.models import ledger as LG
    from lib.models import settings as S

    S.configure_cache(tmp_path)
    step = {"id": "q/t0/s0", "inputs": {"task": "Run pytest"},
            "gold": {"next_action": {"tool": "bash", "args": {"command": "pytest"}}},
            "replay": {"cwd": CWD, "git": True, "time": 1763566723778, "history": [], "steps": []}}
    ledger = LG.Ledger(max_calls=10, max_failed_calls=0)
    records = {}
    for parser in ("llama.cpp", "hermes-2-pro"):
        student = R.make_student("student", qwen_small_cfg, ledger, None, parser)
        assert student.context_window == 16384 and student.model == "qwen2.5-coder-0.5b"
        assert student.reads_calls == parser  # its template has tools: the server's rule reads its text
        setup = R.Setup(R.DEFAULT, None, ("task", "webfetch", "todowrite", "skill"))
        records[parser] = R.replay([step], setup, student, WEIGHTS).records[0]
    llama_cpp, hermes = records["llama.cpp"], records["hermes-2-pro"]
    # OpenCode's default prompt and six tools in Qwen's template: about 5,000 tokens (ten: 7,000).
    assert 4500 < llama_cpp["prompt_tokens"] == hermes["prompt_tokens"] < 5500
    # Measured: greedy, it writes {"name": "pytest", "arguments": {...}} with no tags. llama.cpp's rule
    # leaves that as text (OpenCode would show it); the earlier rule takes it, and it names no OpenCode tool.
    assert llama_cpp["tool"] is None and llama_cpp["text_call"] and llama_cpp["score"] == 0.0, llama_cpp
    assert hermes["tool"] == "pytest" and not hermes["text_call"], hermes
    assert llama_cpp["syntax"] is None and hermes["syntax"] == "bare"  # the id's syntax survives DSPy's reading
    assert hermes["components"]["valid_call"] == 0.0 and hermes["score"] == 0.0
    assert ledger.totals()["calls"] == 2  # two rules: two cache entries, two real calls


# ------------------------------------------------------------------------------ the stage

@pytest.fixture(scope="module")
def replay_project(tmp_path_factory, smollm_path) -> Path:
    """Data stages run and a labeled program saved (no model call), shared by the stage tests."""
    project = make_project(tmp_path_factory.mktemp("replay"), max_field_chars=300, max_history_messages=2)
    run_data_stages(project)
    train = [to_example(r) for r in read_jsonl(project / "data" / "splits" / "train.jsonl")]
    program = dspy.LabeledFewShot(k=4).compile(Agent(), trainset=train)
    (project / "outputs").mkdir()
    program.save(str(project / "outputs" / "program.json"))
    return project


def configure(project: Path, dest: Path, student: dict | None = None, disable_tools: str = "none",
              tool_descriptions: str = "full", optimization: dict | None = None, **replay) -> Path:
    """A copy of `project` with these replay settings, models.student where given, and the tool set and
    descriptions fixed unless `disable_tools` and `tool_descriptions` say otherwise."""
    shutil.copytree(project, dest, ignore=shutil.ignore_patterns("__pycache__"))
    path = dest / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params["replay"].update(replay)
    params["export"]["disable_tools"] = disable_tools
    params["export"]["tool_descriptions"] = tool_descriptions
    params["optimization"].update(optimization or {})
    if student:
        params["models"]["student"] = student
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return dest


def server_student(url: str) -> dict:
    return {"provider": "openai-compatible", "model": "smollm2", "api_base": url, "api_key_env": None,
            "temperature": 0.0, "max_tokens": 96, "timeout": 300, "num_retries": 0}


def test_stage_replays_both_prompts_on_a_server_and_a_second_student(replay_project, llama_tool_server, tmp_path):
    """The student behind a real llama-server (--jinja), and a second one in replay.students (scripted; the
    embedded model's replay runs in the DVC tests): both prompts for each, cached, then exported."""
    second = Loopback(lambda i: _tool_completion(i), model="scripted")
    project = configure(replay_project, tmp_path / "p", student=server_student(llama_tool_server), max_steps=1,
                        students=[{**server_student(second.url), "model": "scripted"}])
    try:
        done = run_stage(project, "replay")
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads((project / "metrics" / "replay.json").read_text())
        usage = json.loads((project / "metrics" / "replay_usage.json").read_text())
        again = run_stage(project, "replay")  # unchanged: every call from the cache
    finally:
        second.close()
    assert second.posts == 2
    assert set(report["students"]) == {"smollm2", "scripted"}
    for label, entry in report["students"].items():
        for side in ("opencode_default", "exported"):
            s = entry[side]
            assert s["n"] == 1 and 0 <= s["score"] <= 1 and s["over_context"] == 0, (label, side, s)
            assert s["prompt_tokens_max"] >= s["prompt_tokens_mean"] > 0
            assert set(s["components"]) == {"valid_call", "right_tool", "right_target"}
        assert entry["difference"]["ci95"][0] <= entry["difference"]["absolute"] <= entry["difference"]["ci95"][1]
    # OpenCode's default prompt is longer than the exported agent's.
    served = report["students"]["smollm2"]
    assert served["opencode_default"]["prompt_tokens_mean"] > served["exported"]["prompt_tokens_mean"]
    scripted = report["students"]["scripted"]  # a valid read of the README: a valid call, scored as one
    assert scripted["opencode_default"]["components"]["valid_call"] == scripted["exported"]["components"]["valid_call"] == 1.0
    steps = json.loads((project / "metrics" / "replay_exported_steps.json").read_text())
    assert len(steps) == 1 and {"id", "score", "tool", "gold_tool"} <= set(steps[0])
    assert usage["lm_usage"]["total"]["calls"] == 4
    assert usage["lm_calls"] == 4 and {"cache_hits", "prompt_tokens", "completion_tokens", "cost"} <= set(usage)

    # The unchanged re-run: the same report, and every call served from the cache.
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((project / "metrics" / "replay.json").read_text()) == report
    usage = json.loads((project / "metrics" / "replay_usage.json").read_text())
    assert usage["lm_usage"]["total"]["calls"] == 0 and usage["lm_usage"]["total"]["cache_hits"] == 4

    # Export then ships exactly the scored prompt and quotes the replay.
    for name in ("baseline", "optimized"):
        (project / "metrics" / f"{name}.json").write_text(json.dumps({"score": 0.1, "components": {}, "n": 2}))
    done = run_stage(project, "export")
    assert done.returncode == 0, done.stderr[-2000:]
    jsonc = next((project / "outputs" / "prompts").glob("opencode-*.jsonc")).read_text()
    assert "as OpenCode sends it" in jsonc.split("{", 1)[0]


def test_request_longer_than_the_context_window_is_counted_not_a_crash(replay_project, llama_tool_server, tmp_path):
    project = configure(replay_project, tmp_path / "p", student=server_student(llama_tool_server), max_steps=1,
                        context_window=300)
    done = run_stage(project, "replay")
    assert done.returncode == 0, done.stderr[-3000:]
    server = json.loads((project / "metrics" / "replay.json").read_text())["students"]["smollm2"]
    for side in ("opencode_default", "exported"):
        assert server[side]["over_context"] == 1 and server[side]["score"] == 0.0
    usage = json.loads((project / "metrics" / "replay_usage.json").read_text())
    assert usage["lm_usage"]["total"]["calls"] == 0  # OpenCode could not send it: nor does replay


def test_unreachable_student_fails_before_any_call(replay_project, tmp_path):
    project = configure(replay_project, tmp_path / "p", max_steps=1,
                        students=[server_student(f"http://127.0.0.1:{free_port()}/v1")])
    done = run_stage(project, "replay")
    assert done.returncode == 1
    assert "replay.students[0]" in done.stderr and "cannot reach" in done.stderr
    assert not (project / "metrics" / "replay.json").exists()
    assert not (project / "metrics" / "replay_usage.json").exists()


def _tool_completion(i: int) -> tuple[int, dict, dict]:
    return tool_completion("read", {"filePath": f"{CWD}/README.md"}, i)


def test_a_failed_replay_call_is_left_out_and_counted_or_stops_the_stage(replay_project, tmp_path):
    """The second request gets HTTP 500. Allowed by optimization.max_failed_calls: that step is left out of
    its prompt's score and counted as failed, never scored 0. Not allowed: the stage stops naming the
    server, and writes no replay result."""
    server = Loopback(lambda i: error(500) if i == 1 else _tool_completion(i))
    try:
        for allowed in (1, 0):
            project = configure(replay_project, tmp_path / f"p{allowed}", max_steps=2,
                                student={**server_student(server.url), "num_retries": 0, "timeout": 30},
                                optimization={"max_failed_calls": allowed})
            server.posts = 0
            done = run_stage(project, "replay")
            if allowed:
                assert done.returncode == 0, done.stderr[-2000:]
                side = json.loads((project / "metrics" / "replay.json").read_text())["students"]["smollm2"]
                base, ours = side["opencode_default"], side["exported"]
                assert (base["failed"], base["n"], ours["failed"], ours["n"]) == (1, 1, 0, 2)
                assert base["score"] == ours["score"] > 0  # the answered step is scored as answered
            else:
                assert done.returncode == 1 and "HTTP 500" in done.stderr and server.url in done.stderr
                assert not (project / "metrics" / "replay.json").exists()
    finally:
        server.close()


_BY_QUALITY = {"good": ("read", {"filePath": f"{CWD}/README.md"}),
               "bad": ("bash", {"command": "rm -rf /", "description": "clean"})}


def _answer_by_tool_count(i: int, request: dict, full: str, fewer: str) -> tuple[int, dict, dict]:
    """A scripted server student: a `read` of the README (right tool, right target on no step, but a
    valid call) or a destructive bash call, depending on whether the request offers every tool."""
    offered = len(request.get("tools") or [])
    return tool_completion(*_BY_QUALITY[full if offered == len(shape.tool_names()) else fewer], i)


def _replay_choosing(project: Path, dest: Path, answer, **export: str) -> tuple[Path, list[dict]]:
    """The replay stage, choosing the agent config on 3 val steps, then 2 test steps, on a scripted server
    student whose reply `answer(i, request)` gives; (the project, every request the server got)."""
    server = Loopback(lambda i: answer(i, server.requests[i]))
    try:
        project = configure(project, dest, max_steps=2, **export,
                            student={**server_student(server.url), "num_retries": 0, "timeout": 30},
                            optimization={"max_val_examples": 3})
        done = run_stage(project, "replay")
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        server.close()
    return project, server.requests


def _export_files(project: Path) -> set[str]:
    """The export stage on a replayed project (offline scores made up): the files it wrote."""
    for name in ("baseline", "optimized"):
        (project / "metrics" / f"{name}.json").write_text(json.dumps({"score": 0.1, "components": {}, "n": 2}))
    done = run_stage(project, "export")
    assert done.returncode == 0, done.stderr[-2000:]
    out = project / "outputs" / "prompts"
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize("full, fewer, chosen", [
    ("good", "bad", "all tools"),                # the better val score wins, though its request is longer
    ("bad", "good", "tools the sessions used"),
    ("good", "good", "tools the sessions used"),  # a tie: the shorter request wins
])
def test_disable_tools_auto_chooses_on_val_and_export_ships_the_choice(replay_project, tmp_path, full, fewer, chosen):
    """export.disable_tools: auto through the replay and export stages: both candidate tool sets are scored
    on val, the better one (at a tie, the shorter request) is chosen, the test split is scored with it,
    and the exported agent switches off exactly the tools it switched off."""
    train = read_jsonl(replay_project / "data" / "splits" / "train.jsonl")
    used = {r["gold"]["next_action"]["tool"] for r in train}
    used |= {s["tool"] for r in train for s in (r.get("replay") or {}).get("steps") or []}
    unused = sorted(set(shape.tool_names()) - used)
    assert unused, "the sample's training steps use every tool; the choice would be trivial"
    project, requests = _replay_choosing(replay_project, tmp_path / "p",
                                         lambda i, request: _answer_by_tool_count(i, request, full, fewer),
                                         disable_tools="auto")
    offered = [len(r.get("tools") or []) for r in requests]
    report = json.loads((project / "metrics" / "replay.json").read_text())
    agent = report["agent"]
    assert set(agent["val_scores"]) == {"all tools", "tools the sessions used"}
    tokens = agent["val_prompt_tokens"]
    assert tokens["tools the sessions used"] < tokens["all tools"]
    scores = agent["val_scores"]
    if full != fewer:
        assert scores[chosen] > max(s for k, s in scores.items() if k != chosen), scores
    assert agent["disable_tools"] == ([] if chosen == "all tools" else unused)
    # 3 val steps per candidate, then 2 test steps per prompt; the exported prompt's test requests carry
    # the chosen tool set, OpenCode's default all of them.
    assert len(offered) == 3 + 3 + 2 + 2
    want = len(shape.tool_names()) - len(agent["disable_tools"])
    assert sorted(offered[6:]) == sorted([len(shape.tool_names())] * 2 + [want] * 2), offered
    side = report["students"]["smollm2"]
    assert side["exported"]["destructive"] == 0  # the chosen set is the one that made good calls
    assert side["opencode_default"]["destructive"] == (2 if full == "bad" else 0)  # it always has every tool

    _export_files(project)
    config = json5.loads(next((project / "outputs" / "prompts").glob("opencode-*.jsonc")).read_text())
    (entry,) = config["agent"].values()
    assert entry.get("tools", {}) == {name: False for name in agent["disable_tools"]}


def _answer_by_descriptions(i: int, request: dict, full: str, short: str) -> tuple[int, dict, dict]:
    """A scripted server student whose call depends on how long the request's bash description is."""
    bash = next(t["function"]["description"] for t in request["tools"] if t["function"]["name"] == "bash")
    return tool_completion(*_BY_QUALITY[short if len(bash) < 1000 else full], i)


@pytest.mark.parametrize("full, short, chosen", [
    ("good", "bad", "full"),   # the better val score wins, though its request is longer
    ("bad", "good", "short"),
    ("good", "good", "short"),  # a tie: the shorter request wins
])
def test_tool_descriptions_auto_chooses_on_val_and_export_ships_the_plugin(replay_project, tmp_path, full, short,
                                                                           chosen):
    """export.tool_descriptions: auto through the replay and export stages: full and short descriptions are
    scored on val, the choice is replayed on test and shipped (the plugin's files only when short)."""
    project, requests = _replay_choosing(replay_project, tmp_path / "p",
                                         lambda i, request: _answer_by_descriptions(i, request, full, short),
                                         tool_descriptions="auto")
    bash = [len(next(t["function"]["description"] for t in r["tools"] if t["function"]["name"] == "bash"))
            for r in requests]
    agent = json.loads((project / "metrics" / "replay.json").read_text())["agent"]
    assert agent["tool_descriptions"] == chosen and agent["disable_tools"] == []
    assert set(agent["val_scores"]) == {"full descriptions", "short descriptions"}
    tokens = agent["val_prompt_tokens"]
    assert tokens["short descriptions"] < tokens["full descriptions"] - 1000
    # 3 val steps per candidate, then 2 test steps per prompt: OpenCode's default first, with the long ones
    assert len(bash) == 3 + 3 + 2 + 2 and min(bash[:3]) > 1000 and max(bash[3:6]) < 1000
    assert min(bash[6:8]) > 1000 and all((b < 1000) == (chosen == "short") for b in bash[8:]), bash
    plugin = {"plugin/short-tools.js", "plugin/short-tools.json"}
    files = _export_files(project)
    assert files & plugin == (plugin if chosen == "short" else set())


def test_both_choices_on_auto_take_three_val_passes_tools_first(replay_project, tmp_path):
    """disable_tools and tool_descriptions both auto: the tool sets are scored with OpenCode's descriptions,
    then short descriptions only for the set chosen (3 val passes, not 4), and the best of those ships."""
    project, requests = _replay_choosing(replay_project, tmp_path / "p",
                                         lambda i, request: _answer_by_tool_count(i, request, "bad", "good"),
                                         disable_tools="auto", tool_descriptions="auto")
    agent = json.loads((project / "metrics" / "replay.json").read_text())["agent"]
    assert list(agent["val_scores"]) == ["all tools, full descriptions", "tools the sessions used, full descriptions",
                                         "tools the sessions used, short descriptions"]
    assert agent["disable_tools"] and agent["tool_descriptions"] == "short"  # a tie on score: the shorter request
    assert len(requests) == 3 * 3 + 2 * 2


def test_replay_feedback_names_a_call_written_as_text():
    """GEPA's feedback in the deployed shape says what went wrong: a call written as text (which the
    server never runs), a wrong tool, a right tool aimed at the wrong file."""
    from lib.optimize.selection import ReplayMetric, Steps
    from lib.program.agent import to_example

    gold = row()
    metric = ReplayMetric(Steps([gold]), WEIGHTS)
    example = to_example(gold)

    def feedback(**pred) -> str:
        return metric.gepa(example, dspy.Prediction(**{"reasoning": "", "plan": "", "next_action": "", **pred})).feedback

    as_text = feedback(reasoning='```json\n{"name": "read", "arguments": {"filePath": "src/app.py"}}\n```')
    assert "wrote the call as text" in as_text and '"name": "read"' in as_text
    prose = feedback(reasoning="Now let me read the file.")
    assert "as text" not in prose and "Make one valid tool call" in prose
    wrong = feedback(next_action=json.dumps({"tool": "glob", "args": {"pattern": "**/*.py"}}))
    assert "should use read, not glob" in wrong
    aim = feedback(next_action=json.dumps({"tool": "read", "args": {"filePath": f"{CWD}/README.md"}}))
    assert "Right tool, but aim it at" in aim and "src/app.py" in aim
    right = metric.gepa(example, dspy.Prediction(reasoning="", plan="", next_action=json.dumps(
        {"tool": "read", "args": {"filePath": f"{CWD}/src/app.py"}})))
    assert right.feedback == "Correct." and right.score == 1.0


def _entry(text_calls: int, n: int = 4, reads: str = "llama.cpp") -> dict:
    side = {"n": n, "text_call": text_calls}
    return {"opencode_default": side, "exported": side, "calls_read_by": reads}


def test_text_call_note_says_who_did_not_take_the_calls_and_the_fix():
    assert text_call_note("m", _entry(1)) is None  # a minority of replies: no note
    assert text_call_note("m", _entry(0, n=0)) is None
    embedded = text_call_note("qwen", _entry(2))
    assert embedded.startswith("qwen: 2 of 4 replies") and "the llama.cpp rule (replay.parser)" in embedded
    assert "set replay.parser: hermes-2-pro" in embedded and "never runs it" in embedded
    strict = text_call_note("qwen", _entry(4, reads="strict"))
    assert "hermes-2-pro" not in strict and "Only a model that writes its chat template's own" in strict
    served = text_call_note("m", _entry(3, reads="server"))
    assert "which its server does not take" in served and "--tool-call-parser" in served


def test_stage_and_guide_warn_when_the_server_runs_no_call(replay_project, tmp_path):
    """A served student that writes every call as a bare JSON object in its text: the server parsed no call,
    replay counts each reply as a call written as text, and the stage and the usage guide both say so."""
    server = Loopback(lambda i: completion(json.dumps({"name": "read", "arguments": {"filePath": "README.md"}})))
    try:
        project = configure(replay_project, tmp_path / "p", max_steps=2,
                            student={**server_student(server.url), "timeout": 30})
        done = run_stage(project, "replay")
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        server.close()
    side = json.loads((project / "metrics" / "replay.json").read_text())["students"]["smollm2"]
    assert side["calls_read_by"] == "server"
    assert side["exported"]["text_call"] == side["exported"]["n"] == 2 and side["exported"]["score"] == 0.0
    assert "replay: note: smollm2: 2 of 2 replies with the exported agent hold a tool call written as text, " \
           "which its server does not take" in done.stdout
    for name in ("baseline", "optimized"):
        (project / "metrics" / f"{name}.json").write_text(json.dumps({"score": 0.1, "components": {}, "n": 2}))
    done = run_stage(project, "export")
    assert done.returncode == 0, done.stderr[-2000:]
    guide = next((project / "outputs" / "prompts").glob("USAGE_GUIDE_*.md")).read_text()
    assert "**Calls written as text.** smollm2: 2 of 2 replies" in guide and "--tool-call-parser" in guide
