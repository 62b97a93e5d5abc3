"""The evaluation report's drift section: PSI per column (features, then model scores) with its threshold and the
one verdict per column, a sentence on what PSI measures, and a relative link to the Evidently page saved beside
the report. The drift itself is computed in engine.evaluation.drift_section; this module only lays it out.
"""
from __future__ import annotations

from engine.evaluation.report_page import STATUS_CLASSES
from engine.evaluation.svg import count, esc, html_table, num


def drift_section(rep: dict) -> str:
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
