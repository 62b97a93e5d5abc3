"""Engine-neutral evaluation core: mergeable metric statistics on Arrow batches and the metrics computed from them.

`keys.row_key_hash` gives every row a deterministic 64-bit hash of its key (it picks the row's bootstrap bucket);
`stats.EvalStats` accumulates per-batch sufficient statistics (counts, sums, score histograms per label, per slice
and per bootstrap bucket) that merge associatively, so one task or a thousand, Ray or Spark, give the same numbers;
`metrics.compute_metrics` / `metrics.compare` turn them into the long-form metric rows of issue 9 with Poisson
bootstrap intervals. Pure numpy/pyarrow: no Ray, no Spark.
"""
from engine.evaluation.keys import row_key_hash
from engine.evaluation.metrics import compare, compute_metrics, reliability, score_histogram
from engine.evaluation.spec import MetricsSpec
from engine.evaluation.stats import EvalStats

__all__ = ["EvalStats", "MetricsSpec", "compare", "compute_metrics", "reliability", "row_key_hash", "score_histogram"]
