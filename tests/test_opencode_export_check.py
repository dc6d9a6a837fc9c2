"""The exported files, loaded by the real OpenCode CLI: `opencode debug agent <name>` must resolve our agent."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lib.export import files as E
from lib.opencode import agent as A
from lib.opencode import render as R

INSTRUCTIONS = ("You are OpenCode, a coding agent. Choose the one tool call that best moves the task forward. "
                "Read before you edit.")
WORKDIR = "/home/dev/projects/app"


def _demo(task: str, tool: str, args: dict, plan: list[str]) -> dict:
    action = {"tool": tool, "args": args}
    return {"task": task, "context": f"working directory: {WORKDIR}", "history": "", "steps_so_far": "",
            "tools": "read, edit, write, bash, grep, glob, list", "next_action": json.dumps(action),
            "plan": json.dumps(plan)}


PROGRAM = A.Program(INSTRUCTIONS, [
    _demo("Fix the failing test in tests/test_api.py", "bash",
          {"command": "pytest -q tests/test_api.py", "description": "Run the failing test"}, ["bash", "read", "edit"]),
    _demo("Rename parse_row to parse_record", "grep", {"pattern": "parse_row", "include": "*.py"}, ["grep", "edit"]),
    _demo("Explain src/app.py", "read", {"filePath": f"{WORKDIR}/src/app.py"}, ["read"]),
])
SCORES = E.Scores(baseline=0.1, optimized=0.4, n=20, optimizer="labeled", demos=3)


def settings(provider: str = "ollama", model: str = "qwen2.5-coder:1.5b", temperature: float = 0.2,
             mode: str = "primary", **student) -> A.ExportSettings:
    cfg = {"provider": provider, "model": model, "api_base": None, "api_key_env": None, "temperature": temperature,
           "max_tokens": 256, "timeout": 60, "num_retries": 1, **student}
    return A.ExportSettings(agent="build", mode=mode, formats=E.FORMATS, max_examples=3, student=cfg,
                            opencode_model=None, short_tools=True)


class OpenCode:
    """Runs the OpenCode CLI in a project folder with its own HOME, so no user config is read."""

    def __init__(self, binary: Path, tmp: Path) -> None:
        self.binary, self.home = binary, tmp / "home"
        self.home.mkdir()

    def run(self, project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE")}
        environ.update({"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
                        "XDG_DATA_HOME": str(self.home / ".local" / "share"), **(env or {})})
        return subprocess.run([str(self.binary), *args], cwd=project, env=environ, capture_output=True,
                              text=True, timeout=180)

    def agent(self, project: Path, name: str, env: dict | None = None) -> tuple[dict | None, str]:
        """The agent as OpenCode resolved it (None when it did not), and everything OpenCode printed.

        The config check reads the text: an invalid config is reported as 'Configuration is invalid',
        and the exit status alone is not reliable across versions.
        """
        done = self.run(project, "debug", "agent", name, env=env)
        text = done.stdout + done.stderr
        if "Configuration is invalid" in text or done.returncode != 0:
            return None, text
        try:
            return json.loads(done.stdout), text
        except ValueError:
            return None, text


@pytest.fixture
def opencode(opencode_bin: Path, tmp_path: Path) -> OpenCode:
    return OpenCode(opencode_bin, tmp_path)


def project(tmp_path: Path, name: str = "project") -> Path:
    path = tmp_path / name
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def assert_our_agent(agent: dict | None, text: str, name: str, prompt: str, provider: str, model: str,
                     temperature: float) -> None:
    assert agent is not None, text[-3000:]
    assert agent["name"] == name
    assert agent["prompt"].strip() == prompt.strip()
    assert agent["model"] == {"providerID": provider, "modelID": model}
    assert agent["temperature"] == temperature
    assert agent["mode"] == "primary"


def test_agent_config_resolves_in_opencode(opencode, tmp_path):
    files = E.render_files(settings(), PROGRAM, SCORES, "2025-11-19")
    proj = project(tmp_path)
    (proj / "opencode.jsonc").write_text(files["opencode-build-qwen2.5-coder-1.5b.jsonc"], encoding="utf-8")
    agent, text = opencode.agent(proj, "build-qwen2.5-coder-1.5b")
    assert_our_agent(agent, text, "build-qwen2.5-coder-1.5b", files["qwen2.5-coder-1.5b-optimized.txt"],
                     "ollama", "qwen2.5-coder:1.5b", 0.2)
    assert INSTRUCTIONS in agent["prompt"] and "src/app.py" in agent["prompt"]
    assert WORKDIR not in agent["prompt"]


def test_markdown_agent_resolves_in_opencode(opencode, tmp_path):
    files = E.render_files(settings(), PROGRAM, SCORES, "2025-11-19")
    proj = project(tmp_path)
    agents = proj / ".opencode" / "agents"
    agents.mkdir(parents=True)
    (agents / "build-qwen2.5-coder-1.5b.md").write_text(files["agents/build-qwen2.5-coder-1.5b.md"], encoding="utf-8")
    agent, text = opencode.agent(proj, "build-qwen2.5-coder-1.5b")
    assert_our_agent(agent, text, "build-qwen2.5-coder-1.5b", files["qwen2.5-coder-1.5b-optimized.txt"],
                     "ollama", "qwen2.5-coder:1.5b", 0.2)


@pytest.mark.parametrize("provider, model, extra, provider_id", [
    ("local", "smollm2-135m", {}, "local"),
    ("openai-compatible", "Qwen2.5-Coder-7B", {"api_base": "http://127.0.0.1:8000/v1", "api_key_env": "VLLM_KEY"},
     "local"),
])
def test_guide_commands_work_with_the_provider_block(opencode, tmp_path, provider, model, extra, provider_id):
    """As the usage guide says: the provider block in opencode.json, the agent through OPENCODE_CONFIG."""
    s = settings(provider, model, temperature=0.0, **extra)
    files = E.render_files(s, PROGRAM, SCORES, None)
    slug = A.model_slug(model)
    target = A.opencode_target(s.student, None)
    proj = project(tmp_path)
    (proj / "opencode.json").write_text(json.dumps({"$schema": E.SCHEMA_URL, "provider": target.provider_block}))
    exported = tmp_path / "prompts"
    exported.mkdir()
    config = exported / f"opencode-build-{slug}.jsonc"
    config.write_text(files[config.name], encoding="utf-8")
    agent, text = opencode.agent(proj, f"build-{slug}", env={"OPENCODE_CONFIG": str(config)})
    assert_our_agent(agent, text, f"build-{slug}", files[f"{slug}-optimized.txt"], provider_id, model, 0.0)
    shown = opencode.run(proj, "debug", "config", env={"OPENCODE_CONFIG": str(config)})
    assert "Configuration is invalid" not in shown.stdout + shown.stderr
    assert "@ai-sdk/openai-compatible" in shown.stdout


def test_instructions_file_is_accepted(opencode, tmp_path):
    files = E.render_files(settings(), PROGRAM, SCORES, None)
    proj = project(tmp_path)
    (proj / "OPTIMIZED_BUILD.md").write_text(files["OPTIMIZED_BUILD.md"], encoding="utf-8")
    (proj / "opencode.json").write_text(json.dumps({"$schema": E.SCHEMA_URL, "instructions": ["OPTIMIZED_BUILD.md"]}))
    shown = opencode.run(proj, "debug", "config")
    assert "Configuration is invalid" not in shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["instructions"] == ["OPTIMIZED_BUILD.md"]


def test_broken_config_is_reported_invalid(opencode, tmp_path):
    files = E.render_files(settings(), PROGRAM, SCORES, None)
    broken = files["opencode-build-qwen2.5-coder-1.5b.jsonc"].replace('"temperature": 0.2', '"temperature": "hot"')
    assert broken != files["opencode-build-qwen2.5-coder-1.5b.jsonc"]
    proj = project(tmp_path)
    (proj / "opencode.jsonc").write_text(broken, encoding="utf-8")
    agent, text = opencode.agent(proj, "build-qwen2.5-coder-1.5b")
    assert agent is None
    assert "Configuration is invalid" in text
    assert "temperature" in text and "hot" in text
    # `debug config` reports it the same way, whatever its exit status
    shown = opencode.run(proj, "debug", "config")
    assert "Configuration is invalid" in shown.stdout + shown.stderr


def _shipped_agent_files(permission: str = "deny_destructive") -> dict[str, str]:
    """The export's files for the shipped export settings, with two tools switched off as replay may choose."""
    from helpers import shipped_params

    params = shipped_params()
    params["models"]["student"].update(provider="ollama", model="qwen2.5-coder:1.5b", temperature=0.2)
    params["export"]["permission"] = permission
    return E.render_files(A.export_settings(params, ["skill", "webfetch"]), PROGRAM, SCORES, "2025-11-19")


