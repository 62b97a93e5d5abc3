"""(c) and (c′): the usual peer, MLflow's `spark_udf`, on Spark local[N] reading the same Parquet as (a); and (c″),
lakescore's own DataFrame path beside it.

(c)  Spark's and MLflow's defaults: Arrow batches of 10,000 rows (spark.sql.execution.arrow.maxRecordsPerBatch),
     and XGBoost in each Python worker using every core (its default), so N concurrent tasks oversubscribe the CPUs.
(c′) tuned as a careful Spark user would: Arrow batches of --spark-arrow-batch rows, one XGBoost/OpenMP thread
     per task (cores / concurrent tasks, through OMP_NUM_THREADS in the Python workers' environment), and the
     input split into --spark-partitions-per-core × N partitions so every core stays busy to the end.
(c″) engine.spark.dataframe.score_dataframe with (c′)'s settings (nthread = one thread per task), writing what it
     returns (entity_id, score and the stamps): the pickle-free, stamped replacement for spark_udf.
All time the same region: building the UDF or resolving the model (download and validation) and scan → score →
write. The JVM and session start-up are excluded (reported as `session_startup_s`).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from workload import ALIAS, MODEL_NAME, Workdir, feature_names

REPO = Path(__file__).resolve().parent.parent


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


def start_session(args, conf: dict[str, str], name: str):
    """A fresh SparkSession local[N] with `conf`; returns (session, seconds it took to start)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    t0 = time.perf_counter()
    builder = SparkSession.builder.master(f"local[{args.spark_cores}]").appName(name)
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark, time.perf_counter() - t0


def reported_conf(conf: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in conf.items() if k.startswith(("spark.sql.execution", "spark.executorEnv", "spark.sql.files"))}


def run_spark(args, wd: Workdir, tuned: bool) -> dict:
    """Score the Parquet input with spark_udf into `spark_out[_tuned]/`; returns timings (rows checked by the caller)."""
    os.environ["MLFLOW_TRACKING_URI"] = wd.tracking_uri
    os.environ["MLFLOW_REGISTRY_URI"] = wd.tracking_uri
    import mlflow
    from pyspark.sql import functions as F

    mlflow.set_tracking_uri(wd.tracking_uri)
    mlflow.set_registry_uri(wd.tracking_uri)
    names = feature_names(args.features)
    out_dir = wd.spark_out(tuned)
    conf = spark_conf(args, wd, tuned)
    spark, startup = start_session(args, conf, f"lakescore-bench-spark-udf{'-tuned' if tuned else ''}")
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
            "conf": reported_conf(conf)}


def spark_dataframe_out(wd: Workdir) -> Path:
    return wd.out / "spark_dataframe_out"


def run_spark_dataframe(args, wd: Workdir) -> dict:
    """(c″) Score the Parquet input with score_dataframe into `spark_dataframe_out/`; timings as run_spark's."""
    from engine.spark.dataframe import score_dataframe

    conf = {**spark_conf(args, wd, tuned=True), "spark.executorEnv.PYTHONPATH": str(REPO)}
    spark, startup = start_session(args, conf, "lakescore-bench-score-dataframe")
    try:
        t0 = time.perf_counter()
        df = spark.read.parquet(str(wd.parquet))
        partitions = df.rdd.getNumPartitions()
        scored = score_dataframe(df, f"models:/{MODEL_NAME}@{ALIAS}", tracking_uri=wd.tracking_uri,
                                 keys=["entity_id"], nthread=max(1, (os.cpu_count() or args.spark_cores) // args.spark_cores))
        t1 = time.perf_counter()
        scored.write.mode("overwrite").option("compression", "zstd").parquet(str(spark_dataframe_out(wd)))
        t2 = time.perf_counter()
    finally:
        spark.stop()
    elapsed = t2 - t0
    return {"seconds": elapsed, "rows_per_s": args.rows / elapsed, "session_startup_s": round(startup, 3),
            "plan_and_model_s": round(t1 - t0, 3), "scan_score_write_s": round(t2 - t1, 3),
            "input_partitions": partitions, "conf": reported_conf(conf)}
