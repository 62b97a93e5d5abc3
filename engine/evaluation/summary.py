"""What changed, challenger against champion: the evaluation report's answer, read from the paired delta rows.

Per metric with a direction (higher or lower is better) and per challenger: in how many slices the challenger is
better, worse or not clearly different (the paired interval holds 0, or is unknown), and its worst regressions by
name, worst first. A metric that no gate checks is flagged `gated: false`, so a regression there is called out as
ungated: a PASS verdict says nothing about it. Descriptive metrics (base rate, mean score, bias) and undefined
deltas are counted apart (`changed`, `undefined`). The same reading rule as the delta table
(engine.evaluation.report.reading), so the summary's counts are the table's rows counted.
"""
from __future__ import annotations

import math

GATELESS = {"support", "scored_days"}  # gate rows about coverage, not about a metric


def direction(metric: str) -> int:
    from engine.evaluation.gates import direction as gate_direction

    return gate_direction(metric)


def reading(metric: str, value, low, high) -> str:
    """better / worse / changed / no clear difference / undefined, for a challenger − champion delta."""
    def ok(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not ok(value):
        return "undefined"
    if not (ok(low) and ok(high)) or low <= 0 <= high:
        return "no clear difference"
    d = direction(metric)
    if d == 0:
        return "changed"
    return "better" if (1 if low > 0 else -1) * d > 0 else "worse"


def harm(row: dict) -> float:
    """How bad a delta is for the challenger (larger is worse): −direction·Δ; |Δ| for descriptive metrics; −inf for
    an undefined delta, so it sorts last."""
    v = row.get("value")
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return -math.inf
    d = direction(row["metric"])
    return -d * v if d else abs(v)


def worst_first(rows: list[dict]) -> list[dict]:
    """Delta rows of one metric, worst for the challenger first: regressions (largest harm first), then unclear,
    then improvements; ties by slice name, so the order is deterministic."""
    rank = {"worse": 0, "changed": 1, "no clear difference": 2, "better": 3, "undefined": 4}
    return sorted(rows, key=lambda r: (rank[reading(r["metric"], r["value"], r["ci_low"], r["ci_high"])],
                                       -harm(r), r["slice"]))


def gated_metrics(gates: list[dict]) -> set[str]:
    return {g["metric"] for g in gates or [] if g.get("metric") and g["metric"] not in GATELESS}


def summarise(deltas: list[dict], gates: list[dict], worst: int = 3) -> list[dict]:
    """One row per (challenger, champion, metric), metrics with a regression first, then in delta order:
    {"model", "baseline", "metric", "gated", "slices", "better", "worse", "no_clear_difference", "changed",
    "undefined", "worst": [{"slice", "value", "ci_low", "ci_high"}…]} (at most `worst` regressions, worst first)."""
    gated = gated_metrics(gates)
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in deltas or []:
        groups.setdefault((r["model"], r.get("baseline", ""), r["metric"]), []).append(r)
    out = []
    for (model, baseline, metric), rows in groups.items():
        counts = {"better": 0, "worse": 0, "no clear difference": 0, "changed": 0, "undefined": 0}
        for r in rows:
            counts[reading(metric, r["value"], r["ci_low"], r["ci_high"])] += 1
        bad = [r for r in worst_first(rows) if reading(metric, r["value"], r["ci_low"], r["ci_high"]) == "worse"]
        out.append({"model": model, "baseline": baseline, "metric": metric, "gated": metric in gated,
                    "slices": len(rows), "better": counts["better"], "worse": counts["worse"],
                    "no_clear_difference": counts["no clear difference"], "changed": counts["changed"],
                    "undefined": counts["undefined"],
                    "worst": [{k: r[k] for k in ("slice", "value", "ci_low", "ci_high")} for r in bad[:worst]]})
    order = {k: i for i, k in enumerate(groups)}
    return sorted(out, key=lambda s: (s["worse"] == 0, not s["gated"] if s["worse"] else False,
                                      order[(s["model"], s["baseline"], s["metric"])]))


def ungated_regressions(summary: list[dict]) -> list[dict]:
    return [s for s in summary if s["worse"] and not s["gated"]]
