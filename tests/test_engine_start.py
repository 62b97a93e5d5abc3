"""The engine starts while the driver works (issue 20: Spark's fixed cost). `jobs.engines.LazyExecutor` with
`background` builds the engine in a thread from the job's `warm_up()` on, and the first call that needs it waits;
the Spark executor's warm-up starts the Python workers that then run the chunks.

The broken builds these catch: a `warm_up()` that starts the engine on the job's thread (the driver waits for the
SparkContext and its executors before it fetches the model and plans), an engine start error lost in the thread or
raised with another class (a wrong exit code), a warm-up that runs in Python workers the chunks do not reuse
(`spark.python.worker.reuse` off, or no warm-up job at all), and a job that needs delta-spark's jars on Spark.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time

import pytest

from engine.errors import ConfigError
from engine.executor import LocalExecutor
from engine.work import ChunkResult, ChunkWork, UnitWork
from jobs.engines import LazyExecutor


def _unit(name: str = "u") -> UnitWork:
    return UnitWork(name, "", "", None, _echo())


def _echo():
    """A chunk function handed in as data (defined in a function: Spark's Python workers get it by value)."""

    def echo(unit, chunk, bundle):
        from engine.work import ChunkResult

        return ChunkResult(chunk.unit, 1, 1, [])

    return echo


def test_warm_up_returns_while_the_engine_still_starts_and_run_waits_for_it():
    started, release = threading.Event(), threading.Event()
    threads = []

    def build():
        threads.append(threading.current_thread().name)
        started.set()
        if not release.wait(20):  # a warm_up() on the job's thread would sit here, then fail the test
            raise AssertionError("the engine start blocked the job's thread")
        return LocalExecutor()

    lazy = LazyExecutor(build, background=True)
    lazy.warm_up()
    assert started.wait(10), "warm_up() did not start the engine"
    # The job's thread is free while the engine is still starting: here it would fetch the model and plan.
    assert threads == ["lakescore-engine-start"] and lazy._real is None
    release.set()
    items = list(lazy.run({"u": _unit()}, [ChunkWork("u", ("a.parquet",), 0)], None, 1e12))
    assert [type(i).__name__ for i in items] == ["ChunkResult"] and lazy._real is not None


def test_an_engine_start_error_comes_out_where_the_engine_is_first_used_with_its_class():
    def build():
        raise ConfigError("spark.master=spark://nowhere:1 cannot be reached; fix spark.master")

    lazy = LazyExecutor(build, background=True)
    lazy.warm_up()  # never raises: the job goes on resolving and planning
    with pytest.raises(ConfigError, match="fix spark.master"):
        lazy.run({}, [], None, 1e12)


class _CountingWarmUps(LocalExecutor):
    def __init__(self):
        super().__init__()
        self.warm_ups = 0

    def warm_up(self) -> None:
        self.warm_ups += 1


def test_an_engine_up_before_the_jobs_warm_up_is_warmed_once():
    """Spark's context can be up before the job asks for the warm-up (it starts with the job, beside the model's
    resolution): a second warm-up job would only compete with the first for the cores. Broken build: warm_up()
    warming the engine the start thread already built and warmed."""
    built = []
    lazy = LazyExecutor(lambda: built.append(_CountingWarmUps()) or built[-1], background=True)
    lazy.start()
    lazy._starting.join(10)
    assert built and built[0].warm_ups == 1  # the start thread built and warmed it
    lazy.warm_up()  # what the job asks once the model version is known
    lazy.run({"u": _unit()}, [ChunkWork("u", ("a.parquet",), 0)], None, 1e12)
    assert len(built) == 1 and built[0].warm_ups == 1


def test_without_background_warm_up_starts_the_engine_on_the_jobs_thread():
    threads = []

    def build():
        threads.append(threading.current_thread().name)
        return LocalExecutor()

    LazyExecutor(build).warm_up()
    assert threads == [threading.current_thread().name]


@pytest.mark.slow
def test_spark_chunks_run_in_the_python_workers_the_warm_up_started(spark, caplog):
    from engine.spark.executor import SparkExecutor

    ex = SparkExecutor(spark)
    ex.warm_up()
    units = {f"u{i}": _unit(f"u{i}") for i in range(2)}
    chunks = [ChunkWork(f"u{i}", (f"f{i}-{j}",), 3 * i + j) for i in range(2) for j in range(3)]
    with caplog.at_level(logging.INFO, logger="lakescore"):
        items = list(ex.run(units, chunks, None, time.monotonic() + 600))
    assert sorted((i.unit, i.chunk) for i in items if isinstance(i, ChunkResult)) == sorted(
        (c.unit, c.index) for c in chunks)
    assert ex.warm_pids, "the warm-up job started no Python worker"
    ran = set()
    for rec in caplog.records:
        m = re.search(r"model loads by Python worker pid (\{.*\})$", rec.getMessage())
        if m:
            ran |= {int(p) for p in json.loads(m.group(1))}
    assert ran and ran <= ex.warm_pids, f"chunks ran in {sorted(ran)}, the warm-up started {sorted(ex.warm_pids)}"


def _preloaded(device: str, micro_batch_rows: int):
    """A chunk function that reports whether its Python worker held the run's model, with these settings, in its
    scorer cache before it ran (it loads nothing itself)."""

    def preloaded(unit, chunk, bundle):
        import json

        from engine.models import scorers
        from engine.work import ChunkResult

        held = (bundle.digest, device, micro_batch_rows, None) in scorers._CACHE
        return ChunkResult(chunk.unit, 1, 1, [], payload=json.dumps({"held": held}))

    return preloaded


@pytest.mark.slow
def test_spark_preload_loads_the_model_in_the_workers_before_their_first_chunk(spark, lake, demo_root):
    """Through the job's LazyExecutor: `preload` asked while Spark starts in the background is done by the start
    thread, and every chunk finds the model already loaded in its worker (a preload dropped or run in other workers
    leaves 0)."""
    from conftest import score_config
    from engine.models.registry import fetch_bundle
    from engine.spark.executor import SparkExecutor

    cfg = score_config(lake, demo_root)
    bundle = fetch_bundle(cfg.model.uri, cfg.mlflow.tracking_uri, None, False)
    release = threading.Event()

    def build():
        release.wait(20)  # the engine is still starting when the job asks for the preload
        return SparkExecutor(spark)

    lazy = LazyExecutor(build, background=True)
    lazy.warm_up()
    mbr = 4099  # a micro-batch no other test uses: only this preload puts this cache key in the shared workers
    lazy.preload(bundle, cfg.model.device, mbr)  # returns at once: queued for the start thread
    release.set()
    units = {"u": UnitWork("u", "", "", None, _preloaded(cfg.model.device, mbr))}
    items = list(lazy.run(units, [ChunkWork("u", (f"f{j}",), j) for j in range(4)], bundle, time.monotonic() + 600))
    held = [json.loads(i.payload)["held"] for i in items if isinstance(i, ChunkResult)]
    assert held == [True] * 4, f"the model was in the chunks' workers before they ran: {held}"
