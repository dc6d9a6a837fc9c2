"""The pipeline under real DVC, in a throw-away copy of the repository, with tiny settings and the embedded model.

One tiny run is shared by the tests below: metrics and plots of that run, a DVC remote round trip into a
fresh clone (which must not call a model), and an experiment through `python -m lib.cli train`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import need

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(3000)  # a run of the embedded model on 2 shared cores

# The quick start's `dvc repro` with the shipped params, made small enough to run in minutes on 2 cores:
# only sizes change (one test session, short fields, three demos, one replayed test step a prompt,
# two val steps for each agent config `auto` tries); every choice is the shipped one.
TINY = {
    "data": {"train_split": 0.94, "val_split": 0.03, "test_split": 0.03, "max_field_chars": 300,
             "max_history_messages": 2},
    "optimization": {"max_train_examples": 20, "max_val_examples": 2, "labeled": {"k": 3}},
    "models": {"student": {"max_tokens": 64}, "teacher": {"max_tokens": 64}},
    "replay": {"max_steps": 1},
}
SIZES = {"data.train_split", "data.val_split", "data.test_split", "data.max_field_chars",
         "data.max_history_messages", "optimization.max_train_examples", "optimization.max_val_examples",
         "optimization.labeled.k", "models.student.max_tokens", "models.teacher.max_tokens", "replay.max_steps"}


# An experiment about the optimizer re-runs replay for its new prompt; the agent config chosen on val is
# the shared run's to check, so experiments replay with the tool set and descriptions fixed.
TOOLS_FIXED = ("-S", "export.disable_tools=none", "-S", "export.tool_descriptions=full")


def _keys(tree: dict, prefix: str = "") -> set[str]:
    return {k for key, value in tree.items()
            for k in (_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"})}


def test_the_tiny_run_changes_only_sizes():
    assert _keys(TINY) == SIZES


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _env() -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
    # `python -m stages.X` and `dvc` must be this virtualenv's.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def sh(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(cmd), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=2400)
    if check:
        assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n" \
                                     f"{done.stderr[-4000:]}"
    return done


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(cwd, sys.executable, "-m", "dvc", *args, check=check)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, smollm_path) -> Path:
    """A copy of the working tree (tracked and new, non-ignored files) as a fresh git repo, run once."""
    need(shutil.which("git") is not None, "git is not installed")
    need((ROOT / ".git").exists(), "not a git checkout: cannot list the project's files")
    def ls(*flags: str) -> set[str]:
        out = subprocess.run(["git", "ls-files", "-z", *flags], cwd=ROOT, capture_output=True, check=True).stdout
        return set(filter(None, out.decode().split("\0")))

    # New files not yet committed are part of the tree under test, but stage outputs (committed
    # metrics, or left in the working tree by a local run) are not: the copy produces its own.
    produced = _stage_outputs(yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8")))
    files = {rel for rel in ls("--cached") | ls("--others", "--exclude-standard")
             if not any(rel == out or rel.startswith(out + "/") for out in produced)}
    repo = tmp_path_factory.mktemp("dvc") / "a"
    for rel in sorted(files):
        src = ROOT / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    _merge(params, TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny settings")
    run = dvc(repo, "repro")
    assert "Running stage 'export'" in run.stdout
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny run")
    return repo


def _restore(repo: Path) -> None:
    sh(repo, "git", "checkout", "HEAD", "--", ".")
    dvc(repo, "checkout", "--force")


@pytest.fixture
def workspace(repo: Path):
    """The shared run as committed, for a test that changes it (a re-run, an experiment): restored before
    and after, however the test ends, so no test depends on another's order or success."""
    _restore(repo)
    yield repo
    _restore(repo)


