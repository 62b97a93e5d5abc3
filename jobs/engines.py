"""The one engine switch: `make_executor(cfg, job)` gives the job the executor `cfg.engine` names.

Every job (score, validate, evaluate, backtest) runs through `engine.executor.Executor`; this is the only place that
reads `cfg.engine`: Spark (`engine.spark.executor.SparkExecutor` on the process's SparkSession, started here with the
scheduling it needs, or spark-submit's), else Ray (`engine.ray.executor.executor`: tasks or actors by
`ray.pipeline`, after connecting to `ray.address`). Tests hand the job cores `engine.executor.LocalExecutor`
directly. Imports: engine.ray and engine.spark (lazily: a Ray job never starts a JVM, a Spark job never Ray).
"""
from __future__ import annotations


def make_executor(cfg, job: str):
    """The executor for `cfg.engine` ("ray" or "spark"); `job` names the Spark application (lakescore-<job>)."""
    if cfg.engine == "spark":
        from engine.spark.executor import SESSION_CONF, SparkExecutor
        from engine.spark.session import spark_session

        spark = spark_session(f"lakescore-{job}", master=cfg.spark.master, extra_conf=SESSION_CONF)
        return SparkExecutor(spark, cfg.spark)
    from engine.ray.executor import executor
    from engine.ray.session import connect

    connect(cfg.ray.address)
    return executor(cfg.ray, fill_slots=job in ("evaluate", "backtest"))
