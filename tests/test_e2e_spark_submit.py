"""End to end on Spark: a local standalone master and worker,
`spark-submit jobs/validate.py|score.py|evaluate.py|backtest.py … engine=spark`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from conftest import DAYS, ROOT, ROWS, XGB
from engine.demo.data import make_day
from engine.testing.spark_cluster import StandaloneSpark

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
PLANTED = "pii.canary.spark@example.com"


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    """Standalone master + two workers on loopback (engine.testing.spark_cluster), stopped by their own pids."""
    with StandaloneSpark(tmp_path_factory.mktemp("spark-standalone"), workers=2, cores=1, memory="1500m") as cluster:
        yield cluster.master_url, {**cluster.env, "PYTHONPATH": str(ROOT)}, cluster


def submit(master: str, env: dict, *args: str, job: str = "validate") -> subprocess.CompletedProcess:
    """spark-submit as the README shows it: no `--jars`, since every job reads and commits its Delta tables through
    deltalake (a job that came to need delta-spark's classes on Spark fails here)."""
    cmd = [str(BIN / "spark-submit"), "--master", master,
           "--conf", f"spark.pyspark.python={sys.executable}", "--conf", f"spark.executorEnv.PYTHONPATH={ROOT}",
           "--conf", "spark.executor.memory=1g", str(ROOT / "jobs" / f"{job}.py"), "--config",
           str(ROOT / "conf" / f"{job}.yaml"), "engine=spark",
           f"{'input' if job in ('validate', 'score') else 'features'}.contract={ROOT / 'conf/contracts/features.yaml'}",
           *args]
    # Run from the isolated cwd (tests/conftest.py): whatever Spark or the job writes relative to it stays there.
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)


def test_spark_submit_validate_passes_clean_days_and_exits_3_on_a_bad_one(spark_cluster, lake, demo_root):
    master, env, _ = spark_cluster
    common = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
              f"mlflow.artifact_root={demo_root}/mlartifacts"]
    ok = submit(master, env, *common)
    assert ok.returncode == 0, ok.stderr[-3000:]
    s = json.loads([ln for ln in ok.stdout.splitlines() if ln.startswith("{")][-1])
    assert s["units_passed"] == DAYS and s["rows"] == DAYS * ROWS and s["input_version"] == DAYS - 1
    t = make_day(DAYS, "2026-01-05", ROWS, 50, seed=41)[0]
    vals, email = t.column("f05").to_pylist(), t.column("email").to_pylist()
    vals[7], email[7] = 1e6, PLANTED  # the failing row carries PII
    t = t.set_column(t.schema.get_field_index("f05"), "f05", pa.array(vals, pa.float32()))
    write_deltalake(str(lake / "features"), t.set_column(t.schema.get_field_index("email"), "email", pa.array(email)),
                    partition_by=["ds"], mode="append")
    bad = submit(master, env, *common)
    assert bad.returncode == 3, bad.stderr[-3000:]
    s = json.loads([ln for ln in bad.stdout.splitlines() if ln.startswith("{")][-1])
    assert s["failed"] == ["2026-01-05"] and s["violations"][0]["check"] == "range:f05" and s["violations"][0]["rows"] == 1
    # spark-submit's PythonRunner merges the Python process's stderr into its own stdout
    (line,) = [ln for ln in (bad.stdout + bad.stderr).splitlines() if ln.startswith("lakescore validate: error:")]
    assert "range:f05" in line and "2026-01-05" in line
    # PII: not in the driver's output, the Spark master/worker/executor logs, or the reports
    logs = "".join(p.read_text(errors="replace") for p in Path(env["SPARK_WORKER_DIR"]).parent.rglob("*")
                   if p.is_file() and p.suffix in ("", ".log", ".txt", ".json") or p.name in ("stdout", "stderr"))
    assert "Executor" in logs or "Worker" in logs  # the scanner reads real logs
    reports = "".join(p.read_text() for p in (lake / "_reports").rglob("*.*"))
    for where, text in (("spark-submit output", bad.stdout + bad.stderr), ("spark logs", logs), ("reports", reports)):
        assert PLANTED not in text, f"PII in {where}"


