"""The backtest report: a self-contained, escaped, deterministic HTML page from the report dict, and its JSON twin."""
from __future__ import annotations

import copy
import datetime as dt
import html
import json
import re
import statistics

from backtests.report import render_html, write_report
from html_check import assert_self_contained, parse

BASE = "baseline:base_rate"
HOSTILE = 'segment=<script>alert("x")</script>'
CUTOFFS = ["2026-02-01", "2026-02-08", "2026-02-15"]
# (slice, columns, values, support per fold); segment=ent is under the minimum support in fold 2
SLICES = [("overall", "", "", 4000), ("segment=smb", "segment", "smb", 2900), ("segment=ent", "segment", "ent", 1100),
          (HOSTILE, "segment", '<script>alert("x")</script>', 30)]
# headline roc_auc per (fold, model); the hostile slice's is undefined in fold 1
AUC = {(0, "recipe"): 0.81234, (1, "recipe"): 0.79871, (2, "recipe"): 0.82519,
       (0, BASE): 0.5, (1, BASE): 0.5, (2, BASE): 0.5}


def _day(s: str, k: int) -> str:
    return (dt.date.fromisoformat(s) + dt.timedelta(days=k)).isoformat()


def _metric(model, sl, metric, value, half, status="ok"):
    name, cols, vals, support = sl
    lo, hi = (None, None) if value is None or half is None else (value - half, value + half)
    return {"model": model, "slice": name, "slice_columns": cols, "slice_values": vals, "metric": metric,
            "value": value, "ci_low": lo, "ci_high": hi, "support": support, "status": status}


def sample_report() -> dict:
    plan = [{"index": i, "cutoff": c, "train_start": "2026-01-01", "train_end": _day(c, -3), "test_start": c,
             "test_end": _day(c, 6)} for i, c in enumerate(CUTOFFS)]
    folds = []
    for i, p in enumerate(plan):
        trained_on = i - i % 2  # refit every 2 folds: fold 1 reuses fold 0's model
        metrics, deltas = [], []
        for model in ("recipe", BASE):
            for j, sl in enumerate(SLICES):
                status = "under_support" if sl[3] < 100 or (sl[0] == "segment=ent" and i == 2) else "ok"
                auc = AUC[(i, model)] - 0.01 * j if model == "recipe" else 0.5
                if sl[0] == HOSTILE and i == 1:
                    metrics.append(_metric(model, sl, "roc_auc", None, None, "undefined"))
                else:
                    metrics.append(_metric(model, sl, "roc_auc", auc, 0.012, status))
                ll = (0.31 if model == "recipe" else 0.36) + 0.01 * i + 0.02 * j
                metrics.append(_metric(model, sl, "log_loss", ll, 0.006, status))
                metrics.append(_metric(model, sl, "brier", ll / 3, 0.002, status))
        for j, sl in enumerate(SLICES[:3]):
            d = AUC[(i, "recipe")] - 0.01 * j - 0.5
            deltas.append(dict(_metric("recipe", sl, "roc_auc", d, 0.015), baseline=BASE))
        deltas.append(dict(_metric("recipe", SLICES[0], "log_loss", -0.05, 0.004), baseline=BASE))
        guard = [{"fold": i, "check": chk, "column": col, "rows": 0, "passed": True,
                  "message": f"fold {i}: all rows fine for {chk}"}
                 for chk, col in (("train_event_time", "event_ts"), ("train_label_known", "label_ts"),
                                  ("test_event_time", "event_ts"))]
        folds.append({"fold": i, "trained_on": trained_on, "seed": 1000 + trained_on, "cutoff": p["cutoff"],
                      "train_start": plan[trained_on]["train_start"], "train_end": plan[trained_on]["train_end"],
                      "test_start": p["test_start"], "test_end": p["test_end"], "train_rows": 31000 + 7000 * trained_on,
                      "train_rows_label_unknown_at_cutoff": 1234 + i, "train_base_rate": 0.1187,
                      "test_rows": 4000, "test_rows_unlabelled": 57 + i, "metrics": metrics, "deltas": deltas,
                      "reliability": [{"bin_low": k / 10, "bin_high": (k + 1) / 10, "count": 900 - 80 * k,
                                       "mean_score": k / 10 + 0.05, "frac_positive": k / 10 + 0.04}
                                      for k in range(10)],
                      "guard": guard, "run_id": f"run-{i}"})
    by: dict[tuple, list[float]] = {}
    for f in folds:
        for m in f["metrics"]:
            if m["value"] is not None:
                by.setdefault((m["model"], m["slice"], m["metric"]), []).append(m["value"])
    summary = [{"model": k[0], "slice": k[1], "metric": k[2], "mean": statistics.fmean(v), "std": statistics.stdev(v),
                "min": min(v), "max": max(v), "folds": len(v)} for k, v in sorted(by.items())]
    return {"backtest_id": "bt-7c1e2a", "run_id": "run-2", "config_hash": "sha256:ab12cd",
            "created_at": "2026-03-01T06:00:00+00:00", "versions": {"features": 14, "labels": 9},
            "recipe": {"kind": "xgboost", "params": {"max_depth": 4, "n_estimators": 60},
                       "preprocessing": {"features": ["f*"], "categorical": ["segment"], "clip": 8.0}}, "baseline": BASE, "refit_every": 2,
            "headline": "roc_auc", "task": "binary", "confidence": 0.95, "plan": plan, "folds": folds,
            "summary": summary, "resumed": [0], "failed": []}