def _stage_outputs(pipeline: dict) -> set[str]:
    """Every path a stage writes (outs, metrics, plots) as declared in dvc.yaml."""
    paths = set()
    for stage in (pipeline.get("stages") or {}).values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                paths.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    paths.update(pipeline.get("metrics") or [])  # usage files the model stages write
    return paths


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_run_writes_metrics_and_prompts(repo):
    base, opt = read_json(repo / "metrics/baseline.json"), read_json(repo / "metrics/optimized.json")
    assert base["n"] == opt["n"] >= 1
    # The learned demos teach the embedded student the answer format: measured 0.000 -> 0.431 on these
    # settings; a pipeline that scores everything 0, or learns nothing, fails here.
    assert opt["score"] >= base["score"] + 0.1, (base["score"], opt["score"])
    assert opt["optimizer"] == "labeled" and opt["demos"] == 3
    prompts = sorted(p.name for p in (repo / "outputs/prompts").rglob("*") if p.is_file())
    assert prompts == sorted(["OPTIMIZED_BUILD.md", "USAGE_GUIDE_build.md", "build-smollm2-135m.md",
                              "opencode-build-smollm2-135m.jsonc", "smollm2-135m-optimized.txt"])
    assert "outputs/prompts" in (repo / "dvc.lock").read_text()
    status = dvc(repo, "status")
    assert "up to date" in status.stdout


def test_the_shipped_tool_choice_is_made_on_val_and_exported(repo):
    """export.disable_tools and export.tool_descriptions: auto as shipped: replay scored both tool sets on val
    with the embedded model, then short descriptions for the set chosen, kept the better (at a tie the
    shorter request), and the exported agent switches off what it chose. SmolLM2's format shows no
    descriptions: the short candidate renders the same prompts, costs no call, ties, and full is kept."""
    import json5

    agent = read_json(repo / "metrics/replay.json")["agent"]
    scores, tokens = agent["val_scores"], agent["val_prompt_tokens"]
    assert tokens["tools the sessions used, full descriptions"] < tokens["all tools, full descriptions"]
    subset = scores["tools the sessions used, full descriptions"] >= scores["all tools, full descriptions"]
    assert bool(agent["disable_tools"]) == subset and agent["tool_descriptions"] == "full", agent
    chosen = "tools the sessions used" if subset else "all tools"
    assert set(scores) == {"all tools, full descriptions", "tools the sessions used, full descriptions",
                           f"{chosen}, short descriptions"}, agent
    assert scores[f"{chosen}, short descriptions"] == scores[f"{chosen}, full descriptions"]
    assert tokens[f"{chosen}, short descriptions"] == tokens[f"{chosen}, full descriptions"]
    usage = read_json(repo / "metrics/replay_usage.json")["lm_usage"]["student"]
    assert usage["calls"] + usage["cache_hits"] == 2 * 2 + 2 * 1  # 2 val steps per tool set, 1 test step x 2
    config = json5.loads((repo / "outputs/prompts/opencode-build-smollm2-135m.jsonc").read_text(encoding="utf-8"))
    (entry,) = config["agent"].values()
    assert entry.get("tools", {}) == {name: False for name in agent["disable_tools"]}
    assert not (repo / "outputs/prompts/plugin/short-tools.js").exists()


def test_metrics_show_and_diff(repo):
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    (workspace,) = shown.values()  # the workspace only (DVC names it "" or "workspace")
    data = workspace["data"]
    assert data["metrics/optimized.json"]["data"]["score"] == read_json(repo / "metrics/optimized.json")["score"]
    assert "score" in data["metrics/baseline.json"]["data"]
    diff = json.loads(dvc(repo, "metrics", "diff", "HEAD~1", "HEAD", "--json").stdout)
    assert diff["metrics/optimized.json"]["score"]["old"] is None
    assert diff["metrics/optimized.json"]["score"]["new"] == read_json(repo / "metrics/optimized.json")["score"]
    assert "score" in diff["metrics/baseline.json"]
    assert "improvement.absolute" in diff["metrics/optimized.json"]


