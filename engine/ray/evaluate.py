"""Ray executor for the evaluate job: one Ray task per day (or key-hash bucket), the shared plan put once.

Each task runs `engine.evaluation.join.run_chunk_json` (the same function Spark tasks and the local executor run)
and returns JSON counts and statistics bytes; at most `max_in_flight` tasks run at once, with fractional CPUs.
"""
from __future__ import annotations

import time
from typing import Iterator

from engine.config.sections import RayConfig
from engine.errors import UnitFailed
from engine.evaluation.join import run_chunk_json


def _task(plan_json: str, chunk_json: str, schemas: str) -> tuple[str, bytes]:
    return run_chunk_json(plan_json, chunk_json, schemas)


class RayEvalExecutor:
    def __init__(self, cfg: RayConfig):
        self.cfg = cfg

    def run(self, plan_json: str, chunks_json: list[str], schemas: str, deadline: float) -> Iterator[tuple[str, bytes]]:
        import ray

        limit = self.cfg.max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1) / self.cfg.num_cpus))
        task = ray.remote(_task).options(num_cpus=self.cfg.num_cpus, max_retries=3)
        plan_ref, schemas_ref = ray.put(plan_json), ray.put(schemas)
        todo = list(chunks_json)
        running: list = []
        try:
            while todo or running:
                while todo and len(running) < limit:
                    running.append(task.remote(plan_ref, todo.pop(0), schemas_ref))
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise UnitFailed(f"time budget exhausted with {len(todo) + len(running)} evaluation task(s) left; "
                                     "raise run.time_budget_s")
                done, running = ray.wait(running, num_returns=1, timeout=timeout)
                for ref in done:
                    yield ray.get(ref)
        finally:
            for ref in running:
                ray.cancel(ref)
