"""The evaluation report's per-slice detail for each model: support per slice (a slice under the minimum support is
greyed with its count, never dropped) and every metric per slice and model as a dot-and-interval chart, gated
metrics open and the others folded.
"""
from __future__ import annotations

from engine.evaluation.report_page import COUNT_METRICS, LONG, fold, legend, slice_order, slice_table, under_support
from engine.evaluation.summary import direction, gated_metrics
from engine.evaluation.svg import DASH, MUTED, IntervalRow, count, esc, html_table, interval, interval_chart, num


def support_section(rep: dict, models: list[str]) -> str:
    cells: dict[tuple[str, str], tuple[int, bool]] = {}
    for r in rep["metrics"]:
        key = (r["slice"], r["model"])
        sup, under = cells.get(key, (r["support"], False))
        cells[key] = (sup, under or under_support(r, rep.get("min_support")))
    rows = []
    for s in slice_order(rep["metrics"]):
        vals = [cells.get((s, m)) for m in models]
        under = any(v and v[1] for v in vals)
        rows.append(("muted" if under else "", [esc(s)] + [
            DASH if v is None else count(v[0]) + (" (under support)" if v[1] else "") for v in vals]))
    note = (f'<p class="note">A slice with fewer than {esc(count(rep.get("min_support")))} rows is reported '
            f"with its support and greyed, never dropped.</p>")
    table = html_table(["slice", *models], rows, set(range(1, len(models) + 1)), cls=slice_table(len(rows)))
    return (f'<h2 id="slices">Slices and support</h2>{note}'
            f'{fold(f"support of {len(rows)} slices", table) if len(rows) > LONG else table}')


def metrics_section(rep: dict, models: list[str], colours: dict[str, str]) -> str:
    by_key = {(r["metric"], r["slice"], r["model"]): r for r in rep["metrics"]}
    names = [m for m in dict.fromkeys(r["metric"] for r in rep["metrics"]) if m not in COUNT_METRICS]
    gated = gated_metrics(rep.get("gates") or [])
    names = [m for m in names if m in gated] + [m for m in names if m not in gated]
    out = ['<h2 id="metrics">Metrics by slice</h2>', legend(models, colours),
           '<p class="note">Gated metrics first; the others are folded: click a title to open it.</p>']
    for metric in names:
        rows = []
        for s in slice_order(rep["metrics"]):
            first = True
            for m in models:
                r = by_key.get((metric, s, m))
                if r is None:
                    continue
                under = under_support(r, rep.get("min_support"))
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
        out.append(fig if metric in gated else fold(f"{metric}{hint}: {len(rows)} rows (not gated)", fig))
    return "".join(out)
