"""Metric rows, champion-vs-challenger deltas, reliability bins and score histograms from `EvalStats`.

Intervals: a Poisson bootstrap over the row buckets of `EvalStats` (a row's bucket comes from the hash of its key
and the seed, so a row always lands in the same bucket whatever the engine or partitioning). Replicate r weighs
bucket k by W[r, k] ~ Poisson(1), drawn from `numpy.random.default_rng(seed)`; replicate 0 weighs every bucket 1
("full-coarse"). Every metric is computed from the per-bucket statistics under every replicate, and

    interval = point + percentiles(α/2, 1-α/2) of (replicate - full-coarse)

where `point` comes from the full-resolution statistics. For count- and sum-based metrics full-coarse equals the
point, so this is the plain percentile interval; for the histogram (rank) metrics the per-bucket histograms are
coarser than the fine one, and the difference cancels the coarse binning's bias while keeping its sampling spread.
The interval is left out (None) where fewer than half the replicates define the metric. Deltas (challenger -
champion) use the same weights for both models on the same rows: a paired bootstrap.

ECE is the exception. Binned ECE (Σ_k n_k/N·|mean score_k − positive rate_k|) is biased upward on a finite sample
(an absolute value of a noisy difference), and its bootstrap replicates are biased the same way again, so the
percentile interval sits above the plug-in estimate and can exclude it. `ece` is therefore the bootstrap
bias-corrected estimate, plug-in − mean(replicate − plug-in), with the basic (reverse-percentile) interval
[plug-in − q_hi, plug-in − q_lo] of the same replicate differences: the estimate lies inside its interval by
construction (the bias estimate is held within [q_lo, q_hi]), both clipped to [0, 1]. The plug-in value is kept as
`ece_binned` (no interval, not compared). The ECE delta is the difference of the two bias-corrected estimates (the
mean is linear) with the basic interval of the paired replicate differences.
"""
from __future__ import annotations

import numpy as np

from engine.errors import ConfigError, LakescoreError
from engine.evaluation import curves
from engine.evaluation.stats import REG_SUMS, EvalStats

_UNIT = ("roc_auc", "pr_auc", "brier", "ece", "base_rate", "mean_score")  # metrics bounded to [0, 1]
_NOT_COMPARED = {"support", "positives", "base_rate", "mean_label", "mape_zero_labels", "ece_binned"}
_NO_INTERVAL = {"support", "positives", "mape_zero_labels", "ece_binned"}
_DEBIASED = {"ece"}  # reported bias-corrected, with the basic bootstrap interval (module docstring)


def _weights(stats: EvalStats) -> np.ndarray:
    s = stats.spec
    rng = np.random.default_rng(s.seed)
    w = rng.poisson(1.0, size=(s.bootstrap, s.buckets)).astype(np.float64)
    return np.vstack([np.ones((1, s.buckets)), w])


def _reweigh(w: np.ndarray, per_bucket: np.ndarray) -> np.ndarray:
    """(slices, buckets, ...) statistics → (slices, replicates, ...) under the bucket weights w (replicates, buckets);
    a batched matrix product (BLAS), not a Python loop."""
    s, k = per_bucket.shape[:2]
    out = np.matmul(w, per_bucket.reshape(s, k, -1))
    return out.reshape(s, w.shape[0], *per_bucket.shape[2:])


