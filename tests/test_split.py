"""The session-level split: deterministic whatever the file order or layout, no session in two splits."""
from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from helpers import (FIXTURES, SAMPLES, SPLIT_FILES, load_json, make_project, read_jsonl, run_data_stages,
                     run_stage, sample_files, split_bytes)
from lib.core.files import write_jsonl
from lib.data.sources.plugin_logger import to_session
from lib.data.split import SPLITS, assign, root_of, split_file

RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


# --- the same split whatever the file order or folder layout --------------------------------------------------

def _layouts(base: Path) -> dict[str, Path]:
    """The sample files as shipped, flat in shuffled copy order, and each in its own nested folder."""
    files = sample_files()
    order = random.Random(7).sample(files, len(files))
    shipped = base / "shipped"
    shutil.copytree(SAMPLES, shipped)
    flat = base / "flat"
    flat.mkdir()
    for path in order:
        shutil.copy(path, flat / path.name)
    nested = base / "nested"
    for i, path in enumerate(reversed(order)):
        dest = nested / f"group-{i % 4}" / f"day-{i % 7:02d}" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    return {"shipped": shipped, "flat": flat, "nested": nested}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One project per layout, each run through parse -> build_examples -> split."""
    base = tmp_path_factory.mktemp("layouts")
    projects = {}
    for name, logs in _layouts(base / "logs").items():
        projects[name] = make_project(base / name, logs)
        run_data_stages(projects[name])
    return projects


def test_split_files_are_identical_across_file_order_and_layout(runs):
    paths = {name: sorted(r["path"] for r in read_jsonl(p / "data/parsed/sessions.jsonl")) for name, p in runs.items()}
    assert paths["flat"] != paths["nested"]  # the layouts really differ
    reference = split_bytes(runs["shipped"])
    assert all(reference[name] for name in SPLIT_FILES)
    for name in ("flat", "nested"):
        assert split_bytes(runs[name]) == reference, f"{name} layout gives a different split"
        assert (runs[name] / "metrics/split.json").read_bytes() == (runs["shipped"] / "metrics/split.json").read_bytes()


def test_every_example_lands_in_exactly_one_split(runs):
    project = runs["shipped"]
    examples = read_jsonl(project / "data/examples/examples.jsonl")
    in_splits = {name: read_jsonl(project / "data/splits" / name) for name in SPLIT_FILES}
    ids = Counter(r["id"] for rows in in_splits.values() for r in rows)
    assert set(ids) == {r["id"] for r in examples}
    assert set(ids.values()) == {1}


def test_no_session_or_group_in_two_splits(runs):
    project = runs["shipped"]
    groups: dict[str, set[str]] = {}
    sessions: dict[str, set[str]] = {}
    for name in SPLIT_FILES:
        for row in read_jsonl(project / "data/splits" / name):
            groups.setdefault(row["group_id"], set()).add(name)
            sessions.setdefault(row["session_id"], set()).add(name)
    assert len(sessions) >= 30
    assert all(len(where) == 1 for where in groups.values())
    assert all(len(where) == 1 for where in sessions.values())


def test_split_metrics_match_the_files_and_the_ratios(runs):
    project = runs["shipped"]
    report = load_json(project / "metrics/split.json")
    n_sessions = sum(report[name]["sessions"] for name in SPLITS)
    for name in SPLITS:
        rows = read_jsonl(project / "data/splits" / f"{name}.jsonl")
        assert report[name]["examples"] == len(rows)
        assert report[name]["sessions"] == len({r["session_id"] for r in rows})
        assert abs(report[name]["sessions"] - RATIOS[name] * n_sessions) <= 1


# --- assign() -------------------------------------------------------------------------------------------------

def test_assign_respects_the_ratios_roughly():
    groups = [f"ses_{i:04d}" for i in range(1000)]
    ratios = {"train": 0.7, "val": 0.1, "test": 0.2}
    counts = Counter(assign(groups, ratios, seed=3).values())
    assert counts == {"train": 700, "val": 100, "test": 200}


def test_assign_does_not_depend_on_input_order_but_on_the_seed():
    groups = [f"ses_{i:03d}" for i in range(200)]
    shuffled = random.Random(1).sample(groups, len(groups))
    assert assign(shuffled, RATIOS, 42) == assign(groups, RATIOS, 42)
    assert assign(groups + groups[:50], RATIOS, 42) == assign(groups, RATIOS, 42)  # repeats change nothing
    assert assign(groups, RATIOS, 43) != assign(groups, RATIOS, 42)


def test_three_sessions_give_a_non_empty_test_split():
    for seed in range(20):
        where = assign(["ses_a", "ses_b", "ses_c"], RATIOS, seed)
        assert sorted(where.values()) == ["test", "train", "val"]


def test_three_sessions_through_the_stages(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for path in sample_files()[:3]:
        shutil.copy(path, logs)
    project = make_project(tmp_path / "project", logs, min_examples=1)
    run_data_stages(project)
    assert read_jsonl(project / "data/splits/test.jsonl")
    assert load_json(project / "metrics/split.json")["test"]["sessions"] == 1


# --- subagent chains ------------------------------------------------------------------------------------------

def test_root_of_follows_the_chain_to_the_top():
    parents = {"child": "parent", "grandchild": "child", "parent": None, "other": None, "loop_a": "loop_b",
               "loop_b": "loop_a"}
    assert root_of(parents, "grandchild") == "parent"
    assert root_of(parents, "child") == "parent"
    assert root_of(parents, "parent") == "parent"
    assert root_of(parents, "unknown") == "unknown"
    assert root_of(parents, "loop_a") in ("loop_a", "loop_b")  # a cycle ends instead of looping forever


def test_a_subagent_chain_stays_in_one_split(tmp_path):
    """Sessions with parent_id, written as parse would, go through build_examples and split together."""
    base = load_json(FIXTURES / "valid-current.json")
    sessions = []
    families = {}
    for f in range(15):
        ids = [f"ses_f{f:02d}_root", f"ses_f{f:02d}_sub", f"ses_f{f:02d}_subsub"]
        families[ids[0]] = ids
        for depth, sid in enumerate(ids):
            s = to_session(base, f"{sid}.json")
            s.id = sid
            s.parent_id = ids[depth - 1] if depth else None
            sessions.append(s)
    project = make_project(tmp_path, min_examples=1)
    write_jsonl(project / "data/parsed/sessions.jsonl", (s.to_dict() for s in sorted(sessions, key=lambda s: s.id)))
    for stage in ("build_examples", "split"):
        proc = run_stage(project, stage)
        assert proc.returncode == 0, proc.stderr
    where: dict[str, set[str]] = {}
    for name in SPLIT_FILES:
        for row in read_jsonl(project / "data/splits" / name):
            family = row["session_id"].rsplit("_", 1)[0] + "_root"
            assert row["group_id"] == family
            where.setdefault(family, set()).add(name)
    assert set(where) == set(families)
    assert all(len(names) == 1 for names in where.values())
    assert len(set().union(*where.values())) == 3  # the families do spread over all three splits


def test_examples_stage_writes_group_ids_from_the_root(tmp_path):
    base = load_json(FIXTURES / "valid-legacy.json")
    chain = []
    for i, sid in enumerate(["ses_top", "ses_mid", "ses_leaf"]):
        s = to_session(base, f"{sid}.json")
        s.id, s.parent_id = sid, chain[-1].id if chain else None
        chain.append(s)
    project = make_project(tmp_path, min_examples=1)
    write_jsonl(project / "data/parsed/sessions.jsonl", (s.to_dict() for s in chain))
    proc = run_stage(project, "build_examples")
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(project / "data/examples/examples.jsonl")
    assert {r["session_id"]: r["group_id"] for r in rows} == {"ses_top": "ses_top", "ses_mid": "ses_top",
                                                            "ses_leaf": "ses_top"}
    assert json.loads((project / "metrics/examples.json").read_text())["examples"] == len(rows)


def test_split_file_copies_rows_unchanged_and_ends_the_last_one(tmp_path):
    """Rows are copied byte for byte in runs; blank lines are dropped and a last row without its
    newline gets one, so every split file is whole JSONL."""
    rows = [{"group_id": f"g{i % 5}", "id": f"r{i}", "session_id": f"s{i % 5}", "step": 0, "turn": i,
             "inputs": {"task": "é \"quoted\" " * i}} for i in range(40)]
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() for r in rows]
    src = tmp_path / "examples.jsonl"
    src.write_bytes(b"\n".join(lines[:10]) + b"\n\n  \n" + b"\n".join(lines[10:]))  # blank lines, no final newline
    dests = {name: tmp_path / f"{name}.jsonl" for name in SPLITS}
    report = split_file(src, dests, RATIOS, 42)
    where = assign([r["group_id"] for r in rows], RATIOS, 42)
    for name in SPLITS:
        want = [line + b"\n" for line, r in zip(lines, rows) if where[r["group_id"]] == name]
        assert dests[name].read_bytes() == b"".join(want)
        assert report[name] == {"examples": len(want), "sessions": len({r["session_id"] for r in rows
                                                                         if where[r["group_id"]] == name})}


def test_loaded_rows_carry_their_turns_earlier_calls(runs, monkeypatch):
    """What the replay stage sends as earlier tool calls: the same turn's earlier rows, in step order,
    also when a capped sample leaves some of those rows out."""
    from lib.program.runtime import load_rows
    monkeypatch.chdir(runs["shipped"])
    rows = load_rows("train")
    calls = {(r["session_id"], r["turn"], r["step"]): r["replay"]["call"] for r in rows}
    deep = [r for r in rows if r["step"] >= 2]
    assert deep
    for r in rows:
        assert r["replay"]["steps"] == [calls[(r["session_id"], r["turn"], i)] for i in range(r["step"])]
    sample = load_rows("train", 10, 42)
    by_id = {r["id"]: r for r in rows}
    assert all(r["replay"]["steps"] == by_id[r["id"]]["replay"]["steps"] for r in sample)
