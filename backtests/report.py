"""The backtest report: one self-contained HTML page and its JSON twin, rendered from the report dict that
`backtests.publish.build_report` assembles.

The page opens offline: inline CSS (the evaluation report's) and inline SVG drawn here with the evaluation
report's chart helpers, no script, no external URL. Sections: the run (ids, pinned versions, recipe, baseline,
refit policy and which model scored which fold); the fold plan as a timeline; the headline metric per fold over
time for the recipe and the baseline with interval bands, overall and per slice; a summary across folds; recipe −
baseline deltas per fold; calibration per fold; training and test sizes; the leakage guard's verdicts; resumed
and failed folds. The dict carries aggregates only, never row values. Rendering reads no clock and iterates in the
dict's order: the same dict gives byte-identical HTML.
"""
from __future__ import annotations

import datetime as dt

from engine.evaluation.report import CSS, READING_COLOURS, plain, report_json
from engine.evaluation.summary import direction, reading
from engine.evaluation.svg import (
    html_page,
    DASH, FONT, GRID, MODEL_COLOURS, Scale, axis_ticks, count, domain, esc, finite, interval, mini_interval,
    html_table, num, reliability_chart, tick_label,
)
from backtests.report_answer import RECIPE, answer, dropped, recipe_text
from engine.lake.reports import folder_target, write_report_files

SECONDARY = {"binary": ("roc_auc", "pr_auc", "log_loss", "brier", "ece"), "regression": ("rmse", "mae", "r2")}
TRAIN, GAP, TEST = "#1f77b4", "#d9d9d9", "#ff7f0e"
EXTRA_CSS = ".banner{padding:8px 14px;border-radius:6px;margin:10px 0;color:#fff;font-weight:600}" \
            ".banner-ok{background:#1a7f37}.banner-bad{background:#c62828}"


def _f(x: float) -> str:
    return f"{x:.1f}"


def _day(iso) -> int:
    """An ISO date (or timestamp) as a day number, so spans and ticks are integer days."""
    return dt.date.fromisoformat(str(iso)[:10]).toordinal()


def _iso(day: int) -> str:
    return dt.date.fromordinal(int(day)).isoformat()


