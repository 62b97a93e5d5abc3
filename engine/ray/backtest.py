"""Ray executor for the backtest job: one Ray task per refit group (its folds share a model), in parallel.

Each task runs the group function the backtest runner hands in as data (`backtests.fold_run.run_group`: train
once, score and evaluate each fold; the same function the local executor runs), so this module never imports
backtests (engine sits below it; tests/test_layering.py checks). Fractional CPUs by default so small machines keep
room for the driver. A fold that fails comes back as its error (its group's folds fail; the others go on and are
committed). A worker's LakescoreError crosses as its class names (its own and its bases') and message, no
pickle, and is raised again on the driver as the first of those that engine.errors holds: ModelRefused and
InputUnavailable share exit code 5, so the code alone would not tell them apart; none held becomes UnitFailed.

A task is a streaming generator: its first item, "started" (backtests.runner.STARTED), reaches the driver when the
task starts on a worker, so the job prints a group's start line then, not when it was submitted (a group may wait
in Ray's queue for a free CPU); its second item is the result.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

from engine import errors
from engine.config.sections import RayConfig
from engine.errors import LakescoreError, UnitFailed


STARTED = "started"


def _task(group_fn, plan_json: str, folds_json: list[str], baseline):
    yield STARTED
    try:
        yield group_fn(plan_json, folds_json, baseline)
    except LakescoreError as e:  # a data problem (the leakage guard): returned, not retried
        yield {"error": type(e).__name__, "classes": [c.__name__ for c in type(e).__mro__], "message": str(e),
               "exit_code": e.exit_code}


def _error_class(class_names: list[str]) -> type[LakescoreError]:
    """The engine.errors class a worker's error was raised as, or its nearest base there (backtests.guard's
    LeakageDetected is a ContractViolation: exit 3); UnitFailed when none is."""
    for name in class_names:
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, LakescoreError):
            return cls
    return UnitFailed


class RayBacktestExecutor:
    def __init__(self, cfg: RayConfig):
        self.cfg = cfg

    def run(self, group_fn: Callable, plan_json: str, groups: list[list[str]], baseline, deadline: float
            ) -> Iterator[tuple[int, object]]:
        import ray

        task = ray.remote(_task).options(num_cpus=self.cfg.num_cpus, max_retries=2, num_returns="streaming")
        fn_ref, plan_ref, base_ref = ray.put(group_fn), ray.put(plan_json), ray.put(baseline)
        refs = {task.remote(fn_ref, plan_ref, g, base_ref): i for i, g in enumerate(groups)}
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
                        yield refs[ref], _error_class(out["classes"])(out["message"])
                    else:
                        yield refs[ref], out
        finally:
            for ref in pending:
                ray.cancel(ref)
