"""The evaluation report: a self-contained, escaped, deterministic HTML page and its JSON twin."""
from __future__ import annotations

import copy
import html
import json
import math
import re

import pytest
from html_check import assert_self_contained, parse

from engine.evaluation import svg
from engine.evaluation.report import reading, render_html, report_json, write_report

CHAMP, CHALL = "lakescore-demo-xgb/1", "lakescore-demo-xgb/2"
# (slice, slice_columns, slice_values, support, positives); the last one is under the minimum support of 100
SLICES = [("overall", "", "", 12345, 1481), ("segment=enterprise", "segment", "enterprise", 5120, 702),
          ("segment=smb & channel=app", "segment,channel", "smb,app", 7180, 760),
          ("segment=<b>", "segment", "<b>", 45, 4)]


def _row(model, sl, metric, value, low, high, status="ok"):
    name, cols, vals, support, _ = sl
    return {"model": model, "slice": name, "slice_columns": cols, "slice_values": vals, "metric": metric,
            "value": value, "ci_low": low, "ci_high": high, "support": support, "status": status}


def sample_report() -> dict:
    metrics = []
    for k, model in enumerate([CHAMP, CHALL]):
        for j, sl in enumerate(SLICES):
            under = sl[3] < 100
            st = "under_support" if under else "ok"
            auc = 0.8 + 0.01234 * k - 0.01 * j
            if model == CHALL and sl[0] == "overall":
                metrics.append(_row(model, sl, "roc_auc", 0.81234, 0.80111, 0.82356))
            elif under:
                metrics.append(_row(model, sl, "roc_auc", None, None, None, "undefined"))
            else:
                metrics.append(_row(model, sl, "roc_auc", auc, auc - 0.011, auc + 0.011))
            ll = 0.31 - 0.004 * k + 0.02 * j
            metrics.append(_row(model, sl, "log_loss", ll, ll - 0.006, ll + 0.006, st))
            metrics.append(_row(model, sl, "ece", 0.012 + 0.003 * j, 0.008, 0.02 + 0.003 * j, st))
            metrics.append(_row(model, sl, "precision@0.5", 0.41 + 0.02 * k, 0.38, 0.45, st))
            metrics.append(_row(model, sl, "support", float(sl[3]), None, None, st))
            metrics.append(_row(model, sl, "positives", float(sl[4]), None, None, st))
    deltas = [dict(_row(CHALL, SLICES[0], "roc_auc", 0.01234, 0.0051, 0.0196), baseline=CHAMP),
              dict(_row(CHALL, SLICES[1], "roc_auc", -0.021, -0.034, -0.008), baseline=CHAMP),
              dict(_row(CHALL, SLICES[2], "roc_auc", 0.002, -0.004, 0.008), baseline=CHAMP),
              dict(_row(CHALL, SLICES[0], "log_loss", -0.0042, -0.0070, -0.0013), baseline=CHAMP),
              dict(_row(CHALL, SLICES[3], "log_loss", 0.03, -0.05, 0.11, "under_support"), baseline=CHAMP)]
    reliability = {m: [{"bin_low": i / 10, "bin_high": (i + 1) / 10, "count": 900 - 80 * i,
                        "mean_score": i / 10 + 0.05, "frac_positive": min(1.0, (i / 10 + 0.05) * (0.9 + 0.05 * k))}
                       for i in range(10)] for k, m in enumerate([CHAMP, CHALL])}
    edges = [i / 20 for i in range(21)]
    score_hist = {m: {"edges": edges, "positive": [5 + 3 * i + k for i in range(20)],
                      "negative": [600 - 25 * i for i in range(20)]} for k, m in enumerate([CHAMP, CHALL])}
    gates = [{"gate": "min_roc_auc", "model": CHALL, "slice": "overall", "metric": "roc_auc", "threshold": 0.75,
              "value": 0.81234, "passed": True, "reason": "0.8123 >= 0.75"},
             {"gate": "max_regression", "model": CHALL, "slice": "segment=enterprise", "metric": "roc_auc",
              "threshold": -0.01, "value": -0.021, "passed": False,
              "reason": "roc_auc fell 0.0210 against the champion; at most 0.01 allowed"},
             {"gate": "min_support", "model": CHALL, "slice": "segment=<b>", "metric": "support", "threshold": 100,
              "value": 45, "passed": False, "reason": "45 rows < 100"}]
    return {"run_id": "3f2a9c1e", "config_hash": "sha256:9b1d0c7e", "created_at": "2026-01-08T06:00:00+00:00",
            "window": {"start": "2026-01-01", "end": "2026-01-07", "days": [f"2026-01-0{d}" for d in range(1, 8)]},
            "as_of": "2026-01-08T00:00:00+00:00", "versions": {"scores": 12, "labels": 7, "features": 30},
            "task": "binary", "models": [CHAMP, CHALL], "champion": CHAMP, "challenger": CHALL,
            "metrics": metrics, "deltas": deltas, "reliability": reliability, "score_hist": score_hist,
            "gates": gates, "verdict": "fail",
            "immature": [{"ds": "2026-01-06", "rows_without_label": 310, "rows_label_after_as_of": 42},
                         {"ds": "2026-01-07", "rows_without_label": 1890, "rows_label_after_as_of": 7}],
            "unmatched": {"scores_without_features": 3, "features_without_scores": 11},
            "drift": {"psi": [{"column": "tenure_days", "psi": 0.0312, "status": "ok"},
                              {"column": "score", "psi": 0.2871, "status": "drift"}],
                      "evidently_html": "drift/evidently.html"},
            "min_support": 100, "confidence": 0.95, "bootstrap": 200}


