"""The evaluation report's inline sorting and filtering script (engine.evaluation.report_script).

The page must stay complete without it (every delta row, in the page's worst-first order, no control that needs
the script), it must load nothing, and run for real (headless Chromium from Debian's packages, the renderer the
issue names) it must order a slice table as the numbers in report.json say, computed here in Python.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from html_check import assert_self_contained, parse
from test_eval_report import CHALL, CHAMP, _row, sample_report

from engine.evaluation.report import render_html, report_json

# 18 more slices, so the roc_auc delta table (21 rows) and the support table (22) are long: folded or filtered
REGIONS = [(f"region=r{i:02d}", "region", f"r{i:02d}", 900 + 1379 * i, 40 + i) for i in range(18)]


def long_report() -> dict:
    """sample_report with 18 region slices: distinct deltas of both signs and magnitudes (so text order is not
    numeric order), intervals of varied width (so the lower bound's order is not the estimate's), distinct
    supports past 1,000 (thousands separators), and one undefined delta."""
    rep = sample_report()
    for model in (CHAMP, CHALL):
        for sl in REGIONS:
            rep["metrics"] += [_row(model, sl, "roc_auc", 0.8, 0.79, 0.81), _row(model, sl, "support", float(sl[3]),
                                                                                 None, None)]
    for i, sl in enumerate(REGIONS):
        for metric, scale in (("roc_auc", 1.0), ("ece", 0.5)):
            if i == 17:
                rep["deltas"].append(dict(_row(CHALL, sl, metric, None, None, None, "undefined"), baseline=CHAMP))
                continue
            value = scale * ((i * 11) % 37 - 18) / 1000
            half = scale * ((i * 13) % 17 + 1) / 500
            rep["deltas"].append(dict(_row(CHALL, sl, metric, value, value - half, value + half * 0.5),
                                      baseline=CHAMP))
    return rep


def slice_tables(page: str) -> list[tuple[str, list[str]]]:
    """(what the table holds: a delta metric or "support", its slice names in page order) of every slice table."""
    out = []
    for m in re.finditer(r'<table class="slices[^"]*">.*?</table>', page, re.S):
        before = page[:m.start()]
        titles = re.findall(r'<h4 id="delta-[^"]+">([^ :<]+)|<summary>([^ :<]+)|(id="slices")', before)
        last = titles[-1]
        what = "support" if last[2] else html.unescape(last[0] or last[1])
        out.append((what, [html.unescape(x) for x in re.findall(r"<tr[^>]*><td>([^<]*)</td>", m.group(0))]))
    return out


def test_the_page_loads_nothing_and_its_script_is_inline():
    """Catches a CDN sort library (<script src="https://cdn…">), a script file beside the page (<script
    src="sort.js">) or an inline script that fetches: the page must open offline, as it is."""
    page = render_html(long_report())
    p = assert_self_contained(page, inline_script=True)
    assert [t for t, _ in p.tags].count("script") == 1
    assert not [(t, a) for t, attrs in p.tags for k, a in attrs.items() if k in ("src", "href")
                and re.match(r"\s*(https?:)?//", a or "", re.I)]


def test_without_the_script_every_delta_row_is_on_the_page_worst_first():
    """Catches a page that leaves rows to the script (only the first rows rendered, the rest hidden, paginated or
    built by JS): without JS the tables hold every delta of report.json, none hidden, in the worst-first order."""
    rep = json.loads(report_json(long_report()))
    page = render_html(rep)
    parse(page)
    tables = slice_tables(page)
    deltas = [t for t in tables if t[0] != "support"]
    assert sum(len(rows) for _, rows in deltas) == len(rep["deltas"]) == 5 + 2 * 18
    for metric, rows in deltas:
        assert sorted(rows) == sorted(d["slice"] for d in rep["deltas"] if d["metric"] == metric), metric
    support = [rows for what, rows in tables if what == "support"]
    assert support and sorted(support[0]) == sorted({r["slice"] for r in rep["metrics"]})
    assert not re.search(r"<tr[^>]*(hidden|display\s*:\s*none)", page) and "<input" not in page
    # worst first (roc_auc: higher is better): regressions, unclear, improvements, each by Δ, undefined last
    auc = {d["slice"]: d for d in rep["deltas"] if d["metric"] == "roc_auc"}

    def rank(d):
        if d["value"] is None:
            return (3, 0.0)
        return (0 if d["ci_high"] < 0 else 2 if d["ci_low"] > 0 else 1, d["value"])
    assert dict(deltas)["roc_auc"] == sorted(auc, key=lambda s: (rank(auc[s]), s))
    assert 'class="slices long"' in page  # the long tables are the ones the script gives a filter box


PROBE = """<script>
(function () {
  var steps = %s, out = [];
  var tables = document.querySelectorAll("table.slices");
  steps.forEach(function (s) {
    var t = tables[s.table];
    if (s.click !== undefined) t.tHead.rows[0].cells[s.click].click();
    if (s.filter !== undefined) {
      var box = t.previousElementSibling.querySelector("input");
      box.value = s.filter;
      box.dispatchEvent(new Event("input"));
    }
    out.push(Array.prototype.filter.call(t.tBodies[0].rows, function (r) { return !r.hidden; })
      .map(function (r) { return r.cells[0].textContent; }));
  });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def run_in_chromium(page: str, steps: list[dict], tmp_path) -> list[list[str]]:
    """The page with a probe script after the report's own: it clicks headers and types into filter boxes (real
    DOM events in headless Chromium), recording each step's visible slice names in order."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("no chromium on this machine (Debian package `chromium`): the script cannot run here")
    target = tmp_path / "report.html"
    target.write_text(page.replace("</body>", PROBE % json.dumps(steps) + "\n</body>"), encoding="utf-8")
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}/c",
                           "--dump-dom", target.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not run: rc={done.returncode} {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_sorting_and_filtering_in_a_browser_follow_report_json(tmp_path):
    """Catches a text sort of numbers ("+0.0123" < "-0.0210", "12,345" < "9,800"), an interval column sorted by its
    lower bound instead of the estimate, undefined values sorted among numbers, a third click that does not give
    back the worst-first order, and a case-sensitive or wrong-column filter."""
    rep = json.loads(report_json(long_report()))
    page = render_html(rep)
    tables = slice_tables(page)
    auc_at = [w for w, _ in tables].index("roc_auc")
    sup_at = [w for w, _ in tables].index("support")
    static = tables[auc_at][1]
    auc = {d["slice"]: d for d in rep["deltas"] if d["metric"] == "roc_auc"}
    defined = [s for s in static if auc[s]["value"] is not None]
    undefined = [s for s in static if auc[s]["value"] is None]
    up = sorted(defined, key=lambda s: auc[s]["value"]) + undefined
    down = sorted(defined, key=lambda s: -auc[s]["value"]) + undefined
    by_support = sorted(static, key=lambda s: auc[s]["support"])
    by_name = sorted(static, key=str.lower)

    def read(d):
        if d["value"] is None:
            return "undefined"
        return "worse" if d["ci_high"] < 0 else "better" if d["ci_low"] > 0 else "no clear difference"
    by_reading = sorted(static, key=lambda s: read(auc[s]))  # stable: ties keep the page's order
    # the fixture tells these orders apart, so each step below proves its rule
    assert up != sorted(defined, key=lambda s: auc[s]["ci_low"]) + undefined
    assert by_support != sorted(static, key=lambda s: f"{auc[s]['support']:,}")
    sup_rows = {r["slice"]: r["support"] for r in rep["metrics"] if r["model"] == CHALL}
    sup_up = sorted(tables[sup_at][1], key=lambda s: sup_rows[s])

    steps = [{"table": auc_at, "click": 1}, {"table": auc_at, "click": 1}, {"table": auc_at, "click": 1},
             {"table": auc_at, "click": 2}, {"table": auc_at, "click": 4}, {"table": auc_at, "click": 0},
             {"table": auc_at, "click": 5}, {"table": auc_at, "filter": "R1"}, {"table": auc_at, "filter": ""},
             {"table": sup_at, "click": 2}, {"table": sup_at, "click": 2}]
    got = run_in_chromium(page, steps, tmp_path)
    want = [up, down, static, up, by_support, by_name, by_reading, [s for s in by_reading if "r1" in s.lower()],
            by_reading, sup_up, sup_up[::-1]]
    for k, (step, g, w) in enumerate(zip(steps, got, want)):
        assert g == w, (k, step)
    assert len(got) == len(steps)

