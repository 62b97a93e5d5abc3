"""Read a scores table on S3 as an analyst would: Spark SQL through delta-spark and S3A, in a process of its own.

`python tests/s3a_read.py '<json>'` with {"root", "storage_options", "warehouse", "versions"}; prints one JSON line:
for each of the `s3a://` and `s3://` spellings of `<root>/scores`, the rows (ds, entity_id, score) read with
`spark.read.format("delta")`, the per-day counts from a Spark SQL query, and per-day counts at each version in
`versions` (SQL `VERSION AS OF` and the reader's `versionAsOf`); the session's conf; the seconds it took to start and
to read.
A process of its own because the S3A jars go on the JVM's classpath when it starts: a test process that already
has a Spark without them cannot load them.
"""
from __future__ import annotations

import json
import sys
import time

from engine.config import LakeConfig
from engine.spark.session import spark_session


def per_day(rows) -> dict[str, int]:
    return {r["ds"]: r["n"] for r in rows}


def main(arg: str) -> None:
    args = json.loads(arg)
    t0 = time.monotonic()
    lake = LakeConfig(root=args["root"], storage_options=args["storage_options"])
    spark = spark_session("lakescore-s3a-read", master="local[2]", lake=lake,
                          extra_conf={"spark.sql.warehouse.dir": args["warehouse"]})
    started = time.monotonic() - t0
    out = {"start_s": round(started, 1), "reads": {}}
    for scheme in ("s3a", "s3"):
        uri = f"{scheme}://{args['root'].split('://', 1)[1]}/scores"
        t1 = time.monotonic()
        df = spark.read.format("delta").load(uri)
        rows = [[r["ds"], r["entity_id"], r["score"]] for r in df.select("ds", "entity_id", "score").collect()]
        sql = per_day(spark.sql(f"SELECT ds, count(*) AS n FROM delta.`{uri}` GROUP BY ds").collect())
        travel = {}
        for v in args["versions"]:
            by_sql = per_day(spark.sql(f"SELECT ds, count(*) AS n FROM delta.`{uri}` VERSION AS OF {v} GROUP BY ds")
                             .collect())
            by_reader = per_day(spark.read.format("delta").option("versionAsOf", v).load(uri)
                                .groupBy("ds").count().withColumnRenamed("count", "n").collect())
            travel[str(v)] = {"sql": by_sql, "reader": by_reader}
        history = spark.sql(f"DESCRIBE HISTORY delta.`{uri}`").select("version").collect()
        out["reads"][scheme] = {"rows": rows, "per_day_sql": sql, "versions": travel,
                                "history": sorted(r["version"] for r in history),
                                "read_s": round(time.monotonic() - t1, 1)}
    out["conf"] = dict(spark.sparkContext.getConf().getAll())
    spark.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