def _binary(stats: EvalStats, model: str, w: np.ndarray) -> tuple[dict, dict]:
    """Per metric: point values (slices,) and replicate values (slices, 1 + bootstrap)."""
    s = stats.spec
    fine = stats.view(model, "fine").astype(np.float64)
    coarse = _reweigh(w, stats.view(model, "coarse").astype(np.float64))
    pos, neg = coarse[..., 1, :], coarse[..., 0, :]
    total, positives = (pos + neg).sum(-1), pos.sum(-1)
    onehot = np.zeros((coarse.shape[-1], s.ece_bins))
    onehot[np.arange(coarse.shape[-1]), stats._ece_of_coarse] = 1.0
    score_sum = _reweigh(w, stats.view(model, "ece_sum"))
    reps = {
        "roc_auc": curves.roc_auc(pos, neg), "pr_auc": curves.average_precision(pos, neg),
        "log_loss": curves._div(_reweigh(w, stats.view(model, "loss")), total),
        "brier": curves._div(_reweigh(w, stats.view(model, "sq")), total),
        "ece": curves.ece(pos @ onehot, (pos + neg) @ onehot, score_sum),
        "base_rate": curves._div(positives, total), "mean_score": curves._div(score_sum.sum(-1), total),
        "support": total, "positives": positives,
    }
    fpos, fneg = fine[:, 1, :], fine[:, 0, :]
    point = {"roc_auc": curves.roc_auc(fpos, fneg), "pr_auc": curves.average_precision(fpos, fneg)}
    for t in s.thresholds:
        start = int(np.searchsorted(stats._edges, t, side="left"))
        for name, v in zip(("precision", "recall", "f1"), curves.at_threshold(pos, neg, start)):
            reps[f"{name}@{t:g}"] = v
    for k in s.top_k_pct:
        prec, rec = curves.top_k(pos, neg, k)
        reps[f"precision@top{k:g}%"], reps[f"recall@top{k:g}%"] = prec, rec
        point[f"precision@top{k:g}%"], point[f"recall@top{k:g}%"] = curves.top_k(fpos, fneg, k)
    reps["ece_binned"] = reps["ece"]
    for name, v in reps.items():
        point.setdefault(name, v[:, 0])
    return point, reps


def _regression(stats: EvalStats, model: str, w: np.ndarray) -> tuple[dict, dict]:
    sums = _reweigh(w, stats.view(model, "sums"))
    c = {name: sums[..., j] for j, name in enumerate(REG_SUMS)}
    n, div = c["n"], curves._div
    sst = c["sum_yc2"] - div(c["sum_yc"] ** 2, n)
    reps = {
        "mae": div(c["sum_absd"], n), "rmse": np.sqrt(div(c["sum_d2"], n)),
        "mape": div(c["sum_ape"], c["n_nonzero"]),
        "r2": 1.0 - div(c["sum_d2"], np.where(sst > 0, sst, 0.0)),
        "bias": div(c["sum_d"], n), "mean_label": div(c["sum_yc"], n) + (stats.label_shift or 0.0),
        "mean_prediction": div(c["sum_p"], n), "support": n, "mape_zero_labels": n - c["n_nonzero"],
    }
    return {name: v[:, 0] for name, v in reps.items()}, reps


def _values(stats: EvalStats, model: str, w: np.ndarray) -> tuple[dict, dict]:
    if model not in stats.models:
        raise LakescoreError(f"model {model!r} not in the evaluated models {stats.models}")
    return (_binary if stats.spec.task == "binary" else _regression)(stats, model, w)


def _interval(point: np.ndarray, delta_reps: np.ndarray, confidence: float, unit: bool):
    """(low, high) per slice from replicate deltas (slices, bootstrap); NaN where not enough replicates."""
    if delta_reps.shape[1] == 0:
        nan = np.full(point.shape, np.nan)
        return nan, nan
    a = 100.0 * (1.0 - confidence) / 2.0
    defined = np.isfinite(delta_reps).sum(1)
    enough = (defined * 2 >= delta_reps.shape[1]) & np.isfinite(point)
    safe = np.where(enough[:, None], delta_reps, 0.0)
    q = np.nanpercentile(safe, [a, 100.0 - a], axis=1)
    low, high = np.where(enough, point + q[0], np.nan), np.where(enough, point + q[1], np.nan)
    if unit:
        low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
    return low, high


def _debiased(point: np.ndarray, delta_reps: np.ndarray, confidence: float, unit: bool):
    """(estimate, low, high) per slice: point − mean(delta_reps) held within [q_lo, q_hi], and the basic bootstrap
    interval [point − q_hi, point − q_lo]; the plain point and no interval where too few replicates are defined."""
    nan = np.full(point.shape, np.nan)
    if delta_reps.shape[1] == 0:
        return point, nan, nan
    a = 100.0 * (1.0 - confidence) / 2.0
    enough = (np.isfinite(delta_reps).sum(1) * 2 >= delta_reps.shape[1]) & np.isfinite(point)
    safe = np.where(enough[:, None], delta_reps, 0.0)
    q_lo, q_hi = np.nanpercentile(safe, [a, 100.0 - a], axis=1)
    bias = np.clip(np.nanmean(safe, axis=1), q_lo, q_hi)
    est = np.where(enough, point - bias, point)
    low, high = np.where(enough, point - q_hi, np.nan), np.where(enough, point - q_lo, np.nan)
    if unit:
        est, low, high = np.clip(est, 0.0, 1.0), np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
    return est, low, high


