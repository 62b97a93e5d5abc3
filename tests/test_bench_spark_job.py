"""The bench's reading of (d)'s log (benchmarks/spark_job.py) against the lines the engine really writes: if either
side changes its format, the bench must not silently lose the steady-state figure or the model-cache check."""
from __future__ import annotations

import json
import logging
import sys

from conftest import ROOT
from engine.spark.executor import _log_workers

sys.path.insert(0, str(ROOT / "benchmarks"))
import spark_job  # noqa: E402

UNIT = "lakescore/score/2026-01-01/bench-xgb/1"


def engine_lines(caplog, workers_by_unit: dict[str, list[tuple]]) -> list[str]:
    """What the job's log holds: the SparkExecutor's per-unit lines, in the jobs' format (jobs._main)."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s lakescore: %(message)s")
    with caplog.at_level(logging.INFO, logger="lakescore"):
        for unit, workers in workers_by_unit.items():
            _log_workers(unit, workers)
    return [fmt.format(r) for r in caplog.records]


def test_model_loads_per_worker_are_read_from_the_executor_lines(caplog):
    lines = engine_lines(caplog, {UNIT: [(101, 1, 1000.0, 1002.0), (102, 1, 1000.5, 1003.0)],
                                  UNIT.replace("01/", "02/"): [(101, 1, 1003.0, 1005.0), (102, 1, 1003.1, 1006.0)]})
    cache = spark_job.model_cache(spark_job.parse_log(lines))
    assert cache == {"chunks": 4, "python_workers": 2, "model_loads": 2, "loads_by_pid": {"101": 1, "102": 1},
                     "holds": True, "workers_reused": True}


def test_a_worker_that_loaded_the_model_twice_breaks_the_cache_check(caplog):
    lines = engine_lines(caplog, {UNIT: [(101, 1, 1000.0, 1002.0)], UNIT.replace("01/", "02/"): [(101, 2, 1003.0, 1004.0)]})
    cache = spark_job.model_cache(spark_job.parse_log(lines))
    assert (cache["model_loads"], cache["holds"]) == (2, False)
    assert spark_job.model_cache(spark_job.parse_log([]))["holds"] is False  # no line read: nothing shown


def test_steady_state_runs_from_the_first_task_launch_to_the_last_commit():
    lines = ["2026-01-01 00:00:10,000 INFO lakescore: config conf/score.yaml (hash x): {}",
             "2026-01-01 00:00:30,000 INFO lakescore: input features@v3: 1 unit(s) planned, 0 up to date or superseded, "
             "1 to score, 0 to retract",
             f"2026-01-01 00:01:00,500 INFO lakescore: unit {UNIT}: committed, 1000 rows",
             "2026-01-01 00:01:01,000 INFO lakescore: score run abc finished in 40.0s",
             json.dumps({"job": "score", "elapsed_s": 51.0})]
    parsed = spark_job.parse_log(lines)
    t = spark_job._log_time(lines[0]) - 10  # the epoch of 00:00:00 in the log's own (local) time
    tasks = {"first_launch": t + 32, "last_finish": t + 60}
    tl = spark_job.timeline(parsed, tasks, t + 5, t + 62.5, 1000)
    assert (tl["whole_s"], tl["steady_s"], tl["fixed_cost_s"]) == (57.5, 28.5, 29.0)
    assert (tl["planned_to_first_task_s"], tl["last_task_to_last_commit_s"], tl["last_commit_to_exit_s"]) == (2.0, 0.5, 2.0)
    assert (tl["submit_to_config_s"], tl["config_to_run_start_s"], tl["run_start_to_planned_s"]) == (5.0, 11.0, 9.0)
    assert tl["steady_rows_per_s"] == 1000 / 28.5 and tl["job_elapsed_s"] == 51.0
