"""The peers (c), (c′), (c″) as a scheduler runs them: the script `spark-submit` launches for the whole-process
clock (benchmarks/peers.py run_peer_whole). It takes the session spark-submit configured (master and settings come
from its --master and --conf), runs the same timed region as the in-session clock (peers.score_peer: build the UDF
or resolve the model, read, predict, write), stops the session and writes its own marks (epoch seconds) and figures
as JSON to --result, which the bench reads to split the whole-process wall time.

    spark-submit --master spark://… benchmarks/peer_app.py --part spark_udf_tuned --out benchmarks/out \
        --rows N --features 50 --spark-cores 2 --result out.json
"""
from __future__ import annotations

import time

APP_START = time.time()  # before the imports: the app's Python start-up is in submit_to_app_s, the rest after

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository (engine) for score_dataframe

from peers import PEERS, score_peer  # noqa: E402
from workload import Workdir  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=PEERS, required=True)
    p.add_argument("--out", required=True, help="the bench's work dir (input Parquet, model registry)")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--features", type=int, required=True)
    p.add_argument("--spark-cores", type=int, required=True)
    p.add_argument("--result", required=True, help="where to write this run's marks and figures (JSON)")
    args = p.parse_args(argv)
    from pyspark.sql import SparkSession

    t0 = time.perf_counter()
    spark = SparkSession.builder.appName(f"lakescore-bench-{args.part.replace('_', '-')}-whole").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - t0
    try:
        res = score_peer(spark, args, Workdir(Path(args.out)), args.part, whole=True)
    finally:
        t1 = time.perf_counter()
        spark.stop()
    res.update({"app_start": APP_START, "session_startup_s": round(startup, 3),
                "session_stop_s": round(time.perf_counter() - t1, 3), "app_end": time.time()})
    Path(args.result).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