def test_plots_show_both_series(repo, tmp_path):
    plots = json.loads(dvc(repo, "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots.get("errors")
    n = read_json(repo / "metrics/baseline.json")["n"]
    per_example = plots["data"]["Test score per example (0-1)"][0]["content"]["data"]["values"]
    assert sorted({row["filename"] for row in per_example}) == ["baseline_examples.json", "optimized_examples.json"]
    assert len(per_example) == 2 * n
    components = plots["data"]["metrics/comparison.json"][0]["content"]["data"]["values"]
    assert {row["run"] for row in components} == {"baseline", "optimized"}
    assert "score" in {row["metric"] for row in components}

    out = tmp_path / "plots"
    dvc(repo, "plots", "show", "-o", str(out))
    html = (out / "index.html").read_text(encoding="utf-8")
    for text in ("Test score per example (0-1)", "Composite score and components", "baseline_examples.json",
                 "optimized_examples.json", '"run": "baseline"', '"run": "optimized"'):
        assert text in html


def test_rerun_changes_only_the_usage_files(workspace):
    """Re-running the model stages from the model cache moves calls to cache hits; scores, per-example
    files and dvc.lock stay byte-identical, and the usage files that changed are ignored by git."""
    repo = workspace
    for stage in ("baseline", "optimize"):
        dvc(repo, "repro", "-f", "-s", stage)
    assert sh(repo, "git", "status", "--porcelain").stdout.strip() == ""
    for name in ("baseline_usage.json", "optimized_usage.json"):
        usage = read_json(repo / "metrics" / name)["lm_usage"]["total"]
        assert usage["calls"] == 0 and usage["cache_hits"] > 0, usage
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    (workspace,) = shown.values()
    assert workspace["data"]["metrics/optimized_usage.json"]["data"]["lm_calls"] == 0


def test_remote_round_trip_restores_without_calling_a_model(repo, tmp_path):
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "-d", "shared", str(remote))
    sh(repo, "git", "commit", "-qam", "remote")
    dvc(repo, "push", "--run-cache")
    assert any((remote / "files").rglob("*"))

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "outputs/program.json").exists()
    dvc(clone, "pull", "--run-cache")
    for rel in ("outputs/program.json", "outputs/prompts/opencode-build-smollm2-135m.jsonc",
                "data/splits/test.jsonl"):
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel

    run = dvc(clone, "repro")
    for stage in ("baseline", "optimize", "export"):
        assert f"Stage '{stage}' didn't change, skipping" in run.stdout, run.stdout
    assert "Running stage 'baseline'" not in run.stdout and "Running stage 'optimize'" not in run.stdout
    # Any model call would have opened the project's model cache.
    assert not (clone / ".cache" / "dspy").exists()
    assert (clone / "metrics/optimized.json").read_bytes() == (repo / "metrics/optimized.json").read_bytes()


