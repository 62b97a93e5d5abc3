"""The evaluation report: one self-contained HTML page and its JSON twin, rendered from the report dict.

The page opens offline: inline CSS and inline SVG drawn here, no script, no external URL. Sections: the run
(pinned versions, window, as-of) with the gate verdict and gate table; support per slice; each metric per slice
and model with its interval; reliability diagrams and score distributions by label (when the dict has them, i.e.
binary tasks); challenger minus champion with paired intervals; rows left out (immature labels, unmatched keys);
drift (PSI per column and a relative link to the Evidently page). The dict format is the "Report dict" of the
evaluation interfaces; it carries aggregates only, never row values, so no PII can reach the page. Rendering
reads no clock and iterates in the dict's order: the same dict gives byte-identical HTML.
"""
from __future__ import annotations

import json
import numbers

from engine.evaluation.summary import direction, gated_metrics, reading, summarise, ungated_regressions, worst_first
from engine.evaluation.svg import (
    html_page,
    DASH, MODEL_COLOURS, MUTED, IntervalRow, count, curve_chart, esc, finite, histogram_chart, interval,
    interval_chart, html_table, mini_interval, num, reliability_chart,
)
from engine.lake.reports import folder_target, write_report_files

COUNT_METRICS = frozenset({"support", "positives"})  # shown in the support table, not charted
POSITIVE, NEGATIVE = "#c62828", "#1f77b4"
READING_COLOURS = {"better": "#1a7f37", "worse": "#c62828", "changed": "#1f5fbf", "no clear difference": "#8a8a8a",
                   "undefined": "#8a8a8a"}
STATUS_CLASSES = {"ok": "good", "stable": "good", "warn": "warn", "warning": "warn", "moderate": "warn",
                  "drift": "bad", "alert": "bad", "fail": "bad", "high": "bad"}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:0 auto;max-width:1180px;