def _day_ticks(lo: float, hi: float, most: int) -> list[int]:
    """Whole-day ticks inside [lo, hi], at most `most`, on a 1/2/7/14/28/… day step."""
    span = max(hi - lo, 1.0)
    step = next((s for s in (1, 2, 7, 14, 28, 56, 91, 182, 364, 728) if span / s <= most), 1456)
    first = int(-(-lo // 1))
    return [d for d in range(first, int(hi) + 1, step) if lo <= d <= hi]


def _refit(every) -> str:
    if every == 0:
        return "trained once, on the first fold's training window; every fold is scored by that model"
    if every == 1:
        return "retrained for every fold"
    return f"retrained every {every} folds; the folds in between reuse the last model"


def _header(rep: dict) -> str:
    folds, failed = rep.get("folds") or [], rep.get("failed") or []
    ok = not failed
    banner = (f"{len(folds)} of {len(rep.get('plan') or [])} fold(s) completed" +
              ("" if ok else f"; {len(failed)} failure(s), see below"))
    ver = rep.get("versions") or {}
    recipe, pre = recipe_text(rep.get("recipe") or {})
    facts = [("backtest id", rep["backtest_id"]), ("run id", rep["run_id"]), ("config hash", rep["config_hash"]),
             ("created at", rep.get("created_at") or DASH), ("task", rep.get("task") or DASH),
             ("pinned versions", f"features v{ver.get('features', DASH)}, labels v{ver.get('labels', DASH)}"),
             ("recipe", recipe), ("preprocessing", pre), ("baseline", rep.get("baseline") or DASH),
             ("refit policy", _refit(rep.get("refit_every"))), ("headline metric", rep.get("headline") or DASH),
             ("interval", f"{num((rep.get('confidence') or 0) * 100, 1)}%")]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    who = "".join(f"<li>{esc(_scored_by(f))}</li>" for f in folds)
    return (f'<h1>Backtest report</h1><div class="banner banner-{"ok" if ok else "bad"}">{esc(banner)}</div>'
            f"{answer(rep, _shown_metrics(rep))}{dropped(rep)}<h2 id=\"run\">The run</h2><dl class=\"facts\">{dl}</dl>"
            f"<details><summary>Which model scored which fold</summary><ul>{who}</ul></details>")


def _scored_by(f: dict) -> str:
    own = f.get("trained_on") == f["fold"]
    tail = "its own model" if own else f"the model trained for fold {f.get('trained_on')}"
    return f"fold {f['fold']} (cutoff {f.get('cutoff')}) scored by {tail}, seed {f.get('seed')}"


def _timeline(rep: dict) -> str:
    plan = rep.get("plan") or []
    if not plan:
        return '<h2 id="plan">Fold plan</h2><p class="note">No folds planned.</p>'
    trained_on = {f["fold"]: f.get("trained_on") for f in rep.get("folds") or []}
    left, width, row_h, top = 190, 640, 22, 24
    lo = min(_day(p["train_start"]) for p in plan)
    hi = max(_day(p["test_end"]) for p in plan) + 1
    x = Scale(lo, hi, left, left + width)
    bottom = top + row_h * len(plan)
    out = [f'<svg width="{left + width + 48}" height="{bottom + 34}" role="img" {FONT}>']  # room for the last date
    ticks = _day_ticks(lo, hi, 8)
    for d in ticks:
        out.append(f'<line x1="{_f(x(d))}" y1="{top - 4}" x2="{_f(x(d))}" y2="{bottom}" stroke="{GRID}"/>'
                   f'<text x="{_f(x(d))}" y="{bottom + 14}" text-anchor="middle" fill="#555">{esc(_iso(d))}</text>')
    for i, (name, colour) in enumerate((("training", TRAIN), ("gap (embargo)", GAP), ("test", TEST))):
        out.append(f'<rect x="{left + 130 * i}" y="4" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{left + 130 * i + 15}" y="13">{esc(name)}</text>')
    out.append(f'<line x1="{left + 390}" y1="2" x2="{left + 390}" y2="16" stroke="#000" stroke-width="2"/>'
               f'<text x="{left + 396}" y="13">cutoff</text>')
    for i, p in enumerate(plan):
        y = top + row_h * i
        t0, t1 = _day(p["train_start"]), _day(p["train_end"]) + 1
        s0, s1, c = _day(p["test_start"]), _day(p["test_end"]) + 1, _day(p["cutoff"])
        on = trained_on.get(p["index"], p["index"])
        label = f"fold {p['index']}" + ("" if on == p["index"] else f" (model of fold {on})")
        tip = (f"fold {p['index']}: train {p['train_start']} → {p['train_end']} ({t1 - t0} d), gap {s0 - t1} d, "
               f"test {p['test_start']} → {p['test_end']} ({s1 - s0} d), cutoff {p['cutoff']}")
        out.append(f"<g><title>{esc(tip)}</title>"
                   f'<text x="{left - 8}" y="{_f(y + 15)}" text-anchor="end" fill="#222">{esc(label)}</text>')
        for a, b, colour in ((t0, t1, TRAIN), (t1, s0, GAP), (s0, s1, TEST)):
            if b > a:
                out.append(f'<rect x="{_f(x(a))}" y="{_f(y + 6)}" width="{_f(x(b) - x(a))}" height="12" '
                           f'fill="{colour}" fill-opacity="0.85"/>')
        out.append(f'<line x1="{_f(x(c))}" y1="{_f(y + 2)}" x2="{_f(x(c))}" y2="{_f(y + 22)}" stroke="#000" '
                   'stroke-width="2"/></g>')
    out.append("</svg>")
    note = ('<p class="note">One row per fold: the training window, the gap (embargo) that separates it from the '
            "test window, and the cutoff (nothing on or after it is known to training). Dates are whole days.</p>")
    return f'<h2 id="plan">Fold plan</h2>{note}{"".join(out)}'


def _series(rep: dict, slice_name: str, metric: str, models: list[str]) -> dict[str, list[tuple[dict, dict]]]:
    """Per model: (fold, metric row) in fold order, for the rows of `slice_name` and `metric`."""
    out: dict[str, list[tuple[dict, dict]]] = {m: [] for m in models}
    for f in rep.get("folds") or []:
        for r in f["metrics"]:
            if r["slice"] == slice_name and r["metric"] == metric and r["model"] in out:
                out[r["model"]].append((f, r))
    return out


def _runs(points: list, ok) -> list[list]:
    """Maximal runs of consecutive points for which `ok` holds (a band or a line breaks at an undefined value)."""
    runs, cur = [], []
    for p in points:
        if ok(p):
            cur.append(p)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def _over_time(series: dict, colours: dict, metric: str, width: int, height: int) -> str:
    """Metric per fold (x: the fold's cutoff) per model: interval band, line, dots (hollow: under support). The y
    axis is labelled with the metric, spans at least 2 % of its values (no ticks like 0.805099) with 3+ round
    ticks; the right margin holds the last date's label."""
    left, pad, bottom, right = 66, 10, 34, 40
    pts = [(m, _day(f["cutoff"]), f, r) for m, rows in series.items() for f, r in rows]
    if not any(finite(r["value"]) for *_, r in pts):
        return f'<p class="note">{esc(metric)} is undefined in every fold.</p>'
    xlo, xhi = domain([d for _, d, _, _ in pts])
    ylo, yhi = domain([v for *_, r in pts for v in (r["value"], r["ci_low"], r["ci_high"])])
    least = 0.02 * max(abs(ylo), abs(yhi), 1e-6)
    if yhi - ylo < least:
        mid = (ylo + yhi) / 2
        ylo, yhi = mid - least / 2, mid + least / 2
    x, y = Scale(xlo, xhi, left, left + width), Scale(ylo, yhi, pad + height, pad)
    out = [f'<svg width="{left + width + right}" height="{pad + height + bottom}" role="img" {FONT}>',
           f'<line x1="{left}" y1="{_f(y.a)}" x2="{left + width}" y2="{_f(y.a)}" stroke="#555"/>',
           f'<line x1="{left}" y1="{_f(y.a)}" x2="{left}" y2="{_f(y.b)}" stroke="#555"/>',
           f'<text transform="translate(12 {_f((y.a + y.b) / 2)}) rotate(-90)" text-anchor="middle">'
           f"{esc(metric)}</text>"]
    yt = axis_ticks(ylo, yhi, least=3, most=max(3, height // 30))
    for t in yt:
        out.append(f'<line x1="{left}" y1="{_f(y(t))}" x2="{left + width}" y2="{_f(y(t))}" stroke="{GRID}"/>'
                   f'<text x="{left - 4}" y="{_f(y(t) + 4)}" text-anchor="end" fill="#555">'
                   f"{esc(tick_label(t, yt))}</text>")
    cutoffs = sorted({d for _, d, _, _ in pts})  # tick the folds' own cutoffs when they fit
    fit = max(2, width // 80)
    step = -(-len(cutoffs) // fit)
    for d in cutoffs[::-1][::step][::-1]:  # every step-th cutoff counted from the last: the last date is labelled
        out.append(f'<line x1="{_f(x(d))}" y1="{_f(y.a)}" x2="{_f(x(d))}" y2="{_f(y.a + 4)}" stroke="#555"/>'
                   f'<text x="{_f(x(d))}" y="{_f(y.a + 16)}" text-anchor="middle" fill="#555">{esc(_iso(d))}</text>')
    out.append(f'<text x="{_f(left + width / 2)}" y="{_f(y.a + 30)}" text-anchor="middle">fold cutoff</text>')
    for m, rows in series.items():
        c = colours[m]
        for run in _runs(rows, lambda fr: finite(fr[1]["ci_low"]) and finite(fr[1]["ci_high"])):
            if len(run) == 1:  # a lone interval: a thick translucent whisker instead of a band
                (f, r), = run
                xs = _f(x(_day(f["cutoff"])))
                out.append(f'<line x1="{xs}" y1="{_f(y(r["ci_low"]))}" x2="{xs}" y2="{_f(y(r["ci_high"]))}" '
                           f'stroke="{c}" stroke-opacity="0.3" stroke-width="6"/>')
                continue
            up = [f"{_f(x(_day(f['cutoff'])))},{_f(y(r['ci_high']))}" for f, r in run]
            down = [f"{_f(x(_day(f['cutoff'])))},{_f(y(r['ci_low']))}" for f, r in reversed(run)]
            out.append(f'<polygon points="{" ".join(up + down)}" fill="{c}" fill-opacity="0.15" stroke="{c}" '
                       'stroke-opacity="0.4"/>')
        for run in _runs(rows, lambda fr: finite(fr[1]["value"])):
            if len(run) > 1:
                line = " ".join(f"{_f(x(_day(f['cutoff'])))},{_f(y(r['value']))}" for f, r in run)
                out.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        for f, r in rows:
            if not finite(r["value"]):
                continue
            fill = c if r["status"] == "ok" else "#fff"
            tip = (f"fold {f['fold']} (cutoff {f['cutoff']}), {m}: {metric} {num(r['value'])} "
                   f"{interval(r['ci_low'], r['ci_high'])}, support {count(r['support'])}, {r['status']}")
            out.append(f'<circle cx="{_f(x(_day(f["cutoff"])))}" cy="{_f(y(r["value"]))}" r="3.5" fill="{fill}" '
                       f'stroke="{c}"><title>{esc(tip)}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def _legend(models: list[str], colours: dict) -> str:
    return "".join(f'<span class="swatch" style="background:{colours[m]}"></span>{esc(m)}' for m in models)


def _headline(rep: dict, models: list[str], colours: dict) -> str:
    metric = rep.get("headline") or "roc_auc"
    hint = {1: " (higher is better)", -1: " (lower is better)"}.get(direction(metric), "")
    out = [f'<h2 id="headline">{esc(metric)} per fold</h2><p class="note">{_legend(models, colours)} — band: the '
           f"{esc(num((rep.get('confidence') or 0) * 100, 1))}% interval; hollow dot: under support; a missing dot: "
           "undefined in that fold.</p>"]
    overall = _series(rep, "overall", metric, models)
    out.append(f"<figure><figcaption>overall · {esc(metric)}{esc(hint)}</figcaption>"
               f"{_over_time(overall, colours, metric, 640, 220)}</figure>")
    by_fold = {m: {f["fold"]: r for f, r in rows} for m, rows in overall.items()}
    rows = []
    for f in rep.get("folds") or []:
        cells = [esc(f["fold"]), esc(f["cutoff"])]
        for m in models:
            r = by_fold[m].get(f["fold"])
            status = f" ({esc(r['status'])})" if r and r["status"] != "ok" else ""
            cells += [num(r["value"]) + status if r else DASH, esc(interval(r["ci_low"], r["ci_high"])) if r else ""]
        rows.append(("", cells))
    head = ["fold", "cutoff", *(h for m in models for h in (m, "interval"))]
    out.append(html_table(head, rows, set(range(2, 2 + 2 * len(models)))))
    slices = list(dict.fromkeys(r["slice"] for f in rep.get("folds") or [] for r in f["metrics"]
                                if r["metric"] == metric and r["slice"] != "overall"))
    if slices:
        figs = [f"<figure><figcaption>{esc(s)}</figcaption>"
                f"{_over_time(_series(rep, s, metric, models), colours, metric, 330, 140)}</figure>" for s in slices]
        out.append(f'<h3>Per slice</h3><div class="row">{"".join(figs)}</div>')
    return "".join(out)


def _shown_metrics(rep: dict) -> list[str]:
    head = rep.get("headline") or "roc_auc"
    return list(dict.fromkeys([head, *SECONDARY.get(rep.get("task"), ())]))


def _summary(rep: dict) -> str:
    rows_in = rep.get("summary") or []
    order = {m: i for i, m in enumerate(_shown_metrics(rep))}
    picked = sorted((r for r in rows_in if r["metric"] in order), key=lambda r: order[r["metric"]])
    if not picked:
        return '<h2 id="summary">Summary across folds</h2><p class="note">No metric had a value in any fold.</p>'
    rows = [("", [esc(r["metric"]), esc(r["slice"]), esc(r["model"]), f"{num(r['mean'])} ± {num(r['std'])}",
                  num(r["min"]), num(r["max"]), count(r["folds"])]) for r in picked]
    table = html_table(["metric", "slice", "model", "mean ± std", "min", "max", "folds"], rows, {3, 4, 5, 6})
    return ('<h2 id="summary">Summary across folds</h2><p class="note">Mean ± standard deviation, minimum and maximum '
            "over the folds in which the metric was defined, per slice (the overall comparison is at the top).</p>" +
            (f"<details><summary>{len(rows)} rows: every metric, slice and model</summary>{table}</details>"
             if len(rows) > 12 else table))


def _deltas(rep: dict) -> str:
    shown = set(_shown_metrics(rep))
    deltas = [(f, r) for f in rep.get("folds") or [] for r in f.get("deltas") or [] if r["metric"] in shown]
    out = [f'<h2 id="deltas">Recipe − baseline per fold</h2><p class="note">The recipe − {esc(rep.get("baseline"))} '
           "on the same test rows, with a paired interval. <span class=\"good\">green</span>: better, "
           '<span class="bad">red</span>: worse (the interval excludes 0); grey: no clear difference.</p>']
    if not deltas:
        return "".join(out) + '<p class="note">No paired deltas recorded.</p>'
    span: dict[str, float] = {}
    for _, r in deltas:
        vals = [abs(v) for v in (r["value"], r["ci_low"], r["ci_high"]) if finite(v)]
        span[r["metric"]] = max([span.get(r["metric"], 0.0), *vals])
    rows = []
    for f, r in deltas:
        read = reading(r["metric"], r["value"], r["ci_low"], r["ci_high"])
        colour = READING_COLOURS[read]
        muted = r["status"] != "ok"
        rows.append(("muted" if muted else "", [
            esc(f["fold"]), esc(f["cutoff"]), esc(r["metric"]), esc(r["slice"]), num(r["value"], sign=True),
            esc(interval(r["ci_low"], r["ci_high"], sign=True)),
            mini_interval(r["value"], r["ci_low"], r["ci_high"], span[r["metric"]] * 1.1, colour),
            count(r["support"]) + (f" ({esc(r['status'])})" if muted else ""),
            f'<span style="color:{colour}">{esc(read)}</span>']))
    head = ["fold", "cutoff", "metric", "slice", "Δ recipe − baseline", "interval", "", "support", "reading"]
    worse = sum('">worse</span>' in cells[-1] for _, cells in rows)
    return "".join(out) + (f"<details><summary>{len(rows)} rows: every fold, metric and slice ({worse} worse)"
                           f"</summary>{html_table(head, rows, {4, 5, 7})}</details>")


def _calibration(rep: dict, colour: str) -> str:
    figs = [f"<figure><figcaption>fold {esc(f['fold'])} · cutoff {esc(f['cutoff'])}</figcaption>"
            f"{reliability_chart(f['reliability'], colour, size=180)}</figure>"
            for f in rep.get("folds") or [] if f.get("reliability")]
    if not figs:
        return ""
    return ('<h2 id="calibration">Calibration per fold</h2><p class="note">The recipe\'s reliability per fold: each '
            "dot a score bin (area by rows); a calibrated model lies on the dashed diagonal.</p>"
            f'<div class="row">{"".join(figs)}</div>')


def _sizes(rep: dict) -> str:
    rows = [("", [esc(f["fold"]), esc(f.get("trained_on")), esc(f.get("seed")),
                  esc(f"{f.get('train_start')} → {f.get('train_end')}"), count(f.get("train_rows")),
                  count(f.get("train_rows_label_unknown_at_cutoff")), num(f.get("train_base_rate")),
                  esc(f"{f.get('test_start')} → {f.get('test_end')}"), count(f.get("test_rows")),
                  count(f.get("test_rows_unlabelled"))]) for f in rep.get("folds") or []]
    head = ["fold", "trained on", "seed", "training window", "training rows", "labels unknown at the cutoff (left out)",
            "training base rate", "test window", "test rows", "unlabelled test rows (left out)"]
    note = ('<p class="note">Training rows whose label was not known at the cutoff and test rows without a label are '
            "left out, never counted as negatives. A fold scored by another fold's model shows that model's "
            "training window.</p>")
    return f'<h2 id="sizes">Training and test sizes</h2>{note}{html_table(head, rows, {4, 5, 6, 8, 9})}'


def _guard(rep: dict) -> str:
    verdicts = [v for f in rep.get("folds") or [] for v in f.get("guard") or []]
    out = ['<h2 id="guard">Leakage guard</h2>']
    if not verdicts:
        return "".join(out) + '<p class="warn">No leakage-guard verdicts were recorded.</p>'
    failed = [v for v in verdicts if not v["passed"]]
    folds = len({v["fold"] for v in verdicts})
    if failed:
        out.append(f'<p class="bad">{len(failed)} of {len(verdicts)} leakage-guard check(s) failed.</p>')
    else:
        out.append(f'<p class="good">All {len(verdicts)} leakage-guard checks passed on {folds} fold(s).</p>')
    rows = [("" if v["passed"] else "fail", [esc(v["fold"]), esc(v["check"]), esc(v["column"]), count(v["rows"]),
                                             f'<span class="{"good" if v["passed"] else "bad"}">'
                                             f'{"passed" if v["passed"] else "FAILED"}</span>', esc(v["message"])])
            for v in verdicts]
    return "".join(out) + html_table(["fold", "check", "column", "rows in breach", "verdict", "message"], rows, {3})


def _resume(rep: dict) -> str:
    resumed, failed = rep.get("resumed") or [], rep.get("failed") or []
    out = ['<h2 id="runs">Resumed and failed folds</h2>']
    out.append(f"<p>Resumed from an earlier run: {esc(', '.join(f'fold {i}' for i in resumed))}.</p>" if resumed
               else '<p class="note">No fold was resumed: this run computed every fold shown.</p>')
    if failed:
        out.append('<ul class="bad">' + "".join(f"<li>{esc(e)}</li>" for e in failed) + "</ul>")
    else:
        out.append('<p class="good">No fold failed.</p>')
    return "".join(out)


def render_html(report: dict) -> str:
    """The backtest report dict as one self-contained HTML page (no script, no external URL); deterministic."""
    rep = plain(report)
    models = [RECIPE, str(rep.get("baseline"))]
    colours = {m: MODEL_COLOURS[i] for i, m in enumerate(models)}
    sections = {"plan": _timeline(rep), "headline": _headline(rep, models, colours), "summary": _summary(rep),
                "deltas": _deltas(rep), "calibration": _calibration(rep, colours[RECIPE]), "sizes": _sizes(rep),
                "guard": _guard(rep), "runs": _resume(rep)}
    titles = {"plan": "Fold plan", "headline": "Per fold", "summary": "Summary", "deltas": "Recipe − baseline",
              "calibration": "Calibration", "sizes": "Sizes", "guard": "Leakage guard", "runs": "Resumed / failed"}
    return html_page(f"lakescore backtest · {rep['backtest_id']}", _header(rep), sections, titles, CSS + EXTRA_CSS)


def write_report(report: dict, folder: str, storage_options: dict | None = None) -> tuple[str, str]:
    """Write report.json and report.html into `folder` (a path, file:// or an object-store URL); their locations."""
    fs, path, shown = folder_target(folder, storage_options)
    write_report_files(fs, path, {"report.json": report_json(report), "report.html": render_html(report)})
    return f"{shown}/report.json", f"{shown}/report.html"