def _svg_texts(page: str) -> list[tuple[str, str]]:
    """(fill, text) of every SVG <text>, unescaped as a browser shows it."""
    return [(fill, html.unescape(t)) for fill, t in re.findall(r'<text [^>]*?fill="([^"]+)"[^>]*>([^<]*)</text>', page)]


def test_page_is_well_formed_and_self_contained():
    page = render_html(sample_report())
    assert_self_contained(page, inline_script=True)
    assert page.count("<svg") == 4 + 2 + 2 + 5  # 4 charted metrics, 2 reliability, 2 histograms, 5 delta bars


def test_page_shows_verdict_run_facts_every_slice_and_model():
    rep = sample_report()
    page = render_html(rep)
    assert '<div class="verdict verdict-fail">Verdict: FAIL — 2 of 3 gate(s) failed</div>' in page
    for text in ["3f2a9c1e", "sha256:9b1d0c7e", "2026-01-01 → 2026-01-07 (7 day(s))", "2026-01-08T00:00:00+00:00",
                 "scores v12, labels v7, features v30", CHAMP, CHALL, "95.0% bootstrap, 200 replicates"]:
        assert text in page, text
    for name, *_ in SLICES:
        assert svg.esc(name) in page, name
    shown = {t for _, t in _svg_texts(page)}
    assert {s[0] for s in SLICES} <= shown  # each slice labels a row of the metric charts
    assert [m.group(1) for m in re.finditer(r"<figcaption>([^<]+)</figcaption>", page)][:4] == [
        "roc_auc (higher is better)", "log_loss (lower is better)", "ece (lower is better)",
        "precision@0.5 (higher is better)"]
    # the failed gates' rows are highlighted, the passed one is not
    gate_rows = re.findall(r'<tr( class="fail")?><td>(min_roc_auc|max_regression|min_support)</td>', page)
    assert [(bool(c), g) for c, g in gate_rows] == [(False, "min_roc_auc"), (True, "max_regression"),
                                                    (True, "min_support")]
    assert '<a href="drift/evidently.html">' in page


