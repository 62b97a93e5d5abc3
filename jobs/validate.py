"""`python -m jobs.validate --config conf/validate.yaml [key=value …]`: check partitions against their contract."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ValidateConfig  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = "Check a pinned table version's partitions against the table's contract and write a report (exit 3 on violations)."
EXAMPLES = (
    "lakescore validate --config conf/validate.yaml",
    "lakescore validate --config conf/validate.yaml input.ds=2026-01-05",
    "lakescore validate --config conf/validate.yaml input.version=3 engine=spark",
)


def body(cfg: ValidateConfig, args):
    from contracts.enforce import REPORT_EXPERIMENT
    from contracts.validate import executor_gather, run_validate
    from engine.models.relocate import check_experiment
    from jobs.engines import make_executor

    check_experiment(cfg.mlflow, REPORT_EXPERIMENT)  # a moved project's stale MLflow location: exit 2 before any work
    return run_validate(cfg, executor_gather(make_executor(cfg, "validate")))


def main(argv: list[str] | None = None) -> int:
    return run_job("validate", DOC, ValidateConfig, body, argv, examples=EXAMPLES)


if __name__ == "__main__":
    exit_now(main())