def test_page_is_well_formed_and_self_contained():
    page = render_html(sample_report())
    assert_self_contained(page)
    # timeline + overall + 3 slices + 3 reliability charts + 12 delta bars
    assert page.count("<svg") == 1 + 1 + 3 + 3 + 12


def test_header_says_which_model_scored_which_fold():
    page = render_html(sample_report())
    for text in ["bt-7c1e2a", "sha256:ab12cd", "features v14, labels v9", "xgboost (max_depth=4, n_estimators=60)",
                 BASE, "retrained every 2 folds; the folds in between reuse the last model", "95.0%"]:
        assert html.escape(text) in page, text
    assert "fold 1 (cutoff 2026-02-08) scored by the model trained for fold 0, seed 1000" in page
    assert "fold 2 (cutoff 2026-02-15) scored by its own model, seed 1002" in page
    assert "fold 1 (model of fold 0)</text>" in page  # the timeline row says so too


def test_timeline_draws_each_fold_with_its_cutoff_and_date_axis():
    rep = sample_report()
    page = render_html(rep)
    timeline = page[page.index('<h2 id="plan">'):page.index('<h2 id="headline">')]
    labels = re.findall(r'text-anchor="middle" fill="#555">(\d{4}-\d\d-\d\d)</text>', timeline)
    assert labels and labels == sorted(labels) and "2026-01-01" <= labels[0] and labels[-1] <= "2026-02-22"
    for p in rep["plan"]:
        assert f"cutoff {p['cutoff']}" in timeline
    # each fold: training, gap and test bars, and a cutoff tick; the cutoffs move right fold by fold
    assert timeline.count("<rect") == 3 + 3 * 3
    ticks = [float(x) for x in re.findall(r'<line x1="([\d.]+)" y1="[\d.]+" x2="\1" y2="[\d.]+" stroke="#000" '
                                          r'stroke-width="2"/></g>', timeline)]
    assert len(ticks) == 3 and ticks == sorted(ticks) and len(set(ticks)) == 3
    # the second cutoff sits one week after the first on the same day scale as the bars
    first_bar = float(re.search(r'<rect x="([\d.]+)" y="[\d.]+" width', timeline).group(1))
    assert abs((ticks[1] - ticks[0]) / (ticks[0] - first_bar) - 7 / 31) < 0.002  # 2026-01-01 → 02-01 is 31 days


def test_headline_values_and_summary_are_formatted_per_fold():
    rep = sample_report()
    page = render_html(rep)
    for f in rep["folds"]:
        auc = AUC[(f["fold"], "recipe")]
        assert f"{f['fold']}</td><td>{f['cutoff']}</td><td class=\"n\">{auc:.4f}</td>" \
               f"<td class=\"n\">[{auc - 0.012:.4f}, {auc + 0.012:.4f}]</td><td class=\"n\">0.5000</td>" in page
        assert f["cutoff"] in page
    vals = [AUC[(i, "recipe")] for i in range(3)]
    row = (f"<td>roc_auc</td><td>overall</td><td>recipe</td><td class=\"n\">{statistics.fmean(vals):.4f} ± "
           f"{statistics.stdev(vals):.4f}</td><td class=\"n\">{min(vals):.4f}</td><td class=\"n\">{max(vals):.4f}</td>"
           f"<td class=\"n\">3</td>")
    assert row in page
    assert "<td>log_loss</td><td>overall</td><td>recipe</td>" in page and "<td>brier</td>" in page
    # the hostile slice's undefined AUC: a dash in the summary (2 folds only) and no dot in fold 1
    assert f"<td>roc_auc</td><td>{html.escape(HOSTILE)}</td><td>recipe</td>" in page
    hostile = [r for r in rep["summary"] if r["slice"] == HOSTILE and r["metric"] == "roc_auc"]
    assert hostile and all(r["folds"] == 2 for r in hostile)
    # deltas with their signs and paired intervals; under-support rows greyed
    d = AUC[(0, "recipe")] - 0.5
    assert f'<td class="n">+{d:.4f}</td><td class="n">[+{d - 0.015:.4f}, +{d + 0.015:.4f}]</td>' in page
    assert '<td class="n">-0.0500</td>' in page and ">better</span>" in page


