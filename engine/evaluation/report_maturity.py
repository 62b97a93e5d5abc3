"""The evaluation report's label maturity section: the window's fraction labelled and headline metrics as of event +
k days (engine.evaluation.maturity), one chart per metric with the champion and the challengers side by side, and,
when `eval_metrics` holds earlier evaluations of the same window, how its metrics moved from one as-of to the next
(engine.evaluation.history). Inline SVG only (engine.evaluation.svg), no external resource; a report without a
curve (maturity.days 0, or an older report dict) has no section.
"""
from __future__ import annotations

from engine.evaluation.svg import (FONT, Scale, _axes, _f, count, domain, esc, finite, html_table, nice_ticks,
                                   num)


def line_chart(series: list[tuple[str, list[tuple[float, float]], str]], xlabel: str, ylabel: str,
               marker: float | None = None, width: int = 300, height: int = 200) -> str:
    """Polylines (with dots) of (name, points, colour) on linear axes fitted to the points; a dashed vertical line
    at `marker` (the last k that as_of can show for every day of the window)."""
    xs = [x for _, pts, _ in series for x, y in pts if finite(x) and finite(y)]
    ys = [y for _, pts, _ in series for x, y in pts if finite(x) and finite(y)]
    left, bottom, pad, legend = 52, 38, 20, 18 * len(series) + 4
    xlo, xhi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    xlo, xhi = (xlo - 0.5, xhi + 0.5) if xhi == xlo else (xlo, xhi)
    ylo, yhi = domain(ys)
    x, y = Scale(xlo, xhi, left, left + width), Scale(ylo, yhi, legend + height, legend)
    xticks = [t for t in nice_ticks(xlo, xhi, 8) if xlo <= t <= xhi]
    yticks = [t for t in nice_ticks(ylo, yhi) if ylo <= t <= yhi]
    out = [f'<svg width="{left + width + pad}" height="{legend + height + bottom}" role="img" {FONT}>',
           *_axes(x, y, xticks, yticks, xlabel, ylabel)]
    if marker is not None and xlo <= marker <= xhi:
        out.append(f'<line x1="{_f(x(marker))}" y1="{_f(y.a)}" x2="{_f(x(marker))}" y2="{_f(y.b)}" stroke="#777" '
                   'stroke-dasharray="4,3"/>')
    for i, (name, pts, colour) in enumerate(series):
        good = [(a, b) for a, b in pts if finite(a) and finite(b)]
        if len(good) > 1:
            line = " ".join(f"{_f(x(a))},{_f(y(b))}" for a, b in good)
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        out += [f'<circle cx="{_f(x(a))}" cy="{_f(y(b))}" r="2.5" fill="{colour}"/>' for a, b in good]
        out.append(f'<rect x="{left}" y="{4 + 18 * i}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{left + 15}" y="{13 + 18 * i}">{esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _curves(mat: dict, models: list[str], colours: dict[str, str]) -> list[str]:
    points = mat.get("points") or {}
    have = [m for m in models if points.get(m)]
    marker = mat.get("observable_days")
    marker = marker + 0.5 if marker is not None and marker < mat.get("days", 0) else None
    figs = []
    for metric in mat.get("metrics") or []:
        series = [(m, [(p["days"], p[metric]) for p in points[m]], colours[m]) for m in have]
        figs.append(f"<figure><figcaption>{esc(metric)}</figcaption>"
                    f"{line_chart(series, 'days after the event (k)', metric, marker)}</figure>")
    head = ["model", "k (days)", "labelled", *mat["metrics"]]
    rows = [("", [esc(m), count(p["days"]), count(p["labelled"]), *(num(p[k]) for k in mat["metrics"])])
            for m in have for p in points[m]]
    return [f'<div class="row">{"".join(figs)}</div>',
            f"<details><summary>points</summary>{html_table(head, rows, set(range(1, len(head))))}</details>"]


def _history(hist: list[dict], models: list[str], colours: dict[str, str]) -> list[str]:
    """The window's evaluations over as-of times (its eval_metrics history, this one included)."""
    if _as_ofs(hist) < 2:
        return []
    metrics = [k for k in ("support", "roc_auc", "rmse") if any(finite(h.get(k)) for h in hist)]
    figs = []
    for metric in metrics:
        series = [(m, [(h["age_days"], h.get(metric)) for h in hist if h["model"] == m], colours[m])
                  for m in models if any(h["model"] == m for h in hist)]
        figs.append(f"<figure><figcaption>{esc(metric)}</figcaption>"
                    f"{line_chart(series, 'as-of: days after the window', metric)}</figure>")
    head = ["as of", "model", "labels version", *metrics]
    rows = [("", [esc(h["as_of"]), esc(h["model"]), count(h["labels_version"]), *(num(h.get(k)) for k in metrics)])
            for h in hist]
    return ["<h3>This window over its evaluations</h3><p class=\"note\">Each evaluation of the same window and models "
            "in <code>eval_metrics</code>, by its as-of time: how the metrics moved as the labels arrived (support: the "
            "rows labelled by then).</p>",
            f'<div class="row">{"".join(figs)}</div>', html_table(head, rows, {2, 3, 4, 5})]


def _as_ofs(hist: list[dict]) -> int:
    return len({h["as_of"] for h in hist})


def maturity_section(rep: dict, models: list[str], colours: dict[str, str]) -> str:
    mat = rep.get("maturity") or {}
    hist = rep.get("history") or []
    if not mat.get("points") and _as_ofs(hist) < 2:
        return ""
    out = ['<h2 id="maturity">Label maturity</h2>']
    if mat.get("points"):
        note = (f"Overall slice, as of event + k days (a label counts once label_ts ≤ event_ts + k days and ≤ the "
                f"as-of time), from the {count(mat['rows'])} rows the window joined; no re-scoring.")
        if mat.get("observable_days", 0) < mat["days"]:
            note += (f" Right of the dashed line (k &gt; {mat['observable_days']}) the window's last days cannot "
                     "have labels that late yet: those points may still move.")
        out += [f'<p class="note">{note}</p>', *_curves(mat, models, colours)]
    out += _history(hist, models, colours)
    return "".join(out)
