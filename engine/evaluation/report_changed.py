"""What changed, as the evaluation report shows it under the banner: per metric (gated or not) the number of
slices where the challenger is better, worse or not clearly different by the paired interval, and its worst
regressions by name; regressions on metrics no gate checks are called out above the table, since the verdict
does not reflect them. The counting is engine.evaluation.summary's; this module only lays it out.
"""
from __future__ import annotations

from engine.evaluation.summary import direction, summarise, ungated_regressions
from engine.evaluation.svg import DASH, esc, html_table, num


def what_changed(rep: dict) -> str:
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
