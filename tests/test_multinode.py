"""A two-node Ray cluster on one machine (`ray start --head` plus a second `ray start --address=…` raylet with its
own CPUs, object store and workers): the score job spreads its chunks over both nodes, gives the same table as a
single process, and survives losing a node in the middle of a run with exactly one copy of every row."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import ROOT, XGB, score_config
from engine.demo.data import make_day
from engine.testing.ray_cluster import LocalRayCluster
from engine.executor import LocalExecutor
from jobs.score import run_score

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    c = LocalRayCluster(num_cpus=1, env={"PYTHONPATH": str(ROOT), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
                        log_path=tmp_path_factory.mktemp("ray2") / "ray-start.log")
    c.start()
    try:
        second = c.add_node(num_cpus=1)
        yield c, second
    finally:
        c.stop()
    assert c.processes() == []


def submit(cluster, lake, demo_root, *overrides: str, wait: bool = True):
    cmd = [sys.executable, "-m", "jobs.cli", "submit", "--address", cluster.address, "score", "--config",
           "conf/score.yaml", f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
           f"mlflow.artifact_root={demo_root}/mlartifacts", f"model.uri=models:/{XGB}@champion",
           "input.passthrough_columns=[event_ts]", "input.contract=null", *overrides]
    if wait:
        return subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=400, cwd=ROOT)
    return subprocess.Popen(cmd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)


def summary_of(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith("{") and '"job"' in ln]
    assert lines, text[-3000:]
    return json.loads(lines[-1])


def chunk_running_on(node_group: int) -> bool:
    """Whether a worker of the node started as process group `node_group` is running a score chunk right now: Ray
    titles a worker process `ray::<task name>` while it runs a task (`ray::IDLE` between tasks)."""
    import os

    import psutil

    from engine.ray.executor import _chunk_task

    running = f"ray::{_chunk_task.__name__}"  # the Ray task every score chunk runs as
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            title = " ".join(p.info["cmdline"] or ())
            if title.startswith(running) and _in_group(p, node_group, os):
                return True
        except (psutil.Error, OSError):
            continue
    return False


def _in_group(p, group: int, os) -> bool:
    """p belongs to the node: its own process group, or a descendant of a process of that group."""
    while p is not None:
        if os.getpgid(p.pid) == group:
            return True
        p = p.parent()
    return False


def keyed(table) -> list[tuple]:
    return sorted(zip(table.column("ds").to_pylist(), table.column("entity_id").to_pylist(),
                      table.column("score").to_pylist()))


def test_chunks_spread_over_both_nodes_and_the_table_is_the_single_process_one(two_nodes, lake, demo_root, tmp_path):
    cluster, _ = two_nodes
    out = submit(cluster, lake, demo_root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    s = summary_of(out.stdout)
    alive = {n["node_id"] for n in cluster.nodes() if n["state"] == "ALIVE"}
    assert len(alive) == 2 and set(s["nodes"]) == alive, (s["nodes"], alive)
    from engine.tables import ledger
    from engine.config import LakeConfig

    (entry,) = ledger.read(LakeConfig(root=str(lake))).to_pylist()
    assert sorted(entry["nodes"]) == sorted(alive) and entry["code_commit"]  # the commit travels with the job
    # The same lake scored in one process: the same rows and scores.
    import shutil

    single = tmp_path / "single"
    shutil.copytree(demo_root / "lake", single)
    run_score(score_config(single, demo_root, "input.contract=null"), LocalExecutor())
    cols = ["ds", "entity_id", "score"]
    assert keyed(DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=cols)) == \
        keyed(DeltaTable(str(single / "scores")).to_pyarrow_table(columns=cols))


# Rows per day: enough that a day's chunk runs for a while, so that watching the processes (seconds on a loaded
# machine) still finds one running on the second node before the job ends.
ROWS = 60_000


def test_losing_a_node_mid_run_leaves_exactly_one_copy_of_every_row(two_nodes, lake, demo_root):
    cluster, second = two_nodes
    days = [f"2026-01-{d:02d}" for d in range(5, 17)]
    for i, d in enumerate(days):
        write_deltalake(str(lake / "features"), make_day(10 + i, d, ROWS, 50, seed=31)[0], partition_by=["ds"],
                        mode="append")
    job = submit(cluster, lake, demo_root, "input.ds=2026-01-05..2026-01-16", "ray.max_in_flight=2", wait=False)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(job.stdout), daemon=True)
    reader.start()
    # Kill the second node while a chunk runs on it (seen from its worker's process title, without delay).
    log_dir = lake / "scores" / "_delta_log"
    deadline = time.monotonic() + 300
    while not chunk_running_on(second):
        assert job.poll() is None, "".join(output)[-3000:]
        assert time.monotonic() < deadline, "".join(output)[-3000:]
        time.sleep(0.02)
    units_done_at_kill = max(0, len(list(log_dir.glob("*.json"))) - 1)  # version 0 created the table
    cluster.kill_node(second)
    killed_while_running = job.poll() is None
    print(f"killed: job running {killed_while_running}, units committed just before {units_done_at_kill}")
    job.wait(timeout=400)
    reader.join(timeout=30)
    text = "".join(output)
    assert killed_while_running and units_done_at_kill < 12, text[-3000:]  # work was left when the node died
    s = summary_of(text)
    print(f"node killed after {units_done_at_kill} of 12 units; the job exited {job.returncode}")
    if job.returncode == 0:  # Ray re-ran the lost chunks on the head node
        assert s["units_committed"] == 12 and s["units_failed"] == 0
    else:  # failed cleanly: a re-run completes the rest
        assert job.returncode == 1 and s["exit_code"] == 1, text[-3000:]
        again = submit(cluster, lake, demo_root, "input.ds=2026-01-05..2026-01-16")
        assert again.returncode == 0, again.stdout[-3000:]
    scores = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "entity_id"],
                                                                filters=[("ds", "in", days)])
    features = DeltaTable(str(lake / "features")).to_pyarrow_table(columns=["ds", "entity_id"],
                                                                    filters=[("ds", "in", days)])
    assert scores.num_rows == features.num_rows == 12 * ROWS
    pairs = pc.binary_join_element_wise(scores.column("ds"), pc.cast(scores.column("entity_id"), "string"), "/")
    assert pc.count_distinct(pairs).as_py() == scores.num_rows  # no row twice
