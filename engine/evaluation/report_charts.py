"""The evaluation report's charts of a binary task, each from aggregates the evaluation keeps: reliability diagrams
(score bins against the fraction positive), score distributions by label, ROC and precision–recall curves from the
score histograms, and a confusion matrix at each configured threshold. A section with nothing to draw is left out.
"""
from __future__ import annotations

from engine.evaluation.report_page import NEGATIVE, POSITIVE
from engine.evaluation.svg import count, curve_chart, esc, histogram_chart, html_table, num, reliability_chart


def reliability_section(rep: dict, models: list[str], colours: dict[str, str]) -> str:
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


def score_hist_section(rep: dict, models: list[str]) -> str:
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


def curves_section(rep: dict, models: list[str], colours: dict[str, str]) -> str:
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
