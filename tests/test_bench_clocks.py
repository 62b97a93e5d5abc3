"""The bench's clocks (issue 20): every ratio it reports divides two figures on the same clock (whole process by
whole process, in-session by in-session), and issue 20's targets are marked. Synthetic runs, no timing: these check
the arithmetic and the reporting, not a speed."""
from __future__ import annotations

import argparse
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import report  # noqa: E402
import spark_job  # noqa: E402

ROWS = 1_200_000


def part(rows_per_s: float, **run) -> dict:
    """A bench part of one run, as bench.summarize builds it."""
    seconds = ROWS / rows_per_s
    r = {"rows": ROWS, "rows_per_s": rows_per_s, "seconds": seconds, "foreign_cpu_share": 0.0, **run}
    return {"rows_per_s": rows_per_s, "seconds": seconds, "all_rows_per_s": [round(rows_per_s)],
            "all_seconds": [seconds], "all_foreign_cpu_share": [0.0], "runs": [r]}


def bench_args(**kw) -> argparse.Namespace:
    base = {"rows": ROWS, "small_rows": 100, "large_rows": 200, "features": 50, "trees": 200, "depth": 6, "repeat": 1,
            "spark_cores": 2}
    return argparse.Namespace(**{**base, **kw})


def result() -> dict:
    whole_tl = {"whole_s": 1.0, "submit_to_app_s": 0.1, "session_startup_s": 0.2, "in_session_s": 0.5,
                "session_stop_s": 0.1, "stop_to_exit_s": 0.1}
    spark_tl = {"steady_rows_per_s": 400_000, "fixed_cost_s": 5.0, "in_session_rows_per_s": 300_000, "whole_s": 8.0}
    cache = {"chunks": 4, "python_workers": 2, "model_loads": 2, "workers_reused": True, "holds": True}
    return {"machine": {"cpus": 2}, "raw": part(500_000),
            "lakescore": part(240_000, tasks={"tasks_span_s": ROWS / 480_000}, profile={}),
            "lakescore_no_contract": None, "spark_udf": part(150_000), "spark_udf_tuned": part(200_000),
            "spark_dataframe": part(165_000),
            "spark_udf_whole": part(60_000, timeline=whole_tl, in_session_rows_per_s=140_000),
            "spark_udf_tuned_whole": part(80_000, timeline=whole_tl, in_session_rows_per_s=190_000),
            "spark_dataframe_whole": part(75_000, timeline=whole_tl, in_session_rows_per_s=170_000),
            "spark_job": part(150_000, timeline=spark_tl, model_cache=cache),
            "rss_small": None, "rss_large": None, "evaluate": None}


def test_every_printed_ratio_pairs_figures_on_the_same_clock(capsys):
    res = result()
    report.print_table(bench_args(), res)
    # whole / whole: (b) 240k and (d) 150k over the peers' spark-submit figures, never their in-session ones
    assert res["ratio_whole_vs_spark_udf_tuned_whole"] == 3.0 and res["ratio_whole_vs_spark_udf_whole"] == 4.0
    assert res["spark_ratio_whole_vs_spark_udf_tuned_whole"] == 1.875
    assert res["spark_ratio_whole_vs_spark_dataframe_whole"] == 2.0
    assert res["ratio_whole_vs_best_peer_whole"] == 3.0
    # in-session / in-session: (d)'s job core (300k) over the peers' local[N] in-session figures
    assert res["spark_ratio_in_session_vs_spark_udf_tuned"] == 1.5 and res["spark_ratio_in_session_vs_spark_udf"] == 2.0
    assert res["spark_udf_tuned_whole_in_session_rows_per_s"] == 190_000
    # the keys kept from before (whole over in-session) are still there, named as mixed, and never printed
    assert res["ratio_vs_spark_udf_tuned"] == 1.2 and "ratio_vs_spark_udf_tuned" in res["clocks"]["mixed_clock_keys"]
    table = capsys.readouterr().out
    assert "1.20" not in table  # the mixed (b)/(c′) figure
    line = next(ln for ln in table.splitlines() if ln.startswith("(b)/(c), (b)/(c′), (b)/(c″) whole"))
    assert line.split()[-3:] == ["4.00", "3.00", "3.20"]
    line = next(ln for ln in table.splitlines() if ln.startswith("(d)/(c), (d)/(c′), (d)/(c″) in-session"))
    assert line.split()[-3:] == ["2.00", "1.50", "1.82"]
    # issue 20's targets are marked: Ray whole / (c′) whole 3.0 ≥ 2 ok, Ray whole / raw 0.48 < 0.85 MISS
    marks = {t["key"]: t["ok"] for t in res["targets_issue20"]}
    assert marks["ratio_whole_vs_spark_udf_tuned_whole"] is True and marks["ratio_vs_raw"] is False
    assert marks["evaluate_job_ratio_vs_raw"] is None  # not measured: neither ok nor MISS
    assert any("Ray whole / raw" in ln and ln.endswith("MISS") for ln in table.splitlines())


