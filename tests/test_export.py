"""lib/export/files.py, lib/opencode/render.py and the export stage: every OpenCode file format, safe worked examples, model naming."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dspy
import json5
import pytest
import yaml

from lib.export import files as E
from lib.opencode import agent as A
from lib.opencode import render as R
from conftest import need
from helpers import planted_in, shipped_params, sample_step_rows
from lib.program.agent import Agent, to_example
from lib.core.errors import UserError
from lib.data.redact import Redactor

ROOT = Path(__file__).resolve().parent.parent
# Absolute paths of the machines that build, train and test this project.
MACHINE_PATHS = re.compile(r"/work/|/home/dev/|/tmp/|/home/|/Users/|/root/")


def student(provider: str = "local", model: str = "smollm2-135m", **over) -> dict:
    return {"provider": provider, "model": model, "api_base": None, "api_key_env": None, "temperature": 0.0,
            "max_tokens": 192, "timeout": 120, "num_retries": 2, **over}


def settings(formats=E.FORMATS, max_examples: int = 3, **over) -> A.ExportSettings:
    values = dict(agent="build", mode="primary", formats=tuple(formats), max_examples=max_examples,
                  student=student(), opencode_model=None)
    values.update(over)
    return A.ExportSettings(**values)


SCORES = E.Scores(baseline=0.125, optimized=0.5, n=40, optimizer="labeled", demos=16, ci95=(0.1, 0.6),
                  baseline_components={"tool_validity": 0.2, "first_action": 0.1},
                  optimized_components={"tool_validity": 0.7, "first_action": 0.4})


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """Example rows built from the sample session logs in git, redacted as the parse stage does."""
    out = sample_step_rows()
    assert len(out) > 50
    # The planted secrets reach these rows (as markers), so the files checked below were made from them.
    assert planted_in(json.dumps(sample_step_rows(redact=False))) and "[REDACTED:" in json.dumps(out)
    return out


@pytest.fixture(scope="module")
def program_state(rows, tmp_path_factory) -> dict:
    """program.save() of a LabeledFewShot program over those rows (no model needed)."""
    program = dspy.LabeledFewShot(k=16).compile(Agent(), trainset=[to_example(r) for r in rows])
    path = tmp_path_factory.mktemp("program") / "program.json"
    program.save(str(path))
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def program(program_state) -> A.Program:
    return A.load_program(program_state)


def front_matter(text: str) -> tuple[dict, str]:
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, "markdown agent must start with a YAML front matter block"
    return yaml.safe_load(match.group(1)), match.group(2)


def assert_safe(name: str, text: str) -> None:
    assert not planted_in(text), f"{name} holds the sample's planted secrets: {sorted(planted_in(text))}"
    probe = Redactor()
    probe.text(text)
    assert probe.total == 0, f"{name} holds a secret pattern: {dict(probe.counts)}"
    assert "[REDACTED" not in text, f"{name} holds a redacted secret"
    assert not MACHINE_PATHS.search(text), f"{name} holds a machine path: {MACHINE_PATHS.search(text).group(0)}"
    assert str(ROOT) not in text


# ----------------------------------------------------------------------------------- all formats

def test_every_format_is_written_and_parses(program):
    files = E.render_files(settings(short_tools=True), program, SCORES, "2025-11-19")
    assert set(files) == {"opencode-build-smollm2-135m.jsonc", "OPTIMIZED_BUILD.md", "smollm2-135m-optimized.txt",
                          "agents/build-smollm2-135m.md", "USAGE_GUIDE_build.md", "plugin/nearest-demos.js",
                          "plugin/nearest-demos.json", "plugin/short-tools.js", "plugin/short-tools.json"}
    prompt = files["smollm2-135m-optimized.txt"]

    jsonc = files["opencode-build-smollm2-135m.jsonc"]
    assert jsonc.startswith("//")
    config = json5.loads(jsonc)
    assert config["$schema"] == "https://opencode.ai/config.json"
    agent = config["agent"]["build-smollm2-135m"]
    assert set(agent) == {"description", "mode", "model", "temperature", "prompt"}
    assert agent["mode"] == "primary" and agent["model"] == "local/smollm2-135m"
    assert isinstance(agent["temperature"], float) and agent["temperature"] == 0.0
    assert agent["prompt"] == prompt
    header = jsonc.split("{", 1)[0]
    assert "2025-11-19" in header and "0.125" in header and "0.500" in header and "labeled" in header

    meta, body = front_matter(files["agents/build-smollm2-135m.md"])
    assert meta == {"description": agent["description"], "mode": "primary", "model": "local/smollm2-135m",
                    "temperature": 0.0}
    assert body == prompt

    assert prompt in files["OPTIMIZED_BUILD.md"]
    for name, text in files.items():
        assert_safe(name, text)


def test_prompt_carries_instructions_tool_guidance_and_examples(program):
    prompt = R.agent_prompt(program.instructions, program.demos, 3)
    assert program.instructions in prompt
    assert prompt.startswith(program.instructions)
    for tool in ("read", "edit", "bash", "grep"):
        assert f"- {tool}: " in prompt  # an agent prompt replaces OpenCode's own, so it must teach the tools
    assert "camelCase" in prompt or "filePath" in prompt
    assert len(re.findall(r"^Task: ", prompt, re.M)) == 3
    assert "- list:" not in prompt, "OpenCode 1.18 offers no list tool"
    calls = [json.loads(line[len("Call: "):]) for line in prompt.splitlines() if line.startswith("Call: ")]
    assert len({c["tool"] for c in calls}) == 3, "examples should show distinct tools"
    # nothing internal leaks into the prompt
    for marker in ('"gold"', "augmented", "ses_", "working directory:", "steps_so_far", "scores"):
        assert marker not in prompt


def test_optimized_instructions_are_exported(program_state):
    state = json.loads(json.dumps(program_state))
    state["predict"]["signature"]["instructions"] = "Prefer grep before read. Keep each call small."
    files = E.render_files(settings(), A.load_program(state), SCORES, None)
    for name in ("smollm2-135m-optimized.txt", "OPTIMIZED_BUILD.md", "agents/build-smollm2-135m.md"):
        assert "Prefer grep before read. Keep each call small." in files[name]
    assert "Prefer grep before read." in json5.loads(files["opencode-build-smollm2-135m.jsonc"])["agent"][
        "build-smollm2-135m"]["prompt"]
    assert "unknown date" in files["opencode-build-smollm2-135m.jsonc"].split("{", 1)[0]


def test_no_examples_when_max_examples_is_zero(program):
    prompt = R.agent_prompt(program.instructions, program.demos, 0)
    assert "## Examples" not in prompt and program.instructions in prompt


@pytest.mark.parametrize("formats", [("template",), ("agent_config", "usage_guide"),
                                     ("markdown_agent", "instructions")])
def test_formats_select_the_files(program, formats):
    files = E.render_files(settings(formats), program, SCORES, "2025-11-19")
    names = E.file_names("build", "smollm2-135m")
    assert set(files) == {names[f] for f in formats}
    # the short-descriptions plugin comes with an agent that sends them (export.tool_descriptions), in any format set
    short = E.render_files(settings(formats, short_tools=True), program, SCORES, "2025-11-19")
    assert set(short) - set(files) == {"plugin/short-tools.js", "plugin/short-tools.json"}
    assert ("short-tools" in short.get(names["usage_guide"], "")) == ("usage_guide" in formats)
    if "usage_guide" in formats:
        guide = files[names["usage_guide"]]
        assert names["agent_config"] in guide
        assert names["markdown_agent"] not in guide and names["template"] not in guide


def test_usage_guide_commands(program):
    guide = E.render_files(settings(short_tools=True), program, SCORES, "2025-11-19")["USAGE_GUIDE_build.md"]
    for command in ("opencode debug agent build-smollm2-135m", "opencode run --agent build-smollm2-135m",
                    "OPENCODE_CONFIG=", ".opencode/agents/", "dvc repro", "python -m llama_cpp.server",
                    "\"instructions\": [\"OPTIMIZED_BUILD.md\"]", "{file:./prompts/smollm2-135m-optimized.txt}",
                    "cp outputs/prompts/plugin/short-tools.* \"$PROJECT/.opencode/plugin/\"", "OPENCODE_SHORT_TOOLS=off"):
        assert command in guide
    # it must only name CLI commands and options that exist
    assert "--config" not in guide and "--output-dir" not in guide
    for match in re.findall(r"python -m lib\.cli (\S+)", guide):
        assert match in ("validate", "train", "clear-cache")


# -------------------------------------------------------------------------------- model naming

@pytest.mark.parametrize("model_id, slug", [
    ("qwen2.5-coder:1.5b", "qwen2.5-coder-1.5b"),
    ("meta-llama/Meta-Llama-3.1-70B-Instruct", "meta-llama-meta-llama-3.1-70b-instruct"),
    ("hf.co/org/Model:Q4_K_M", "hf.co-org-model-q4_k_m"),
    ("::", "model"),
])
def test_model_slug(model_id, slug):
    assert A.model_slug(model_id) == slug
    assert not set(slug) & set(":/\\ ")


@pytest.mark.parametrize("cfg, override, model, provider_id", [
    (student("ollama", "qwen2.5-coder:1.5b"), None, "ollama/qwen2.5-coder:1.5b", "ollama"),
    (student("openai-compatible", "Qwen/Qwen2.5-Coder-7B", api_base="http://gpu:8000/v1/"), None,
     "local/Qwen/Qwen2.5-Coder-7B", "local"),
    (student("openai", "gpt-4o-mini", api_key_env="OPENAI_API_KEY"), None, "openai/gpt-4o-mini", None),
    (student("anthropic", "claude-3-5-haiku-latest", api_key_env="K"), None, "anthropic/claude-3-5-haiku-latest", None),
    (student("local", "smollm2-135m"), None, "local/smollm2-135m", "local"),
    (student("ollama", "qwen2.5-coder:1.5b"), "lmstudio/qwen2.5-coder-1.5b", "lmstudio/qwen2.5-coder-1.5b", None),
])
def test_opencode_model_per_provider(cfg, override, model, provider_id):
    target = A.opencode_target(cfg, override)
    assert target.model == model
    if provider_id is None:
        assert target.provider_block is None
    else:
        block = target.provider_block[provider_id]
        assert block["npm"] == "@ai-sdk/openai-compatible"
        assert model.split("/", 1)[1] in block["models"]
        assert block["options"]["baseURL"].endswith("/v1")


def test_ollama_files_are_named_without_colons(program):
    files = E.render_files(settings(student=student("ollama", "qwen2.5-coder:1.5b"), short_tools=True), program,
                           SCORES, None)
    assert set(files) == {"opencode-build-qwen2.5-coder-1.5b.jsonc", "OPTIMIZED_BUILD.md",
                          "qwen2.5-coder-1.5b-optimized.txt", "agents/build-qwen2.5-coder-1.5b.md",
                          "USAGE_GUIDE_build.md", "plugin/nearest-demos.js", "plugin/nearest-demos.json",
                          "plugin/short-tools.js", "plugin/short-tools.json"}
    config = json5.loads(files["opencode-build-qwen2.5-coder-1.5b.jsonc"])
    assert config["agent"]["build-qwen2.5-coder-1.5b"]["model"] == "ollama/qwen2.5-coder:1.5b"
    assert "ollama pull qwen2.5-coder:1.5b" in files["USAGE_GUIDE_build.md"]


@pytest.mark.slow
def test_embedded_coder_guide_serves_the_model_the_agent_names(tmp_path):
    """The usage guide's command for an embedded Qwen student, run as written, serves the model name
    the exported agent asks for (llama.cpp's own server, with the model's template and tool parser)."""
    import time
    import urllib.request

    from lib.models import catalog, server

    try:
        catalog.model_path("qwen2.5-coder-0.5b")
    except UserError as exc:
        need(False, f"cannot assemble qwen2.5-coder-0.5b: {exc}")  # in CI: a failure, never a skip
    target = A.opencode_target(student("local", "qwen2.5-coder-0.5b"), None)
    assert target.model == "local/qwen2.5-coder-0.5b"
    command = re.search(r"```sh\n(python -m lib\.models\.server serve .+)\n```", target.setup).group(1)
    port = server.free_port()
    command = command.replace("python -m", f"{sys.executable} -m").replace(f"--port {A.LOCAL_SERVER_PORT}",
                                                                        f"--port {port}")
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=Path(__file__).resolve().parents[1],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, ids = time.monotonic() + 240, []
        while not ids and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as answer:
                    ids = [m["id"] for m in json.loads(answer.read())["data"]]
            except OSError:
                time.sleep(1)
        assert ids == ["qwen2.5-coder-0.5b"], (tmp_path / "server.log").read_text(errors="replace")[-2000:]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_api_key_is_referenced_never_written():
    target = A.opencode_target(student("openai-compatible", "m", api_base="http://h:1/v1", api_key_env="VLLM_KEY"),
                               None)
    assert target.provider_block["local"]["options"]["apiKey"] == "{env:VLLM_KEY}"


# ----------------------------------------------------------------------------- worked examples

def demo(task: str, action: dict, plan: list[str], workdir: str = "/home/dev/projects/app", steps: str = "") -> dict:
    return {"task": task, "context": f"working directory: {workdir}\nfile count: 10", "history": "",
            "tools": "read, edit, bash, grep, glob", "steps_so_far": steps,
            "next_action": json.dumps(action), "plan": json.dumps(plan),
            "gold": {"next_action": action, "plan": plan}, "id": "ses_x/t0/s0"}


def test_paths_become_relative_and_unsafe_demos_are_dropped():
    wd = "/home/dev/projects/app"
    demos = [
        demo("Fix the parser", {"tool": "read", "args": {"filePath": f"{wd}/src/parse.py"}}, ["read", "edit"]),
        demo("Show the config", {"tool": "read", "args": {"filePath": "/etc/app/config.yaml"}}, ["read"]),
        demo("Use key [REDACTED:openai_key]", {"tool": "bash", "args": {"command": "ls"}}, ["bash"]),
        demo("Deploy", {"tool": "bash", "args": {"command": "TOKEN=ghp_" + "a" * 36 + " ./deploy.sh",
                                                  "description": "Deploy"}}, ["bash"]),
        demo("Run it", {"tool": "bash", "args": {"command": f"cd {wd} && make", "description": "Build"}}, ["bash"]),
        demo("Read notes", {"tool": "read", "args": {"filePath": "~/notes.txt"}}, ["read"]),
        demo("Load env", {"tool": "read", "args": {"filePath": "{env:HOME}/x"}}, ["read"]),
        demo("Big edit", {"tool": "edit", "args": {"filePath": "a.py", "oldString": "x" * 199 + "…",
                                                    "newString": "y"}}, ["edit"]),
    ]
    examples = R.select_examples(demos, 10)
    shown = [(ex.task, ex.action) for ex in examples]
    assert ("Fix the parser", {"tool": "read", "args": {"filePath": "src/parse.py"}}) in shown
    assert ("Run it", {"tool": "bash", "args": {"command": "cd . && make", "description": "Build"}}) in shown
    assert len(examples) == 2


def test_selection_prefers_first_steps_distinct_tools_and_short_tasks():
    demos = [
        demo("A long task " + "word " * 40, {"tool": "grep", "args": {"pattern": "x"}}, ["grep"]),
        demo("Later step", {"tool": "edit", "args": {"filePath": "a.py", "oldString": "a", "newString": "b"}},
             ["edit"], steps="1. read {\"filePath\": \"a.py\"} -> ok: text"),
        demo("Read a", {"tool": "read", "args": {"filePath": "a.py"}}, ["read", "edit"]),
        demo("Read b", {"tool": "read", "args": {"filePath": "b.py"}}, ["read"]),
        demo("Test", {"tool": "bash", "args": {"command": "pytest -q", "description": "Run tests"}}, ["bash"]),
    ]
    picked = R.select_examples(demos, 3)
    assert [ex.task for ex in picked] == ["Read a", "Test", "A long task " + "word " * 39 + "word"]
    later = R.select_examples(demos, 5)
    assert later[-1].task in ("Read b", "Later step")
    assert next(ex for ex in later if ex.task == "Later step").done_before == ["read"]
    assert len(R.select_examples(demos, 1)) == 1


def test_program_errors_name_the_file():
    with pytest.raises(UserError, match="outputs/program.json"):
        A.load_program({"metadata": {}})
    with pytest.raises(UserError, match="metrics/optimized.json"):
        E.load_scores({"score": 0.1}, {"score": 57})


def test_newest_session_date_and_comparison():
    rows = [{"time_created": 1763566723778, "turns": [{"time_start": 1763600000000}]},
            {"time_created": None, "turns": []}]
    assert E.newest_session_date(rows) == "2025-11-20"
    assert E.newest_session_date([{"turns": []}]) is None
    table = E.comparison_rows(SCORES)
    assert table[:2] == [{"metric": "score", "run": "baseline", "value": 0.125},
                         {"metric": "score", "run": "optimized", "value": 0.5}]
    assert [r["metric"] for r in table] == ["score", "score", "tool_validity", "tool_validity",
                                            "first_action", "first_action"]


# ----------------------------------------------------------------------------------- the stage

def test_stage_writes_outputs_deterministically(program_state, tmp_path):
    """`python -m stages.export` in a scratch working directory, twice: same bytes, stale files removed."""
    (tmp_path / "outputs" / "prompts").mkdir(parents=True)
    (tmp_path / "outputs" / "prompts" / "stale.txt").write_text("old")
    (tmp_path / "outputs" / "program.json").write_text(json.dumps(program_state))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "baseline.json").write_text(json.dumps({"score": 0.1, "components": {}, "n": 4}))
    (tmp_path / "metrics" / "optimized.json").write_text(json.dumps(
        {"score": 0.3, "components": {"tool_validity": 0.5}, "n": 4, "ci95": [0.0, 0.4], "optimizer": "labeled",
         "demos": 16, "improvement": {"absolute": 0.2, "relative": 2.0}}))
    (tmp_path / "data" / "parsed").mkdir(parents=True)
    (tmp_path / "data" / "parsed" / "sessions.jsonl").write_text(
        json.dumps({"id": "s", "time_created": 1763566723778, "turns": []}) + "\n")
    params = shipped_params()
    shipped = A.agent_prompt(A.export_settings(params, ["webfetch"]), A.load_program(program_state))
    write_replay(tmp_path, shipped, ["webfetch"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run() -> dict[str, bytes]:
        done = subprocess.run([sys.executable, "-m", "stages.export"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        out = tmp_path / "outputs" / "prompts"
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    first = run()
    assert "stale.txt" not in first
    assert len(first) == 5 and all(":" not in name for name in first)
    assert b"2025-11-19" in first["opencode-build-smollm2-135m.jsonc"]
    assert run() == first
    comparison = json.loads((tmp_path / "metrics" / "comparison.json").read_text())
    assert comparison[:2] == [{"metric": "score", "run": "baseline", "value": 0.1},
                              {"metric": "score", "run": "optimized", "value": 0.3}]
    for name, data in first.items():
        assert_safe(name, data.decode("utf-8"))
    assert not any(p.name.startswith(".prompts.") for p in (tmp_path / "outputs").iterdir())
    # The agent ships the config the replay chose, with the prompt it scored, and quotes its result.
    jsonc = first["opencode-build-smollm2-135m.jsonc"].decode("utf-8")
    agent = json5.loads(jsonc)["agent"]["build-smollm2-135m"]
    assert agent["prompt"] == shipped and agent["tools"] == {"webfetch": False}
    assert agent["permission"]["bash"]["rm -rf *"] == "deny" and agent["permission"]["bash"]["*"] == "allow"
    assert "as OpenCode sends it" in jsonc.split("{", 1)[0] and "0.250" in jsonc.split("{", 1)[0]

    # A replay of another prompt (program or params changed since) is refused, not quoted.
    write_replay(tmp_path, shipped + "changed", ["webfetch"])
    done = subprocess.run([sys.executable, "-m", "stages.export"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "dvc repro replay export" in done.stderr


def write_replay(project: Path, prompt: str, disabled: list[str]) -> None:
    """A metrics/replay.json as the replay stage writes it, for the prompt it scored."""
    import hashlib

    side = {"score": 0.25, "components": {}, "n": 4, "right_tool_rate": 0.5, "right_target_rate": 0.25,
            "destructive": 0}
    report = {"agent": {"disable_tools": disabled, "permission": "deny_destructive",
                        "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(), "val_scores": {}},
              "students": {"smollm2-135m": {"opencode_default": {**side, "score": 0.1}, "exported": side,
                                            "difference": {"absolute": 0.15, "ci95": [0.0, 0.3]}}}}
    (project / "metrics" / "replay.json").write_text(json.dumps(report))


def test_stage_reports_a_missing_program(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stages.export"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "outputs/program.json not found" in done.stderr and "dvc repro" in done.stderr


def test_the_guide_quotes_the_replay_with_its_request_cost_and_the_calls_in_the_models_own_tags(program):
    def side(score, tokens, tagged):
        return {"score": score, "right_tool_rate": 0.25, "right_target_rate": 0.0, "destructive": 0, "n": 4,
                "prompt_tokens_mean": tokens, "strict_call": tagged}

    replay = {"opencode_default": side(0.25, 7435.8, 0), "exported": side(0.5, 3861.8, 2),
              "difference": {"absolute": 0.25, "ci95": [0.0, 0.5]}}
    guide = E.render_files(settings(("usage_guide",)), program, dataclasses.replace(SCORES, replay=replay),
                           None)["USAGE_GUIDE_build.md"]
    assert ("OpenCode's default prompt 0.250 (right tool 25%, right target 0%, 0 destructive, 0 calls in the "
            "model's own tags, 7,436 prompt tokens a request), this agent 0.500 (right tool 25%, right target 0%, "
            "0 destructive, 2 calls in the model's own tags, 3,862 prompt tokens a request)") in guide
    for s in ("opencode_default", "exported"):  # a server or a grammar made the calls: their syntax is unknown
        replay[s]["strict_call"] = None
    guide = E.render_files(settings(("usage_guide",)), program, dataclasses.replace(SCORES, replay=replay),
                           None)["USAGE_GUIDE_build.md"]
    assert "own tags" not in guide and "3,862 prompt tokens a request" in guide


def test_export_ships_what_replay_scored_or_says_to_rerun_it(program):
    params = shipped_params()
    prompt = A.agent_prompt(A.export_settings(params, ["webfetch"]), program)
    scored = {"disable_tools": ["webfetch"], "tool_descriptions": "short",
              "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest()}
    settings = A.scored_settings(params, program, scored, "dvc repro replay export")  # auto: replay's choice
    assert settings.disabled_tools == ("webfetch",) and settings.short_tools
    assert set(A.plugin_files(settings, program)) == {"plugin/short-tools.js", "plugin/short-tools.json"}
    params["export"]["tool_descriptions"] = "full"  # changed since replay ran
    with pytest.raises(UserError, match="scored the agent with short tool descriptions.*dvc repro replay export"):
        A.scored_settings(params, program, scored, "dvc repro replay export")
    params["export"]["tool_descriptions"] = "auto"
    with pytest.raises(UserError, match="scored another prompt.*dvc repro replay export"):
        A.scored_settings(params, program, {**scored, "disable_tools": []}, "dvc repro replay export")
