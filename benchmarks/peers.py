"""(c) and (c′): the usual peer, MLflow's `spark_udf`, reading the same Parquet as (a); and (c″), lakescore's own
DataFrame path beside it. Each is timed on two clocks.

(c)  Spark's and MLflow's defaults: Arrow batches of 10,000 rows (spark.sql.execution.arrow.maxRecordsPerBatch),
     and XGBoost in each Python worker using every core (its default), so N concurrent tasks oversubscribe the CPUs.
(c′) tuned as a careful Spark user would: Arrow batches of --spark-arrow-batch rows, one XGBoost/OpenMP thread
     per task (cores / concurrent tasks, through OMP_NUM_THREADS in the Python workers' environment), and the
     input split into --spark-partitions-per-core × N partitions so every core stays busy to the end.
(c″) engine.spark.dataframe.score_dataframe with (c′)'s settings (nthread = one thread per task), writing what it
     returns (entity_id, score and the stamps): the pickle-free, stamped replacement for spark_udf.

In-session clock (`run_spark`, `run_spark_dataframe`): a SparkSession local[N] in the bench's own process; the
timed region is building the UDF or resolving the model (download and validation) and scan → score → write. The
JVM and session start-up are excluded (reported as `session_startup_s`).

Whole-process clock (`run_peer_whole`): `spark-submit` of benchmarks/peer_app.py, which runs the same timed region
(`score_udf`, `score_df` below), to the standalone master and worker that (d) uses, timed from launching
spark-submit until it exits, as (d) is. The standalone cluster, not local[N]: then the peer pays what (d) pays
(spark-submit's JVM, the driver's Python, registering with the master, an executor launched on the worker, its
Python workers) and leaves out what (d) leaves out (starting the master and the worker). On local[N] its executor
would live inside the driver's JVM and the peer would skip the executor start that (d)'s clock includes. The peers
get no `--jars` and no event log: they read Parquet and need neither; those are (d)'s own costs.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from spark_job import spark_submit
from workload import ALIAS, MODEL_NAME, Workdir, feature_names, log

REPO = Path(__file__).resolve().parent.parent
PEERS = ("spark_udf", "spark_udf_tuned", "spark_dataframe")  # the parts' JSON keys, and peer_app.py's --part


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


def peer_conf(args, wd: Workdir, part: str) -> dict[str, str]:
    """The Spark settings of one peer, the same on both clocks."""
    conf = spark_conf(args, wd, tuned=part != "spark_udf")
    if part == "spark_dataframe":
        conf["spark.executorEnv.PYTHONPATH"] = str(REPO)
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


def peer_out(wd: Workdir, part: str, whole: bool) -> Path:
    """Where a peer writes: today's dirs for the in-session clock, `<part>_whole_out` for the whole-process one."""
    if whole:
        return wd.out / f"{part}_whole_out"
    return spark_dataframe_out(wd) if part == "spark_dataframe" else wd.spark_out(part == "spark_udf_tuned")


def score_udf(spark, args, wd: Workdir, out_dir: Path) -> dict:
    """The timed region of (c) and (c′) in a running session: build the UDF, read, predict, write."""
    os.environ["MLFLOW_TRACKING_URI"] = wd.tracking_uri
    os.environ["MLFLOW_REGISTRY_URI"] = wd.tracking_uri
    import mlflow
    from pyspark.sql import functions as F

    mlflow.set_tracking_uri(wd.tracking_uri)
    mlflow.set_registry_uri(wd.tracking_uri)
    names = feature_names(args.features)
    t0 = time.perf_counter()
    udf = mlflow.pyfunc.spark_udf(spark, f"models:/{MODEL_NAME}@{ALIAS}", result_type="float", env_manager="local")
    t1 = time.perf_counter()
    df = spark.read.parquet(str(wd.parquet))
    partitions = df.rdd.getNumPartitions()
    df.select("entity_id", udf(*[F.col(n) for n in names]).alias("score")) \
      .write.mode("overwrite").option("compression", "zstd").parquet(str(out_dir))
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "rows_per_s": args.rows / (t2 - t0), "udf_build_s": round(t1 - t0, 3),
            "scan_score_write_s": round(t2 - t1, 3), "input_partitions": partitions}