def _num(x) -> float | None:
    return float(x) if np.isfinite(x) else None


def _slice_order(stats: EvalStats) -> list[int]:
    return sorted(range(len(stats.slices)), key=lambda i: stats.slices[i])


def _slice_keys(stats: EvalStats, sid: int) -> dict:
    g, values = stats.slices[sid]
    cols = stats.groups[g]
    name = " & ".join(f"{c}={v}" for c, v in zip(cols, values)) or "overall"
    return {"slice": name, "slice_columns": ",".join(cols), "slice_values": ",".join(values)}


def _row(stats, model, sid, metric, value, low, high, support) -> dict:
    value = _num(value)
    status = ("under_support" if support < stats.spec.min_support else "undefined" if value is None else "ok")
    return {"model": model, **_slice_keys(stats, sid), "metric": metric, "value": value,
            "ci_low": _num(low), "ci_high": _num(high), "support": support, "status": status}


def _supports(stats: EvalStats) -> np.ndarray:
    m = stats.models[0]
    if stats.spec.task == "binary":
        return stats.view(m, "coarse").sum(axis=(1, 2, 3))
    return np.rint(stats.view(m, "sums")[..., REG_SUMS.index("n")].sum(1)).astype(np.int64)


def compute_metrics(stats: EvalStats) -> list[dict]:
    """Metric rows (format of eval-interfaces): per model, per slice (overall first), per metric."""
    w, rows, support = _weights(stats), [], _supports(stats)
    for model in stats.models:
        point, reps = _values(stats, model, w)
        ci = {name: _interval(point[name], reps[name][:, 1:] - reps[name][:, :1], stats.spec.confidence,
                              name in _UNIT or "@" in name) for name in point if name not in _NO_INTERVAL | _DEBIASED}
        for name in _DEBIASED & set(point):
            point[name], *ci[name] = _debiased(point[name], reps[name][:, 1:] - reps[name][:, :1],
                                               stats.spec.confidence, True)
        for sid in _slice_order(stats):
            for name in reps:
                low, high = (ci[name][0][sid], ci[name][1][sid]) if name in ci else (np.nan, np.nan)
                rows.append(_row(stats, model, sid, name, point[name][sid], low, high, int(support[sid])))
    return rows


def compare(stats: EvalStats, champion: str, challenger: str) -> list[dict]:
    """Delta rows: challenger - champion per metric and slice, with a paired bootstrap interval."""
    if champion == challenger:
        raise ConfigError(f"compare: champion and challenger are the same model {champion!r}")
    w, rows, support = _weights(stats), [], _supports(stats)
    (p0, r0), (p1, r1) = _values(stats, champion, w), _values(stats, challenger, w)
    for sid in _slice_order(stats):
        for name in r0:
            if name in _NOT_COMPARED:
                continue
            delta = p1[name][sid] - p0[name][sid]
            reps = (r1[name][sid:sid + 1, 1:] - r1[name][sid, 0]) - (r0[name][sid:sid + 1, 1:] - r0[name][sid, 0])
            if name in _DEBIASED:
                (delta,), low, high = _debiased(np.array([delta]), reps, stats.spec.confidence, False)
            else:
                low, high = _interval(np.array([delta]), reps, stats.spec.confidence, False)
            row = _row(stats, challenger, sid, name, delta, low[0], high[0], int(support[sid]))
            row["baseline"] = champion
            rows.append(row)
    return rows


def _binary_only(stats: EvalStats, what: str) -> None:
    if stats.spec.task != "binary":
        raise ConfigError(f"{what} is defined for task binary, not {stats.spec.task}")


def reliability(stats: EvalStats, model: str) -> list[dict]:
    """Reliability-diagram bins of the overall slice: ece_bins equal-width score bins [k/E, (k+1)/E)."""
    _binary_only(stats, "reliability")
    if model not in stats.models:
        raise LakescoreError(f"model {model!r} not in the evaluated models {stats.models}")
    e = stats.spec.ece_bins
    coarse = stats.view(model, "coarse")[0].sum(0)
    count = np.bincount(stats._ece_of_coarse, weights=coarse.sum(0), minlength=e)
    pos = np.bincount(stats._ece_of_coarse, weights=coarse[1], minlength=e)
    ssum = stats.view(model, "ece_sum")[0].sum(0)
    return [{"bin_low": k / e, "bin_high": (k + 1) / e, "count": int(count[k]),
             "mean_score": float(ssum[k] / count[k]) if count[k] else None,
             "frac_positive": float(pos[k] / count[k]) if count[k] else None} for k in range(e)]


