"""(c) and (c′): the usual peer, MLflow's `spark_udf`, on Spark local[N] reading the same Parquet as (a).

(c)  Spark's and MLflow's defaults: Arrow batches of 10,000 rows (spark.sql.execution.arrow.maxRecordsPerBatch),
     and XGBoost in each Python worker using every core (its default), so N concurrent tasks oversubscribe the CPUs.
(c′) tuned as a careful Spark user would: Arrow batches of --spark-arrow-batch rows, one XGBoost/OpenMP thread
     per task (cores / concurrent tasks, through OMP_NUM_THREADS in the Python workers' environment), and the
     input split into --spark-partitions-per-core × N partitions so every core stays busy to the end.
Both time the same region: building the UDF (model download and load) and scan → score → write. The JVM and
session start-up are excluded (reported as `session_startup_s`).
"""
from __future__ import annotations

import os
import sys
import time

from workload import ALIAS, MODEL_NAME, Workdir, feature_names


def spark_conf(args, wd: Workdir, tuned: bool) -> dict[str, str]:
    conf = {
        "spark.driver.memory": args.spark_driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(wd.out / "spark-tmp"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={wd.out / 'spark-tmp'}",
        "spark.sql.warehouse.dir": str(wd.out / "spark-warehouse"),
    }
    if tuned:
        cores = args.spark_cores
        files_bytes = sum(p.stat().st_size for p in wd.parquet.glob("*.parquet"))
        partitions = max(cores, args.spark_partitions_per_core * cores)
        conf.update({
            "spark.sql.execution.arrow.maxRecordsPerBatch": str(args.spark_arrow_batch),
            # One thread per task: local[N] runs N tasks at once on N cores.
            "spark.executorEnv.OMP_NUM_THREADS": str(max(1, (os.cpu_count() or cores) // cores)),
            "spark.sql.files.maxPartitionBytes": str(max(1 << 20, files_bytes // partitions + 1)),
            "spark.sql.files.openCostInBytes": str(1 << 20),
        })
    return conf


def run_spark(args, wd: Workdir, tuned: bool) -> dict:
    """Score the Parquet input with spark_udf into `spark_out[_tuned]/`; returns timings (rows checked by the caller)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ["MLFLOW_TRACKING_URI"] = wd.tracking_uri
    os.environ["MLFLOW_REGISTRY_URI"] = wd.tracking_uri
    import mlflow
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    mlflow.set_tracking_uri(wd.tracking_uri)
    mlflow.set_registry_uri(wd.tracking_uri)
    names = feature_names(args.features)
    out_dir = wd.spark_out(tuned)
    conf = spark_conf(args, wd, tuned)
    t0 = time.perf_counter()
    builder = SparkSession.builder.master(f"local[{args.spark_cores}]").appName(
        f"lakescore-bench-spark-udf{'-tuned' if tuned else ''}")
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        udf = mlflow.pyfunc.spark_udf(spark, f"models:/{MODEL_NAME}@{ALIAS}", result_type="float", env_manager="local")
        t1 = time.perf_counter()
        df = spark.read.parquet(str(wd.parquet))
        partitions = df.rdd.getNumPartitions()
        df.select("entity_id", udf(*[F.col(n) for n in names]).alias("score")) \
          .write.mode("overwrite").option("compression", "zstd").parquet(str(out_dir))
        t2 = time.perf_counter()
    finally:
        spark.stop()
    elapsed = t2 - t0
    return {"seconds": elapsed, "rows_per_s": args.rows / elapsed, "session_startup_s": round(startup, 3),
            "udf_build_s": round(t1 - t0, 3), "scan_score_write_s": round(t2 - t1, 3), "input_partitions": partitions,
            "conf": {k: v for k, v in conf.items() if k.startswith(("spark.sql.execution", "spark.executorEnv",
                                                                     "spark.sql.files"))}}