def test_numbers_are_formatted_for_reading():
    page = render_html(sample_report())
    texts = _svg_texts(page)
    assert (svg.MODEL_COLOURS[1], "0.8123 [0.8011, 0.8236]") in texts  # challenger overall AUC, its own colour
    assert f"<td>{svg.esc(CHALL)}</td><td>overall</td><td>roc_auc</td><td class=\"n\">0.7500</td>" \
           f"<td class=\"n\">0.8123</td>" in page
    assert '<td class="n">12,345</td>' in page and '<td class="n">45 (under support)</td>' in page
    assert '<td class="n">+0.0123</td><td class="n" data-sort="0.01234">[+0.0051, +0.0196]</td>' in page
    assert '<td class="n">-0.0210</td><td class="n" data-sort="-0.021">[-0.0340, -0.0080]</td>' in page
    assert '<td class="n">0.2871</td>' in page  # PSI
    assert ('<tr><td><strong>total</strong></td><td class="n">2,200</td><td class="n">49</td></tr>' in page)
    assert '<td>scores without features</td><td class="n">3</td>' in page
    # the undefined AUC of the small slice is a dash, greyed, with its support
    assert (svg.MUTED, "—  n=45 under support") in texts
    assert svg.num(float("nan")) == svg.DASH and svg.num(None) == svg.DASH
    assert svg.num(2.5e-5) == "0.000025" and svg.num(-0.5, sign=True) == "-0.5000" and svg.num(1234567) == "1,234,567"
    # both ends of an interval in fixed notation, to the same decimals (the demo had [+5.293e-04, +0.0040])
    assert svg.interval(5.293e-4, 0.0040, sign=True) == "[+0.00053, +0.00400]"


def test_under_support_slice_is_greyed_and_others_keep_model_colours():
    texts = _svg_texts(render_html(sample_report()))
    muted = [t for fill, t in texts if fill == svg.MUTED]
    assert muted and all("n=45 under support" in t for t in muted)
    assert len(muted) == 2 * 4  # both models, every charted metric
    coloured = [t for fill, t in texts if fill in svg.MODEL_COLOURS[:2]]
    assert len(coloured) == 2 * 4 * 3 and not any("under support" in t for t in coloured)


def test_every_string_is_escaped():
    rep = sample_report()
    rep["run_id"] = 'r"><img src=x onerror=alert(1)>'
    rep["drift"]["evidently_html"] = 'a" onclick="x'
    rep["gates"][0]["reason"] = "<i>ok</i> & done"
    page = render_html(rep)
    parse(page)
    assert "<b>" not in page and "<img" not in page and "<i>" not in page and 'onclick="x' not in page
    assert "segment=&lt;b&gt;" in page and "&lt;i&gt;ok&lt;/i&gt; &amp; done" in page
    assert '<a href="a&quot; onclick=&quot;x">' in page


def test_same_dict_gives_byte_identical_html_and_the_json_twin_renders_the_same():
    rep = sample_report()
    first = render_html(rep)
    assert render_html(copy.deepcopy(rep)) == first
    assert render_html(json.loads(report_json(rep))) == first
    assert rep == sample_report()  # rendering does not touch its input


def test_delta_reading_follows_each_metrics_direction():
    assert reading("roc_auc", 0.01, 0.005, 0.02) == "better"
    assert reading("roc_auc", -0.02, -0.03, -0.01) == "worse"
    assert reading("log_loss", -0.004, -0.007, -0.001) == "better"  # lower is better
    assert reading("rmse", 0.3, 0.1, 0.5) == "worse"
    assert reading("recall@top5%", 0.02, 0.01, 0.03) == "better"
    assert reading("base_rate", 0.01, 0.005, 0.02) == "changed"
    assert reading("brier", 0.001, -0.002, 0.004) == "no clear difference"
    assert reading("ece", None, None, None) == "undefined"
    page = render_html(sample_report())
    got = [(m, sl, r) for m, sl, r in delta_rows(page)]
    # worst slice first within each metric; the gated metric (roc_auc) before the ungated one
    assert got == [
        ("roc_auc", "segment=enterprise", "worse"), ("roc_auc", "segment=smb & channel=app", "no clear difference"),
        ("roc_auc", "overall", "better"), ("log_loss", "segment=<b>", "no clear difference"),
        ("log_loss", "overall", "better")]


def delta_rows(page: str) -> list[tuple[str, str, str]]:
    """(metric, slice, reading) of the per-slice delta tables in page order, as a browser shows them."""
    part = page[page.index('id="deltas"'):page.index('id="slices"')]
    out, metric = [], None
    for m in re.finditer(r'<h4 id="delta-[^"]+">([^ :<]+)|<summary>([^ :<]+)|<tr[^>]*><td>([^<]+)</td><td class="n">'
                         r'.*?<span style="color:[^"]+">([^<]+)</span></td></tr>', part):
        if m.group(1) or m.group(2):
            metric = html.unescape(m.group(1) or m.group(2))
        else:
            out.append((metric, html.unescape(m.group(3)), m.group(4)))
    return out


