"""`python -m jobs.evaluate --config conf/evaluate.yaml [key=value …]`: sliced evaluation, gates, `eval_metrics`."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/evaluate.py): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import EvaluateConfig  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = ("Evaluate model versions on a window of the scores table, joined with labels as of a time and with the "
       "features' slice columns; metrics with intervals, champion-challenger gates, the eval_metrics table.")
EXAMPLES = (
    "lakescore evaluate --config conf/evaluate.yaml",
    "lakescore evaluate --config conf/evaluate.yaml window=2026-01-04..2026-01-08 as_of=2026-01-10T00:00:00Z",
    "lakescore evaluate --config conf/evaluate.yaml 'models.challengers=[models:/lakescore-demo-mlp/1]'",
    "lakescore evaluate --config conf/evaluate.yaml --follow   # daily: re-evaluate the windows whose labels changed",
)


def follow_flag(p) -> None:
    p.add_argument("--follow", action="store_true",
                   help="re-evaluate only the windows (already in eval_metrics, and the configured one) whose labels "
                        "changed since their last evaluation; the others are skipped (engine.evaluation.follow)")


def run_evaluate(cfg: EvaluateConfig, executor):
    """The evaluate job's wiring: the engine's job core with the contracts package's PII reader."""
    from contracts.spec import pii_columns
    from engine.evaluation.job import run_evaluate as core

    return core(cfg, executor, contract_pii=pii_columns)


def body(cfg: EvaluateConfig, args):
    from engine.evaluation.publish import EXPERIMENT
    from engine.models.relocate import check_experiment
    from jobs.engines import make_executor

    check_experiment(cfg.mlflow, EXPERIMENT)  # a moved project's stale MLflow location: exit 2 before any work
    if getattr(args, "follow", False):  # the engine starts with the first window to evaluate: a no-op starts none
        from engine.evaluation.follow import run_follow

        started = []

        def evaluate(one: EvaluateConfig):
            started or started.append(make_executor(cfg, "evaluate"))
            return run_evaluate(one, started[0])

        return run_follow(cfg, evaluate)
    return run_evaluate(cfg, make_executor(cfg, "evaluate"))


def main(argv: list[str] | None = None) -> int:
    return run_job("evaluate", DOC, EvaluateConfig, body, argv, extra_args=follow_flag, examples=EXAMPLES)


if __name__ == "__main__":
    exit_now(main())
