"""`python -m jobs.backtest --config conf/backtest.yaml [key=value …]`: time-series backtest of a model recipe."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/backtest.py): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import BacktestConfig  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = ("Backtest a model recipe: folds in days, a leakage guard, training and scoring per fold in parallel on Ray "
       "or Spark, metrics beside a baseline, backtest_metrics and a report; a re-run resumes from the completed folds.")
EXAMPLES = (
    "lakescore backtest --config conf/backtest.yaml",
    "lakescore backtest --config conf/backtest.yaml folds.n_folds=3 recipe.kind=torch_mlp",
    "lakescore backtest --config conf/backtest.yaml 'folds.cutoffs=[2026-01-05, 2026-01-07]'",
    "lakescore backtest --config conf/backtest.yaml engine=spark",
)


def body(cfg: BacktestConfig, args):
    from backtests.publish import EXPERIMENT
    from backtests.runner import run_backtest
    from engine.models.relocate import check_experiment
    from jobs.engines import make_executor

    check_experiment(cfg.mlflow, EXPERIMENT)  # a moved project's stale MLflow location: exit 2 before any work
    return run_backtest(cfg, make_executor(cfg, "backtest"))


def main(argv: list[str] | None = None) -> int:
    return run_job("backtest", DOC, BacktestConfig, body, argv, examples=EXAMPLES)


if __name__ == "__main__":
    exit_now(main())