def score_histogram(stats: EvalStats, model: str, bins: int = 50) -> dict:
    """Score distribution by label on `bins` equal-width bins of [0, 1] (overall slice). Each fine bin goes to the
    display bin holding its centre: a display edge is off by at most one fine bin (≤ 3.7e-4 in score by default)."""
    _binary_only(stats, "score_histogram")
    if model not in stats.models:
        raise LakescoreError(f"model {model!r} not in the evaluated models {stats.models}")
    s = stats.spec
    width = 2.0 * s.logit_range / s.fine_bins
    centre = 1.0 / (1.0 + np.exp(-(-s.logit_range + (np.arange(s.fine_bins) + 0.5) * width)))
    idx = np.minimum((centre * bins).astype(np.intp), bins - 1)
    fine = stats.view(model, "fine")[0]
    return {"edges": np.linspace(0.0, 1.0, bins + 1).tolist(),
            "positive": np.bincount(idx, weights=fine[1], minlength=bins).astype(np.int64).tolist(),
            "negative": np.bincount(idx, weights=fine[0], minlength=bins).astype(np.int64).tolist()}


def roc_pr_curves(stats: EvalStats, model: str, max_points: int = 200) -> dict:
    """ROC and precision–recall points of the overall slice from the fine histogram: one point per fine-bin lower
    edge t (predict positive when score ≥ t), thinned to at most about `max_points` (a point is kept when it moves
    either curve by ≥ 1/max_points), plus the configured thresholds' confusion matrices (exact: thresholds are
    coarse edges). Each point carries its threshold, so it is checkable against the rows: its counts are exact
    up to rows whose score lies within one fine bin of t (≤ 3.7e-4 in score by default)."""
    _binary_only(stats, "roc_pr_curves")
    if model not in stats.models:
        raise LakescoreError(f"model {model!r} not in the evaluated models {stats.models}")
    s = stats.spec
    fine = stats.view(model, "fine")[0].astype(np.float64)
    pos_n, neg_n = fine[1].sum(), fine[0].sum()
    tp = np.cumsum(fine[1][::-1])[::-1]  # rows at or above each fine bin's lower edge
    fp = np.cumsum(fine[0][::-1])[::-1]
    z = -s.logit_range + np.arange(s.fine_bins) * (2.0 * s.logit_range / s.fine_bins)
    thr = 1.0 / (1.0 + np.exp(-z))
    tpr, fpr = curves._div(tp, pos_n), curves._div(fp, neg_n)
    prec = curves._div(tp, tp + fp)
    points, last = [], (-1.0, -1.0, -1.0)
    for i in range(s.fine_bins - 1, -1, -1):  # high threshold to low: the curves run from (0, 0)
        if tp[i] + fp[i] == 0 or (i and tp[i] == tp[i - 1] and fp[i] == fp[i - 1]):
            continue
        step = max(abs(fpr[i] - last[0]), abs(tpr[i] - last[1]), abs(prec[i] - last[2]))
        if step >= 1.0 / max_points or i == 0:
            points.append({"threshold": float(thr[i]), "fpr": _num(fpr[i]), "tpr": _num(tpr[i]),
                           "precision": _num(prec[i]), "tp": int(tp[i]), "fp": int(fp[i])})
            last = (fpr[i], tpr[i], prec[i])
    coarse = stats.view(model, "coarse")[0].sum(0)
    confusion = []
    for t in s.thresholds:
        start = int(np.searchsorted(stats._edges, t, side="left"))
        tp_t, fp_t = int(coarse[1, start:].sum()), int(coarse[0, start:].sum())
        confusion.append({"threshold": float(t), "tp": tp_t, "fp": fp_t, "fn": int(pos_n) - tp_t,
                          "tn": int(neg_n) - fp_t})
    return {"points": points, "positives": int(pos_n), "negatives": int(neg_n), "confusion": confusion}
