"""params.yaml validation: the shipped file passes; every kind of mistake names its key."""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from helpers import shipped_params
from lib.config import params as P


def test_shipped_params_file_validates():
    params = P.load()
    assert params == shipped_params()
    assert params["data"]["granularity"] in ("turn", "step")
    P.validate(copy.deepcopy(params))  # a second check of the same object raises nothing either


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(params: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(params: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = params
        for part in parents:
            node = node[part]
        del node[last]
    return change


def _both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(params: dict[str, Any]) -> None:
        for c in changes:
            c(params)
    return change


# (change to the shipped params, texts the error message must contain)
BAD = {
    "unknown key": (_set("data.shuffle", True), ["data", "'shuffle'"]),
    "unknown section": (_set("training", {"epochs": 3}), ["'training'"]),
    "missing key": (_drop("data.granularity"), ["data", "'granularity'"]),
    "wrong type (bool)": (_set("data.strict", "yes"), ["data.strict", "boolean"]),
    "wrong type (int)": (_set("data.min_examples", "10"), ["data.min_examples", "integer"]),
    "out of range": (_set("data.min_efficiency", 1.5), ["data.min_efficiency"]),
    "ratios not summing to 1": (_set("data.train_split", 0.7), ["train_split", "sum to 1"]),
    "no test split": (_both(_set("data.train_split", 0.8), _set("data.test_split", 0.0)), ["data.test_split"]),
    "bad granularity": (_set("data.granularity", "session"), ["data.granularity", "'session'"]),
    "bad date (no such day)": (_set("sources.since", "2025-02-30"), ["sources.since", "2025-02-30"]),
    "bad date (not a date)": (_set("sources.until", "last week"), ["sources.until", "last week"]),
    "since after until": (_both(_set("sources.since", "2025-06-01"), _set("sources.until", "2025-01-01")),
                          ["sources.since", "sources.until"]),
    "unknown optimizer": (_set("optimization.optimizer", "random_search"),
                          ["optimization.optimizer", "'random_search'"]),
    "openai-compatible teacher without api_base": (
        _set("models.teacher.provider", "openai-compatible"), ["models.teacher.api_base", "openai-compatible"]),
    "openai-compatible student without api_base": (
        _set("models.student.provider", "openai-compatible"), ["models.student.api_base", "openai-compatible"]),
    "unknown provider": (_set("models.student.provider", "azure"), ["models.student.provider", "'azure'"]),
    "local provider with a server address": (
        _set("models.student.api_base", "http://localhost:8000/v1"), ["models.student", "provider local"]),
    "model_path on a served provider": (
        _both(_set("models.teacher.provider", "ollama"), _set("models.teacher.model_path", "/m.gguf")),
        ["models.teacher.model_path", "provider local"]),
    "unknown replay parser": (_set("replay.parser", "ollama"), ["replay.parser", "'ollama'"]),
    "api_base without scheme": (_set("models.teacher.api_base", "localhost:8000"), ["models.teacher.api_base"]),
    "all metric weights zero": (
        _set("optimization.metric_weights", {k: 0 for k in shipped_params()["optimization"]["metric_weights"]}),
        ["optimization.metric_weights"]),
    "unknown export format": (_set("export.formats", ["agent_config", "pdf"]), ["export.formats", "'pdf'"]),
    "short_tools as a format": (_set("export.formats", ["agent_config", "short_tools"]),
                                ["export.formats", "export.tool_descriptions: short"]),
    "unknown tool_descriptions": (_set("export.tool_descriptions", "tiny"), ["export.tool_descriptions", "'tiny'"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_mistake_raises_params_error_naming_the_key(case):
    change, expected = BAD[case]
    params = shipped_params()
    change(params)
    with pytest.raises(P.ParamsError) as err:
        P.validate(params)
    for text in expected:
        assert text in str(err.value), f"{case}: {text!r} missing from:\n{err.value}"


def test_a_gguf_of_your_own_takes_any_model_name():
    params = shipped_params()
    params["models"]["student"].update(model="my-coder", model_path="/models/my-coder.gguf")
    P.validate(params)


def test_load_reads_the_file_and_names_it_in_the_error(tmp_path):
    params = shipped_params()
    params["data"]["granularity"] = "session"
    path = tmp_path / "my-params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    with pytest.raises(P.ParamsError) as err:
        P.load(path)
    assert str(path) in str(err.value)
    assert "data.granularity" in str(err.value)


def test_every_problem_is_listed_at_once():
    params = shipped_params()
    params["data"]["strict"] = "no"
    params["optimization"]["optimizer"] = "grid"
    params["export"]["mode"] = "background"
    with pytest.raises(P.ParamsError) as err:
        P.validate(params)
    message = str(err.value)
    assert "3 problem(s)" in message
    for key in ("data.strict", "optimization.optimizer", "export.mode"):
        assert key in message


def test_missing_and_unparsable_files_are_params_errors(tmp_path):
    with pytest.raises(P.ParamsError, match="file not found"):
        P.load(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n", encoding="utf-8")
    with pytest.raises(P.ParamsError, match="not valid YAML"):
        P.load(broken)


def test_override_of_a_known_key_is_applied_and_validated():
    assert P.load(overrides={"data.granularity": "turn"})["data"]["granularity"] == "turn"
    assert P.load(overrides={"models.student.temperature": 0.5})["models"]["student"]["temperature"] == 0.5
    with pytest.raises(P.ParamsError, match="data.granularity"):
        P.load(overrides={"data.granularity": "session"})


@pytest.mark.parametrize("dotted, named", [
    ("data.shuffle", "'shuffle'"),            # typo of a key
    ("training.epochs", "'training'"),        # no such section
    ("data.strict.deep", "'strict'"),         # a value, not a section
    ("models.teacher.modle", "'modle'"),      # typo one level deeper
])
def test_override_of_an_unknown_dotted_key_names_it(dotted, named):
    with pytest.raises(P.ParamsError) as err:
        P.load(overrides={dotted: 1})
    assert dotted in str(err.value)
    assert named in str(err.value)



def test_overrides_from_the_command_line():
    assert P.parse_overrides(["optimization.knn.k=[3]", "data.redact=false", "export.agent_name=a=b"]) == {
        "optimization.knn.k": [3], "data.redact": False, "export.agent_name": "a=b"}
    with pytest.raises(P.ParamsError, match="write KEY=VALUE"):
        P.parse_overrides(["optimization.knn.k"])
