"""Microbenchmark of metric accumulation (`EvalStats.update`, the engine-neutral step after the join).

    python benchmarks/eval_metrics.py [--rows N] [--batch N] [--repeat N]

One model, binary task, 20 slice values (overall + region(4) + segment(3) + channel(3) + segment×channel(9)),
200 bootstrap replicates (256 buckets). Slice columns arrive dictionary-encoded, as Arrow readers of the demo
tables give them. `eval_rows_per_s_per_core` takes key hashes computed beforehand;
`eval_rows_per_s_per_core_with_key_hash` computes them from (entity_id, event_ts) inside the timed loop, as the
evaluate job's task does. Runs in this process on one
thread (BLAS threads pinned to 1 before numpy loads), so rows/s is per core. Prints one JSON line with
`eval_rows_per_s_per_core` (median over --repeat runs; every run listed). Importable: `run(rows, batch, repeat)`.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from engine.evaluation.keys import row_key_hash  # noqa: E402
from engine.evaluation.stats import EvalStats, MetricsSpec  # noqa: E402

SPEC = MetricsSpec(slices=(("region",), ("segment",), ("channel",), ("segment", "channel")), bootstrap=200)


def make_batches(rows: int, batch: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    out = []
    for lo in range(0, rows, batch):
        n = min(batch, rows - lo)
        label = (rng.random(n) < 0.3).astype(np.int8)
        score = 1.0 / (1.0 + np.exp(-(rng.standard_normal(n) + 1.5 * label - 1.0)))
        cols = {name: pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, len(vals), n).astype(np.int32)),
                                                     pa.array(vals))
                for name, vals in (("region", ["north", "south", "east", "west"]),
                                   ("segment", ["consumer", "smb", "enterprise"]),
                                   ("channel", ["web", "app", "store"]))}
        keys = pa.table({"entity_id": pa.array(rng.integers(0, 2**62, n)),
                         "event_ts": pa.array(rng.integers(0, 2**50, n)).cast(pa.timestamp("us", tz="UTC"))})
        out.append((rng.integers(0, 2**63, n, dtype=np.uint64), label, {"m/1": score}, cols, keys))
    return out


def run(rows: int = 2_000_000, batch: int = 131_072, repeat: int = 3) -> dict:
    batches = make_batches(rows, batch)
    seconds, hashed = [], []
    for _ in range(repeat):
        for with_hash, into in ((False, seconds), (True, hashed)):
            stats = EvalStats(SPEC, ["m/1"])
            t0 = time.perf_counter()
            for key_hash, label, scores, cols, keys in batches:
                if with_hash:  # as the evaluate job's task does: the bootstrap bucket comes from the row's key
                    key_hash = row_key_hash(keys, ["entity_id", "event_ts"], SPEC.seed)
                stats.update(key_hash, label, scores, cols)
            stats.flush()  # the last rows buffered count inside the timing
            into.append(time.perf_counter() - t0)
            assert stats.rows == rows and len(stats.slices) == 20, (stats.rows, len(stats.slices))
    runs = [rows / s for s in seconds]
    return {"eval_rows_per_s_per_core": round(statistics.median(runs)),
            "eval_runs_rows_per_s": [round(r) for r in runs],
            "eval_rows_per_s_per_core_with_key_hash": round(statistics.median([rows / s for s in hashed])),
            "rows": rows, "batch": batch, "slices": 20, "bootstrap": SPEC.bootstrap, "models": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=131_072)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(json.dumps(run(a.rows, a.batch, a.repeat)))


if __name__ == "__main__":
    main()
