"""Row checks' second stages beside the score job's result loop, so that waiting for one never stalls a commit.

A unit read in several chunks has its key uniqueness finished by a second stage (`RowCheck.complete`: one side task
per key-hash bucket on the executor, engine.executor.side_run) once its chunks are all in. Run inside the result
loop, that stage held every other unit's commit until it ended; here it runs on a small thread pool, and the loop
collects what has finished at each item it receives and, once the chunks are all in, waits for the rest until the
deadline. Only the stage runs on the pool: verdicts and commits stay on the loop's thread (the committers and the
summary are not shared across threads). Bounded: `THREADS` stages at once, each bounded by the run's deadline (its
side tasks give up then, `budget_exhausted`), and collecting them gives up at the same deadline.

Imports: engine.executor, engine.work, engine.score.units (the context); engine.score.run uses it.
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterator

from engine.executor import budget_exhausted
from engine.score.units import UnitContext
from engine.work import ChunkResult, MergeableStats, UnitWork


def merged_checks(results: list[ChunkResult]) -> MergeableStats | None:
    """A unit's row-check statistics, its chunks' merged in plan order (None without a row check)."""
    stats = None
    for r in sorted(results, key=lambda r: r.chunk):
        stats = r.checks if stats is None else stats.merge(r.checks)
    return stats


def needs_second_stage(work: UnitWork, stats: MergeableStats | None) -> bool:
    """A unit read in several chunks whose row check left work for its second stage (`RowCheck.complete`)."""
    return stats is not None and work.row_check is not None and bool(work.scratch_uri)


class SecondStages:
    """The second stages of one run's units (`UnitContext.complete`), on a pool started at the first one."""

    THREADS = 2

    def __init__(self, ctx: UnitContext, ds_of: Callable[[str], str]):
        self.ctx, self.ds_of = ctx, ds_of
        self.pool: ThreadPoolExecutor | None = None
        self.pending: dict[Future, tuple[str, object]] = {}

    def submit(self, app: str, stats, work: UnitWork) -> None:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="lakescore-second-stage")
        ds = self.ds_of(app)

        def stage() -> None:
            self.ctx.hooks.before_second_stage(ds)
            self.ctx.complete(stats, work)

        self.pending[self.pool.submit(stage)] = (app, stats)

    def finished(self) -> list[tuple[str, object, Future]]:
        """The stages done by now (without waiting), in the order they were submitted."""
        out = [(app, stats, f) for f, (app, stats) in self.pending.items() if f.done()]
        for _app, _stats, f in out:
            del self.pending[f]
        return out

    def rest(self, deadline: float) -> Iterator[tuple[str, object, Future]]:
        """Every stage left, each as it finishes; `budget_exhausted` if the deadline passes first."""
        while self.pending:
            ready, _ = wait(list(self.pending), timeout=max(0.0, deadline - time.monotonic()),
                            return_when=FIRST_COMPLETED)
            if not ready:
                raise budget_exhausted(len(self.pending), "key uniqueness stage(s)")
            yield from self.finished()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
