"""lib/program/retrieval.py (BM25 demo picking, optimizer knn) and the exported plugin's scoring in node.

The plugin must pick exactly what Python picks: the node tests run the shipped
lib/opencode/nearest-demos.js on the same bank and queries and compare numbers exactly.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import dspy
import pytest

from conftest import need
from helpers import planted_in, sample_step_rows
from lib.export import files as E
from lib.opencode import agent as A
from lib.program.agent import Agent, CompactJSONAdapter, to_example
from lib.data.examples import _step_lines
from lib.scoring.metric import Metric
from lib.data.redact import Redactor
from lib.opencode import plugin
from lib.optimize.optimizers import optimize
from lib.program.retrieval import Index, RetrievalAgent, fixed_ids, prompt_order, query_text, tokenize
from lib.data.session import Action

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_JS = ROOT / "lib" / "opencode" / "nearest-demos.js"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """Step rows from the sample sessions in git, redacted as the parse stage does."""
    return sample_step_rows()


@pytest.fixture(scope="module")
def demos(rows) -> list[dict]:
    """The rows as a saved program's demos (flat dicts with id, inputs, outputs and gold)."""
    return [dict(to_example(r)) for r in rows]


def node() -> str:
    found = shutil.which("node")
    need(found is not None, "node is not installed (it comes with OpenCode's npm install in ./setup.sh)")
    return found


