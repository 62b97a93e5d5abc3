"""`python -m jobs.score --config conf/score.yaml [key=value …] [--force]`: score a pinned Delta snapshot."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/score.py): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = "Score the input table's pinned snapshot into the scores table, one idempotent commit per partition."
EXAMPLES = (
    "lakescore score --config conf/score.yaml",
    "lakescore score --config conf/score.yaml input.ds=2026-01-05",
    "lakescore score --config conf/score.yaml input.ds=2026-01-01..2026-01-07 input.version=3",
    "lakescore score --config conf/score.yaml model.uri=models:/lakescore-demo-mlp/1 --force",
    "lakescore score --config conf/score.yaml --log-format json --no-progress   # for a scheduler",
)


def run_score(cfg: ScoreConfig, executor, force: bool = False, hooks=None):
    """The score job's wiring: the engine's job core with the contracts package's enforcer."""
    from functools import partial

    from contracts.enforce import Enforcer
    from engine.config import table_uri
    from engine.tables.drift_reference import TABLE
    from engine.score.run import run_score as core

    factory = partial(Enforcer, reference_table=table_uri(cfg.lake, TABLE))  # drift references stored and reused
    return core(cfg, executor, force=force, hooks=hooks, enforcer_factory=factory)


def body(cfg: ScoreConfig, args):
    from jobs.engines import make_executor

    return run_score(cfg, make_executor(cfg, "score"), force=args.force)


def main(argv: list[str] | None = None) -> int:
    return run_job("score", DOC, ScoreConfig, body, argv,
                   lambda p: p.add_argument("--force", action="store_true", help="re-score and replace up-to-date partitions"),
                   examples=EXAMPLES)


if __name__ == "__main__":
    exit_now(main())