def test_exported_tools_and_permission_blocks_resolve_in_opencode(opencode, tmp_path):
    """The `tools` and `permission` blocks export writes, as OpenCode resolves them: the tools replay switched
    off are off and denied, and every bash rule of the export is in the agent's ruleset in our order, after
    OpenCode's own bash rules (its last matching rule decides)."""
    from lib.opencode import safety

    files = _shipped_agent_files()
    proj = project(tmp_path)
    (proj / "opencode.jsonc").write_text(files["opencode-build-qwen2.5-coder-1.5b.jsonc"], encoding="utf-8")
    agent, text = opencode.agent(proj, "build-qwen2.5-coder-1.5b")
    assert agent is not None, text[-3000:]
    assert agent["tools"]["skill"] is False and agent["tools"]["webfetch"] is False
    assert all(agent["tools"][name] for name in ("bash", "read", "edit", "write", "grep", "glob"))
    rules = [(r["permission"], r["pattern"], r["action"]) for r in agent["permission"]]
    assert ("skill", "*", "deny") in rules and ("webfetch", "*", "deny") in rules
    bash = [(pattern, action) for permission, pattern, action in rules if permission == "bash"]
    ours = list(safety.DENY_DESTRUCTIVE.items())
    assert bash[-len(ours):] == ours, bash


def test_a_permission_block_opencode_rejects_is_reported(opencode, tmp_path):
    """The oracle above can fail: the same export with a permission action OpenCode does not know is refused."""
    files = _shipped_agent_files()
    text = files["opencode-build-qwen2.5-coder-1.5b.jsonc"]
    broken = text.replace('"rm -rf *": "deny"', '"rm -rf *": "refuse"')
    assert broken != text
    proj = project(tmp_path)
    (proj / "opencode.jsonc").write_text(broken, encoding="utf-8")
    agent, shown = opencode.agent(proj, "build-qwen2.5-coder-1.5b")
    assert agent is None and "Configuration is invalid" in shown and "refuse" in shown, shown[-3000:]
