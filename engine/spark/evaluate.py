"""Spark executor for the evaluate job: Spark tasks handed days (file paths), never rows through the JVM.

One Spark job, `parallelize(chunks, n).map(...)`, whose tasks run `engine.evaluation.join.run_chunk_json` (the same
function as on Ray) and return JSON counts and statistics bytes; the plan and schemas are broadcast once.
"""
from __future__ import annotations

import time
from typing import Iterator

from engine.errors import UnitFailed
from engine.evaluation.join import run_chunk_json


def _runner(plan_bc, schemas_bc):
    def run(chunk_json: str) -> tuple[str, bytes]:
        return run_chunk_json(plan_bc.value, chunk_json, schemas_bc.value)

    return run


class SparkEvalExecutor:
    def __init__(self, spark):
        self.spark = spark

    def run(self, plan_json: str, chunks_json: list[str], schemas: str, deadline: float) -> Iterator[tuple[str, bytes]]:
        sc = self.spark.sparkContext
        if time.monotonic() > deadline:
            raise UnitFailed("time budget exhausted before the evaluation started; raise run.time_budget_s")
        plan_bc, schemas_bc = sc.broadcast(plan_json), sc.broadcast(schemas)
        try:
            rdd = sc.parallelize(chunks_json, max(1, len(chunks_json)))
            for counts, data in rdd.map(_runner(plan_bc, schemas_bc)).collect():
                yield counts, bytes(data)
        finally:
            plan_bc.unpersist()
            schemas_bc.unpersist()
