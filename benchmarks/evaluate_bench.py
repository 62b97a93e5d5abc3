"""Part (e) of the bench: evaluation.

- `eval_rows_per_s_per_core`: the engine-neutral metric accumulation alone (benchmarks/eval_metrics.py: one
  process, one thread, 20 slice values, 200 bootstrap replicates, one model). Target ≥ 1 M rows/s per core.
- `evaluate_job_rows_per_s`: the whole evaluate job (`conf/evaluate.yaml` as users run it, through
  `lakescore submit` to the same running Ray cluster as (b)) on the bench's scores table, joined with a labels table
  generated here (deterministic, from the features) and the features' slice columns; rows evaluated / wall time
  from submission to exit, with the job's own phases from its log.

Nothing here imports tests/.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from job import job_lines
from workload import ALIAS, MODEL_NAME, Workdir, log

REPO = Path(__file__).resolve().parent.parent


def ensure_labels(wd: Workdir, rows: int) -> str:
    """A `labels` Delta table beside the bench's features (one file per features file, one version); made once."""
    from deltalake import DeltaTable, write_deltalake

    uri = str(wd.lake(rows) / "labels")
    if (wd.lake(rows) / "labels" / "_delta_log").exists():
        return uri
    log(f"evaluate: generating the labels table for {rows:,} rows (once)")
    feats = DeltaTable(wd.features(rows))
    root = Path(wd.features(rows))
    for i, action in enumerate(pa.table(feats.get_add_actions(flatten=True)).to_pylist()):
        t = pq.read_table(root / action["path"], columns=["entity_id", "event_ts", "f00", "f01", "f02"])
        rng = np.random.default_rng([17, i])
        x = np.stack([t.column(c).to_numpy() for c in ("f00", "f01", "f02")], axis=1).astype(np.float64)
        p = 1 / (1 + np.exp(-(x @ np.array([1.0, -0.7, 0.4]) - 0.5)))
        event_us = t.column("event_ts").cast(pa.int64()).to_numpy()
        label_us = event_us + rng.integers(86_400, 6 * 86_400, len(p)) * 1_000_000
        labels = pa.table({
            "entity_id": t.column("entity_id"),
            "event_ts": t.column("event_ts"),
            "label": pa.array((rng.random(len(p)) < p).astype(np.int32)),
            "label_ts": pa.array(label_us.astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
            "ds": pa.array([action["partition.ds"]] * t.num_rows),
        })
        write_deltalake(uri, labels, partition_by=["ds"], mode="append")
    return uri


def run_micro(rows: int, repeat: int) -> dict:
    """The accumulation microbenchmark, in its own process (a clean single-threaded measurement)."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_metrics.py"), "--rows", str(rows),
                          "--repeat", str(repeat)], capture_output=True, text=True, cwd=str(REPO),
                         env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                              "PATH": str(Path(sys.executable).parent)}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_evaluate_job(args, wd: Workdir, cluster, rows: int) -> dict:
    """Submit the evaluate job on the bench lake (champion only, every day, drift on) and time it."""
    ensure_labels(wd, rows)
    cmd = [sys.executable, "-m", "jobs.cli", "submit", "--address", cluster.address, "evaluate", "--config",
           "conf/evaluate.yaml", f"lake.root={wd.lake(rows)}", f"mlflow.tracking_uri={wd.tracking_uri}",
           f"mlflow.artifact_root={wd.artifacts}", f"models.champion=models:/{MODEL_NAME}@{ALIAS}",
           "models.challengers=[]", "window=all", "gates.thresholds=[]", "gates.max_regression=[]",
           "drift.reference=2026-01-01..2026-01-01", 'drift.columns=["f0?"]', "drift.sample_rows=2000"]
    log_path = wd.out / "job-evaluate.log"
    t0 = time.time()
    with open(log_path, "w") as logf:
        proc = subprocess.run(cmd, env=cluster.env, stdout=logf, stderr=subprocess.STDOUT, cwd=str(REPO),
                              timeout=args.job_timeout)
    wall = time.time() - t0
    lines = job_lines(proc, log_path, "evaluate: lakescore submit")
    summary = json.loads([ln for ln in lines if ln.startswith("{") and '"job": "evaluate"' in ln][-1])
    if summary["rows_evaluated"] != rows:
        raise SystemExit(f"evaluate: {summary['rows_evaluated']} rows evaluated, expected {rows}; log {log_path}")
    return {"seconds": round(wall, 3), "wall_s": round(wall, 2), "job_elapsed_s": summary["elapsed_s"], "rows": summary["rows_evaluated"],
            "tasks": summary["tasks"], "rows_per_s": round(rows / wall), "log": str(log_path)}