def score_df(spark, args, wd: Workdir, out_dir: Path) -> dict:
    """The timed region of (c″) in a running session: read, resolve the model, mapInArrow, write."""
    from engine.spark.dataframe import score_dataframe

    t0 = time.perf_counter()
    df = spark.read.parquet(str(wd.parquet))
    partitions = df.rdd.getNumPartitions()
    scored = score_dataframe(df, f"models:/{MODEL_NAME}@{ALIAS}", tracking_uri=wd.tracking_uri,
                             keys=["entity_id"], nthread=max(1, (os.cpu_count() or args.spark_cores) // args.spark_cores))
    t1 = time.perf_counter()
    scored.write.mode("overwrite").option("compression", "zstd").parquet(str(out_dir))
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "rows_per_s": args.rows / (t2 - t0), "plan_and_model_s": round(t1 - t0, 3),
            "scan_score_write_s": round(t2 - t1, 3), "input_partitions": partitions}


def score_peer(spark, args, wd: Workdir, part: str, whole: bool) -> dict:
    fn = score_df if part == "spark_dataframe" else score_udf
    return fn(spark, args, wd, peer_out(wd, part, whole))


def run_peer_in_session(args, wd: Workdir, part: str) -> dict:
    """One run of a peer on the in-session clock: a local[N] session in this process, its start-up left out."""
    conf = peer_conf(args, wd, part)
    spark, startup = start_session(args, conf, f"lakescore-bench-{part.replace('_', '-')}")
    try:
        res = score_peer(spark, args, wd, part, whole=False)
    finally:
        spark.stop()
    return {**res, "clock": "in-session", "session_startup_s": round(startup, 3), "conf": reported_conf(conf)}


def run_spark(args, wd: Workdir, tuned: bool) -> dict:
    """(c) or (c′) on the in-session clock, into `spark_out[_tuned]/` (rows checked by the caller)."""
    return run_peer_in_session(args, wd, "spark_udf_tuned" if tuned else "spark_udf")


def spark_dataframe_out(wd: Workdir) -> Path:
    return wd.out / "spark_dataframe_out"


def run_spark_dataframe(args, wd: Workdir) -> dict:
    """(c″) on the in-session clock, into `spark_dataframe_out/`."""
    return run_peer_in_session(args, wd, "spark_dataframe")


def whole_conf(args, wd: Workdir, part: str) -> dict[str, str]:
    """spark-submit --conf of a peer on the whole-process clock: its own settings, plus what running on the
    standalone worker needs, as (d) has them: this interpreter and the repository on the executor, 1g executor."""
    return {**peer_conf(args, wd, part), "spark.pyspark.python": sys.executable,
            "spark.executorEnv.PYTHONPATH": str(REPO), "spark.executor.memory": "1g"}


def run_peer_whole(args, wd: Workdir, part: str, master: str, env: dict) -> dict:
    """One run of a peer on the whole-process clock: spark-submit benchmarks/peer_app.py to `master`, from launch
    to exit. Its timed region inside the app (the in-session figure on the standalone cluster) and the app's own
    marks split the wall time; a non-zero exit stops the bench with the log's tail."""
    result_path = wd.out / f"{part}_whole_result.json"
    result_path.unlink(missing_ok=True)
    conf = whole_conf(args, wd, part)
    app = [str(REPO / "benchmarks" / "peer_app.py"), "--part", part, "--out", str(wd.out), "--rows", str(args.rows),
           "--features", str(args.features), "--spark-cores", str(args.spark_cores), "--result", str(result_path)]
    log_path = wd.out / f"{part}-whole.log"
    log(f"{part} whole: spark-submit to {master} ({args.rows:,} rows)")
    proc, t_start, t_end = spark_submit(master, conf, app, env, log_path, wd.out, args.job_timeout)
    if proc.returncode != 0 or not result_path.is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{part} whole: spark-submit exited {proc.returncode}; log {log_path}:\n{tail}")
    app = json.loads(result_path.read_text())
    whole = t_end - t_start
    timeline = {"whole_s": round(whole, 3), "submit_to_app_s": round(app["app_start"] - t_start, 3),
                "session_startup_s": app["session_startup_s"], "in_session_s": round(app["seconds"], 3),
                "session_stop_s": app["session_stop_s"], "stop_to_exit_s": round(t_end - app["app_end"], 3)}
    return {"seconds": whole, "rows_per_s": args.rows / whole, "clock": "whole", "timeline": timeline,
            "in_session_rows_per_s": app["rows_per_s"],
            **{k: app[k] for k in ("udf_build_s", "plan_and_model_s", "scan_score_write_s", "input_partitions") if k in app},
            "log": str(log_path), "conf": reported_conf(conf)}
