"""The backtest report's answer, shown first: recipe vs baseline on every headline metric across folds (means with
their spread, the paired Δ averaged over folds with a t interval across folds), and the label-maturity guard's cost
(training rows left out per fold because their label was not known at the cutoff)."""
from __future__ import annotations

import json
import math
import statistics

from engine.evaluation.report import READING_COLOURS
from engine.evaluation.summary import direction, reading
from engine.evaluation.svg import DASH, count, esc, finite, html_table, interval, num

RECIPE = "recipe"


def recipe_text(recipe: dict) -> tuple[str, str]:
    """(the recipe with its own parameters, its preprocessing) as the header shows them."""
    params = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in (recipe.get("params") or {}).items())
    kind = str(recipe.get("kind") or DASH)
    pre = recipe.get("preprocessing") or {}
    shown = [f"features {', '.join(pre['features'])}" if pre.get("features") else "",
             f"categorical {', '.join(pre['categorical'])}" if pre.get("categorical") else "",
             f"numeric features clipped to ±{num(pre['clip'], 1) if isinstance(pre['clip'], float) else pre['clip']}, "
             "nulls filled with 0" if pre.get("clip") is not None else ""]
    return (f"{kind} ({params})" if params else kind), "; ".join(x for x in shown if x) or DASH


def _overall(rep: dict, metric: str) -> list[tuple[dict, float | None, float | None, dict | None]]:
    """Per fold: (fold, recipe value, baseline value, overall delta row) for `metric`."""
    out = []
    for f in rep.get("folds") or []:
        val = {r["model"]: r["value"] for r in f["metrics"] if r["slice"] == "overall" and r["metric"] == metric}
        d = next((r for r in f.get("deltas") or [] if r["slice"] == "overall" and r["metric"] == metric), None)
        out.append((f, val.get(RECIPE), val.get(str(rep.get("baseline"))), d))
    return out


def _spread(values: list[float]) -> str:
    if not values:
        return DASH
    if len(values) == 1:
        return num(values[0])
    return f"{num(statistics.fmean(values))} ± {num(statistics.stdev(values))} ({num(min(values))}–{num(max(values))})"


def paired_delta(rows: list[tuple], confidence: float) -> tuple[float | None, float | None, float | None, int]:
    """Mean recipe − baseline over the folds, with a t interval across folds (the folds as replicates; one fold:
    its own paired bootstrap interval); (mean, low, high, folds)."""
    deltas = [d for *_, d in rows if d and finite(d.get("value"))]
    vals = [d["value"] for d in deltas]
    if not vals:
        return None, None, None, 0
    if len(vals) == 1:
        return vals[0], deltas[0].get("ci_low"), deltas[0].get("ci_high"), 1
    from scipy.stats import t

    mean, half = statistics.fmean(vals), 0.0
    sd = statistics.stdev(vals)
    half = float(t.ppf(0.5 + confidence / 2, len(vals) - 1)) * sd / math.sqrt(len(vals))
    return mean, mean - half, mean + half, len(vals)


def answer(rep: dict, shown: list[str]) -> str:
    """Recipe vs baseline across folds, the headline metric first: means with spread, the paired Δ and its interval."""
    base = str(rep.get("baseline"))
    conf = rep.get("confidence") or 0.95
    rows, first = [], None
    for metric in shown:
        per = _overall(rep, metric)
        if not any(finite(r) or finite(b) for _, r, b, _ in per):
            continue
        mean, low, high, n = paired_delta(per, conf)
        read = reading(metric, mean, low, high)
        colour = READING_COLOURS[read]
        first = first or (metric, mean, low, high, n, read)
        d = direction(metric)
        rows.append(("", [f"<strong>{esc(metric)}</strong>" if metric == rep.get("headline") else esc(metric),
                          {1: "higher", -1: "lower"}.get(d, DASH),
                          esc(_spread([r for _, r, _, _ in per if finite(r)])),
                          esc(_spread([b for _, _, b, _ in per if finite(b)])), num(mean, sign=True),
                          esc(interval(low, high, sign=True)), count(n),
                          f'<span style="color:{colour}">{esc(read)}</span>']))
    if not rows:
        return '<p class="note">No overall metric in any fold: nothing to compare.</p>'
    metric, mean, low, high, n, read = first
    lead = (f"Recipe vs {base} on {metric}, over {n} fold(s): Δ {num(mean, sign=True)} "
            f"{interval(low, high, sign=True)} — {read}.")
    head = ["metric", "better when", "recipe: mean ± sd (min–max)", f"{base}: mean ± sd (min–max)",
            "Δ recipe − baseline (mean)", f"{num(conf * 100, 1)}% interval", "folds", "reading"]
    note = ('<p class="note">Overall slice. Δ is paired (the same test rows) per fold, averaged over the folds; '
            "its interval is a t interval across folds (the folds as replicates; one fold: its paired bootstrap "
            "interval).</p>")
    return (f'<p class="promo" id="answer">{esc(lead)}</p>' + html_table(head, rows, {2, 3, 4, 5, 6}) + note)


def dropped(rep: dict) -> str:
    """The label-maturity guard's cost: training rows left out per fold because their label was not yet known."""
    folds = rep.get("folds") or []
    rows, parts = [], []
    for f in folds:
        kept, gone = f.get("train_rows"), f.get("train_rows_label_unknown_at_cutoff")
        if not (finite(kept) and finite(gone)):
            continue
        total = kept + gone
        share = gone / total if total else 0.0
        parts.append(share)
        rows.append(("fail" if share >= 0.25 else "", [esc(f["fold"]), esc(f.get("cutoff")), count(gone), count(total),
                                                       f"{share * 100:.0f}%", count(kept)]))
    if not rows:
        return ""
    worst = max(parts)
    cls = "callout" if worst >= 0.25 else "note"
    text = (f"The label-maturity guard left out training rows whose label was not known at the cutoff (they would "
            f"leak the future): up to {worst * 100:.0f}% of a fold's training rows. The guard is right; this is its "
            "cost: those folds trained on fewer rows.")
    table = html_table(["fold", "cutoff", "training rows left out", "of", "share", "trained on"], rows, {2, 3, 4, 5})
    return f'<div class="{cls}" id="dropped">{esc(text)}{table}</div>'
