"""What an evaluation computes (`MetricsSpec`): task, thresholds, top-k, ECE bins, slices, support, bootstrap,
and the resolution knobs of the statistics behind them.

The metrics settings are declared once, in engine/config/sections.py (`EvalMetricsConfig`, the config's `metrics`
section): the spec takes its defaults from there and `spec_from_config` hands over every one of its fields, so the
two cannot drift apart. The bounds differ on purpose: the config's (ece_bins 2..100, bootstrap <= 2000,
confidence in (0.5, 1)) guard what a user writes; `__post_init__` checks only the spec's own invariants (ece_bins
>= 1, bootstrap >= 0, confidence in (0, 1), thresholds in [0, 1], top_k_pct in (0, 100]) for specs built in code
(tests, benchmarks) and rebuilt from JSON task plans on the workers.

Imports: numpy, engine.errors and engine.config.sections; imported by the evaluation modules and backtests.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
import numpy as np

from engine.config.sections import EvalMetricsConfig, MetricsTask
from engine.errors import ConfigError

LOG_EPS = float(np.finfo(np.float64).eps)  # log-loss clip, as sklearn does for float64 scores: [eps, 1 - eps]

_CFG = EvalMetricsConfig()  # the config's defaults are the spec's


@dataclass(frozen=True)
class MetricsSpec:
    """What to compute. Resolution knobs: `fine_bins` over logit ±`logit_range` (bin width 24/16384 ≈ 0.0015 in
    logit, ≤ 3.7e-4 in score) bound the histogram metrics' error (see `curves`); `buckets` (a power of two) is the
    bootstrap's resampling unit: 256 random buckets estimate a standard error to within ~±9 % (√(2/256))."""

    task: MetricsTask = _CFG.task
    thresholds: tuple[float, ...] = tuple(_CFG.thresholds)
    top_k_pct: tuple[float, ...] = tuple(_CFG.top_k_pct)
    ece_bins: int = _CFG.ece_bins
    slices: tuple[tuple[str, ...], ...] = ()
    min_support: int = 100
    bootstrap: int = _CFG.bootstrap
    confidence: float = _CFG.confidence
    seed: int = _CFG.seed
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
    return MetricsSpec(**cfg.metrics.model_dump(), slices=tuple(tuple(s) for s in cfg.slices),
                       min_support=cfg.min_support)


def spec_to_dict(spec: MetricsSpec) -> dict:
    """JSON-ready fields, for task plans; `MetricsSpec(**d)` rebuilds the spec (it normalises lists to tuples)."""
    return json.loads(json.dumps(asdict(spec)))
