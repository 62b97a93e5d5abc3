"""The evaluation report's per-slice drift: the (feature, slice) pairs ranked by drift, the top ones drawn with their
reference and current histograms (inline SVG bars over the reference's quantile bins, no external resource), and a
line on what was left out (slices under support). The figures come from engine.evaluation.slice_drift; this module
only lays them out, in the dict's order, so the same dict gives the same HTML.
"""
from __future__ import annotations

from engine.evaluation.report_page import STATUS_CLASSES
from engine.evaluation.svg import FONT, MUTED, _f, count, esc, html_table, num

REFERENCE, CURRENT = "#9e9e9e", "#c62828"


def bars_chart(edges: list[float], ref: list[int], cur: list[int], width: int = 360, height: int = 120) -> str:
    """Paired bars per bin (reference grey, current red), each window's share of its rows; bins labelled below."""
    bins = len(ref)
    shares = [[c / max(sum(h), 1) for c in h] for h in (ref, cur)]
    top = max(max(s) for s in shares) or 1.0
    left, legend, bottom = 40, 18, 34
    step = width / bins
    out = [f'<svg width="{left + width + 8}" height="{legend + height + bottom}" role="img" {FONT}>',
           f'<rect x="{left}" y="4" width="10" height="10" fill="{REFERENCE}"/><text x="{left + 14}" y="13">'
           f'reference ({esc(count(sum(ref)))})</text>',
           f'<rect x="{left + 150}" y="4" width="10" height="10" fill="{CURRENT}"/><text x="{left + 164}" y="13">'
           f'current ({esc(count(sum(cur)))})</text>',
           f'<line x1="{left}" y1="{legend + height}" x2="{left + width}" y2="{legend + height}" stroke="{MUTED}"/>',
           f'<text x="{left - 4}" y="{legend + 8}" text-anchor="end">{esc(num(100 * top, 2))}%</text>']
    for i in range(bins):
        for k, colour in ((0, REFERENCE), (1, CURRENT)):
            h = height * shares[k][i] / top
            x = left + i * step + 2 + k * (step - 4) / 2
            out.append(f'<rect x="{_f(x)}" y="{_f(legend + height - h)}" width="{_f((step - 4) / 2)}" '
                       f'height="{_f(h)}" fill="{colour}"/>')
        label = ("<" + num(edges[0], 2)) if i == 0 else ("≥" + num(edges[-1], 2)) if i == bins - 1 else num(edges[i - 1], 2)
        out.append(f'<text x="{_f(left + (i + 0.5) * step)}" y="{legend + height + 14}" text-anchor="middle" '
                   f'font-size="9">{esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def slice_drift_section(rep: dict) -> str:
    sl = (rep.get("drift") or {}).get("slices")
    if not sl:
        return ""
    out = ['<h3 id="slice-drift">Drift per slice</h3>',
           '<p class="note">Each feature in each slice (the evaluation\'s slices and the whole window), compared with '
           "the same slice of the reference window over the reference's quantile bins. A pair is flagged when its "
           f"drift is large, not merely detectable: PSI above {esc(num(sl['psi_max']))} and the Wasserstein-1 "
           "distance (how far the mass moved, in standard deviations of the reference) above "
           f"{esc(num(sl['wasserstein_max']))}, with at least {esc(count(sl['min_support']))} rows in both windows. "
           "No p-value is used: on many rows every tiny shift is significant.</p>",
           f"<p><b>{esc(count(sl['flagged']))}</b> pair(s) flagged; {esc(count(sl['under_support']))} pair(s) in "
           "slices under support are not judged.</p>"]
    rows = []
    for p in sl.get("top") or []:
        cls = STATUS_CLASSES.get(str(p["status"]), "")
        rows.append(("fail" if p["flagged"] else "", [
            str(p["rank"]), esc(p["feature"]), esc(p["slice"]), num(p["psi"]), num(p["wasserstein"]),
            f"{esc(count(p['support_reference']))} / {esc(count(p['support_current']))}",
            f'<span class="{cls}">{esc(p["status"])}</span>',
            bars_chart(p["edges"], p["reference_hist"], p["current_hist"])]))
    if rows:
        out.append(html_table(["rank", "feature", "slice", "PSI", "Wasserstein (SD)", "rows ref / current",
                               "verdict", "reference vs current"], rows, {0, 3, 4, 5}))
    return "".join(out)