def test_verdict_pass_and_no_gates():
    rep = sample_report()
    for g in rep["gates"]:
        g["passed"] = True
    rep["verdict"] = "pass"
    assert '<div class="verdict verdict-pass">Verdict: PASS — 0 of 3 gate(s) failed</div>' in render_html(rep)
    rep["gates"], rep["verdict"] = [], "no gates"
    page = render_html(rep)
    assert '<div class="verdict verdict-other">Verdict: NO GATES</div>' in page and "No gates configured" in page


def test_regression_report_has_no_calibration_sections():
    rep = sample_report()
    rep.update(task="regression", reliability={}, score_hist={}, challenger=None, champion=None, deltas=[],
               immature=[], drift={"psi": [], "evidently_html": None})
    rep["metrics"] = [dict(r, metric={"roc_auc": "mae", "log_loss": "rmse", "ece": "r2"}.get(r["metric"], r["metric"]))
                      for r in rep["metrics"] if r["metric"] != "precision@0.5"]
    del rep["reliability"]
    page = render_html(rep)
    parse(page)
    assert 'id="reliability"' not in page and 'id="scores"' not in page
    assert "mae (lower is better)" in page and "r2 (higher is better)" in page
    assert "No challenger in this run" in page and "every row of the window had its label" in page
    assert "No PSI computed" in page and "Evidently" not in page


def test_write_report_local_folder(tmp_path):
    rep = sample_report()
    rep["metrics"][0]["ci_low"] = float("nan")  # undefined → null: report.json stays strict JSON
    json_path, html_path = write_report(rep, str(tmp_path / "reports" / "run1"))
    assert (json_path, html_path) == (f"{tmp_path}/reports/run1/report.json", f"{tmp_path}/reports/run1/report.html")
    text = (tmp_path / "reports" / "run1" / "report.json").read_text(encoding="utf-8")
    back = json.loads(text)
    assert back["metrics"][0]["ci_low"] is None and "NaN" not in text
    assert back["gates"] == rep["gates"] and back["drift"] == rep["drift"]
    assert text == json.dumps(back, indent=2, sort_keys=True) + "\n"  # keys sorted
    html_text = (tmp_path / "reports" / "run1" / "report.html").read_text(encoding="utf-8")
    assert html_text == render_html(rep) and "—" in html_text
    assert math.isnan(rep["metrics"][0]["ci_low"])  # the caller's dict is left as it was


def test_write_report_on_an_object_store_url(s3_server, tmp_path, monkeypatch):
    """On moto's S3 server (the same delta-rs object-store handler as s3:// in production): both files land under the
    URL, read back with plain HTTP GETs to the server, independent of the code that wrote them."""
    import urllib.request
    import uuid

    import s3

    monkeypatch.chdir(tmp_path)
    rep = sample_report()
    prefix = f"report-{uuid.uuid4().hex[:8]}/lake/_reports/evaluate/run1"
    url = f"s3://{s3.BUCKET}/{prefix}"
    json_path, html_path = write_report(rep, url + "/", s3.storage_options(s3_server.endpoint))
    assert (json_path, html_path) == (f"{url}/report.json", f"{url}/report.html")
    assert list(tmp_path.iterdir()) == []  # nothing written locally

    def get(name: str) -> str:
        with urllib.request.urlopen(f"{s3_server.endpoint}/{s3.BUCKET}/{prefix}/{name}", timeout=30) as r:
            return r.read().decode("utf-8")

    text = get("report.json")
    assert json.loads(text) == json.loads(report_json(rep)) and text == report_json(rep)
    assert json.loads(text)["run_id"] == rep["run_id"]
    assert get("report.html") == render_html(rep)


def test_write_report_on_a_file_url(tmp_path):
    json_path, _ = write_report(sample_report(), f"file://{tmp_path}/run1")
    assert json_path == f"{tmp_path}/run1/report.json" and json.loads((tmp_path / "run1" / "report.json").read_text())


