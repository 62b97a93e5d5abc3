"""Binary-classification metrics from score histograms and counts, vectorized over leading axes (slices, replicates).

Histograms have bins in ascending score order, one array of positives and one of negatives. Rows that share a bin
are treated as tied scores, as scikit-learn treats exactly equal scores; the resulting error against the exact
(per-row) value is bounded by what the histogram itself shows, and the `*_bound` functions return that bound:

- ROC AUC: ties count 1/2, so |error| ≤ Σ_b pos_b·neg_b / (2·P·N) (pairs in one bin).
- Average precision (sklearn's Σ ΔRecall·Precision = mean over positives of the precision at their rank): every
  positive of bin b is credited the expected precision at its rank if the rows of b were in random order (closed
  form with harmonic numbers), not the end-of-bin precision that exact ties would get, which would bias AP down.
  Any two precisions reached inside b differ by at most (m_b - 1) / C_b (m_b rows in b, C_b rows at or above b),
  and the estimate lies between them, so |error| ≤ Σ_b (pos_b/P)·(m_b - 1)/C_b.
- Top k %: the ⌈k·n/100⌉ highest-scored rows. The boundary bin is taken in part, crediting positives pro rata;
  the true count lies in [max(0, take - neg_b), min(take, pos_b)], so |error of TP| ≤ that range's width and
  precision's error ≤ width / ⌈k·n/100⌉ (recall's: width / P).
With 16384 logit-uniform fine bins these bounds are ~1e-4 or less on 10⁴–10⁶ rows of realistic scores, and the
actual error (ties resolve both ways) is far smaller; tests/test_eval_metrics.py checks both against sklearn.
Undefined values (one class only, no predicted positives, empty slice) are NaN.
"""
from __future__ import annotations

import numpy as np


def _div(num, den):
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Probability that a positive outscores a negative (ties 1/2)."""
    neg_below = np.cumsum(neg, axis=-1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(-1)
    return _div(num, pos.sum(-1) * neg.sum(-1))


def roc_auc_bound(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    return _div((pos * neg).sum(-1), 2.0 * pos.sum(-1) * neg.sum(-1))


def _descending(pos, neg):
    pd, td = pos[..., ::-1], (pos + neg)[..., ::-1]
    return pd, td, np.cumsum(pd, axis=-1), np.cumsum(td, axis=-1)


_H_SMALL = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 64))])


def _harmonic(n: np.ndarray) -> np.ndarray:
    """H(n) = Σ_{i≤n} 1/i for integer-valued n ≥ 0 (counts and Poisson-weighted counts are integers): a table
    below 64, the asymptotic series above (error < 1e-15)."""
    big = np.maximum(n, 64.0)
    series = np.log(big) + np.euler_gamma + 1 / (2 * big) - 1 / (12 * big**2) + 1 / (120 * big**4)
    return np.where(n < 64, _H_SMALL[np.clip(n, 0, 63).astype(np.intp)], series)


def average_precision(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """sklearn's average_precision_score, each bin's positives credited their expected precision under a random
    order of the bin's rows: for a positive at position j of the m rows of bin b (c0, tp0 rows and positives
    above b), E[precision] = a + (tp0 + 1 - a - a·c0)/(c0 + j) with a = (p - 1)/(m - 1); averaged over j that is
    a + (tp0 + 1 - a - a·c0)·(H(c0 + m) - H(c0))/m."""
    pd, td, tp, c = _descending(pos, neg)
    tp0, c0 = tp - pd, c - td
    a = np.divide(pd - 1, td - 1, out=np.zeros_like(td, dtype=np.float64), where=td > 1)
    h = np.divide(_harmonic(c) - _harmonic(c0), td, out=np.zeros_like(td, dtype=np.float64), where=td > 0)
    expected = a + (tp0 + 1 - a - a * c0) * h
    return _div((pd * expected).sum(-1), pos.sum(-1))


def average_precision_bound(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    pd, td, _, c = _descending(pos, neg)
    share = np.divide(np.maximum(td - 1, 0), c, out=np.zeros_like(td, dtype=np.float64), where=c > 0)
    return _div((pd * share).sum(-1), pos.sum(-1))


def top_k_count(n: np.ndarray, pct: float) -> np.ndarray:
    """⌈pct·n/100⌉, at least 1 (rounded to 9 decimals first so 5 % of 1000 is 50, not 51)."""
    return np.maximum(np.ceil(np.round(np.asarray(n, dtype=np.float64) * pct / 100.0, 9)), 1.0)


def _top_k_parts(pos, neg, pct):
    pd, td, tp, c = _descending(pos, neg)
    n = c[..., -1]
    nk = top_k_count(n, pct)
    j = np.minimum((c < nk[..., None]).sum(-1), c.shape[-1] - 1)[..., None]
    t_j, p_j = np.take_along_axis(td, j, -1)[..., 0], np.take_along_axis(pd, j, -1)[..., 0]
    before = np.take_along_axis(c, j, -1)[..., 0] - t_j
    take = np.minimum(nk - before, t_j)
    partial = p_j * _div(take, t_j)
    partial = np.where(t_j > 0, partial, 0.0)
    tp_k = np.take_along_axis(tp, j, -1)[..., 0] - p_j + partial
    width_hi = np.minimum(take, p_j) - partial
    width_lo = partial - np.maximum(0.0, take - (t_j - p_j))
    return tp_k, np.where(n > 0, nk, np.nan), np.maximum(width_hi, width_lo)


def top_k(pos: np.ndarray, neg: np.ndarray, pct: float) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) among the ⌈pct·n/100⌉ highest-scored rows."""
    tp_k, nk, _ = _top_k_parts(pos, neg, pct)
    return _div(tp_k, nk), _div(tp_k, pos.sum(-1))


def top_k_bound(pos: np.ndarray, neg: np.ndarray, pct: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the errors of (precision, recall) at top pct %."""
    _, nk, width = _top_k_parts(pos, neg, pct)
    return _div(width, nk), _div(width, pos.sum(-1))


def at_threshold(pos: np.ndarray, neg: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, F1) predicting positive for bins from `start` on (score >= that bin's lower edge).
    Precision is undefined with no predicted positive, recall with no positive; F1 = 2TP/(2TP+FP+FN)."""
    tp, fp = pos[..., start:].sum(-1), neg[..., start:].sum(-1)
    fn = pos.sum(-1) - tp
    return _div(tp, tp + fp), _div(tp, tp + fn), _div(2.0 * tp, 2.0 * tp + fp + fn)


def ece(pos: np.ndarray, total: np.ndarray, score_sum: np.ndarray) -> np.ndarray:
    """Expected calibration error Σ_k (n_k/N)·|mean score_k - positive rate_k| = Σ_k |Σscore_k - pos_k| / N."""
    return _div(np.abs(score_sum - pos).sum(-1), total.sum(-1))
