"""The evaluation report's closing sections: the rows left out (immature labels per day, unmatched keys) and the
notes on the statistics (the bootstrap intervals, and why ece is reported bias-corrected with a basic interval).
"""
from __future__ import annotations

from engine.evaluation.svg import count, esc, html_table


def excluded_section(rep: dict) -> str:
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


def notes_section(rep: dict) -> str:
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