def test_malformed_histogram_is_refused_with_a_clear_message():
    rep = sample_report()
    rep["score_hist"][CHAMP]["positive"] = rep["score_hist"][CHAMP]["positive"][:-1]
    with pytest.raises(ValueError, match="19 counts for 21 edges"):
        render_html(rep)


def test_an_empty_window_still_renders_its_failed_verdict():
    rep = sample_report()
    rep.update(metrics=[], deltas=[], reliability={}, score_hist={}, verdict="fail",
               gates=[{"gate": "window", "model": CHALL, "slice": "overall", "metric": "support", "threshold": 1,
                       "value": 0, "passed": False, "reason": "the window has no matured rows"}])
    page = render_html(rep)
    parse(page)
    assert "Verdict: FAIL — 1 of 1 gate(s) failed" in page and "the window has no matured rows" in page
    assert "<svg" not in page


def test_what_changed_sits_under_the_banner_and_calls_out_ungated_regressions():
    rep = sample_report()
    rep["deltas"] += [dict(_row(CHALL, SLICES[k], "ece", v, v - 0.002, v + 0.003), baseline=CHAMP)
                      for k, v in ((0, 0.004), (1, 0.011), (2, -0.0005))]
    page = render_html(rep)
    top = page[page.index('<div class="verdict'):page.index('id="gates"')]
    rows = {html.unescape(m): (b, w, u, c, n, worst) for m, b, w, u, c, n, worst in re.findall(
        r"<tr[^>]*><td>([a-z_@.0-9]+) [↑↓]</td><td>.*?</td><td class=\"n\">(?:<span[^>]*>)?(\d+)(?:</span>)?</td>"
        r"<td class=\"n\">(?:<span[^>]*>)?(\d+)(?:</span>)?</td><td class=\"n\">(\d+)</td><td class=\"n\">(\d+)</td>"
        r"<td class=\"n\">(\d+)</td><td>([^<]*)</td></tr>", top)}
    # counted from the deltas above: roc_auc better/worse/unclear 1/1/1; ece worse in overall and enterprise
    assert rows["roc_auc"][:5] == ("1", "1", "1", "0", "3") and rows["log_loss"][:5] == ("1", "0", "1", "0", "2")
    assert rows["ece"][:5] == ("0", "2", "1", "0", "3")
    assert html.unescape(rows["ece"][5]) == "segment=enterprise +0.0110, overall +0.0040"  # worst first
    assert list(rows) == ["roc_auc", "ece", "log_loss"]  # regressions first, the gated one before the ungated
    callout = re.search(r'<div class="callout">(.*?)</div>', top).group(1)
    assert "<strong>ece</strong> worse in 2 of 3 slices (worst: segment=enterprise +0.0110)" in callout
    assert "roc_auc" not in callout


def test_promotion_outcome_is_in_the_banner():
    rep = sample_report()
    promo = {"requested": True, "model": "lakescore-demo-xgb", "alias": "champion", "from_version": 1,
             "to_version": 2}
    for outcome, line in [
            ("promoted", "Promoted: lakescore-demo-xgb@champion moved from version 1 to version 2."),
            ("not attempted", "Not promoted: the verdict is not PASS, so lakescore-demo-xgb@champion still names "
                              "version 1."),
            ("refused", "Not promoted: the alias moved")]:
        rep["promotion"] = dict(promo, outcome=outcome, reason="the alias moved")
        page = render_html(rep)
        assert page.index(html.escape(line)) < page.index('id="changed"'), outcome
    rep["promotion"] = dict(promo, requested=False, outcome="not requested")
    assert "Not promoted: gates.promote is false" in render_html(rep)


def test_report_modules_are_small_and_say_what_they_render():
    """The project's ~400-line rule on the report (report.py alone was 426 lines before its split by section):
    each report module stays under 400 lines and opens with a docstring."""
    import ast
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "engine" / "evaluation"
    modules = sorted(folder.glob("report*.py"))
    assert modules
    for path in modules:
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) < 400, f"{path.name}: {len(text.splitlines())} lines"
        assert ast.get_docstring(ast.parse(text)), f"{path.name} has no module docstring"
