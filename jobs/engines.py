"""The one engine switch: `make_executor(cfg, job)` gives the job the executor `cfg.engine` names.

Every job (score, validate, evaluate, backtest) runs through `engine.executor.Executor`; this is the only place that
reads `cfg.engine`: Spark (`engine.spark.executor.SparkExecutor` on the process's SparkSession, started here with the
scheduling it needs, or spark-submit's), else Ray (`engine.ray.executor.executor`: tasks or actors by
`ray.pipeline`, after connecting to `ray.address`). The executor is lazy: the engine starts on the job's first call
into it, so what a job resolves first (the lake, the model version, the input version) fails in about a second,
naming the setting, and never after Ray's or Spark's start-up. Tests hand the job cores `engine.executor.LocalExecutor`
directly. Imports: engine.ray and engine.spark (lazily: a Ray job never starts a JVM, a Spark job never Ray).
"""
from __future__ import annotations


class LazyExecutor:
    """An executor built by `build()` on the first attribute the job asks of it (warm_up, run, gpus, …)."""

    def __init__(self, build):
        self._build = build
        self._real = None

    def __getattr__(self, name: str):  # called only for what this object lacks: the real executor's attributes
        if self._real is None:
            self._real = self._build()
        return getattr(self._real, name)


def make_executor(cfg, job: str) -> LazyExecutor:
    """The executor for `cfg.engine` ("ray" or "spark"), started when first used; `job` names the Spark application
    (lakescore-<job>)."""
    return LazyExecutor(lambda: _start(cfg, job))


def _start(cfg, job: str):
    if cfg.engine == "spark":
        from engine.spark.executor import SESSION_CONF, SparkExecutor
        from engine.spark.session import spark_session

        spark = spark_session(f"lakescore-{job}", master=cfg.spark.master, extra_conf=SESSION_CONF)
        return SparkExecutor(spark, cfg.spark)
    from engine.ray.executor import executor
    from engine.ray.session import connect

    connect(cfg.ray.address)
    return executor(cfg.ray, fill_slots=job in ("evaluate", "backtest"))