def run_plugin_core(tmp_path: Path, script: str, payload: dict) -> object:
    """Run `script` (JS, with `core` = the plugin's scoring functions and `input` = payload) in node."""
    (tmp_path / "input.json").write_text(json.dumps(payload), encoding="utf-8")
    runner = tmp_path / "run.mjs"
    runner.write_text(
        "import { readFileSync } from 'node:fs'\n"
        f"import {{ NearestDemos }} from {json.dumps(PLUGIN_JS.as_uri())}\n"
        "const core = NearestDemos.core\n"
        f"const input = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'input.json'))}, 'utf8'))\n"
        + script, encoding="utf-8")
    done = subprocess.run([node(), str(runner)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ----------------------------------------------------------------------------- tokens and BM25

@pytest.mark.parametrize("text, tokens", [
    ("Fix the failing test in tests/test_api.py", ["fix", "the", "failing", "test", "in", "tests", "test", "api", "py"]),
    ('read {"filePath": "src/appMain.ts"}', ["read", "file", "path", "src", "app", "main", "ts"]),
    ("getHTTPServer a b1 X", ["get", "httpserver", "b1"]),
    ("über naïve café 2024-01-02", ["ber", "na", "ve", "caf", "2024", "01", "02"]),
    ("", []),
])
def test_tokens(text, tokens):
    assert tokenize(text) == tokens


def test_bm25_prefers_rare_shared_terms_and_breaks_ties_by_position():
    ix = Index.build(["a", "b", "c", "d"], ["fix the failing test", "add a readme", "fix the docs", "add a readme"])
    s = ix.scores("failing test")
    assert s[0] > 0 and s[1] == s[2] == s[3] == 0.0
    assert ix.top_k("failing test", 2) == [0, 1]  # then the earliest of the zero-score documents
    assert ix.top_k("readme", 2) == [1, 3]  # equal scores: earlier position first
    assert ix.scores("the") [0] < ix.scores("failing")[0]  # a term in two documents weighs less than one in one


def test_query_text_uses_the_fields_and_relative_paths():
    inputs = {"task": "Fix /home/me/app/src/x.py", "context": "working directory: /home/me/app\nfiles: a",
              "steps_so_far": "1. read {\"filePath\": \"/home/me/app/src/x.py\"} -> ok"}
    assert query_text(inputs, ["task"]) == "Fix src/x.py"
    assert query_text(inputs, ["task", "steps_so_far"]) == 'Fix src/x.py\n1. read {"filePath": "src/x.py"} -> ok'


# ------------------------------------------------------------------------------ the DSPy program

def test_each_input_gets_its_nearest_demos(rows):
    """A hand-made bank whose nearest demos are known by construction: each query shares two or three rare
    words with one demo and one with another, and none with the rest."""
    tasks = {"a": "Fix the failing login test in tests/test_auth.py",
             "b": "Rename parse_row to parse_record across the package",
             "c": "Add a retry to the HTTP client in src/client.py",
             "d": "Explain what src/auth.py does with the session token"}
    bank = [to_example({**row, "id": key, "inputs": {**row["inputs"], "task": task}})
            for (key, task), row in zip(tasks.items(), rows)]
    agent = RetrievalAgent(bank, 2, ["task"])
    nearest = {"failing login; package": ["b", "a"],  # shown nearest last: where a small model copies from
               "retry HTTP client; session": ["d", "c"]}
    lm = dspy.utils.DummyLM([{"reasoning": "r", "plan": '["read"]', "next_action": '{"tool": "read", "args": {}}'}] * 4,
                            adapter=CompactJSONAdapter())
    with dspy.context(lm=lm, adapter=CompactJSONAdapter()):
        for query, want in nearest.items():
            inputs = {**dict(to_example(rows[40]).inputs()), "task": query}
            picked = agent.pick(inputs)
            assert [d["id"] for d in picked] == want
            agent(**inputs)
            messages = lm.history[-1]["messages"]
            users = [m["content"] for m in messages if m["role"] == "user"][:-1]
            assert len(users) == 2  # only as many demos as k went to the model, in the picked order
            assert [tasks[key] in text for key, text in zip(want, users)] == [True, True]


def test_saved_program_keeps_bank_and_settings(rows, tmp_path):
    agent = RetrievalAgent([to_example(r) for r in rows[:20]], 3, ["task"])
    agent.save(str(tmp_path / "program.json"))
    state = json.loads((tmp_path / "program.json").read_text(encoding="utf-8"))
    assert state["retrieval"] == {"method": "bm25", "k": 3, "fields": ["task"], "k1": 1.2, "b": 0.75, "fixed": []}
    assert len(state["predict"]["demos"]) == 20
    again = RetrievalAgent([], 6, ["task", "steps_so_far"])
    again.load(str(tmp_path / "program.json"))
    query = to_example(rows[30]).inputs()
    assert (again.k, again.fields) == (3, ("task",))
    assert [d["id"] for d in again.pick(query)] == [d["id"] for d in agent.pick(query)]
    assert A.load_program(state).retrieval["k"] == 3


def test_fixed_demos_come_first_and_are_never_among_the_nearest(rows, tmp_path):
    """knn after fixed labeled demos: every input gets the fixed ones, then its nearest of the others
    (nearest last); export shows the fixed ones in the agent prompt and banks only the others."""
    train = [to_example(r) for r in rows[:30]]
    fixed = fixed_ids(Agent(), train, 2)
    assert fixed == [str(d["id"]) for d in dspy.LabeledFewShot(k=2).compile(Agent(), trainset=train).predict.demos]
    agent = RetrievalAgent(train, 3, ["task", "steps_so_far"], fixed)
    for row in rows[40:45]:
        picked = [str(d["id"]) for d in agent.pick(to_example(row).inputs())]
        assert picked[:2] == fixed and len(picked) == 5 and not set(picked[2:]) & set(fixed)
        others = [d for d in agent.predict.demos if str(d["id"]) not in fixed]
        want = Index.build([d["id"] for d in others], [query_text(dict(d), agent.fields) for d in others]).top_k(
            query_text(to_example(row).inputs(), agent.fields), 3)
        assert picked[2:] == [others[i]["id"] for i in reversed(want)]
    agent.save(str(tmp_path / "program.json"))
    state = json.loads((tmp_path / "program.json").read_text(encoding="utf-8"))
    assert state["retrieval"]["fixed"] == fixed
    again = RetrievalAgent([], 1, ["task"])
    again.load(str(tmp_path / "program.json"))
    query = to_example(rows[41]).inputs()
    assert again.fixed == tuple(fixed)
    assert [d["id"] for d in again.pick(query)] == [d["id"] for d in agent.pick(query)]
    program = A.load_program(state)
    assert [str(d["id"]) for d in program.prompt_demos] == fixed
    assert len(program.bank_demos) == 28 and not {str(d["id"]) for d in program.bank_demos} & set(fixed)


def test_one_candidate_needs_no_model_call(rows):
    train = [to_example(r) for r in rows[:20]]
    program = optimize("knn", {"k": [4], "fields": [["task"]], "fixed": [0]}, Agent(), train, train[:3],
                       Metric({"tool_validity": 1}),
                       None, None, 1, 0)
    assert isinstance(program, RetrievalAgent) and program.k == 4 and program.fields == ("task",)


def test_knn_selects_on_val_with_the_embedded_model(rows, smollm_path, capsys):
    """Selection runs the real student on val for every (k, fields) pair and keeps the best."""
    from lib.models.ledger import Ledger
    from lib.models.lm import make_lm
    model = {"provider": "local", "model": "smollm2-135m", "api_base": None, "api_key_env": None,
             "temperature": 0.0, "max_tokens": 48, "timeout": 120, "num_retries": 0}
    lm = make_lm("student", model, Ledger(max_calls=50))
    train = [to_example(r) for r in rows[:25]]
    val = [to_example(r) for r in rows[60:62]]
    with dspy.context(lm=lm, adapter=CompactJSONAdapter()):
        program = optimize("knn", {"k": [1, 2], "fields": [["task"]], "fixed": [0, 1]}, Agent(), train, val,
                           Metric({"tool_validity": 3, "first_action": 2}), None, lm, 1, 0)
        pred = program(**val[0].inputs())
    out = capsys.readouterr().out
    for n in (0, 1):
        assert f"knn: fixed={n} k=1 fields=task: val score" in out and f"knn: fixed={n} k=2 fields=task: val score" in out
    assert f"knn: chose fixed={len(program.fixed)} k={program.k} fields=task" in out
    assert isinstance(pred.next_action, str)


# ---------------------------------------------------------------------- the bank and the plugin

def test_bank_is_safe_and_describes_the_same_index(demos):
    bank = plugin.demo_bank(demos, {"k": 3, "fields": ["task", "steps_so_far"]}, 3, 1200)
    assert bank["k"] == 3 and bank["fields"] == ["task", "steps_so_far"]
    ids = [d["id"] for d in bank["demos"]]
    assert ids == sorted(ids) and 0 < len(ids) <= len(demos)
    text = json.dumps(bank, ensure_ascii=False)
    # The planted values themselves, not only what the redactor recognizes: absent here, and absent from
    # a bank built from unredacted rows that hold them (worked_example refuses a demo with a secret).
    assert not planted_in(text)
    raw = [dict(to_example(r)) for r in sample_step_rows(redact=False)]
    assert planted_in(json.dumps(raw))
    unsafe = plugin.demo_bank(raw, {"k": 3, "fields": ["task", "steps_so_far"]}, 3, 1200)
    assert unsafe["demos"] and not planted_in(json.dumps(unsafe, ensure_ascii=False))
    probe = Redactor()
    probe.text(text)
    assert probe.total == 0 and "[REDACTED" not in text
    assert "/home/" not in text and "/Users/" not in text and "/tmp/" not in text
    kept = {d["id"]: d for d in demos if d["id"] in set(ids)}
    direct = Index.build(ids, [query_text(kept[i], bank["fields"]) for i in ids])
    again = Index.from_bank(json.loads(text))
    for demo in demos[::7]:
        q = query_text(demo, bank["fields"])
        assert again.scores(q) == direct.scores(q)


def test_node_scores_equal_python_scores(demos, tmp_path):
    bank = plugin.demo_bank(demos, {"k": 4, "fields": ["task", "steps_so_far"]}, 3, 1200)
    rng = random.Random(7)
    queries = [query_text(d, bank["fields"]) for d in demos[::3]]
    queries += ["Fix the failing test in tests/test_api.py", "readFile getHTTPServer über", "", "zzz qqq"]
    words = sorted(bank["terms"])
    queries += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(20)]
    (tmp_path / "bank.json").write_text(json.dumps(bank), encoding="utf-8")
    got = run_plugin_core(tmp_path, (
        "const bank = core.loadBank(input.bank)\n"
        "const out = input.queries.map((q) => ({tokens: core.tokenize(q), scores: Array.from(core.scores(bank, q)),"
        " top: core.topK(bank, q, bank.k), text: core.render(bank, core.topK(bank, q, bank.k))}))\n"
        "process.stdout.write(JSON.stringify(out))\n"), {"bank": str(tmp_path / "bank.json"), "queries": queries})
    index = Index.from_bank(bank)
    for q, js in zip(queries, got):
        assert js["tokens"] == tokenize(q)
        assert js["scores"] == index.scores(q)  # bit for bit
        assert js["top"] == index.top_k(q, bank["k"])
        shown = [bank["demos"][i]["text"] for i in prompt_order(index.top_k(q, bank["k"]))]  # nearest last
        assert js["text"] == "\n\n".join([bank["header"], *shown])


def test_node_builds_the_turn_query_as_python_does(tmp_path):
    """The plugin's query from OpenCode messages equals query_text of the same turn as a training row."""
    bank = plugin.demo_bank([], {"k": 2, "fields": ["task", "steps_so_far"]}, 2, 1200)
    messages = [
        {"info": {"role": "user", "sessionID": "ses_1"}, "parts": [{"type": "text", "text": "Old task"}]},
        {"info": {"role": "assistant", "sessionID": "ses_1"}, "parts": [{"type": "text", "text": "done"}]},
        {"info": {"role": "user", "sessionID": "ses_1"},
         "parts": [{"type": "text", "text": "Fix the bug in /proj/app/calc.py"}]},
        {"info": {"role": "assistant", "sessionID": "ses_1"}, "parts": [
            {"type": "tool", "tool": "read", "state": {"status": "completed",
                                                       "input": {"filePath": "/proj/app/calc.py", "limit": 20},
                                                       "output": "def add(a, b):\n    return a - b\n"}},
            {"type": "tool", "tool": "bash", "state": {"status": "error", "input": {"command": "pytest -q"},
                                                       "error": "exit 1"}}]},
    ]
    got = run_plugin_core(tmp_path, (
        "const bank = core.parseBank(JSON.stringify(input.bank))\n"
        "process.stdout.write(JSON.stringify(core.turnQuery(bank, input.messages, '/proj/app')))\n"),
        {"bank": bank, "messages": messages})
    # The training rows' own rendering of the same two calls (lib.data.examples).
    steps = "\n".join(_step_lines([
        Action("read", {"filePath": "/proj/app/calc.py", "limit": 20}, result="def add(a, b):\n    return a - b\n",
               status="ok"),
        Action("bash", {"command": "pytest -q"}, result="exit 1", status="error")]))
    want = query_text({"task": "Fix the bug in /proj/app/calc.py", "steps_so_far": steps,
                       "context": "working directory: /proj/app"}, ["task", "steps_so_far"])
    assert got["sessionID"] == "ses_1"
    assert tokenize(got["text"]) == tokenize(want)


@pytest.mark.parametrize("content, reason", [(None, "ENOENT"), ("{not json", "JSON"),
                                             ('{"format": "other"}', "not a opencode-prompt-learn/demo-bank")])
def test_plugin_without_a_usable_bank_adds_nothing_and_logs_why(tmp_path, content, reason):
    folder = tmp_path / "plugin"
    folder.mkdir()
    shutil.copy(PLUGIN_JS, folder / "nearest-demos.js")
    if content is not None:
        (folder / "nearest-demos.json").write_text(content, encoding="utf-8")
    runner = tmp_path / "run.mjs"
    runner.write_text(
        f"import {{ NearestDemos }} from {json.dumps((folder / 'nearest-demos.js').as_uri())}\n"
        "const logs = []\n"
        "const hooks = await NearestDemos({ client: { app: { log: async (x) => logs.push(x.body) } }, directory: '/p' })\n"
        "process.stdout.write(JSON.stringify({ hooks: Object.keys(hooks), logs }))\n", encoding="utf-8")
    done = subprocess.run([node(), str(runner)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["hooks"] == []
    assert len(out["logs"]) == 1 and out["logs"][0]["level"] == "warn" and out["logs"][0]["service"] == "nearest-demos"
    assert reason in out["logs"][0]["message"] and "plain prompt" in out["logs"][0]["message"]


def test_export_writes_the_plugin_and_its_bank(demos):
    program = A.Program(instructions="Do it.", demos=demos, retrieval={"k": 2, "fields": ["task"]})
    scores = E.Scores(baseline=0.1, optimized=0.2, n=40, optimizer="knn", demos=len(demos))
    settings = A.ExportSettings(agent="build", mode="primary", formats=("plugin", "usage_guide"), max_examples=3,
                                student={"provider": "local", "model": "smollm2-135m", "temperature": 0.0},
                                opencode_model=None)
    files = E.render_files(settings, program, scores, None)
    assert files["plugin/nearest-demos.js"] == PLUGIN_JS.read_text(encoding="utf-8")
    bank = json.loads(files["plugin/nearest-demos.json"])
    assert bank["k"] == 2 and bank["fields"] == ["task"] and len(bank["demos"]) > 10
    assert all(d["text"].startswith("Task: ") and "\nCall: {" in d["text"] for d in bank["demos"])
    guide = files["USAGE_GUIDE_build.md"]
    assert 'cp outputs/prompts/plugin/nearest-demos.* "$PROJECT/.opencode/plugin/"' in guide
    assert "OPENCODE_NEAREST_DEMOS=off" in guide


def test_replay_request_carries_the_plugin_examples(rows, demos):
    """With the plugin exported, replay sends each step its nearest examples as OpenCode does."""
    from lib.opencode.replay import Setup, Student, build_request
    bank = plugin.demo_bank(demos, {"k": 2, "fields": ["task", "steps_so_far"]}, 2, 1200)
    student = Student(label="s", call=lambda request: None, count_tokens=lambda request: 0, context_window=8192,
                      model="m", provider_model="local/m")
    for row in (rows[3], rows[40]):
        with_bank = build_request(row, Setup("exported", "Do it.", demo_bank=bank), student)
        plain = build_request(row, Setup("exported", "Do it."), student)
        extra = plugin.injected_text(bank, row["inputs"])
        assert extra.startswith(bank["header"]) and extra.count("\nCall: {") == 2
        assert with_bank["messages"][1] == {"role": "system", "content": extra}
        assert with_bank["messages"][:1] + with_bank["messages"][2:] == plain["messages"]


def test_the_candidate_kept_is_the_best_on_val_not_the_first_or_last(demos, monkeypatch):
    """select_on_val keeps the (fixed, k, fields) whose val score is highest: here a metric that prefers
    k=3 among 1, 3 and 5 (the agent's answer names its k), so neither grid order nor size can pass."""
    from lib.program import retrieval

    def answer(self, **inputs):
        return dspy.Prediction(reasoning="", plan="", next_action=str(self.k))

    class PrefersThree:
        def score(self, example, prediction):
            return {"1": 0.2, "3": 0.9, "5": 0.5}[prediction.next_action]

    monkeypatch.setattr(retrieval.RetrievalAgent, "__call__", answer)
    train = [dspy.Example(**d).with_inputs("task", "context", "history", "tools", "steps_so_far")
             for d in demos[:20]]
    chosen = retrieval.select_on_val(Agent(), train, train[:4], PrefersThree(), [1, 3, 5], [["task"]])
    assert chosen.k == 3
