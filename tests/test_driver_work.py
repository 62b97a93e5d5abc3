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


def _committed_days(uri) -> list[str]:
    """The days the score table's commits carry (their userMetadata), oldest first: read from the Delta log."""
    from deltalake import DeltaTable

    history = reversed(DeltaTable(str(uri)).history()) if (uri / "_delta_log").exists() else []
    return [json.loads(h["userMetadata"])["ds"] for h in history if "userMetadata" in h]


def test_a_days_key_uniqueness_stage_never_stalls_the_commit_of_another_day(lake, demo_root):
    """Day A (three files: three chunks, so its key uniqueness needs the second stage) is held inside that stage until
    day B, planned after it, has committed (seen in the table's Delta history). A second stage run inline in the result
    loop would wait forever for a commit it blocks: the hook gives up after HOLD_S and says so."""
    import time

    import pandas as pd
    import pytest

    from conftest import DAYS
    from engine.demo.data import make_day
    from engine.errors import ContractViolation
    from engine.score.units import Hooks
    from test_contracts import CONTRACT, set_rows
    from test_pipelines import append

    day_a, day_b, hold_s = "2026-01-05", "2026-01-06", 60
    a = set_rows(make_day(DAYS, day_a, 3000, 50, seed=21)[0], "entity_id", [10], 0)
    a = set_rows(a, "entity_id", [2900], 0)  # one key in the first and the last file: only the second stage sees it
    expected = int(pd.Series(a.column("entity_id").to_pylist()).duplicated(keep=False).sum())
    assert expected == 2
    append(lake, a, files=3)
    append(lake, make_day(DAYS + 1, day_b, 3000, 50, seed=21)[0])
    held: list[str] = []

    def hold(ds: str) -> None:
        if ds != day_a:
            return
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            if day_b in _committed_days(lake / "scores"):
                held.append("released: day B committed while day A's second stage was held")
                return
            time.sleep(0.2)
        held.append(f"timed out: day B did not commit within {hold_s}s while day A's second stage was held")

    cfg = score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={day_a}..{day_b}",
                       "output.target_file_rows=1000")
    with pytest.raises(ContractViolation) as e:
        run_score(cfg, LocalExecutor(), hooks=Hooks(before_second_stage=hold))
    assert held == ["released: day B committed while day A's second stage was held"]
    s = e.value.summary
    assert s.committed == [day_b] and [f.ds for f in s.failures] == [day_a]
    assert [(v["check"], v["rows"]) for v in s.violations if v["ds"] == day_a] == [("unique_key", expected)]
    assert _committed_days(lake / "scores") == [day_b]
    assert not (lake / "_scratch").exists()
