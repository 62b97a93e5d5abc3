"""Spark executor for every job (`engine.executor.Executor`): Spark tasks handed chunks (file paths, or a job's
JSON), never rows.

The same interface as the Ray executors, so the job cores run unchanged: the driver plans units and chunks; here
each unit becomes one Spark job, `parallelize(chunks).mapPartitions(...)`, whose tasks run the unit's chunk function
(engine.executor.run_chunk: for the score job read with pyarrow, check, score, write Parquet; for evaluate the join
and statistics of a day; for a backtest one refit group) and return each result through the shared codec (JSON and
bytes, no pickle).

- A unit is yielded as soon as its job ends, so the driver commits it then: a few units' jobs run at once from
  a small thread pool (`spark.units_in_flight`, one job group and FAIR pool each), and a failure late in a
  long run loses no finished day (or fold group: the backtest makes each group a unit).
- Start notices (`UnitWork.notify_start`, the backtest's start lines): a Spark job cannot say when each task starts,
  so a unit's chunks are announced when its Spark job is submitted, which the thread pool bounds: the documented
  equivalent of Ray's "started on a worker".
- The time budget (`deadline`) binds: the driver waits for the units' jobs at most until then; then every job group
  is cancelled (running tasks interrupted) and the run fails with `budget_exhausted` (UnitFailed, exit 1).
- What a unit shares (engine.work.UnitWork) is broadcast once per unit, the model bundle once per run; each
  Python worker keeps the model it loaded (engine.models.scorers.cached_scorer, with `spark.python.worker.reuse`).
- Retries and speculation: Spark reruns failed attempts (`spark.task.maxFailures`); only the results of the
  attempts the job kept come back. Files left by failed or losing attempts are swept after the unit's job:
  files in the unit's output (and quarantine) partition named with this run's prefix (`part-<run_id[:12]>-`)
  that are not among the returned add actions. Another run's files carry another prefix and are never touched.
- A data problem (LakescoreError: a contract or schema violation, a leakage guard) fails the chunk without retries and
  keeps its class (engine.executor.failure); a job that fails after Spark's retries fails its unit only.

Imports: engine.executor, engine.work, engine.config.sections, engine.errors, engine.lake, engine.score.scoring
(partition_dir), engine.models (never engine.ray).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pyarrow.fs as pafs

from engine.config.sections import SparkConfig
from engine.executor import Item, budget_exhausted, decode_item, one_line, run_encoded
from engine.lake.snapshot import filesystem
from engine.lake.writer import delete_quietly
from engine.score.scoring import partition_dir
from engine.work import ChunkFailure, ChunkResult, ChunkStarted, ChunkWork, UnitWork

log = logging.getLogger("lakescore")

# Scheduling this executor relies on; jobs.engines passes them when it starts the session.
SESSION_CONF = {"spark.scheduler.mode": "FAIR", "spark.python.worker.reuse": "true"}
# The jobs' JVMs move no rows (tasks read and write files in Python), so C2's optimising compiler only burns the
# cores the Python workers need: C1 alone. Measured on 2 cores, the 1M-row score job via spark-submit, 3 alternating
# pairs: whole 0.79x, CPU 0.62x with this on the driver and the executors. Set where the job starts the JVM (a
# driver's options cannot change under spark-submit: the README's command line passes it) and never over the
# operator's own options.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1"


def session_conf() -> dict[str, str]:
    """SESSION_CONF; JVM_OPTIONS for the executors (and for the driver when this process starts the JVM); and the
    executors' Python daemon from the installed pyspark (engine.spark.daemon); each unless spark-submit's --conf
    already set that key."""
    conf = dict(SESSION_CONF)
    own = {"spark.executor.extraJavaOptions": JVM_OPTIONS, "spark.python.daemon.module": "engine.spark.daemon"}
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # spark-submit's JVM is up: ask it what its --conf set
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()
        # A question per key: getAll() makes two calls into the JVM per setting spark-submit passed.
        submitted = SparkConf()
        own = {k: v for k, v in own.items() if not submitted.contains(k)}
    else:
        conf["spark.driver.extraJavaOptions"] = JVM_OPTIONS
    return {**conf, **own}


_UNITS: dict[str, UnitWork] = {}  # per Python worker: the unit it works on, unpickled once per unit
_PY_ERROR = re.compile(r"^([A-Za-z_][\w.]*)(Error|Exception|Violation|Failed|Unavailable|Refused)\b.*?: ")


def _unit_of(key: str, unit_bc) -> UnitWork:
    from pyspark import cloudpickle

    if key not in _UNITS:
        _UNITS.clear()
        _UNITS[key] = cloudpickle.loads(unit_bc.value)
    return _UNITS[key]


def _warm_partition(_rows):
    """A warm-up task: import what scoring needs in this Python worker; its pid (the worker a chunk will reuse)."""
    from engine.models.scorers import warm_worker

    warm_worker()
    yield os.getpid()


def _preload_partition(bundle_bc, device: str, micro_batch_rows: int):
    def load(_rows):
        """A warm-up task: load the model into this Python worker's scorer cache; its pid."""
        from engine.models.scorers import cached_scorer

        cached_scorer(bundle_bc.value, device, micro_batch_rows)
        yield os.getpid()

    return load


