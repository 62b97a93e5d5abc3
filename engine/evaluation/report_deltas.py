"""The evaluation report's challenger − champion tables: per metric, every slice's paired delta with its interval,
a small bar, its support and its reading (better / worse / changed / no clear difference by the paired interval
and the metric's direction), worst slice first; gated metrics open, the others folded under a title that counts
the readings.
"""
from __future__ import annotations

from engine.evaluation.report_page import READING_COLOURS, fold, slice_table, under_support
from engine.evaluation.summary import gated_metrics, reading, summarise, worst_first
from engine.evaluation.svg import count, esc, finite, html_table, interval, mini_interval, num


def deltas_section(rep: dict) -> str:
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
                under = under_support(r, rep.get("min_support"))
                rows.append(("muted" if under else "", [
                    esc(r["slice"]), num(r["value"], sign=True),
                    (esc(interval(r["ci_low"], r["ci_high"], sign=True)), r["value"]),  # sorts by its estimate
                    mini_interval(r["value"], r["ci_low"], r["ci_high"], span * 1.1, colour),
                    count(r["support"]) + (" (under support)" if under else ""),
                    f'<span style="color:{colour}">{esc(read)}</span>']))
            head = ["slice", f"Δ {metric}", "interval", "", "support", "reading"]
            sm = by_metric[(model, baseline, metric)]
            changed = f", {sm['changed']} changed" if sm["changed"] else ""
            title = (f"{metric}{'' if metric in gated else ' (not gated)'}: {sm['worse']} worse, {sm['better']} "
                     f"better, {sm['no_clear_difference']} no clear difference{changed} of {sm['slices']} slices")
            table = html_table(head, rows, {1, 2, 4}, cls=slice_table(len(rows)))
            out.append(f'<h4 id="delta-{esc(metric)}">{esc(title)}</h4>{table}' if metric in gated
                       else fold(title, table))
    return "".join(out)
