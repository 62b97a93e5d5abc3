"""Commit latency of the unit protocol (engine.lake.commit.Committer) and the log's growth, for the capacity model in
benchmarks/README.md: N units committed one after another into a fresh scores-like table, each with `--files` add
actions (the chunks of a unit), on a local path or an object store.

    python benchmarks/commit_latency.py --units 200 --files 8
    AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… python benchmarks/commit_latency.py --uri s3://bucket/t \\
        --storage-option endpoint=http://127.0.0.1:9000 --storage-option region=us-east-1 \\
        --storage-option allow_http=true

Prints one JSON line: commit seconds p50 / p95 / max, units per second, and the log's size (bytes of _delta_log
JSON) per commit. The data files are tiny and written before the clock starts: only the commit is timed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uri", default=None, help="table URI (default: a fresh local temp dir)")
    p.add_argument("--units", type=int, default=200)
    p.add_argument("--files", type=int, default=8, help="add actions per unit (its chunks' output files)")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    from engine.lake import commit as protocol
    from engine.score.scoring import PARTITION_COLUMNS, partition_dir
    from engine.lake.snapshot import filesystem
    from engine.lake.writer import RollingParquetWriter

    opts = dict(kv.split("=", 1) for kv in args.storage_option)
    uri = args.uri or tempfile.mkdtemp(prefix="commit-bench-") + "/scores"
    fschema = pa.schema([("entity_id", pa.int64()), ("score", pa.float32())])
    tschema = pa.schema([*fschema, pa.field("ds", pa.string()), pa.field("model_name", pa.string()),
                         pa.field("model_version", pa.int64())])
    protocol.open_or_create(uri, tschema, PARTITION_COLUMNS, opts)
    committer = protocol.Committer(uri, tschema, PARTITION_COLUMNS, "commit-bench", 5, opts)
    fs, base = filesystem(uri, opts)
    batch = pa.RecordBatch.from_arrays([pa.array(np.arange(100, dtype=np.int64)), pa.array(np.zeros(100, np.float32))],
                                       schema=fschema)
    day0 = dt.date(2020, 1, 1)
    seconds = []
    for i in range(args.units):
        pv = {"ds": (day0 + dt.timedelta(days=i)).isoformat(), "model_name": "m", "model_version": 1}
        adds = []
        for f in range(args.files):
            w = RollingParquetWriter(fs, base, partition_dir(pv), fschema, pv, 1000, "zstd", f"part-{f:03d}")
            w.write(batch)
            adds += w.close()
        unit = protocol.Unit(protocol.app_id("score", pv, PARTITION_COLUMNS), pv, f"{i:064x}", "features", i)
        t = time.perf_counter()
        outcome = committer.commit(unit, adds, {"app_id": unit.app_id})
        seconds.append(time.perf_counter() - t)
        assert outcome == "committed", outcome
    log_fs, log_base = filesystem(uri.rstrip("/") + "/_delta_log", opts)
    from pyarrow import fs as pafs

    infos = log_fs.get_file_info(pafs.FileSelector(log_base))
    log_bytes = sum(i.size for i in infos if i.path.endswith(".json"))
    s = np.array(seconds)
    print(json.dumps({"uri_scheme": uri.split("://")[0] if "://" in uri else "file", "units": args.units,
                      "files_per_unit": args.files, "commit_p50_s": round(float(np.percentile(s, 50)), 4),
                      "commit_p95_s": round(float(np.percentile(s, 95)), 4), "commit_max_s": round(float(s.max()), 4),
                      "commits_per_s": round(len(s) / float(s.sum()), 1),
                      "log_json_bytes_per_commit": round(log_bytes / (args.units + 1))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