padding:0 24px 48px;line-height:1.4}
h1{margin:24px 0 8px}h2{margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{margin:18px 0 6px}
nav a{margin-right:14px}code{background:#f4f4f4;padding:0 3px}
.verdict{font-size:1.6em;font-weight:700;padding:12px 18px;border-radius:6px;margin:12px 0;color:#fff}
.verdict-pass{background:#1a7f37}.verdict-fail{background:#c62828}.verdict-other{background:#6d6d6d}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:8px 0}dl.facts dt{color:#555}
dl.facts dd{margin:0}
table{border-collapse:collapse;margin:6px 0 12px;font-size:0.92em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:middle}th{background:#f6f6f6}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.fail td{background:#fdecea}tr.muted td{color:#9e9e9e}
.good{color:#1a7f37}.warn{color:#b26a00}.bad{color:#c62828;font-weight:600}
.note{color:#555;font-size:0.92em}.swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
figure{margin:10px 0 18px}figcaption{font-weight:600;margin-bottom:4px}.row{display:flex;flex-wrap:wrap;gap:24px}
.promo{font-weight:600;margin:4px 0 10px}.callout{border-left:5px solid #c62828;background:#fdecea;padding:8px 12px;
margin:10px 0}.callout ul{margin:4px 0 0;padding-left:20px}.nw{white-space:nowrap}details{margin:6px 0}details>summary{cursor:pointer;font-weight:600;padding:2px 0}
"""


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


def _under(row: dict, min_support) -> bool:
    """Greyed: flagged under support, or an undefined metric on a slice below the minimum support."""
    return row["status"] == "under_support" or (finite(min_support) and row["support"] < min_support)


def _slices(metrics: list[dict]) -> list[str]:
    seen = list(dict.fromkeys(r["slice"] for r in metrics))
    return (["overall"] if "overall" in seen else []) + [s for s in seen if s != "overall"]


def _banner(rep: dict) -> str:
    verdict = str(rep["verdict"])
    gates = rep.get("gates") or []
    failed = sum(not g["passed"] for g in gates)
    cls = {"pass": "verdict-pass", "fail": "verdict-fail"}.get(verdict, "verdict-other")
    detail = f" — {failed} of {len(gates)} gate(s) failed" if gates else ""
    return f'<div class="verdict {cls}">Verdict: {esc(verdict.upper())}{esc(detail)}</div>'


def promotion_line(promo: dict | None) -> str:
    """The promotion outcome in one sentence ("" when the run says nothing about it)."""
    if not promo:
        return ""
    target = f"{promo.get('model', '')}@{promo.get('alias', '')}"
    outcome = promo.get("outcome")
    if outcome == "promoted":
        return (f"Promoted: {target} moved from version {promo.get('from_version')} to version "
                f"{promo.get('to_version')}.")
    if outcome == "refused":
        return f"Not promoted: {promo.get('reason', '')}"
    if outcome == "pending":
        return (f"Promotion of {target} from version {promo.get('from_version')} to version {promo.get('to_version')} "
                "was due after this page was written; the run's summary line says whether it happened.")
    if not promo.get("requested"):
        return "Not promoted: gates.promote is false, no alias was moved."
    return f"Not promoted: the verdict is not PASS, so {target} still names version {promo.get('from_version')}."


def _answer(rep: dict) -> str:
    """What changed: per metric, the challenger's better / worse / unclear slices and its worst regressions."""
    summary = summarise(rep.get("deltas") or [], rep.get("gates") or [])
    if not summary:
        who = "no challenger in this run" if not rep.get("challenger") else "no paired deltas in this run"
        return f'<h2 id="changed">What changed</h2><p class="note">Nothing to compare: {esc(who)}.</p>'
    out = ['<h2 id="changed">What changed: challenger vs champion</h2>']
    ungated = ungated_regressions(summary)
    if ungated:
        items = "".join(f"<li><strong>{esc(s['metric'])}</strong> worse in {s['worse']} of {s['slices']} slices "
                        f"(worst: {esc(s['worst'][0]['slice'])} {num(s['worst'][0]['value'], sign=True)})</li>"
                        for s in ungated)
        out.append(f'<div class="callout"><strong>Ungated regressions</strong>: the challenger is worse on metrics '
                   f"that no gate checks, so the verdict does not reflect them:<ul>{items}</ul></div>")
    rows = []
    for s in summary:
        worst = ", ".join(f"{w['slice']} {num(w['value'], sign=True)}" for w in s["worst"]) or DASH
        gate = "gated" if s["gated"] else ('<span class="bad nw">not gated</span>' if s["worse"] else "not gated")
        d = direction(s["metric"])
        hint = " ↑" if d > 0 else " ↓" if d < 0 else ""
        rows.append(("fail" if s["worse"] else "", [
            esc(s["metric"]) + hint, gate, f'<span class="good">{s["better"]}</span>' if s["better"] else "0",
            f'<span class="bad">{s["worse"]}</span>' if s["worse"] else "0", str(s["no_clear_difference"]),
            str(s["changed"] + s["undefined"]), str(s["slices"]), esc(worst)]))
    head = ["metric", "gate", "better", "worse", "no clear difference", "changed / undefined", "slices",
            "worst regressions (Δ challenger − champion)"]
    out.append('<p class="note">Slices where the paired interval excludes 0 count as better or worse; ↑ higher is '
               "better, ↓ lower is better; metrics with a regression first.</p>")
    out.append(html_table(head, rows, {2, 3, 4, 5, 6}))
    return "".join(out)


def _header(rep: dict) -> str:
    promo = promotion_line(rep.get("promotion"))
    return (f"<h1>Evaluation report</h1>{_banner(rep)}"
            + (f'<p class="promo">{esc(promo)}</p>' if promo else "") + _answer(rep))


def _run(rep: dict) -> str:
    win, ver = rep["window"], rep["versions"]
    days = len(win.get("days") or [])
    facts = [
        ("run id", rep["run_id"]), ("config hash", rep["config_hash"]), ("created at", rep.get("created_at") or DASH),
        ("task", rep["task"]), ("window", f"{win['start']} → {win['end']} ({days} day(s))"), ("as-of", rep["as_of"]),
        ("pinned versions", f"scores v{ver['scores']}, labels v{ver['labels']}, features v{ver['features']}"),
        ("models", ", ".join(rep["models"])), ("champion", rep.get("champion") or DASH),
        ("challenger", rep.get("challenger") or DASH), ("minimum support", count(rep.get("min_support"))),
        ("interval", f"{num(rep.get('confidence', 0) * 100, 1)}% bootstrap, {count(rep.get('bootstrap'))} replicates"),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return f'<h2 id="run">The run</h2><dl class="facts">{dl}</dl>'


LONG = 12  # a table with more rows than this is folded under a title that says what it holds


def _fold(title: str, body: str) -> str:
    """`body` folded in a <details> under `title` (the page stays complete: a click opens it, no script)."""
    return f"<details><summary>{esc(title)}</summary>{body}</details>"


def _gates(rep: dict) -> str:
    gates = rep.get("gates") or []
    if not gates:
        return '<h2 id="gates">Gates</h2><p class="note">No gates configured: nothing was checked for promotion.</p>'
    rows = [("" if g["passed"] else "fail",
             [esc(g["gate"]), esc(g["model"]), esc(g["slice"]), esc(g["metric"]), num(g.get("threshold")),
              num(g.get("value")), "yes" if g["passed"] else '<span class="bad">no</span>', esc(g.get("reason", ""))])
            for g in gates]
    head = ["gate", "model", "slice", "metric", "threshold", "value", "passed", "reason"]
    return f'<h2 id="gates">Gates</h2>{html_table(head, rows, {4, 5})}'


def _legend(models: list[str], colours: dict[str, str]) -> str:
    items = "".join(f'<span class="swatch" style="background:{colours[m]}"></span>{esc(m)}' for m in models)
    return (f'<p class="note">{items}<span class="swatch" style="background:{MUTED}"></span>'
            f"under minimum support (greyed, still reported)</p>")


def _support(rep: dict, models: list[str]) -> str:
    cells: dict[tuple[str, str], tuple[int, bool]] = {}
    for r in rep["metrics"]:
        key = (r["slice"], r["model"])
        sup, under = cells.get(key, (r["support"], False))
        cells[key] = (sup, under or _under(r, rep.get("min_support")))
    rows = []
    for s in _slices(rep["metrics"]):
        vals = [cells.get((s, m)) for m in models]
        under = any(v and v[1] for v in vals)
        rows.append(("muted" if under else "", [esc(s)] + [
            DASH if v is None else count(v[0]) + (" (under support)" if v[1] else "") for v in vals]))
    note = (f'<p class="note">A slice with fewer than {esc(count(rep.get("min_support")))} rows is reported '
            f"with its support and greyed, never dropped.</p>")
    table = html_table(["slice", *models], rows, set(range(1, len(models) + 1)))
    return (f'<h2 id="slices">Slices and support</h2>{note}'
            f'{_fold(f"support of {len(rows)} slices", table) if len(rows) > LONG else table}')


def _metrics(rep: dict, models: list[str], colours: dict[str, str]) -> str:
    by_key = {(r["metric"], r["slice"], r["model"]): r for r in rep["metrics"]}
    names = [m for m in dict.fromkeys(r["metric"] for r in rep["metrics"]) if m not in COUNT_METRICS]
    gated = gated_metrics(rep.get("gates") or [])
    names = [m for m in names if m in gated] + [m for m in names if m not in gated]
    out = ['<h2 id="metrics">Metrics by slice</h2>', _legend(models, colours),
           '<p class="note">Gated metrics first; the others are folded: click a title to open it.</p>']
    for metric in names:
        rows = []
        for s in _slices(rep["metrics"]):
            first = True
            for m in models:
                r = by_key.get((metric, s, m))
                if r is None:
                    continue
                under = _under(r, rep.get("min_support"))
                note = f"{num(r['value'])} {interval(r['ci_low'], r['ci_high'])}".rstrip()
                if under:
                    note += f"  n={count(r['support'])} under support"
                rows.append(IntervalRow(label=s if first else "", value=r["value"], low=r["ci_low"],
                                        high=r["ci_high"], colour=MUTED if under else colours[m], note=note,
                                        title=f"{s} · {m}: {note}"))
                first = False
        d = direction(metric)
        hint = " (higher is better)" if d > 0 else " (lower is better)" if d < 0 else ""
        fig = f"<figure><figcaption>{esc(metric)}{esc(hint)}</figcaption>{interval_chart(rows)}</figure>"
        out.append(fig if metric in gated else _fold(f"{metric}{hint}: {len(rows)} rows (not gated)", fig))
    return "".join(out)


def _reliability(rep: dict, models: list[str], colours: dict[str, str]) -> str:
    rel = rep.get("reliability") or {}
    figs = []
    for m in [m for m in models if rel.get(m)]:
        head = ["bin", "rows", "mean score", "fraction positive"]
        rows = [("", [f"{num(b['bin_low'])}–{num(b['bin_high'])}", count(b["count"]), num(b["mean_score"]),
                      num(b["frac_positive"])]) for b in rel[m]]
        figs.append(f"<figure><figcaption>{esc(m)}</figcaption>{reliability_chart(rel[m], colours[m])}"
                    f"<details><summary>bins</summary>{html_table(head, rows, {1, 2, 3})}</details></figure>")
    if not figs:
        return ""
    note = ('<p class="note">Each dot is a score bin (area by rows): a calibrated model lies on the dashed '
            "diagonal.</p>")
    return f'<h2 id="reliability">Reliability</h2>{note}<div class="row">{"".join(figs)}</div>'


def _score_hist(rep: dict, models: list[str]) -> str:
    hist = rep.get("score_hist") or {}
    figs = []
    for m in [m for m in models if hist.get(m)]:
        h = hist[m]
        series = [("positive", h["positive"], POSITIVE), ("negative", h["negative"], NEGATIVE)]
        chart = histogram_chart(h["edges"], series)
        figs.append(f"<figure><figcaption>{esc(m)}</figcaption>{chart}</figure>")
    if not figs:
        return ""
    note = '<p class="note">Each label\'s rows as a share of that label, so a rare class stays visible.</p>'
    return f'<h2 id="scores">Score distributions by label</h2>{note}<div class="row">{"".join(figs)}</div>'


def _deltas(rep: dict) -> str:
    out = ['<h2 id="deltas">Challenger vs champion, per slice</h2>']
    deltas = rep.get("deltas") or []
    if not deltas:
        why = ("no paired deltas in this run" if rep.get("challenger") else
               "no challenger in this run: each model's metrics stand alone above")
        return "".join(out) + f'<p class="note">{esc(why[0].upper() + why[1:])}.</p>'
    out.append('<p class="note">Challenger − champion on the same rows, with a paired bootstrap interval, worst slice '
               "first. For log_loss, brier, ece, mae, rmse and mape lower is better, so a negative delta is an "
               'improvement. <span class="good">green</span>: better, <span class="bad">red</span>: worse '
               f'(the interval excludes 0); <span style="color:{READING_COLOURS["changed"]}">blue</span>: changed, no '
               f'preferred direction; <span style="color:{READING_COLOURS["undefined"]}">grey</span>: no clear '
               "difference (the interval holds 0). Gated metrics are open, the others folded.</p>")
    gated = gated_metrics(rep.get("gates") or [])
    by_metric = {(s["model"], s["baseline"], s["metric"]): s for s in summarise(deltas, rep.get("gates") or [])}
    for model, baseline in dict.fromkeys((r["model"], r["baseline"]) for r in deltas):
        out.append(f"<h3>{esc(model)} − {esc(baseline)}</h3>")
        group = [r for r in deltas if (r["model"], r["baseline"]) == (model, baseline)]
        metrics = [k[2] for k in by_metric if k[:2] == (model, baseline)]
        metrics = [m for m in metrics if m in gated] + [m for m in metrics if m not in gated]
        for metric in metrics:
            rows_in = worst_first([r for r in group if r["metric"] == metric])
            span = max([abs(v) for r in rows_in for v in (r["value"], r["ci_low"], r["ci_high"]) if finite(v)],
                       default=0.0)
            rows = []
            for r in rows_in:
                read = reading(metric, r["value"], r["ci_low"], r["ci_high"])
                colour = READING_COLOURS[read]
                under = _under(r, rep.get("min_support"))
                rows.append(("muted" if under else "", [
                    esc(r["slice"]), num(r["value"], sign=True), esc(interval(r["ci_low"], r["ci_high"], sign=True)),
                    mini_interval(r["value"], r["ci_low"], r["ci_high"], span * 1.1, colour),
                    count(r["support"]) + (" (under support)" if under else ""),
                    f'<span style="color:{colour}">{esc(read)}</span>']))
            head = ["slice", f"Δ {metric}", "interval", "", "support", "reading"]
            sm = by_metric[(model, baseline, metric)]
            changed = f", {sm['changed']} changed" if sm["changed"] else ""
            title = (f"{metric}{'' if metric in gated else ' (not gated)'}: {sm['worse']} worse, {sm['better']} "
                     f"better, {sm['no_clear_difference']} no clear difference{changed} of {sm['slices']} slices")
            table = html_table(head, rows, {1, 2, 4})
            out.append(f'<h4 id="delta-{esc(metric)}">{esc(title)}</h4>{table}' if metric in gated
                       else _fold(title, table))
    return "".join(out)


def _curves(rep: dict, models: list[str], colours: dict[str, str]) -> str:
    cur = rep.get("curves") or {}
    have = [m for m in models if cur.get(m)]
    if not have:
        return ""
    roc = [(m, [(p["fpr"], p["tpr"]) for p in cur[m]["points"]], colours[m]) for m in have]
    pr = [(m, [(p["tpr"], p["precision"]) for p in cur[m]["points"]], colours[m]) for m in have]
    out = ['<h2 id="curves">ROC and precision–recall</h2><p class="note">Overall slice, from the score histograms '
           "the evaluation keeps (16,384 bins: each point is exact up to rows within one bin of its threshold). "
           "The dashed diagonal is a random ranking.</p>",
           f'<div class="row"><figure><figcaption>ROC</figcaption>'
           f'{curve_chart(roc, "false positive rate", "true positive rate", diagonal=True)}</figure>'
           f'<figure><figcaption>Precision–recall</figcaption>{curve_chart(pr, "recall", "precision")}</figure></div>']
    confusion = []
    for m in have:
        for c in cur[m].get("confusion") or []:
            confusion.append(("", [esc(m), num(c["threshold"]), count(c["tp"]), count(c["fp"]), count(c["fn"]),
                                   count(c["tn"])]))
    if confusion:
        out.append("<h3>Confusion matrix at each configured threshold</h3><p class=\"note\">Predicted positive when "
                   "score ≥ threshold; overall slice.</p>" +
                   html_table(["model", "threshold", "true positives", "false positives", "false negatives",
                               "true negatives"], confusion, {1, 2, 3, 4, 5}))
    return "".join(out)


def _notes(rep: dict) -> str:
    if rep.get("task") != "binary":
        return ""
    return ('<h2 id="notes">Notes on the statistics</h2><ul class="note">'
            "<li>Intervals: a Poisson bootstrap over row buckets (a row's bucket comes from a hash of its key), the "
            "percentile interval of the replicates; deltas use the same weights for both models (paired).</li>"
            "<li>ECE: binned ECE is biased upward on a finite sample (the absolute value of a noisy difference), and "
            "its bootstrap replicates are biased again, so a plain percentile interval sits above the estimate. The "
            "report's ece is the bootstrap bias-corrected estimate (plug-in − mean bootstrap excess) with the basic "
            "bootstrap interval (plug-in − the excess's upper and lower percentiles): the estimate lies inside its "
            "interval by construction. The plug-in value is listed as ece_binned.</li></ul>")


def _excluded(rep: dict) -> str:
    out = ['<h2 id="excluded">Rows left out</h2><h3>Immature labels</h3>']
    imm = rep.get("immature") or []
    if imm:
        out.append(f'<p class="note">Rows whose label had not arrived by the as-of time ({esc(rep["as_of"])}) are '
                   "excluded, never counted as negatives.</p>")
        rows = [("", [esc(d["ds"]), count(d["rows_without_label"]), count(d["rows_label_after_as_of"])]) for d in imm]
        rows.append(("", ["<strong>total</strong>", count(sum(d["rows_without_label"] for d in imm)),
                          count(sum(d["rows_label_after_as_of"] for d in imm))]))
        out.append(html_table(["day", "rows without a label", "rows labelled after the as-of time"], rows, {1, 2}))
    else:
        out.append('<p class="note">None: every row of the window had its label by the as-of time.</p>')
    um = rep.get("unmatched") or {}
    known = [k for k in ("scores_without_features", "features_without_scores") if k in um]
    rows = [("", [esc(k.replace("_", " ")), count(um[k])]) for k in known + sorted(set(um) - set(known))]
    out.append("<h3>Unmatched rows</h3>" + (html_table(["rows", "count"], rows, {1}) if rows else
                                            '<p class="note">Not reported.</p>'))
    return "".join(out)


def _drift(rep: dict) -> str:
    drift = rep.get("drift") or {}
    out = ['<h2 id="drift">Drift</h2>']
    psi = drift.get("psi") or []
    limit = drift.get("psi_max")
    if psi:
        out.append('<p class="note">PSI, the population stability index, measures how far a column\'s distribution '
                   "moved between the reference window"
                   + (f" ({esc(drift['reference'])})" if drift.get("reference") else "")
                   + " and the evaluated window: Σ (q − p)·ln(q / p) over the reference's quantile bins (p, q: each "
                   "window's share of rows in a bin). 0 is no change; a column drifts when its PSI exceeds the "
                   "threshold. It is computed on every row of both windows, and it is the one verdict per column.</p>")
        for kind, title in (("feature", "Features"), ("score", "Model scores")):
            part = [p for p in psi if p.get("kind", "score" if str(p["column"]).startswith("score:") else "feature")
                    == kind]
            if not part:
                continue
            rows = [("fail" if p["status"] == "drift" else "", [
                esc(p["column"]), num(p["psi"]), num(p.get("threshold", limit)),
                f'<span class="{STATUS_CLASSES.get(str(p["status"]), "")}">{esc(p["status"])}</span>'])
                for p in part]
            out.append(f"<h3>{esc(title)}</h3>" + html_table(["column", "PSI", "threshold", "verdict"], rows, {1, 2}))
    else:
        out.append('<p class="note">No PSI computed in this run.</p>')
    if drift.get("evidently_html"):
        cols = drift.get("evidently_columns") or []
        out.append(f'<p><a href="{esc(drift["evidently_html"])}">Evidently data-drift page</a> '
                   f'<span class="note">(saved beside this one): the same {len(cols) or ""} feature column(s), tested '
                   "with the same PSI and threshold on a seeded sample of "
                   f"{esc(count(drift.get('sample_rows')))} rows per window, to look at the distributions; the "
                   "verdict is the table above (every row). Model scores are not on that page.</span></p>")
    return "".join(out)


def render_html(report: dict) -> str:
    """The report dict as one self-contained HTML page (no script, no external URL); deterministic. It reads
    top-down: verdict, promotion, what changed, gates, then the detail (long and ungated parts folded)."""
    rep = plain(report)
    models = list(rep["models"])
    colours = {m: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, m in enumerate(models)}
    sections = {"gates": _gates(rep), "run": _run(rep), "deltas": _deltas(rep), "slices": _support(rep, models),
                "metrics": _metrics(rep, models, colours), "curves": _curves(rep, models, colours),
                "reliability": _reliability(rep, models, colours), "scores": _score_hist(rep, models),
                "excluded": _excluded(rep), "drift": _drift(rep), "notes": _notes(rep)}
    titles = {"gates": "Gates", "run": "Run", "deltas": "Per-slice deltas", "slices": "Slices", "metrics": "Metrics",
              "curves": "ROC / PR", "reliability": "Reliability", "scores": "Score distributions",
              "excluded": "Rows left out", "drift": "Drift", "notes": "Notes"}
    return html_page(f"lakescore evaluation · run {rep['run_id']}", _header(rep), sections, titles, CSS)


def report_json(report: dict) -> str:
    """report.json's text: sorted keys, undefined values (NaN, ±inf) as null so any JSON reader takes it."""
    return json.dumps(plain(report), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_report(report: dict, folder: str, storage_options: dict | None = None) -> tuple[str, str]:
    """Write report.json and report.html into `folder` (a path, file:// or an object-store URL); their locations."""
    fs, path, shown = folder_target(folder, storage_options)
    write_report_files(fs, path, {"report.json": report_json(report), "report.html": render_html(report)})
    return f"{shown}/report.json", f"{shown}/report.html"