def test_spark_submit_score_writes_the_table_and_a_rerun_is_a_no_op(spark_cluster, lake, demo_root):
    from deltalake import DeltaTable

    master, env, cluster = spark_cluster
    args = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", f"model.uri=models:/{XGB}@champion"]
    first = submit(master, env, *args, job="score")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    # The executors ran the project's Python daemon (engine.spark.daemon: PySpark from the installed package, not
    # compiled from the executor's pyspark.zip at every start). Broken build: session_conf without the daemon module.
    app = max((cluster.work_dir / "worker").glob("app-*"), key=lambda p: p.stat().st_mtime)
    assert "[engine.spark.daemon]" in "".join(p.read_text() for p in app.glob("*/stderr")), app
    s = json.loads([ln for ln in first.stdout.splitlines() if ln.startswith("{")][-1])
    assert (s["units_committed"], s["rows_out"], s["input_version"]) == (DAYS, DAYS * ROWS, DAYS - 1)
    assert len(s["nodes"]) == 2 and all("/executor-" in n for n in s["nodes"]), s["nodes"]  # both workers' executors
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "entity_id", "run_id", "model_name"])
    keys = list(zip(t.column("ds").to_pylist(), t.column("entity_id").to_pylist()))
    assert t.num_rows == DAYS * ROWS and len(set(keys)) == t.num_rows  # one copy of each input row
    assert set(t.column("run_id").to_pylist()) == {s["run_id"]} and set(t.column("model_name").to_pylist()) == {XGB}
    version = DeltaTable(str(lake / "scores")).version()
    again = submit(master, env, *args, job="score")
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    s2 = json.loads([ln for ln in again.stdout.splitlines() if ln.startswith("{")][-1])
    assert (s2["units_skipped"], s2["units_committed"]) == (DAYS, 0)
    assert DeltaTable(str(lake / "scores")).version() == version


def test_spark_submit_evaluate_gives_the_numbers_of_a_local_run(spark_cluster, lake, demo_root):
    from conftest import MLP, score_config
    from engine.evaluation.job import run_evaluate
    from engine.executor import LocalExecutor
    from jobs.score import run_score
    from test_evaluate import eval_config, report_of

    master, env, _ = spark_cluster
    run_score(score_config(lake, demo_root), LocalExecutor())
    run_score(score_config(lake, demo_root, f"model.uri=models:/{MLP}/1"), LocalExecutor())
    args = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", f"models.champion=models:/{XGB}@champion",
            f"models.challengers=[models:/{MLP}/1]", "window=2026-01-02..2026-01-04", "min_support=50",
            "gates.min_support=50", "metrics.bootstrap=50", "drift.reference=2026-01-01..2026-01-01",
            "drift.sample_rows=500", "gates.thresholds=[{metric: roc_auc, min: 0.6}]"]
    done = submit(master, env, *args, job="evaluate")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    s = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
    assert s["engine"] == "spark" and s["verdict"] == "pass" and s["rows_evaluated"] == 3 * ROWS
    spark_rep = json.loads(Path(s["report"]).with_name("report.json").read_text())
    local = report_of(run_evaluate(eval_config(lake, demo_root, "mlflow.log_reports=false"), LocalExecutor()))
    assert spark_rep["metrics"] == local["metrics"] and spark_rep["deltas"] == local["deltas"]
    assert {p["column"] for p in spark_rep["drift"]["psi"]} >= {"f00", f"score:{XGB}/1"}
    assert (Path(s["report"]).parent / "drift.html").stat().st_size > 0
    failing = submit(master, env, *args[:-1], "gates.thresholds=[{metric: roc_auc, min: 0.999}]", job="evaluate")
    assert failing.returncode == 4, (failing.stdout + failing.stderr)[-3000:]


