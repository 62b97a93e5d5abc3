"""Driver work that does not grow with the rows (issue 20, item 4): what the driver itself spends, measured by itself.

Real parts: the score job on real Delta tables and the shared MLflow registry; the bench's own parsing of a job log.
"""
from __future__ import annotations

import json
import resource
import sys

from conftest import ROOT, score_config
from engine.executor import LocalExecutor
from jobs.score import run_score

sys.path.insert(0, str(ROOT / "benchmarks"))


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def test_the_summary_line_reports_the_driver_process_cpu_seconds(lake, demo_root):
    cfg = score_config(lake, demo_root, "input.ds=2026-01-04", "input.contract=null")
    before = _cpu()
    s = run_score(cfg, LocalExecutor())
    after = _cpu()
    line = json.loads(json.dumps(s.as_line(), default=str))  # as the job prints it
    assert s.units_committed == 1
    # The process's own CPU clock (every thread), read by this test around the run: the line's figure lies between.
    assert before - 0.01 <= line["driver_cpu_s"] <= after + 0.01


def test_the_bench_reads_the_drivers_cpu_seconds_and_compares_the_sizes():
    import job
    import report

    summary = {"job": "score", "elapsed_s": 3.0, "driver_cpu_s": 2.5}
    lines = ["2026-01-01 12:00:00,000 INFO lakescore: config abc", json.dumps(summary)]
    assert job._profile(lines, 0.0, 10.0)["driver_cpu_s"] == 2.5
    small = {"rows": 1_000_000, "profile": {"driver_cpu_s": 2.0}}
    fine = report.driver_cpu({"rss_small": small, "rss_large": {"rows": 16_000_000, "profile": {"driver_cpu_s": 2.3}}})
    assert fine == {"driver_cpu_s_small": 2.0, "driver_cpu_s_large": 2.3, "driver_cpu_ratio_large_small": 1.15,
                    "driver_cpu_ratio_ok": True}
    grown = report.driver_cpu({"rss_small": small, "rss_large": {"rows": 16_000_000, "profile": {"driver_cpu_s": 5.0}}})
    assert grown["driver_cpu_ratio_large_small"] == 2.5 and grown["driver_cpu_ratio_ok"] is False
    assert report.driver_cpu({"rss_small": None, "rss_large": None})["driver_cpu_ratio_ok"] is None
