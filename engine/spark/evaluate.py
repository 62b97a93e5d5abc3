"""Spark executor for the evaluate job: Spark tasks handed days (file paths), never rows through the JVM.

One Spark job, `parallelize(chunks, n).map(...)`, whose tasks run `engine.evaluation.join.run_chunk_json` (the same
function as on Ray) and return JSON counts and statistics bytes; the plan and schemas are broadcast once.

The time budget (`run.time_budget_s`, as `deadline`) binds as on Ray: the job runs in a thread under its own job
group while the driver waits at most until the deadline; then the group is cancelled (its running tasks
interrupted) and the run fails with the same `UnitFailed` (exit 1) and message as the Ray executor's.
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Iterator

from engine.errors import UnitFailed
from engine.evaluation.join import run_chunk_json


def _runner(plan_bc, schemas_bc):
    def run(chunk_json: str) -> tuple[str, bytes]:
        return run_chunk_json(plan_bc.value, chunk_json, schemas_bc.value)

    return run


def _budget_exhausted(left: int) -> UnitFailed:
    return UnitFailed(f"time budget exhausted with {left} evaluation task(s) left; raise run.time_budget_s")


class SparkEvalExecutor:
    def __init__(self, spark):
        self.spark = spark

    def run(self, plan_json: str, chunks_json: list[str], schemas: str, deadline: float) -> Iterator[tuple[str, bytes]]:
        sc = self.spark.sparkContext
        if time.monotonic() > deadline:
            raise _budget_exhausted(len(chunks_json))
        group = f"lakescore-evaluate-{uuid.uuid4().hex[:8]}"
        plan_bc, schemas_bc = sc.broadcast(plan_json), sc.broadcast(schemas)

        def job() -> list:
            sc.setJobGroup(group, "lakescore evaluate", interruptOnCancel=True)
            rdd = sc.parallelize(chunks_json, max(1, len(chunks_json)))
            return rdd.map(_runner(plan_bc, schemas_bc)).collect()

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakescore-spark-eval")
        try:
            future = pool.submit(job)
            try:
                rows = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                sc.cancelJobGroup(group)
                raise _budget_exhausted(len(chunks_json)) from None
            for counts, data in rows:
                yield counts, bytes(data)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            plan_bc.unpersist()
            schemas_bc.unpersist()
