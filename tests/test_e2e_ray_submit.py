"""End to end: a `ray start --head` cluster on free ports, jobs submitted with `ray job submit` and `lakescore submit`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import DAYS, ROOT, ROWS, XGB
from engine.testing.ray_cluster import LocalRayCluster

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalRayCluster(num_cpus=2, env={"PYTHONPATH": str(ROOT), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
                        log_path=tmp_path_factory.mktemp("ray") / "ray-start.log")
    c.start()
    yield c
    c.stop()
    assert c.processes() == []


def paths(lake, demo_root) -> list[str]:
    return [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", "output.target_file_rows=2000"]


def summary_line(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith("{") and '"job"' in ln]
    assert lines, text[-3000:]
    return json.loads(lines[-1])


def test_ray_job_submit_scores_the_lake(cluster, lake, demo_root):
    cmd = [str(BIN / "ray"), "job", "submit", "--address", cluster.address, "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps({"excludes": [".git", "**/__pycache__", "/lake", "*.db"]}), "--",
           "python", "-m", "jobs.score", "--config", "conf/score.yaml", *paths(lake, demo_root),
           f"model.uri=models:/{XGB}@champion"]
    out = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # The driver joins the cluster on a thread of its own (jobs.engines), where ray.init would say it set no SIGTERM
    # handler: the job sets Ray's handler itself and that notice never reaches the job's log.
    assert "SIGTERM handler is not set" not in out.stdout + out.stderr
    s = summary_line(out.stdout)
    assert s["status"] == "ok" and s["units_committed"] == DAYS and s["rows_out"] == DAYS * ROWS
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "entity_id", "model_name"])
    assert t.num_rows == DAYS * ROWS and set(t.column("model_name").to_pylist()) == {XGB}


def test_relative_lake_path_in_a_submitted_job_is_a_config_error(cluster, demo_root):
    cmd = [str(BIN / "ray"), "job", "submit", "--address", cluster.address, "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps({"excludes": [".git", "**/__pycache__", "/lake", "*.db"]}), "--",
           "python", "-m", "jobs.score", "--config", "conf/score.yaml", "lake.root=lake"]
    out = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 1  # ray job submit says only "failed"…
    assert "lake.root" in out.stdout + out.stderr and "relative" in out.stdout + out.stderr
    assert summary_line(out.stdout)["exit_code"] == 2  # …the job itself said "bad config"


def test_lakescore_submit_exits_with_the_jobs_own_code(cluster, lake, demo_root):
    base = [sys.executable, "-m", "jobs.cli", "submit", "--address", cluster.address, "score", "--config",
            "conf/score.yaml", *paths(lake, demo_root)]
    refused = subprocess.run([*base, "model.uri=models:/no-such-model@champion"], env=cluster.env, capture_output=True,
                             text=True, timeout=300, cwd=ROOT)
    assert refused.returncode == 5, refused.stderr[-3000:]
    assert summary_line(refused.stdout)["exit_code"] == 5
    ok = subprocess.run([*base, f"model.uri=models:/{XGB}@champion", "input.ds=2026-01-02"], env=cluster.env,
                        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert summary_line(ok.stdout)["committed"] == ["2026-01-02"]
    bad = subprocess.run([*base, "input.tabel=x"], env=cluster.env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "input.tabel" in bad.stderr  # refused before anything is uploaded


def test_lakescore_submit_evaluate_exits_4_on_a_failed_gate_with_the_evidence_written(cluster, lake, demo_root):
    from conftest import MLP, score_config
    from engine.executor import LocalExecutor
    from jobs.score import run_score

    run_score(score_config(lake, demo_root), LocalExecutor())
    run_score(score_config(lake, demo_root, f"model.uri=models:/{MLP}/1"), LocalExecutor())
    cmd = [sys.executable, "-m", "jobs.cli", "submit", "--address", cluster.address, "evaluate", "--config",
           "conf/evaluate.yaml", *paths(lake, demo_root)[:3], f"models.champion=models:/{XGB}@champion",
           f"models.challengers=[models:/{MLP}/1]", "window=2026-01-02..2026-01-04", "drift.reference=null",
           "metrics.bootstrap=50", "min_support=50", "gates.min_support=50",
           "gates.thresholds=[{metric: roc_auc, min: 0.999}]"]
    out = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 4, out.stdout[-3000:] + out.stderr[-3000:]
    s = summary_line(out.stdout)
    assert s["verdict"] == "fail" and s["rows_evaluated"] == 3 * ROWS and "roc_auc" in s["error"]
    rows = DeltaTable(str(lake / "eval_metrics")).to_pandas()
    assert set(rows.model_name) == {XGB, MLP} and (rows.run_id == s["run_id"]).all()


def test_the_benchs_ray_floor_is_a_job_that_ran_on_the_cluster(cluster, tmp_path):
    """The bench's (f) Ray floor (benchmarks/floor.py) submits its least job with lakescore submit's runtime env and
    waits for it: it ran on the cluster and succeeded. Catches a floor whose driver cannot be found in the uploaded
    working dir, cannot join, or whose submitter returns before the job ends (a floor that times nothing)."""
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import floor

    seconds = floor.run_ray_floor(argparse.Namespace(num_cpus=2, job_timeout=300),
                                  argparse.Namespace(out=tmp_path), cluster)
    jobs = [j for j in cluster.api("/api/jobs/") if j.get("entrypoint") == "python benchmarks/floor.py ray-driver 2"]
    assert [j["status"] for j in jobs] == ["SUCCEEDED"]
    ran = (jobs[0]["end_time"] - jobs[0]["start_time"]) / 1000
    assert 0 < ran <= seconds  # the timed process covered the job from its start to its end
