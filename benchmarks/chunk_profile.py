"""Where one chunk's time goes: the job's own engine functions in-process (no Ray) with per-phase timers, and the
job driver's start-up steps timed in a cold Python process."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time

import pyarrow as pa

from workload import ALIAS, MODEL_NAME, Workdir, feature_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _TimedScorer:
    def __init__(self, scorer):
        self.inner, self.spec, self.seconds = scorer, scorer.spec, 0.0

    def predict(self, x):
        t = time.perf_counter()
        y = self.inner.predict(x)
        self.seconds += time.perf_counter() - t
        return y


def profile_chunk(args, wd: Workdir, bundle, nthread: int) -> dict:
    """One chunk of the job's own work (engine functions, no Ray) with per-phase timers."""
    from deltalake import DeltaTable

    from engine.models.scorers import build_scorer
    from engine.models.preprocess import to_matrix
    from engine.score.scoring import Stamps, file_schema, partition_dir, score_batch
    from engine.lake.snapshot import file_path, filesystem, iter_file_batches
    from engine.lake.writer import RollingParquetWriter

    uri = wd.features(args.rows)
    table = DeltaTable(uri)
    acts = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    files, acc = [], 0
    for a in sorted(acts, key=lambda a: a["path"]):  # about one target_file_rows chunk
        if acc >= args.target_file_rows:
            break
        files.append(a["path"])
        acc += a["num_records"]
    scorer = _TimedScorer(build_scorer(bundle, "cpu", nthread=nthread))
    schema = file_schema(pa.schema(table.schema().to_arrow()), ["entity_id"], [], "score")
    stamps = Stamps(MODEL_NAME, 1, "run", "features", table.version(), "r" * 32, "h" * 16,
                    dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    fs, base = filesystem(uri)
    out_base = str(wd.out / "profile_out")
    shutil.rmtree(out_base, ignore_errors=True)
    writer = RollingParquetWriter(fs, out_base, partition_dir({"ds": "x", "model_name": MODEL_NAME, "model_version": 1}),
                                  schema, {"ds": "x", "model_name": MODEL_NAME, "model_version": 1},
                                  args.target_file_rows, "zstd", prefix="part-profile")
    cols = ["entity_id", *feature_names(args.features)]
    t_read = t_score = t_write = t_matrix = 0.0
    rows = 0
    t0 = time.perf_counter()
    for path in files:
        it = iter_file_batches(fs, file_path(base, path), cols, 131_072)
        while True:
            t = time.perf_counter()
            batch = next(it, None)
            t_read += time.perf_counter() - t
            if batch is None:
                break
            rows += batch.num_rows
            t = time.perf_counter()
            out = score_batch(batch, scorer, schema, ["entity_id"], [], stamps)
            t_score += time.perf_counter() - t
            t = time.perf_counter()
            writer.write(out)
            t_write += time.perf_counter() - t
            t = time.perf_counter()
            to_matrix(batch, bundle.spec)  # timed apart (not part of the total)
            t_matrix += time.perf_counter() - t
    t = time.perf_counter()
    writer.close()
    t_write += time.perf_counter() - t
    total = t_read + t_score + t_write
    shutil.rmtree(out_base, ignore_errors=True)
    return {"rows": rows, "nthread": nthread, "total_s": round(total, 3), "rows_per_s": round(rows / total),
            "read_s": round(t_read, 3), "to_matrix_s": round(t_matrix, 3), "predict_s": round(scorer.seconds, 3),
            "stamps_and_assembly_s": round(t_score - scorer.seconds - t_matrix, 3), "write_and_stats_s": round(t_write, 3),
            "wall_s": round(time.perf_counter() - t0 - t_matrix, 3)}


_DRIVER_PROFILE = r"""
import json, sys, tempfile, time
marks = {}
t = time.perf_counter()
def mark(name):
    global t
    now = time.perf_counter(); marks[name] = round(now - t, 3); t = now
import engine.config, jobs._main  # noqa: E401  what `python -m jobs.score` imports first
mark("import_job_and_config_s")
import ray  # noqa: F401
from engine.ray.executor import executor  # noqa: F401
mark("import_ray_and_executor_s")
from engine.models.registry import resolve_model, download_model, load_bundle
mark("import_models_s")
tracking, table = sys.argv[1], sys.argv[2]
ref = resolve_model(sys.argv[3], tracking)
mark("resolve_model_s")
with tempfile.TemporaryDirectory() as tmp:
    path = download_model(ref, tracking, None, tmp)
    mark("download_model_s")
    bundle = load_bundle(path, ref, False)
    mark("load_bundle_s")
from engine.lake.snapshot import open_snapshot, select_partitions, check_files_exist
snap = open_snapshot("features", table, "latest", {})
days, _ = select_partitions(snap, "all")
mark("open_snapshot_s")
check_files_exist(snap, days, {})
mark("check_files_exist_s")
print(json.dumps(marks))
"""


def profile_driver(wd: Workdir, rows: int) -> dict:
    """The job driver's start-up steps, timed in a cold Python process (no Ray cluster needed)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _DRIVER_PROFILE, wd.tracking_uri, wd.features(rows), f"models:/{MODEL_NAME}@{ALIAS}"],
                          env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else f"exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_total_s"] = round(total, 3)
    return out