def test_experiment_through_the_cli(workspace, tmp_path):
    """`train` runs `dvc exp run -S ...`; re-scoring with new weights reuses every cached model answer."""
    repo = workspace
    override = tmp_path / "weights.yaml"
    override.write_text(yaml.safe_dump({"optimization": {"metric_weights": {"efficiency": 0}}}))
    done = sh(repo, sys.executable, "-m", "lib.cli", "train", "--experiment-name", "no-efficiency",
              "--params", str(override))
    assert "-S optimization.metric_weights.efficiency=0" in done.stdout
    assert "baseline score" in done.stdout and "optimized score" in done.stdout
    for name in ("baseline_usage.json", "optimized_usage.json"):
        usage = read_json(repo / "metrics" / name)["lm_usage"]["total"]
        assert usage["calls"] == 0 and usage["cache_hits"] > 0, usage

    exps = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    found = [e for rev in exps for e in (rev.get("experiments") or []) for e in e.get("revs", [])
             if e.get("name") == "no-efficiency"]
    assert found, json.dumps(exps)[:2000]
    exp_params = found[0]["data"]["params"]["params.yaml"]["data"]
    assert exp_params["optimization"]["metric_weights"]["efficiency"] == 0
    assert "metrics/optimized.json" in found[0]["data"]["metrics"]

    params = json.loads(dvc(repo, "params", "diff", "--json").stdout)
    change = params["params.yaml"]["optimization.metric_weights.efficiency"]
    assert (change["old"], change["new"]) == (1, 0)
    dvc(repo, "metrics", "diff", "--json")
    out = tmp_path / "plots"
    dvc(repo, "plots", "diff", "HEAD", "-o", str(out))
    html = (out / "index.html").read_text(encoding="utf-8")
    assert '"rev": "HEAD"' in html and '"rev": "workspace"' in html

    # Back to the committed params: DVC restores those results from its run-cache, no model run.
    sh(repo, "git", "checkout", "HEAD", "--", "params.yaml")
    back = dvc(repo, "repro")
    for stage in ("baseline", "optimize", "export"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in back.stdout, back.stdout
    assert "Running stage" not in back.stdout
    assert read_json(repo / "metrics/baseline.json") == json.loads(
        sh(repo, "git", "show", "HEAD:metrics/baseline.json").stdout)


def test_bootstrap_experiment_uses_the_teacher(workspace):
    """`dvc exp run -S` with BootstrapFewShot: only optimize re-runs, the teacher runs on train, and the demos
    the report counts are the program's. (The embedded teacher's answers rarely pass the metric, so these
    may be labeled demos; that a right answer becomes a demo is checked with a capable teacher in
    test_optimizers.)"""
    repo = workspace
    run = dvc(repo, "exp", "run", "-n", "bootstrap", "-S", "optimization.optimizer=bootstrap",
              "-S", "optimization.bootstrap.max_bootstrapped_demos=2",
              "-S", "optimization.bootstrap.max_labeled_demos=2", "-S", "optimization.max_train_examples=2",
              *TOOLS_FIXED)
    assert "Running stage 'optimize'" in run.stdout and "Running stage 'baseline'" not in run.stdout
    report = read_json(repo / "metrics/optimized.json")
    assert report["optimizer"] == "bootstrap" and 1 <= report["demos"] <= 4
    usage = read_json(repo / "metrics/optimized_usage.json")
    assert usage["lm_usage"]["teacher"]["calls"] + usage["lm_usage"]["teacher"]["cache_hits"] >= 1
    for key in ("score", "components", "n", "failed", "improvement", "ci95"):
        assert key in report, key
    for key in ("lm_calls", "cache_hits", "prompt_tokens", "completion_tokens"):
        assert key in usage and key not in report, key
    program = read_json(repo / "outputs/program.json")
    assert len(program["predict"]["demos"]) == report["demos"]


def test_knn_experiment_exports_the_plugin(workspace):
    """`dvc exp run -S optimization.optimizer=knn`: k chosen on val, demos per input, the plugin and its bank."""
    repo = workspace
    run = dvc(repo, "exp", "run", "-n", "knn", "-S", "optimization.optimizer=knn", "-S", "optimization.knn.k=[1]",
              "-S", "optimization.knn.fixed=[0,1]", "-S", "export.formats=[usage_guide,plugin]",
              "-S", "optimization.select_on=offline", *TOOLS_FIXED)  # replay selection: test_optimizers
    assert "Running stage 'optimize'" in run.stdout and "Running stage 'export'" in run.stdout
    for n in (0, 1):
        assert f"knn: fixed={n} k=1 fields=task+steps_so_far: val score" in run.stdout
    report = read_json(repo / "metrics/optimized.json")
    assert report["optimizer"] == "knn" and report["retrieval"]["k"] == 1 and len(report["retrieval"]["fixed"]) < 2
    assert report["retrieval"]["fields"] == ["task", "steps_so_far"]
    program = read_json(repo / "outputs/program.json")
    assert program["retrieval"] == report["retrieval"] and len(program["predict"]["demos"]) == report["demos"]
    bank = read_json(repo / "outputs/prompts/plugin/nearest-demos.json")
    assert bank["k"] == report["retrieval"]["k"] and 0 < len(bank["demos"]) <= report["demos"]
    assert not {d["id"] for d in bank["demos"]} & set(report["retrieval"]["fixed"])  # the prompt shows those
    assert (repo / "outputs/prompts/plugin/nearest-demos.js").read_text(encoding="utf-8") == \
        (ROOT / "lib/opencode/nearest-demos.js").read_text(encoding="utf-8")


def test_ci_script_shares_results_through_the_remote(workspace, tmp_path):
    """scripts/ci_pipeline.sh (what the CI workflow runs) pushes a run to the remote; a second clone running
    the same script gets the first one's prompts, data and metrics from it without calling a model."""
    repo = workspace
    workflow = yaml.safe_load((ROOT / ".github/workflows/prompts.yml").read_text(encoding="utf-8"))
    runs = [step.get("run", "") for step in workflow["jobs"]["pipeline"]["steps"]]
    assert any(r.startswith("scripts/ci_pipeline.sh") for r in runs) and "./setup.sh" in runs
    remote = tmp_path / "team-remote"

    def ci(cwd: Path, report: Path) -> subprocess.CompletedProcess:
        env = {**_env(), "DVC_REMOTE_URL": str(remote), "REPORT_DIR": str(report)}
        done = subprocess.run(["bash", str(cwd / "scripts/ci_pipeline.sh"), "HEAD"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=2400)
        assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done

    first = ci(repo, tmp_path / "report-a")
    assert "Running stage 'baseline'" not in first.stdout and "Running stage 'optimize'" not in first.stdout
    assert any((remote / "files").rglob("*")) and (remote / "runs").is_dir()  # outputs and run-cache

    clone = tmp_path / "clone-ci"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "outputs/program.json").exists()
    second = ci(clone, tmp_path / "report-b")
    for stage in ("baseline", "optimize", "replay", "export"):
        assert f"Stage '{stage}' didn't change, skipping" in second.stdout, second.stdout
    assert not (clone / ".cache" / "dspy").exists()  # any model call would have opened the model cache
    for rel in ("outputs/prompts/opencode-build-smollm2-135m.jsonc", "outputs/prompts/OPTIMIZED_BUILD.md",
                "outputs/program.json", "data/splits/test.jsonl", "metrics/optimized.json"):
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel

    report = (tmp_path / "report-b" / "report.md").read_text(encoding="utf-8")
    assert "metrics/optimized.json" in report and "| score" in report.replace("|  ", "| ")
    assert (tmp_path / "report-b" / "comparison.svg").read_bytes() == (repo / "metrics/comparison.svg").read_bytes()
    assert "Picture: `metrics/comparison.svg`" in report


def test_train_with_config_and_output_dir(repo, tmp_path):
    """The seed's spellings: `train --config FILE --output-dir DIR` runs the experiment and copies the export."""
    override = tmp_path / "4demos.yaml"
    override.write_text(yaml.safe_dump({"optimization": {"metric_weights": {"efficiency": 0}}}))
    out = tmp_path / "my-app" / "prompts"
    done = sh(repo, sys.executable, "-m", "lib.cli", "train", "-n", "config-out", "--config", str(override),
              "--output-dir", str(out))
    assert "-S optimization.metric_weights.efficiency=0" in done.stdout and f"copied to {out}" in done.stdout
    exported = sorted(p.relative_to(repo / "outputs/prompts") for p in (repo / "outputs/prompts").rglob("*")
                      if p.is_file())
    assert exported and sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == exported
    for rel in exported:
        assert (out / rel).read_bytes() == (repo / "outputs/prompts" / rel).read_bytes()
    sh(repo, "git", "checkout", "HEAD", "--", "params.yaml")
