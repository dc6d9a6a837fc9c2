"""Result pictures (SVG, rendered without a browser) and DVC's plots page opened offline in real Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import need
from lib import charts

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BAR = 'aria-roledescription="bar"'

ROWS = [{"metric": "score", "run": "baseline", "value": 0.1}, {"metric": "score", "run": "optimized", "value": 0.6},
        {"metric": "tool_validity", "run": "baseline", "value": 0.0},
        {"metric": "tool_validity", "run": "optimized", "value": 0.9}]


def test_comparison_chart_draws_each_bar_and_is_deterministic(tmp_path):
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    charts.write_comparison_chart(first, ROWS)
    charts.write_comparison_chart(second, list(ROWS))
    svg = first.read_text(encoding="utf-8")
    assert svg.startswith("<svg") and svg.count(BAR) == 4
    for text in ("composite", "tool_validity", "baseline", "optimized", "0.60", "0.90"):
        assert f">{text}<" in svg, text
    assert first.read_bytes() == second.read_bytes()
    assert oct(first.stat().st_mode & 0o777) == "0o644"


def test_replay_chart_takes_the_replay_report(tmp_path):
    summary = lambda score, valid, tool, target: {  # noqa: E731 - the replay stage's summary shape
        "score": score, "components": {"valid_call": valid, "right_tool": tool, "right_target": target},
        "n": 12, "destructive": 1, "right_tool_rate": tool}
    report = {"students": {"smollm2-135m": {"opencode_default": summary(0.2, 0.5, 0.3, 0.1),
                                            "exported": summary(0.5, 0.9, 0.6, 0.4),
                                            "difference": {"absolute": 0.3, "ci95": [0.1, 0.5]}}}}
    rows = charts.replay_rows(report)
    assert len(rows) == 8 and {r["measure"] for r in rows} == set(charts.REPLAY_MEASURES)
    assert {"measure": "valid_call", "prompt": "OpenCode default", "value": 0.5} in rows
    assert charts.replay_rows({"a": summary(0.1, 0.2, 0.3, 0.4)})[0] == {"measure": "score", "prompt": "a",
                                                                        "value": 0.1}
    path = tmp_path / "replay.svg"
    charts.write_replay_chart(path, report)
    svg = path.read_text(encoding="utf-8")
    assert svg.count(BAR) == 8 and ">exported agent<" in svg and ">right_target<" in svg
    assert ">12<" not in svg  # counts are not drawn as 0-1 bars
    spec = charts.bar_spec(rows, group="measure", series="prompt", value="value", title="t",
                           series_order=[r["prompt"] for r in rows])  # each prompt named 4 times
    assert spec["encoding"]["xOffset"]["sort"] == ["OpenCode default", "exported agent"]
    assert spec["width"] == {"step": 52}  # two bars a group, however often the order names them
    two = {"students": {"a": report["students"]["smollm2-135m"], "b": report["students"]["smollm2-135m"]}}
    assert {r["prompt"] for r in charts.replay_rows(two)} == {"a: OpenCode default", "a: exported agent",
                                                             "b: OpenCode default", "b: exported agent"}


def test_the_committed_picture_matches_the_committed_comparison(tmp_path):
    """README shows metrics/comparison.svg; it is what the export stage draws from metrics/comparison.json."""
    rows = json.loads((ROOT / "metrics/comparison.json").read_text(encoding="utf-8"))
    charts.write_comparison_chart(tmp_path / "c.svg", rows)
    assert (tmp_path / "c.svg").read_bytes() == (ROOT / "metrics/comparison.svg").read_bytes()
    assert "metrics/comparison.svg" in (ROOT / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ offline plots page

def _dvc(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def _offline_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium with every network request refused."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _bars_per_plot(dom: str) -> dict[str, int]:
    """Drawn bars under each of DVC's Vega plot divs (siblings in the page body; image plots left out)."""
    parts = re.split(r'<div id="([^"]+)"', dom)
    return {parts[i]: parts[i + 1].count(BAR) for i in range(1, len(parts), 2) 
            if "vegaEmbed(" in parts[i + 1] or 'class="vega-embed' in parts[i + 1]}


@pytest.fixture(scope="module")
def offline_page() -> Path:
    need(Path(CHROMIUM).exists(), "chromium is not installed (./setup.sh --test installs it)")
    page = ROOT / ".dvc" / charts.PAGE_TEMPLATE
    need(page.is_file(), f"{page} is missing; run ./setup.sh")
    return page


def test_setup_wires_the_offline_page_into_dvc(offline_page):
    assert _dvc("config", "plots.html_template").stdout.strip() == charts.PAGE_TEMPLATE
    text = offline_page.read_text(encoding="utf-8")
    assert "{plot_divs}" in text and "{scripts}" not in text
    assert not re.search(r"<script[^>]+src=", text), "the page must not load scripts from elsewhere"


def _expected_bars(*args: str) -> dict[str, int]:
    """Per plot div: the rows DVC puts in the plot (the grouped-bar template draws one bar per row)."""
    shown = json.loads(_dvc(*args, "--json").stdout)
    # A plot file that no stage has written yet is reported (and drawn empty); nothing else may fail.
    assert all(e.get("type") == "FileNotFoundError" for e in shown.get("errors") or []), shown["errors"]
    expected = {}
    for plot_id, entries in shown["data"].items():
        for entry in entries:
            if entry.get("type") == "vega":
                expected[re.sub(r"[^A-Za-z0-9-]", "_", plot_id)] = len(entry["content"]["data"]["values"])
    return expected


def test_plots_show_draws_every_plot_offline(offline_page, tmp_path):
    _dvc("plots", "show", "-o", str(tmp_path / "show"))
    bars = _bars_per_plot(_offline_dom(tmp_path / "show" / "index.html"))
    expected = _expected_bars("plots", "show")
    # Every plot with data drew one bar per row; a plot whose files do not exist yet is empty.
    assert set(expected) <= set(bars) and bars["Test_score_per_example__0-1_"] > 0, (bars, expected)
    assert {div: expected.get(div, 0) for div in bars} == bars
    assert bars["metrics_comparison_json"] == len(json.loads((ROOT / "metrics/comparison.json").read_text()))
    # The picture is a plot too: DVC copies it beside the page and shows it as an image.
    assert any(p.suffix == ".svg" for p in (tmp_path / "show").rglob("*"))
    assert re.search(r'<img[^>]+src="static/[^"]*comparison[^"]*\.svg"', (tmp_path / "show" / "index.html").read_text())

    # Control: DVC's own page (Vega from a CDN) draws nothing under the same conditions.
    from dvc_render.html import PAGE_HTML
    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML, encoding="utf-8")
    _dvc("plots", "show", "--html-template", str(default), "-o", str(tmp_path / "cdn"))
    control = _bars_per_plot(_offline_dom(tmp_path / "cdn" / "index.html"))
    assert set(expected) <= set(control) and sum(control.values()) == 0, control


def test_plots_diff_draws_offline(offline_page, tmp_path):
    need(subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode == 0,
         "not a git checkout")
    _dvc("plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    html = (tmp_path / "diff" / "index.html").read_text(encoding="utf-8")
    assert '"rev": "HEAD"' in html and '"rev": "workspace"' in html
    bars = _bars_per_plot(_offline_dom(tmp_path / "diff" / "index.html"))
    expected = _expected_bars("plots", "diff", "HEAD")
    # Every plot with data drew one bar per row; a plot whose files do not exist yet is empty.
    assert set(expected) <= set(bars) and bars["Test_score_per_example__0-1_"] > 0, (bars, expected)
    assert {div: expected.get(div, 0) for div in bars} == bars
