"""Label maturity: a window's fraction of rows labelled and its headline metrics as of event + k days, k = 1…K
(`maturity.days: K`; 0 turns it off), from `label_ts`, without re-scoring.

Mergeable like the rest of the evaluation. In the worker, each row the evaluation counts (scored by every model,
with features, and with a label known by `as_of`; the label that counts is the one the evaluation uses, the newest
known by `as_of`) gets its label delay in whole days, d = ceil((label_ts − event_ts) / 1 day), clipped to 1…K+1
(a label at or before its event counts from day 1; K+1 holds every label later than K days). The rows are folded
into a second `EvalStats` whose only slice column is that delay (`DELAY`): the overall slice only, not the
configured slices. On the driver the value at k is the metric of the sum of the delay buckets ≤ k, so any engine
and any partitioning give the same numbers, exactly as the window's own metrics. The fraction labelled at k is the
rows labelled by then over the rows the window joined (evaluated + without a label + labelled after `as_of`).

Choices (fail closed, keep data): a label revised after its first arrival counts from the day of the revision that
counts at `as_of` (the earlier revisions are not replayed), so the curve never shows a label the evaluation would
not use. Points past what `as_of` can show (k beyond as_of − the window's last day) are drawn and stored like the
others, and the report marks them (`observable_days`): the labels of the window's last days cannot be that late yet.
No bootstrap: the points carry no interval. The statistics use two bootstrap buckets (the smallest layout), with
the fine score histograms of the main statistics, so roc_auc and pr_auc have the same resolution.

Stored in `eval_metrics` as `kind = "maturity"` rows with `maturity_days = k` (slice "overall"), beside the
evaluation's metric rows in the same unit; the gates' `min_maturity` (engine.evaluation.gates) reads the window's age
and fraction labelled at `as_of`.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.evaluation.metrics import compute_metrics
from engine.evaluation.spec import MetricsSpec
from engine.evaluation.stats import EvalStats

DELAY = "__label_delay"
DAY_US = 86_400_000_000
FRACTION = "labelled_fraction"
HEADLINE = {"binary": ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "base_rate"),
            "regression": ("mae", "rmse", "r2", "bias")}


def delay_spec(spec: MetricsSpec) -> MetricsSpec:
    """The evaluation's spec with the label delay as its only slice and no bootstrap."""
    return dataclasses.replace(spec, slices=((DELAY,),), bootstrap=0, buckets=2, min_support=0)


def delay_days(label_ts_us: np.ndarray, event_ts_us: np.ndarray, days: int) -> np.ndarray:
    """ceil((label_ts − event_ts) / 1 day), clipped to 1…days+1 (integer microseconds, exact)."""
    d = -((np.asarray(event_ts_us, np.int64) - np.asarray(label_ts_us, np.int64)) // DAY_US)
    return np.clip(d, 1, days + 1)


def fold(spec: MetricsSpec, models: list[str], days: int, key_hash: np.ndarray, label: np.ndarray,
         scores: dict[str, np.ndarray], label_ts: pa.ChunkedArray, event_ts: pa.ChunkedArray) -> str:
    """One task's rows by label delay (the worker side): the statistics' bytes as base64 text for the task's counts."""
    stats = EvalStats(delay_spec(spec), models)
    if len(label):
        us = [pc.cast(c.cast(pa.timestamp("us", c.type.tz)) if pa.types.is_timestamp(c.type) else c,
                      pa.int64()).to_numpy(zero_copy_only=False) for c in (label_ts, event_ts)]
        stats.update(key_hash, label, scores, {DELAY: pa.array(delay_days(us[0], us[1], days))})
    return base64.b64encode(stats.to_bytes()).decode()


def merge(acc: EvalStats | None, counts: dict) -> EvalStats | None:
    """Add one task's delay statistics (from its counts) into `acc`, in plan order."""
    if "maturity" not in counts:
        return acc
    part = EvalStats.from_bytes(base64.b64decode(counts["maturity"]))
    return part if acc is None else acc.merge(part)


def cumulative(stats: EvalStats, k: int) -> EvalStats:
    """Overall-only statistics of the rows whose label delay is at most k days."""
    out = EvalStats(dataclasses.replace(stats.spec, slices=()), stats.models)
    out.label_shift = stats.label_shift
    sids = [i for i, (g, v) in enumerate(stats.slices) if g == 1 and int(v[0]) <= k]
    for m in stats.models:
        for name, arr in out.arrays[m].items():
            arr[0] = stats.view(m, name)[sids].sum(axis=0)
    return out


def section(stats: EvalStats | None, days: int, rows_joined: int, window_end: str, as_of: dt.datetime) -> dict:
    """The report's `maturity` entry: per model, one point per k with the fraction labelled and the headline
    metrics; `observable_days`: the largest k that `as_of` can show for every day of the window."""
    end = dt.datetime.fromisoformat(window_end).replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    observable = max(0, int((as_of - end) // dt.timedelta(days=1)))
    out = {"days": days, "rows": rows_joined, "observable_days": observable, "points": {}, "metrics": []}
    if stats is None or not days:
        return out
    out["metrics"] = [FRACTION, *HEADLINE[stats.spec.task]]
    for k in range(1, days + 1):
        by = {(r["model"], r["metric"]): r for r in compute_metrics(cumulative(stats, k)) if r["slice"] == "overall"}
        for m in stats.models:
            n = int(by[(m, "support")]["value"] or 0)
            point = {"days": k, "labelled": n, FRACTION: n / rows_joined if rows_joined else None}
            point.update({name: by[(m, name)]["value"] for name in HEADLINE[stats.spec.task]})
            out["points"].setdefault(m, []).append(point)
    return out


def rows(section_: dict, model: str) -> list[dict]:
    """`eval_metrics` rows of one model's curve (kind "maturity", slice overall, one per k and metric)."""
    out = []
    for p in section_["points"].get(model, []):
        for name in section_["metrics"]:
            value = p[name]
            out.append({"model": model, "slice": "overall", "slice_columns": "", "slice_values": "", "metric": name,
                        "value": value, "ci_low": None, "ci_high": None, "support": p["labelled"],
                        "status": "undefined" if value is None else "ok", "maturity_days": p["days"]})
    return out
