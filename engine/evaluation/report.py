"""The evaluation report: one self-contained HTML page and its JSON twin, rendered from the report dict.

The page opens offline: inline CSS and inline SVG drawn here, no external URL. One small inline script
(report_script) sorts and filters the slice tables; the page is complete and in its own order without it.

It reads top-down: the verdict, the promotion outcome and what changed (report_header, report_changed), the
gates, then the detail: the run, challenger minus champion per slice with paired intervals (report_deltas),
support and each metric per slice and model with its interval (report_slices), ROC / precision–recall curves,
confusion matrices, reliability diagrams and score distributions by label when the dict has them, i.e. binary
tasks (report_charts), the label maturity curves and the window's earlier evaluations (report_maturity), rows
left out (immature labels, unmatched keys) and the notes on the statistics (report_notes), drift (PSI per column and
a relative link to the Evidently page, report_drift; the (feature, slice) pairs ranked by drift with their
histograms, report_slice_drift). The shared look
is report_page. This module orders the sections and writes the files.

The dict format is the "Report dict" of the evaluation interfaces; it carries aggregates only, never row values,
so no PII can reach the page. Rendering reads no clock and iterates in the dict's order: the same dict gives
byte-identical HTML.
"""
from __future__ import annotations

import json
import numbers

from engine.evaluation.report_charts import curves_section, reliability_section, score_hist_section
from engine.evaluation.report_deltas import deltas_section
from engine.evaluation.report_drift import drift_section
from engine.evaluation.report_maturity import maturity_section
from engine.evaluation.report_header import gates_section, header, promotion_line, run_facts
from engine.evaluation.report_notes import excluded_section, notes_section
from engine.evaluation.report_page import CSS, READING_COLOURS
from engine.evaluation.report_script import SCRIPT, SORT_CSS
from engine.evaluation.report_slice_drift import slice_drift_section
from engine.evaluation.report_slices import metrics_section, support_section
from engine.evaluation.summary import reading
from engine.evaluation.svg import MODEL_COLOURS, finite, html_page
from engine.lake.reports import folder_target, write_report_files

# the backtest report and the notebooks import these from here
__all__ = ["CSS", "READING_COLOURS", "plain", "promotion_line", "reading", "render_html", "report_json",
           "write_report"]

TITLES = {"gates": "Gates", "run": "Run", "deltas": "Per-slice deltas", "slices": "Slices", "metrics": "Metrics",
          "curves": "ROC / PR", "reliability": "Reliability", "scores": "Score distributions",
          "maturity": "Label maturity", "excluded": "Rows left out", "drift": "Drift", "notes": "Notes"}


def plain(value):
    """JSON-ready copy: numpy scalars to Python numbers, tuples to lists, NaN and ±inf to None (undefined)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if finite(float(value)) else None
    return value


def render_html(report: dict) -> str:
    """The report dict as one self-contained HTML page (no external URL; the inline sorting script is optional to
    read it); deterministic. It reads top-down: verdict, promotion, what changed, gates, then the detail (long and
    ungated parts folded)."""
    rep = plain(report)
    models = list(rep["models"])
    colours = {m: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, m in enumerate(models)}
    sections = {"gates": gates_section(rep), "run": run_facts(rep), "deltas": deltas_section(rep),
                "slices": support_section(rep, models), "metrics": metrics_section(rep, models, colours),
                "curves": curves_section(rep, models, colours),
                "reliability": reliability_section(rep, models, colours), "scores": score_hist_section(rep, models),
                "maturity": maturity_section(rep, models, colours), "excluded": excluded_section(rep),
                "drift": drift_section(rep) + slice_drift_section(rep), "notes": notes_section(rep)}
    return html_page(f"lakescore evaluation · run {rep['run_id']}", header(rep), sections, TITLES, CSS + SORT_CSS,
                     SCRIPT)


def report_json(report: dict) -> str:
    """report.json's text: sorted keys, undefined values (NaN, ±inf) as null so any JSON reader takes it."""
    return json.dumps(plain(report), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_report(report: dict, folder: str, storage_options: dict | None = None) -> tuple[str, str]:
    """Write report.json and report.html into `folder` (a path, file:// or an object-store URL); their locations."""
    fs, path, shown = folder_target(folder, storage_options)
    write_report_files(fs, path, {"report.json": report_json(report), "report.html": render_html(report)})
    return f"{shown}/report.json", f"{shown}/report.html"
