"""Pictures of the results, viewable with no network. Must not import lib.tools, lib.config, lib.data, lib.models, lib.program, lib.scoring, lib.opencode, lib.optimize, lib.export, lib.cli.

- `write_bar_chart` renders a grouped bar chart (a Vega-Lite spec) to SVG with vl-convert, which runs
  Vega in-process: no browser, no network. The export stage draws baseline against optimized
  (composite and components) with `write_comparison_chart`; the replay stage draws OpenCode's default
  prompt against the exported agent with `write_replay_chart`.
- `write_page_template` writes the HTML page template that `dvc plots show` / `dvc plots diff` fill
  (DVC's `plots.html_template` setting). DVC's own page loads Vega from a CDN and stays blank
  offline; this one carries Vega, Vega-Lite and vega-embed inline (the bundle vl-convert ships).

SVG output is a function of the data (no clock, no random ids), so a re-run writes the same bytes.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lib.core.errors import UserError
from lib.core.files import write_text

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
# What the offline page template is called, relative to .dvc/ (DVC resolves the setting from there).
PAGE_TEMPLATE = "plots/offline.html"
# The replay stage's per-prompt 0-1 figures, in the order they are drawn, and its prompts' names.
REPLAY_MEASURES = ("score", "valid_call", "right_tool", "right_target")
REPLAY_PROMPTS = {"opencode_default": "OpenCode default", "exported": "exported agent"}
_RUN_ORDER = ("baseline", "optimized")


def _vl_convert() -> Any:
    try:
        import vl_convert
    except ImportError:
        raise UserError("the Python package vl-convert-python is missing (it draws the result charts); "
                        "run ./setup.sh") from None
    return vl_convert


def bar_spec(rows: Iterable[Mapping[str, Any]], *, group: str, series: str, value: str, title: str,
             y_title: str = "score (0-1)", series_order: Iterable[str] = ()) -> dict[str, Any]:
    """A grouped bar chart: one group of bars per `group` value, one bar per `series`, heights 0-1.

    Groups and series keep the order they first appear in (series listed in `series_order` first),
    so the picture does not depend on the reader's sorting.
    """
    data = [{group: str(r[group]), series: str(r[series]), value: float(r[value])} for r in rows
            if isinstance(r.get(value), (int, float)) and not isinstance(r.get(value), bool)
            and math.isfinite(r[value])]
    groups = list(dict.fromkeys(r[group] for r in data))
    present = list(dict.fromkeys(r[series] for r in data))
    order = list(dict.fromkeys([*(s for s in series_order if s in present), *present]))
    label = {"calculate": f"format(datum['{value}'], '.2f')", "as": "label"}
    encoding = {
        "x": {"field": group, "type": "nominal", "sort": groups, "title": None,
              "axis": {"labelAngle": 0, "labelLimit": 140}},
        "xOffset": {"field": series, "sort": order},
        "y": {"field": value, "type": "quantitative", "title": y_title, "scale": {"domain": [0, 1]}},
        "color": {"field": series, "type": "nominal", "sort": order, "title": None,
                  "scale": {"scheme": "tableau10"}},
    }
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": {"text": title, "anchor": "start"},
        "data": {"values": data},
        "transform": [label],
        "width": {"step": 26 * max(1, len(order))},
        "height": 240,
        "config": {"legend": {"orient": "top"}, "view": {"stroke": None}},
        "encoding": encoding,
        "layer": [
            {"mark": {"type": "bar", "tooltip": True}},
            {"mark": {"type": "text", "dy": -6, "fontSize": 9},
             "encoding": {"text": {"field": "label"}, "color": {"value": "#333"}}},
        ],
    }


def render_svg(spec: Mapping[str, Any]) -> str:
    """The chart as SVG text, rendered in-process."""
    return _vl_convert().vegalite_to_svg(dict(spec))


def write_bar_chart(path: str | Path, rows: Iterable[Mapping[str, Any]], **spec: Any) -> None:
    """Render `bar_spec(rows, **spec)` to an SVG file (atomically). An empty chart is still written."""
    write_text(path, render_svg(bar_spec(rows, **spec)))


def write_comparison_chart(path: str | Path, rows: Iterable[Mapping[str, Any]],
                           title: str = "Test split: baseline vs optimized") -> None:
    """Baseline against optimized, composite then each component: rows of {metric, run, value}
    (the rows of metrics/comparison.json)."""
    shown = [{**r, "metric": "composite" if r["metric"] == "score" else r["metric"]} for r in rows]
    write_bar_chart(path, shown, group="metric", series="run", value="value", title=title,
                    series_order=_RUN_ORDER)


def replay_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of {measure, prompt, value} for the replay picture.

    `report` is metrics/replay.json as the replay stage writes it ({"students": {label:
    {"opencode_default": summary, "exported": summary, ...}}}), or directly {prompt name: summary}.
    A measure is read from the top of a summary or from its `components`; counts (n, destructive)
    are not 0-1 figures and are left out.
    """
    prompts: dict[str, Mapping[str, Any]] = {}
    students = report.get("students")
    if isinstance(students, Mapping):
        for label, entry in students.items():
            for key, name in REPLAY_PROMPTS.items():
                if isinstance(entry.get(key), Mapping):
                    prompts[name if len(students) == 1 else f"{label}: {name}"] = entry[key]
    else:
        prompts = {str(k): v for k, v in report.items() if isinstance(v, Mapping)}
    rows = []
    for measure in REPLAY_MEASURES:
        for prompt, summary in prompts.items():
            value = summary.get(measure)
            if value is None and isinstance(summary.get("components"), Mapping):
                value = summary["components"].get(measure)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"measure": measure, "prompt": prompt, "value": value})
    return rows


