"""The one engine switch: `make_executor(cfg, job)` gives the job the executor `cfg.engine` names.

Every job (score, validate, evaluate, backtest) runs through `engine.executor.Executor`; this is the only place that
reads `cfg.engine`: Spark (`engine.spark.executor.SparkExecutor` on the process's SparkContext, started here with the
scheduling it needs, or spark-submit's; no SparkSession, which RDD tasks do not need and which costs seconds), else Ray
(`engine.ray.executor.executor`: tasks or actors by `ray.pipeline`, after connecting to `ray.address`). The executor
is lazy: what a job resolves first (the lake, the model version, the input version) fails in about a second, naming
the setting, and never after the engine's start-up. A Spark engine, and a Ray one that joins a running cluster (an
address: every `ray job submit` driver), starts in a background thread as soon as the job makes its executor: the
SparkContext, its executors and their Python workers, or Ray's connection and its warm workers, come up while the
driver resolves, fetches the model, opens the outputs and plans, and the first call that needs the engine (run, gpus)
waits for it, raising what the start raised. A resolution error still comes in about a second: nothing waits for the
engine. A local Ray start (no address) begins on the job's first call into the executor, after the resolution.
Tests hand the job cores `engine.executor.LocalExecutor` directly.
Imports: engine.ray and engine.spark (lazily: a Ray job never starts a JVM, a Spark job never Ray).
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("lakescore")


class LazyExecutor:
    """An executor built by `build()` on the first attribute the job asks of it (run, gpus, …). With `background`,
    `warm_up()` builds and warms it in a thread and returns at once; the next attribute asked waits for that thread."""

    def __init__(self, build, background: bool = False):
        self._build = build
        self._background = background
        self._real = None
        self._starting: threading.Thread | None = None
        self._started = False  # start() ran (its thread may have ended and been joined since)
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._pending: list[tuple[str, tuple]] = []

    def warm_up(self) -> None:
        if not self._background or (self._real is not None and not self._started):
            self._executor().warm_up()  # built on this thread: warmed here
            return
        self.start()  # the start thread warms what it builds (and has, when it is done already: never twice)

    def start(self) -> None:
        """Start the engine in the background now (once): build it, warm it, then run what was asked meanwhile."""
        if self._started or self._real is not None:
            return
        self._started = True

        def start() -> None:
            try:
                real = self._build()
                real.warm_up()
                with self._lock:
                    self._real = real
                    pending, self._pending = self._pending, []
            except BaseException as e:  # noqa: BLE001 - raised again on the job's thread, where it is asked for
                self._error = e
                return
            for name, args in pending:  # asked for while the engine started: done here, before run is let in
                try:
                    getattr(real, name, lambda *a: None)(*args)
                except Exception as e:  # noqa: BLE001 - a head start only (preload): the chunks report their own
                    log.debug("%s during the engine's start failed: %s", name, e)

        self._starting = threading.Thread(target=start, name="lakescore-engine-start", daemon=True)
        self._starting.start()

    def preload(self, *args) -> None:
        """The executor's optional `preload` (the model into warm workers): while the engine is still starting in
        the background, the start thread does it once the engine is up, and the job's thread goes on planning."""
        with self._lock:
            if self._real is None and self._starting is not None:
                self._pending.append(("preload", args))
                return
        getattr(self._executor(), "preload", lambda *a: None)(*args)

    def run_side(self, *args):
        """The executor's second-stage runner (engine.executor.side_run), its `run` where it has none; asking for it
        does not wait for the engine's start, running it does."""
        real = self._executor()
        side = getattr(real, "run_side", None)
        return (side if side is not None else real.run)(*args)

    def _executor(self):
        if self._starting is not None:
            self._starting.join()
            self._starting = None
            if self._error is not None:
                error, self._error = self._error, None
                raise error
        if self._real is None:
            self._real = self._build()
        return self._real

    def __getattr__(self, name: str):  # called only for what this object lacks: the real executor's attributes
        return getattr(self._executor(), name)


def make_executor(cfg, job: str) -> LazyExecutor:
    """The executor for `cfg.engine` ("ray" or "spark"): Spark, and Ray joining a running cluster, start at once in
    the background; a local Ray starts when first used. `job` names the Spark application (lakescore-<job>)."""
    from engine.ray.session import joins_cluster, prepare_background_connect

    spark = cfg.engine == "spark"
    # The engine's start begins with the job, beside the resolution, where an early exit leaves nothing behind:
    # Spark's (SparkContext, the application on the master, its executors' JVMs: ~10 s; the exit ends the
    # half-started application) and a join of a running Ray (every `ray job submit` driver: ray.init, then the warm
    # tasks start the workers and import the chunk's modules while MLflow imports and the snapshot is read; 1.1 s off
    # the 1M-row score job). A bad setting still fails in a second (the job does not wait for the engine to report
    # it) and a good one finds the engine up. A local Ray start waits for the resolution: its GCS and raylet are
    # processes of their own, which an exit half-way through would leave running.
    early = spark or joins_cluster(cfg.ray.address)
    lazy = LazyExecutor(lambda: _start_spark(cfg, job) if spark else _start_ray(cfg, job), background=early)
    if spark:
        from engine.spark.pythonpath import prefer_installed_pyspark

        prefer_installed_pyspark()  # before any thread imports pyspark: compiled modules, not spark-submit's zip
    elif early:
        prepare_background_connect()
    if early:
        lazy.start()
    return lazy


def _start_spark(cfg, job: str):
    from engine.spark.executor import SparkExecutor, session_conf
    from engine.spark.session import spark_context

    sc = spark_context(f"lakescore-{job}", master=cfg.spark.master, extra_conf=session_conf())
    return SparkExecutor(sc, cfg.spark)


def _start_ray(cfg, job: str):
    from engine.ray.executor import executor
    from engine.ray.session import connect

    connect(cfg.ray.address)
    return executor(cfg.ray, fill_slots=job == "backtest")