def test_sizes_guard_and_resume_sections():
    rep = sample_report()
    page = render_html(rep)
    assert '<td class="n">45,000</td><td class="n">1,236</td><td class="n">0.1187</td>' in page  # fold 2
    assert '<td class="n">4,000</td><td class="n">59</td>' in page
    assert '<p class="good">All 9 leakage-guard checks passed on 3 fold(s).</p>' in page
    assert "Resumed from an earlier run: fold 0." in page and '<p class="good">No fold failed.</p>' in page
    rep["folds"][1]["guard"][1].update(passed=False, rows=12, message="fold 1: 12 training label(s) after cutoff")
    rep["failed"] = ["fold(s) 2: XGBoostError: bad <thing>"]
    page = render_html(rep)
    parse(page)
    assert '<p class="bad">1 of 9 leakage-guard check(s) failed.</p>' in page
    assert '<tr class="fail"><td>1</td><td>train_label_known</td><td>label_ts</td><td class="n">12</td>' in page
    assert "XGBoostError: bad &lt;thing&gt;" in page and "banner-bad" in page


def test_every_string_is_escaped():
    rep = sample_report()
    rep["backtest_id"] = 'b"><img src=x onerror=alert(1)>'
    rep["recipe"]["params"]["note"] = "<i>x</i>"
    page = render_html(rep)
    parse(page)
    assert "<img" not in page and "<i>" not in page and "<script" not in page.lower()
    assert html.escape(HOSTILE) in page and html.escape(rep["backtest_id"]) in page


def test_same_dict_gives_byte_identical_html_and_the_json_twin_renders_the_same(tmp_path):
    rep = sample_report()
    first = render_html(rep)
    assert render_html(copy.deepcopy(rep)) == first
    assert rep == sample_report()  # rendering does not touch its input
    json_path, html_path = write_report(rep, str(tmp_path / "bt"))
    assert (json_path, html_path) == (f"{tmp_path}/bt/report.json", f"{tmp_path}/bt/report.html")
    assert open(html_path, encoding="utf-8").read() == first
    assert render_html(json.load(open(json_path, encoding="utf-8"))) == first


def test_undefined_values_leave_gaps_and_under_support_dots_are_hollow():
    page = render_html(sample_report())
    fig = page[page.index(f"<figcaption>{html.escape(HOSTILE)}</figcaption>"):]
    fig = fig[:fig.index("</figure>")]
    dots = re.findall(r'<circle [^>]*fill="([^"]+)" stroke="([^"]+)"><title>fold (\d)', fig)
    assert sorted(d[2] for d in dots) == ["0", "0", "2", "2"]  # fold 1 is undefined for both models: no dot
    assert {d[0] for d in dots} == {"#fff"}  # support 30: under support, hollow


def test_regression_backtest_with_one_fold_and_no_calibration_renders():
    rep = sample_report()
    rep.update(task="regression", headline="rmse", refit_every=0, plan=rep["plan"][:1], folds=rep["folds"][:1],
               summary=[], resumed=[])
    f = rep["folds"][0]
    f["reliability"] = []
    f["metrics"] = [_metric(m, SLICES[0], "rmse", v, 0.05) for m, v in (("recipe", 1.25), (BASE, None))]
    f["deltas"] = []
    page = render_html(rep)
    parse(page)
    assert 'id="calibration"' not in page and "trained once, on the first fold" in page
    assert '<td class="n">1.2500</td><td class="n">[1.2000, 1.3000]</td><td class="n">—</td>' in page
    assert "rmse (lower is better)" in page and "No paired deltas recorded." in page
    assert "No fold was resumed" in page
