"""`python -m jobs.score --config conf/score.yaml [key=value …] [--force]`: score a pinned Delta snapshot."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/score.py): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from engine.errors import ConfigError  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = "Score the input table's pinned snapshot into the scores table, one idempotent commit per partition."


def body(cfg: ScoreConfig, args):
    from engine.score_job import run_score

    if cfg.engine != "ray":
        raise ConfigError("engine 'spark' is not available for the score job yet; set engine=ray")
    from engine.ray.score import executor
    from engine.ray.session import connect

    connect(cfg.ray.address)
    return run_score(cfg, executor(cfg.ray), force=args.force)


def main(argv: list[str] | None = None) -> int:
    return run_job("score", DOC, ScoreConfig, body, argv,
                   lambda p: p.add_argument("--force", action="store_true", help="re-score and replace up-to-date partitions"))


if __name__ == "__main__":
    exit_now(main())
