"""End to end on Spark: a local standalone master and worker, `spark-submit jobs/validate.py … engine=spark`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from conftest import DAYS, ROOT, ROWS
from engine.demo.data import make_day
from ray_cluster import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
PLANTED = "pii.canary.spark@example.com"


def wait_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    """Standalone master + one worker on loopback; stopped by their own pids."""
    work = tmp_path_factory.mktemp("spark-standalone")
    port = free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(work / "worker"),
           "SPARK_LOG_DIR": str(work / "logs"), "PYSPARK_PYTHON": sys.executable}
    cls = str(BIN / "spark-class")
    master = subprocess.Popen([cls, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                               "--webui-port", str(free_port())], env=env, stdout=open(work / "master.log", "w"),
                              stderr=subprocess.STDOUT)
    procs = [master]
    try:
        wait_port(port)
        procs.append(subprocess.Popen([cls, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                                       "--host", "127.0.0.1", "--webui-port", str(free_port()), "--cores", "2",
                                       "--memory", "2g"], env=env, stdout=open(work / "worker.log", "w"),
                                      stderr=subprocess.STDOUT))
        time.sleep(3)
        yield f"spark://127.0.0.1:{port}", env
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def submit(master: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    jars = subprocess.run([sys.executable, "-m", "engine.spark.jars", "--print-jars"], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={**env, "PYTHONPATH": str(ROOT)}).stdout.strip().splitlines()[-1]
    cmd = [str(BIN / "spark-submit"), "--master", master, "--jars", jars,
           "--conf", f"spark.pyspark.python={sys.executable}", "--conf", f"spark.executorEnv.PYTHONPATH={ROOT}",
           "--conf", "spark.executor.memory=1g", "jobs/validate.py", "--config", "conf/validate.yaml", "engine=spark",
           *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


def test_spark_submit_validate_passes_clean_days_and_exits_3_on_a_bad_one(spark_cluster, lake, demo_root):
    master, env = spark_cluster
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
