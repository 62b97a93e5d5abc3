"""Ray executor for the backtest job: one Ray task per refit group (its folds share a model), in parallel.

Each task runs `backtests.fold_run.run_group` (train once, score and evaluate each fold; the same function the
local executor runs), with fractional CPUs by default so small machines keep room for the driver. A fold that
fails comes back as its error (its group's folds fail; the others go on and are committed).

A task is a streaming generator: its first item, "started" (backtests.runner.STARTED), reaches the driver when the
task starts on a worker, so the job prints a group's start line then, not when it was submitted (a group may wait
in Ray's queue for a free CPU); its second item is the result.
"""
from __future__ import annotations

import time
from typing import Iterator

from engine.config.sections import RayConfig
from engine.errors import LakescoreError, UnitFailed


STARTED = "started"


def _task(plan_json: str, folds_json: list[str], baseline):
    from backtests.fold_run import run_group

    yield STARTED
    try:
        yield run_group(plan_json, folds_json, baseline)
    except LakescoreError as e:  # a data problem (the leakage guard): returned, not retried
        yield {"error": type(e).__name__, "message": str(e), "exit_code": e.exit_code}


class RayBacktestExecutor:
    def __init__(self, cfg: RayConfig):
        self.cfg = cfg

    def run(self, plan_json: str, groups: list[list[str]], baseline, deadline: float) -> Iterator[tuple[int, object]]:
        import ray

        from engine import errors

        task = ray.remote(_task).options(num_cpus=self.cfg.num_cpus, max_retries=2, num_returns="streaming")
        plan_ref, base_ref = ray.put(plan_json), ray.put(baseline)
        refs = {task.remote(plan_ref, g, base_ref): i for i, g in enumerate(groups)}
        pending = list(refs)
        try:
            while pending:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise UnitFailed(f"time budget exhausted with {len(pending)} fold group(s) unfinished; "
                                     "raise run.time_budget_s")
                done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
                for ref in done:
                    try:
                        out = ray.get(next(ref))
                    except Exception as e:  # a crash Ray's retries could not absorb: that group fails
                        yield refs[ref], UnitFailed(f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
                        continue
                    if out == STARTED:
                        pending.append(ref)  # its result comes next
                        yield refs[ref], STARTED
                        continue
                    if isinstance(out, dict) and "error" in out:
                        cls = {c.exit_code: c for c in (errors.ContractViolation, errors.InputUnavailable,
                                                         errors.ConfigError)}.get(out["exit_code"], UnitFailed)
                        yield refs[ref], cls(out["message"])
                    else:
                        yield refs[ref], out
        finally:
            for ref in pending:
                ray.cancel(ref)
