"""Spark executor for the score and validate jobs: Spark tasks handed chunks (file paths), never rows.

The same interface as the Ray executors (`engine.score.run.Executor`), so the job core runs unchanged: the
driver plans units and chunks; here each unit becomes one Spark job, `parallelize(chunks).mapPartitions(...)`,
whose tasks run the unit's chunk function (engine.work.run_chunk: read with pyarrow, check, score, write
Parquet) and return each ChunkResult through the shared codec (JSON and statistics bytes, no pickle).

- A unit is yielded as soon as its job ends, so the driver commits it then: a few units' jobs run at once from
  a small thread pool (`spark.units_in_flight`, one job group and FAIR pool each), and a failure late in a
  long run loses no finished day.
- What a unit shares (engine.work.UnitWork) is broadcast once per unit, the model bundle once per run; each
  Python worker keeps the model it loaded (engine.models.scorers.cached_scorer, with `spark.python.worker.reuse`).
- Retries and speculation: Spark reruns failed attempts (`spark.task.maxFailures`); only the results of the
  attempts the job kept come back. Files left by failed or losing attempts are swept after the unit's job:
  files in the unit's output (and quarantine) partition named with this run's prefix (`part-<run_id[:12]>-`)
  that are not among the returned add actions. Another run's files carry another prefix and are never touched.
- A data problem (LakescoreError: a contract or schema violation) fails the chunk without retries; a job that
  fails after Spark's retries fails its unit only.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterator

import pyarrow.fs as pafs

from engine.config.sections import SparkConfig
from engine.errors import LakescoreError, UnitFailed
from engine.score.scoring import partition_dir
from engine.lake.snapshot import filesystem
from engine.work import (ChunkFailure, ChunkResult, ChunkWork, UnitWork, decode_result, encode_result, is_contract,
                         one_line, run_chunk)
from engine.lake.writer import delete_quietly

log = logging.getLogger("lakescore")

# Scheduling this executor relies on; jobs.score passes them when it starts the session.
SESSION_CONF = {"spark.scheduler.mode": "FAIR", "spark.python.worker.reuse": "true"}

_UNITS: dict[str, UnitWork] = {}  # per Python worker: the unit it works on, unpickled once per unit
_PY_ERROR = re.compile(r"^([A-Za-z_][\w.]*)(Error|Exception|Violation|Failed|Unavailable|Refused)\b.*?: ")


def _unit_of(key: str, unit_bc) -> UnitWork:
    from pyspark import cloudpickle

    if key not in _UNITS:
        _UNITS.clear()
        _UNITS[key] = cloudpickle.loads(unit_bc.value)
    return _UNITS[key]


def _executor_name() -> str:
    """host/executor-<id> of the Python worker running this task: a standalone executor's working dir is
    <worker dir>/<app id>/<executor id>, which its Python workers inherit; "driver" in local mode."""
    cwd = os.getcwd()
    parent, leaf = os.path.split(cwd)
    executor = f"executor-{leaf}" if os.path.basename(parent).startswith("app-") else "driver"
    return f"{socket.gethostname()}/{executor}"


def _chunk_runner(key: str, unit_bc, bundle_bc):
    """The task function: (index, files) pairs in → (index, ok, result JSON, stats bytes, error, contract, worker)
    out; `worker` is (Python worker pid, model loads in that worker so far, chunk start, chunk end in epoch s)."""

    def run(pairs):
        from engine.models.scorers import scorer_loads

        unit = _unit_of(key, unit_bc)
        bundle = bundle_bc.value if bundle_bc is not None else None
        for index, files in pairs:
            chunk = ChunkWork(unit.unit, tuple(files), index)
            started = time.time()
            try:
                res = run_chunk(unit, chunk, bundle)
                res.node = _executor_name()
                result, checks = encode_result(res)
            except LakescoreError as e:  # a data problem: retrying would only repeat it
                yield index, False, "", b"", one_line(e), is_contract(e), None
                continue
            loads = scorer_loads(bundle) if bundle is not None else 0
            yield index, True, result, checks, "", False, (os.getpid(), loads, started, time.time())

    return run


class SparkExecutor:
    """`engine.score.run.Executor` on a SparkSession started with `SESSION_CONF`."""

    def __init__(self, spark, cfg: SparkConfig | None = None):
        self.spark = spark
        self.cfg = cfg or SparkConfig()

    def warm_up(self) -> None:
        """Nothing to start: the session is up, and each Python worker loads the model on its first chunk."""

    def gpus(self) -> float:
        """GPUs per executor as the session was configured (`spark.executor.resource.gpu.amount`), 0 if unset."""
        return float(self.spark.conf.get("spark.executor.resource.gpu.amount", "0") or 0)

    def run(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle, deadline: float
            ) -> Iterator[ChunkResult | ChunkFailure]:
        from pyspark import cloudpickle

        sc = self.spark.sparkContext
        by_unit: dict[str, list[ChunkWork]] = {}
        for c in chunks:
            by_unit.setdefault(c.unit, []).append(c)
        run_tag = uuid.uuid4().hex[:8]
        bundle_bc = sc.broadcast(bundle) if bundle is not None else None
        unit_bcs = {name: sc.broadcast(cloudpickle.dumps(units[name])) for name in by_unit}
        groups = {name: f"lakescore-{run_tag}-{i}" for i, name in enumerate(by_unit)}
        pool = ThreadPoolExecutor(max_workers=self.cfg.units_in_flight, thread_name_prefix="lakescore-spark")
        futures = {pool.submit(self._unit_job, sc, units[name], cs, unit_bcs[name], bundle_bc, groups[name]): name
                   for name, cs in by_unit.items()}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=max(0.0, deadline - time.monotonic()),
                                     return_when=FIRST_COMPLETED)
                if not done:
                    for name in groups.values():
                        sc.cancelJobGroup(name)
                    raise UnitFailed(f"time budget exhausted with {len(pending)} unit(s) unfinished on Spark; "
                                     "raise run.time_budget_s or add executors")
                for fut in done:
                    yield from fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for bc in [*unit_bcs.values(), *filter(None, [bundle_bc])]:
                bc.unpersist()

    def _unit_job(self, sc, unit: UnitWork, chunks: list[ChunkWork], unit_bc, bundle_bc, group: str
                  ) -> list[ChunkResult | ChunkFailure]:
        """One Spark job for one unit's chunks; its results, or one failure per chunk when the job failed."""
        sc.setJobGroup(group, f"lakescore {unit.unit}", interruptOnCancel=True)
        sc.setLocalProperty("spark.scheduler.pool", group)  # one FAIR pool per unit in flight: they share the cores
        pairs = [(c.index, list(c.files)) for c in chunks]
        rdd = sc.parallelize(pairs, min(len(pairs), max(1, sc.defaultParallelism)))
        try:
            rows = rdd.mapPartitions(_chunk_runner(group, unit_bc, bundle_bc)).collect()
        except Exception as e:  # the job failed after Spark's retries (or was cancelled): its unit fails
            self._sweep(unit, [])
            message = f"Spark job failed after Spark's task retries: {_job_error(e)}"
            return [ChunkFailure(unit.unit, message, False, c.index) for c in chunks]
        out: list[ChunkResult | ChunkFailure] = []
        for index, ok, result, checks, error, contract, _worker in sorted(rows, key=lambda r: r[0]):
            if ok:
                out.append(decode_result(result, bytes(checks), unit.row_check))
            else:
                out.append(ChunkFailure(unit.unit, error, contract, index))
        _log_workers(unit.unit, [r[6] for r in rows if r[6] is not None])
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