def test_spark_submit_backtest_commits_the_rows_of_an_in_process_run(spark_cluster, lake, demo_root, tmp_path):
    """`spark-submit jobs/backtest.py … engine=spark`: each refit group a Spark job on the standalone workers, its start
    line printed, and `backtest_metrics` holding the rows an in-process run (LocalExecutor) commits, read with
    deltalake (all but the run's own columns)."""
    import shutil

    import pandas as pd
    from deltalake import DeltaTable

    from backtests.runner import run_backtest
    from engine.config import BacktestConfig, load_config, resolve_paths
    from engine.executor import LocalExecutor

    master, env, _ = spark_cluster
    fresh, reference = tmp_path / "fresh", tmp_path / "reference"
    shutil.copytree(lake, fresh)
    args = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", f"baseline.model=models:/{XGB}@champion",
            "folds.train_days=2", "folds.n_folds=2", "recipe.trees=20", "recipe.depth=3", "metrics.bootstrap=30",
            "min_support=50", "mlflow.log_reports=false"]
    # The reference first, at the same lake.root (it is in the config hash, so in the backtest id), then moved away.
    cfg = load_config(BacktestConfig, str(ROOT / "conf" / "backtest.yaml"),
                      [*args, f"features.contract={ROOT / 'conf/contracts/features.yaml'}"])
    local = run_backtest(resolve_paths(cfg), LocalExecutor())
    lake.rename(reference)
    fresh.rename(lake)
    done = submit(master, env, *args, job="backtest")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    s = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
    assert s["folds_committed"] == [0, 1] and s["folds_failed"] == []
    assert "fold(s) [0] start" in done.stdout + done.stderr and "fold(s) [1] start" in done.stdout + done.stderr
    assert local.backtest_id == s["backtest_id"]

    def rows(root):
        df = DeltaTable(str(root / "backtest_metrics")).to_pandas().drop(columns=["run_id", "created_at"])
        return df.sort_values(["fold", "model", "slice", "metric"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(lake), rows(reference), check_exact=True)


def test_losing_a_spark_worker_mid_run_leaves_exactly_one_copy_of_every_row(spark_cluster, lake, demo_root):
    """Runs last in this module: it kills the second worker (its executor and Python workers) as a lost machine."""
    import threading
    import time

    import pyarrow.compute as pc
    from deltalake import DeltaTable

    master, env, cluster = spark_cluster
    days = [f"2026-01-{d:02d}" for d in range(5, 17)]
    for i, d in enumerate(days):
        write_deltalake(str(lake / "features"), make_day(10 + i, d, 20_000, 50, seed=31)[0], partition_by=["ds"],
                        mode="append")
    args = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", f"model.uri=models:/{XGB}@champion",
            "input.ds=2026-01-05..2026-01-16", "input.contract=null"]
    result: list = []
    job = threading.Thread(target=lambda: result.append(submit(master, env, *args, job="score")))
    job.start()
    first_commit = lake / "scores" / "_delta_log" / f"{1:020d}.json"
    deadline = time.monotonic() + 300
    while not first_commit.exists():
        assert job.is_alive() and time.monotonic() < deadline, (
            sorted(p.name for p in first_commit.parent.glob("*")) if first_commit.parent.exists() else "no log",
            result and [ln for ln in result[0].stdout.splitlines() if ln.startswith("{")][-1:])
        time.sleep(0.05)
    cluster.kill_worker(1)
    units_done_at_kill = len(list(first_commit.parent.glob("*.json"))) - 1
    job.join(timeout=400)
    (out,) = result
    print(f"spark worker killed after {units_done_at_kill} of 12 units; the job exited {out.returncode}")
    assert units_done_at_kill < 12
    if out.returncode != 0:  # failed cleanly: a re-run on the remaining worker completes the rest
        assert out.returncode == 1, (out.stdout + out.stderr)[-3000:]
        again = submit(master, env, *args, job="score")
        assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    scores = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "entity_id"], filters=[("ds", "in", days)])
    assert scores.num_rows == 12 * 20_000
    pairs = pc.binary_join_element_wise(scores.column("ds"), pc.cast(scores.column("entity_id"), "string"), "/")
    assert pc.count_distinct(pairs).as_py() == scores.num_rows  # no row twice


def test_the_benchs_spark_floor_app_runs_its_python_tasks_on_the_master(spark_cluster, tmp_path):
    """The bench's (f) Spark floor (benchmarks/floor.py): spark-submit of the least PySpark app with (d)'s settings
    exits 0 only when its Python tasks returned, one per core. Catches a floor app that fails (it would stop
    `make bench`) or one that never reaches the executors (Spark's event log shows its tasks)."""
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import floor

    master, env, _ = spark_cluster
    args = argparse.Namespace(spark_cores=2, spark_job_conf=[], job_timeout=300)
    assert floor.run_spark_floor(args, argparse.Namespace(out=tmp_path), master, env) > 0
    events = [json.loads(ln) for f in (tmp_path / "spark-events-floor").iterdir() for ln in f.read_text().splitlines()]
    ends = [e for e in events if e["Event"] == "SparkListenerTaskEnd"]
    assert len(ends) == 2 and all(e["Task End Reason"]["Reason"] == "Success" for e in ends)