def write_replay_chart(path: str | Path, report: Mapping[str, Any],
                       title: str = "Replay as OpenCode sends it: default prompt vs exported agent") -> None:
    """The replay comparison picture (see `replay_rows` for what `report` may be)."""
    rows = replay_rows(report)
    write_bar_chart(path, rows, group="measure", series="prompt", value="value", title=title,
                    series_order=[r["prompt"] for r in rows])


# --------------------------------------------------------------------------- offline plots page

def page_template() -> str:
    """An HTML page template for DVC plots with Vega, Vega-Lite and vega-embed inline.

    DVC replaces `{plot_divs}` (and `{refresh_tag}`); there is no `{scripts}`, so DVC's CDN
    script tags are never added. Plots draw as SVG, which keeps them sharp and selectable.
    """
    vl = _vl_convert()
    bundle = vl.javascript_bundle()  # sets window.vegaEmbed / vega / vegaLite
    for placeholder in ("{plot_divs}", "{refresh_tag}", "{scripts}", "</script"):
        if placeholder in bundle:  # DVC substitutes plain text; a clash would corrupt the page
            raise UserError(f"vl-convert's JavaScript bundle contains {placeholder!r}; "
                            f"pin vl-convert-python as in requirements.txt")
    versions = (f"vega {vl.get_vega_version()}, vega-lite {vl.get_vegalite_versions()[-1]}, "
                f"vega-embed {vl.get_vega_embed_version()}")
    return f"""<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- {versions} (from the vl-convert-python package), inline: this page needs no network. -->
    <script type="text/javascript">
(function () {{
{bundle}
}})();
(function () {{
  var embed = window.vegaEmbed;
  window.vegaEmbed = function (el, spec, opts) {{
    return embed(el, spec, Object.assign({{renderer: "svg"}}, opts || {{}}));
  }};
}})();
    </script>
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def write_page_template(dvc_dir: str | Path = ".dvc") -> Path:
    """Write the offline page template to <dvc_dir>/plots/offline.html (skipped when current)."""
    path = Path(dvc_dir) / PAGE_TEMPLATE
    text = page_template()
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        write_text(path, text)
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m lib.charts page [DVC_DIR]`: write the offline page template (run by setup.sh)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "page" or len(args) > 2:
        print("usage: python -m lib.charts page [DVC_DIR]", file=sys.stderr)
        return 2
    try:
        path = write_page_template(*args[1:])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"offline plots page: {path}")
    return 0