def _executor_name() -> str:
    """host/executor-<id> of the Python worker running this task: a standalone executor's working dir is
    <worker dir>/<app id>/<executor id>, which its Python workers inherit; "driver" in local mode."""
    cwd = os.getcwd()
    parent, leaf = os.path.split(cwd)
    executor = f"executor-{leaf}" if os.path.basename(parent).startswith("app-") else "driver"
    return f"{socket.gethostname()}/{executor}"


def _chunk_runner(key: str, unit_bc, bundle_bc):
    """The task function: (index, files, args) triples in → (index, ok, result JSON, bytes, worker) out; `worker` is
    (Python worker pid, model loads in that worker so far, chunk start, chunk end in epoch s), None for a failure."""

    def run(triples):
        from engine.models.scorers import scorer_loads

        unit = _unit_of(key, unit_bc)
        bundle = bundle_bc.value if bundle_bc is not None else None
        for index, files, args in triples:
            started = time.time()
            ok, result, data = run_encoded(unit, ChunkWork(unit.unit, tuple(files), index, args), bundle,
                                           _executor_name)
            loads = scorer_loads(bundle) if bundle is not None else 0
            yield index, ok, result, data, (os.getpid(), loads, started, time.time()) if ok else None

    return run


class SparkExecutor:
    """`engine.executor.Executor` on a SparkContext (or a SparkSession's) started with `SESSION_CONF`."""

    def __init__(self, spark, cfg: SparkConfig | None = None):
        self.sc = getattr(spark, "sparkContext", spark)  # the tasks are RDD jobs: the context is all they need
        self.cfg = cfg or SparkConfig()
        self._warming: threading.Thread | None = None
        self.warm_pids: set[int] = set()  # the Python workers the warm-up started (benchmarks, tests)
        self._broadcasts: list = []  # the preload's bundle, unpersisted with the run's broadcasts

    def warm_up(self) -> None:
        """Start the executors' Python workers now, while the driver still plans: one short task per core
        (`defaultParallelism`) imports what scoring needs (engine.models.scorers.warm_worker); with
        `spark.python.worker.reuse` those workers stay up and take the units' chunks. `run` waits for this job
        before it submits the units' (so the two never compete for the cores); a failed warm-up only costs the head
        start. Its job group (`warmup-lakescore-…`) is apart from the units' (`lakescore-…`, which
        benchmarks/spark_job.py times)."""
        self._warm_job("start Python workers", lambda: _warm_partition)

    def preload(self, bundle, device: str, micro_batch_rows: int) -> None:
        """After the warm-up, load the model in those Python workers (the scorer cache key the chunks ask for,
        engine.models.scorers.cached_scorer), while the driver plans; fire and forget like the warm-up."""
        sc = self.sc

        def task():
            bc = sc.broadcast(bundle)
            self._broadcasts.append(bc)
            return _preload_partition(bc, device, micro_batch_rows)

        self._warm_job("load the model in the Python workers", task)

    def _warm_job(self, what: str, task) -> None:
        """One task per core running `task()`'s function, in a thread after the previous warm-up job; the Python
        worker pids it ran in join `warm_pids`."""
        sc, before = self.sc, self._warming
        n = max(1, sc.defaultParallelism)

        def warm() -> None:
            if before is not None:
                before.join()
            sc.setJobGroup(f"warmup-lakescore-{uuid.uuid4().hex[:8]}", f"lakescore: {what}")
            try:
                self.warm_pids |= set(sc.parallelize(range(n), n).mapPartitions(task()).collect())
                log.debug("Spark warm-up (%s): Python worker pids %s", what, sorted(self.warm_pids))
            except Exception as e:  # noqa: BLE001 - only a head start: the units' jobs start their workers anyway
                log.debug("Spark warm-up job (%s) failed: %s", what, one_line(e))

        self._warming = threading.Thread(target=warm, name="lakescore-spark-warmup", daemon=True)
        self._warming.start()

    def gpus(self) -> float:
        """GPUs per executor as the session was configured (`spark.executor.resource.gpu.amount`), 0 if unset."""
        return float(self.sc.getConf().get("spark.executor.resource.gpu.amount", "0") or 0)

    def run(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle, deadline: float) -> Iterator[Item]:
        from pyspark import cloudpickle

        sc = self.sc
        if self._warming is not None:
            self._warming.join(min(max(0.0, deadline - time.monotonic()), threading.TIMEOUT_MAX))
            self._warming = None
        by_unit: dict[str, list[ChunkWork]] = {}
        for c in chunks:
            by_unit.setdefault(c.unit, []).append(c)
        run_tag = uuid.uuid4().hex[:8]
        bundle_bc = sc.broadcast(bundle) if bundle is not None else None
        unit_bcs = {name: sc.broadcast(cloudpickle.dumps(units[name])) for name in by_unit}
        groups = {name: f"lakescore-{run_tag}-{i}" for i, name in enumerate(by_unit)}
        events: queue.Queue = queue.Queue()  # (unit, None) when its job is submitted, (unit, its items) when it ends

        def job(name: str) -> None:
            try:
                if units[name].notify_start:
                    events.put((name, None))
                events.put((name, self._unit_job(sc, units[name], by_unit[name], unit_bcs[name], bundle_bc,
                                                  groups[name])))
            except BaseException as e:  # noqa: BLE001 - raised again on the driver's thread
                events.put((name, e))

        pool = ThreadPoolExecutor(max_workers=self.cfg.units_in_flight, thread_name_prefix="lakescore-spark")
        pending = set(by_unit)
        try:
            for name in by_unit:
                pool.submit(job, name)
            while pending:
                try:
                    name, out = events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    for group in groups.values():
                        sc.cancelJobGroup(group)
                    raise budget_exhausted(sum(len(by_unit[n]) for n in pending), units[chunks[0].unit].what,
                                           "executors", " on Spark") from None
                if out is None:
                    yield from (ChunkStarted(c.unit, c.index) for c in by_unit[name])
                    continue
                pending.discard(name)
                if isinstance(out, BaseException):
                    raise out
                yield from out
        finally:
            for name in pending:
                sc.cancelJobGroup(groups[name])
            pool.shutdown(wait=True, cancel_futures=True)
            for bc in [*unit_bcs.values(), *filter(None, [bundle_bc]), *self._broadcasts]:
                bc.unpersist()
            self._broadcasts = []

    def _unit_job(self, sc, unit: UnitWork, chunks: list[ChunkWork], unit_bc, bundle_bc, group: str
                  ) -> list[ChunkResult | ChunkFailure]:
        """One Spark job for one unit's chunks; its results, or one failure per chunk when the job failed."""
        sc.setJobGroup(group, f"lakescore {unit.unit}", interruptOnCancel=True)
        sc.setLocalProperty("spark.scheduler.pool", group)  # one FAIR pool per unit in flight: they share the cores
        triples = [(c.index, list(c.files), c.args) for c in chunks]
        rdd = sc.parallelize(triples, min(len(triples), max(1, sc.defaultParallelism)))
        try:
            rows = rdd.mapPartitions(_chunk_runner(group, unit_bc, bundle_bc)).collect()
        except Exception as e:  # the job failed after Spark's retries (or was cancelled): its unit fails
            self._sweep(unit, [])
            message = f"Spark job failed after Spark's task retries: {_job_error(e)}"
            return [ChunkFailure(unit.unit, message, False, c.index) for c in chunks]
        out = [decode_item(ok, result, data, unit.row_check)
               for _i, ok, result, data, _w in sorted(rows, key=lambda r: r[0])]
        _log_workers(unit.unit, [r[4] for r in rows if r[4] is not None])
        self._sweep(unit, [r for r in out if isinstance(r, ChunkResult)])
        return out

    def _sweep(self, unit: UnitWork, results: list[ChunkResult]) -> None:
        """Delete this run's files in the unit's partitions that no kept attempt returned (failed or lost attempts)."""
        out = unit.output
        if out is None:
            return
        prefix = f"part-{out.stamps.run_id[:12]}-"
        targets = [(out.uri, partition_dir(out.partition_values), {a["path"] for r in results for a in r.adds})]
        if out.quarantine_uri and unit.row_check is not None:
            targets.append((out.quarantine_uri,
                            partition_dir(out.quarantine_values, unit.row_check.quarantine_partition_columns),
                            {a["path"] for r in results for a in r.quarantine_adds}))
        for uri, rel_dir, keep in targets:
            fs, base = filesystem(uri, unit.storage_options)
            folder = f"{base}/{rel_dir}" if base else rel_dir
            try:
                infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
            except OSError as e:
                log.warning("unit %s: could not list %s to sweep failed attempts' files: %s", unit.unit, folder, e)
                continue
            for info in infos:
                name = info.path.rsplit("/", 1)[-1]
                if info.type == pafs.FileType.File and name.startswith(prefix) and f"{rel_dir}/{name}" not in keep:
                    log.info("unit %s: removing %s, left by a failed or losing Spark task attempt", unit.unit, name)
                    delete_quietly(fs, info.path)


def _log_workers(unit: str, workers: list[tuple]) -> None:
    """One line per unit: when its chunks ran (epoch s) and the model loads each Python worker had made by its last
    chunk here. With the per-worker model cache a worker's count stays 1 across units: benchmarks/spark_job.py reads it."""
    if not workers:
        return
    loads: dict[int, int] = {}
    for pid, n, _start, _end in workers:
        loads[pid] = max(loads.get(pid, 0), n)
    log.info("unit %s: %d chunk(s) ran on Spark from %.3f to %.3f; model loads by Python worker pid %s", unit,
             len(workers), min(w[2] for w in workers), max(w[3] for w in workers), json.dumps(loads, sort_keys=True))


def _job_error(e: BaseException) -> str:
    """The Python exception a failed task raised, out of the JVM's long error text (else the error's own line)."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    found = [ln for ln in lines if _PY_ERROR.match(ln) and not ln.startswith(("org.", "java.", "py4j.", "scala."))]
    return found[-1][:300] if found else one_line(e)