def test_the_spark_jobs_in_session_clock_is_its_core_after_the_session():
    lines = ["2026-01-01 00:00:10,000 INFO lakescore: config conf/score.yaml (hash x): {}",
             "2026-01-01 00:01:01,000 INFO lakescore: score run abc finished in 40.0s"]
    parsed = spark_job.parse_log(lines)
    t = spark_job._log_time(lines[0]) - 10
    tl = spark_job.timeline(parsed, {}, t + 5, t + 62.5, 1000)
    assert (tl["in_session_s"], tl["in_session_rows_per_s"], tl["whole_s"]) == (40.0, 25.0, 57.5)


def test_rays_steady_state_counts_the_executors_chunk_tasks_by_their_real_names():
    """(b)'s steady state is the span of its chunk tasks in Ray's state API; the names come from the executor."""
    import job
    from engine.ray.executor import _chunk_task, _chunk_task_started

    rows = [{"name": _chunk_task.__name__, "start_time_ms": 1}, {"name": _chunk_task_started.__name__},
            {"name": "_warm_task"}, {"name": "JobSupervisor.__init__"}]
    assert [t["name"] for t in job.chunk_tasks(rows)] == [_chunk_task.__name__, _chunk_task_started.__name__]


def test_each_fixed_cost_is_set_against_its_engines_floor(capsys):
    """(f): Ray's fixed cost (wall − chunk span: 5.0 − 2.5 s) and Spark's (5.0 s) over each engine's least job on the
    same clock, the floors' medians; not measured → None and no line. Catches a floor subtracted from the wrong
    engine, a mean instead of the median, or the Spark floor dropped from the table."""
    res = result()
    res["ray_floor"] = {"seconds": 1.5, "all_seconds": [1.0, 1.5, 4.0]}
    res["spark_floor"] = {"seconds": 4.0, "all_seconds": [4.0]}
    report.print_table(bench_args(), res)
    assert (res["ray_floor_s"], res["lakescore_fixed_over_floor_s"]) == (1.5, 1.0)
    assert (res["spark_floor_s"], res["spark_fixed_over_floor_s"]) == (4.0, 1.0)
    table = capsys.readouterr().out.splitlines()
    line = next(ln for ln in table if "(f) Spark floor" in ln)
    assert line.split()[-2] == "1.00" and "4.00" in line
    bare = result()
    report.print_table(bench_args(), bare)
    assert bare["ray_floor_s"] is None and bare["lakescore_fixed_over_floor_s"] is None
    assert "(f) Ray floor" not in capsys.readouterr().out


def test_paired_ratios_divide_each_run_by_the_raw_run_beside_it(capsys):
    """(a′): three (b) runs at 240k, 300k, 200k rows/s, each right after a raw run at 300k, 500k, 250k: the paired
    ratios are 0.8, 0.6, 0.8 (median 0.8), whatever the pooled raw median says (240k / 500k = 0.48). Steady pairs
    use each run's own chunk span. Catches pairing runs with the wrong raw run (sorted, pooled or shifted), a mean
    for the median, and a paired figure reported when the raw runs do not match the job's runs one for one."""
    res = result()
    spans = [ROWS / 480_000, ROWS / 600_000, ROWS / 300_000]
    runs = [{"rows": ROWS, "rows_per_s": v, "seconds": ROWS / v, "tasks": {"tasks_span_s": s}, "profile": {}}
            for v, s in zip((240_000, 300_000, 200_000), spans)]
    res["lakescore"] = {**part(240_000), "runs": runs}
    beside = [part(v)["runs"][0] for v in (300_000, 500_000, 250_000)]
    res["raw_beside"] = {"lakescore": {**part(300_000), "runs": beside},
                         "spark_job": {**part(400_000), "runs": [part(400_000)["runs"][0]] * 2}}
    report.print_table(bench_args(repeat=3), res)
    assert res["paired_runs"]["ratio_vs_raw_paired"] == [0.8, 0.6, 0.8] and res["ratio_vs_raw_paired"] == 0.8
    assert res["paired_runs"]["lakescore_steady_ratio_vs_raw_paired"] == [1.6, 1.2, 1.2]
    assert res["lakescore_steady_ratio_vs_raw_paired"] == 1.2
    assert res["spark_ratio_vs_raw_paired"] is None  # one (d) run, two raw runs beside it: no pairing
    marks = {t["key"]: t["ok"] for t in res["targets_issue20"]}
    assert marks["ratio_vs_raw_paired"] is False and marks["lakescore_steady_ratio_vs_raw_paired"] is True
    assert marks["spark_ratio_vs_raw_paired"] is None
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "Ray whole / raw beside" in ln)
    assert "MISS" in line and "[0.8, 0.6, 0.8]" in line
