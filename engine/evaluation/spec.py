"""What an evaluation computes (`MetricsSpec`): task, thresholds, top-k, ECE bins, slices, support, bootstrap,
and the resolution knobs of the statistics behind them."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from engine.errors import ConfigError

LOG_EPS = float(np.finfo(np.float64).eps)  # log-loss clip, as sklearn does for float64 scores: [eps, 1 - eps]


@dataclass(frozen=True)
class MetricsSpec:
    """What to compute. Resolution knobs: `fine_bins` over logit ±`logit_range` (bin width 24/16384 ≈ 0.0015 in
    logit, ≤ 3.7e-4 in score) bound the histogram metrics' error (see `curves`); `buckets` (a power of two) is the
    bootstrap's resampling unit: 256 random buckets estimate a standard error to within ~±9 % (√(2/256))."""

    task: Literal["binary", "regression"] = "binary"
    thresholds: tuple[float, ...] = (0.5,)
    top_k_pct: tuple[float, ...] = (1.0, 5.0)
    ece_bins: int = 10
    slices: tuple[tuple[str, ...], ...] = ()
    min_support: int = 100
    bootstrap: int = 200
    confidence: float = 0.95
    seed: int = 0
    fine_bins: int = 16384
    logit_range: float = 12.0
    coarse_bins: int = 64
    coarse_logit_range: float = 8.0
    buckets: int = 256

    def __post_init__(self):
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, "top_k_pct", tuple(float(k) for k in self.top_k_pct))
        object.__setattr__(self, "slices", tuple(tuple(str(c) for c in s) for s in self.slices))
        problems = []
        if self.task not in ("binary", "regression"):
            problems.append(f"task={self.task!r} (use 'binary' or 'regression')")
        if any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            problems.append(f"thresholds={self.thresholds} (each in [0, 1])")
        if any(not 0.0 < k <= 100.0 for k in self.top_k_pct):
            problems.append(f"top_k_pct={self.top_k_pct} (each in (0, 100])")
        if any(not s or len(set(s)) != len(s) for s in self.slices) or len(set(self.slices)) != len(self.slices):
            problems.append(f"slices={self.slices} (non-empty, distinct column tuples)")
        if not 0.0 < self.confidence < 1.0:
            problems.append(f"confidence={self.confidence} (in (0, 1))")
        if self.buckets < 2 or self.buckets & (self.buckets - 1) or self.buckets > 1 << 16:
            problems.append(f"buckets={self.buckets} (a power of two, 2..65536)")
        for name in ("ece_bins", "fine_bins", "coarse_bins"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (at least 1)")
        if self.bootstrap < 0 or self.min_support < 0:
            problems.append("bootstrap and min_support must be >= 0")
        if problems:
            raise ConfigError("metrics spec invalid: " + "; ".join(problems))

    @property
    def coarse_edges(self) -> np.ndarray:
        """Lower edges of the coarse bins (bin i = [edges[i], edges[i+1]), the last one open above)."""
        z = np.linspace(-self.coarse_logit_range, self.coarse_logit_range, self.coarse_bins + 1)[:-1]
        grid = 1.0 / (1.0 + np.exp(-z))
        ece = np.arange(self.ece_bins, dtype=np.float64) / self.ece_bins
        return np.unique(np.concatenate([[0.0], grid, ece, np.asarray(self.thresholds, dtype=np.float64)]))


def spec_from_config(cfg) -> MetricsSpec:
    """The metrics spec of a job config with `metrics`, `slices` and `min_support` (evaluate, backtest)."""
    m = cfg.metrics
    return MetricsSpec(task=m.task, thresholds=tuple(m.thresholds), top_k_pct=tuple(m.top_k_pct), ece_bins=m.ece_bins,
                       slices=tuple(tuple(s) for s in cfg.slices), min_support=cfg.min_support, bootstrap=m.bootstrap,
                       confidence=m.confidence, seed=m.seed)


def spec_to_dict(spec: MetricsSpec) -> dict:
    """JSON-ready fields, for task plans; `MetricsSpec(**d)` rebuilds the spec (it normalises lists to tuples)."""
    return json.loads(json.dumps(asdict(spec)))
