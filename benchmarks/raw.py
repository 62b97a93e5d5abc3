"""(a) the raw limit: one process, pyarrow read → float32 matrix → Booster.inplace_predict → Parquet (keys + score)."""
from __future__ import annotations

import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workload import Workdir, feature_names


def run_raw(args, wd: Workdir, booster) -> dict:
    names = feature_names(args.features)
    files = sorted(wd.parquet.glob("*.parquet"))
    out_dir = wd.raw_out
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    phases = {"read": 0.0, "matrix": 0.0, "predict": 0.0, "write": 0.0}
    rows = 0
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        t = time.perf_counter()
        table = pq.read_table(f, columns=["entity_id", *names])
        t1 = time.perf_counter()
        x = np.empty((table.num_rows, len(names)), dtype=np.float32)
        for j, name in enumerate(names):
            x[:, j] = table.column(name).to_numpy()
        t2 = time.perf_counter()
        scores = booster.inplace_predict(x, validate_features=False)
        t3 = time.perf_counter()
        pq.write_table(pa.table({"entity_id": table.column("entity_id"), "score": pa.array(scores.astype(np.float32, copy=False))}),
                       out_dir / f"part-{i:05d}.parquet", compression="zstd")
        t4 = time.perf_counter()
        phases["read"] += t1 - t
        phases["matrix"] += t2 - t1
        phases["predict"] += t3 - t2
        phases["write"] += t4 - t3
        rows += table.num_rows
    elapsed = time.perf_counter() - t0
    got = sum(pq.ParquetFile(p).metadata.num_rows for p in out_dir.glob("*.parquet"))
    if got != args.rows or rows != args.rows:
        raise SystemExit(f"raw: wrote {got} rows from {rows} read, expected {args.rows}")
    return {"seconds": elapsed, "rows_per_s": args.rows / elapsed, "files": len(files),
            "phases_s": {k: round(v, 3) for k, v in phases.items()}}
