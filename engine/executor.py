"""THE executor seam, for every job: the `Executor` protocol, what runs per chunk, the result codec, errors that keep
their class, and `LocalExecutor`.

Score, validate, evaluate and backtest all run through one `Executor`: the job plans units (`engine.work.UnitWork`,
what a unit's chunks share, with the chunk function as data in `task`) and chunks (`ChunkWork`), and the executor
runs `unit.task(unit, chunk, bundle)` per chunk, at most a bounded number at once, until `deadline`, yielding each
`ChunkResult` or `ChunkFailure` (and a `ChunkStarted` for units that ask) as it comes in. The chunk functions: the
score job's `engine.score.scoring.score_chunk`, validate's `contracts.validate` check, evaluate's
`engine.evaluation.join.evaluate_chunk_task`, the backtest's `backtests.fold_run.group_task`; the engine never
imports the ones above it (tests/test_layering.py).

- A worker's `LakescoreError` comes back as a `ChunkFailure` carrying its class names (its own and its bases') and
  its message, no pickled exception; `raised(failure)` rebuilds it on the driver as the first of those names that
  `engine.errors` holds (a backtests `LeakageDetected` becomes the `ContractViolation` it is), so errors that share
  an exit code (ModelRefused and InputUnavailable: 5) stay apart. A crash (any other exception) keeps its one line
  and is rebuilt as `UnitFailed`.
- The codec (`encode_item` / `decode_item`): a result or failure as (ok, JSON, bytes), no pickle, for every engine
  whose results come back as rows (Ray Data actors, Spark tasks). Ray tasks return the objects themselves.
- `budget_exhausted`: the one time-budget error; every message starts "time budget exhausted" (tests match it).

Why `engine.work` stays a module of its own: it holds the data the chunk functions need on workers, this module how
they are run and shipped. Imports: engine.work and engine.errors (the kernel); engine.ray.executor,
engine.spark.executor and the job cores import this module, never the reverse.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Iterator, Protocol

from engine import errors
from engine.errors import ContractViolation, LakescoreError, UnitFailed
from engine.work import ChunkFailure, ChunkResult, ChunkStarted, ChunkWork, RowCheck, UnitWork

Item = ChunkResult | ChunkFailure | ChunkStarted


class Executor(Protocol):
    def warm_up(self) -> None:
        """Start workers early (they warm up while the driver resolves the model); may do nothing."""

    def run(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle, deadline: float) -> Iterator[Item]:
        """Run `units[c.unit].task` on every chunk (the model `bundle` shipped once per run; None without one);
        yield each result (or failure) as it comes in, and a ChunkStarted first for the units that ask. Past
        `deadline` (time.monotonic) the work left is cancelled and `budget_exhausted` raised."""

    def gpus(self) -> float:
        """GPUs the engine can give the chunks (0 without): `model.device: cuda` needs some."""

    # Optional: `run_side(units, chunks, None, deadline)`, like `run`, for a row check's second stage (one short
    # task per key-hash bucket, no model) while `run` may still hold the workers; without it `run` is used.
    # Optional: `preload(bundle, device, micro_batch_rows)`: load the model into the warm workers while the driver
    # plans (the Ray tasks executor), so the first chunks find it loaded; `run` then ships the same bundle.


def side_run(executor) -> Callable:
    """The executor's runner for a row check's second stage (short tasks, no model): its `run_side` where it has
    one (the Ray actor pool, whose actors may hold every CPU), else its `run`."""
    side = getattr(executor, "run_side", None)  # asked first: `executor.run` would start a lazy executor now
    return side if side is not None else executor.run


def run_chunk(unit: UnitWork, chunk: ChunkWork, bundle) -> ChunkResult:
    """What an executor runs per chunk: the unit's chunk function, tagged with the chunk's plan position."""
    result = unit.task(unit, chunk, bundle)
    result.chunk = chunk.index
    return result


def budget_exhausted(left: int, what: str = "chunk(s)", more: str = "workers", where: str = "") -> UnitFailed:
    """The time budget ran out with `left` chunks (`what` they are) unfinished; `more`: what to add ("" in process)."""
    return UnitFailed(f"time budget exhausted with {left} {what} unfinished{where}; raise run.time_budget_s"
                      + (f" or add {more}" if more else ""))


# ------------------------------------------------------------------ errors that keep their class


def failure(unit: str, chunk: int, e: BaseException) -> ChunkFailure:
    """A chunk's error as a failure that crosses without pickle: one line, and for a LakescoreError (also one that Ray
    wraps: its `cause`) its class names and message."""
    cause = getattr(e, "cause", None) or e
    if isinstance(cause, LakescoreError):
        return ChunkFailure(unit, one_line(cause), isinstance(cause, ContractViolation), chunk,
                            tuple(c.__name__ for c in type(cause).__mro__ if issubclass(c, LakescoreError)),
                            str(cause))
    return ChunkFailure(unit, one_line(cause), False, chunk)


def error_class(class_names) -> type[LakescoreError]:
    """The engine.errors class a worker's error was raised as, or its nearest base there; UnitFailed when none is."""
    for name in class_names:
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, LakescoreError) and cls is not LakescoreError:
            return cls
    return UnitFailed


def raised(f: ChunkFailure) -> LakescoreError:
    """The driver's exception for a failure: the worker's class (nearest engine.errors one) and message; a crash as
    UnitFailed naming it."""
    return error_class(f.classes)(f.message) if f.classes else UnitFailed(f.error)


def is_contract(e: BaseException) -> bool:
    return isinstance(getattr(e, "cause", None) or e, ContractViolation)


def one_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]


# ------------------------------------------------------------------ the codec: results as rows, no pickle


def encode_result(r: ChunkResult) -> tuple[str, bytes]:
    """A chunk's result as (JSON of counts, add actions and the job's payload; row-check statistics then blob bytes)."""
    checks = r.checks.to_bytes() if r.checks is not None else b""
    head = {"unit": r.unit, "chunk": r.chunk, "rows_in": r.rows_in, "rows_out": r.rows_out, "adds": r.adds,
            "bad_scores": r.bad_scores, "quarantine_adds": r.quarantine_adds, "rows_quarantined": r.rows_quarantined,
            "has_checks": r.checks is not None, "checks_len": len(checks), "timings": r.timings,
            "latency": r.latency, "node": r.node, "payload": r.payload}
    return json.dumps(head), checks + r.blob


def decode_result(result: str, data: bytes, row_check: RowCheck | None) -> ChunkResult:
    """The exact inverse of `encode_result`: the driver sees the ChunkResult the worker built."""
    head = json.loads(result)
    n = head["checks_len"]
    stats = row_check.stats_from_bytes(data[:n]) if head["has_checks"] else None
    return ChunkResult(head["unit"], head["rows_in"], head["rows_out"], head["adds"], stats, head["bad_scores"],
                       head["quarantine_adds"], head["rows_quarantined"], head["chunk"], head["timings"],
                       head["latency"], head["node"], head["payload"], bytes(data[n:]))


def encode_item(item: ChunkResult | ChunkFailure) -> tuple[bool, str, bytes]:
    """(ok, JSON, bytes) of a result or a failure: what an engine's result row holds."""
    if isinstance(item, ChunkFailure):
        return False, json.dumps({"unit": item.unit, "error": item.error, "contract": item.contract,
                                  "chunk": item.chunk, "classes": list(item.classes), "message": item.message}), b""
    return (True, *encode_result(item))


def decode_item(ok: bool, text: str, data: bytes, row_check: RowCheck | None) -> ChunkResult | ChunkFailure:
    if ok:
        return decode_result(text, bytes(data), row_check)
    f = json.loads(text)
    return ChunkFailure(f["unit"], f["error"], f["contract"], f["chunk"], tuple(f["classes"]), f["message"])


def run_encoded(unit: UnitWork, chunk: ChunkWork, bundle, node: Callable[[], str]) -> tuple[bool, str, bytes]:
    """A chunk on a worker whose results travel as rows: its result, or its LakescoreError as a failure (a data
    problem: retrying would only repeat it), encoded. Other exceptions propagate (the engine retries the attempt)."""
    try:
        result = run_chunk(unit, chunk, bundle)
    except LakescoreError as e:
        return encode_item(failure(unit.unit, chunk.index, e))
    result.node = node()
    return encode_item(result)


# ------------------------------------------------------------------ in process


class LocalExecutor:
    """Runs the chunks one after another in this process: no cluster (tests, GPU checks, tiny inputs).

    A chunk's LakescoreError becomes its failure, as on Ray and Spark; any other exception (a vanished input file's
    OSError) is raised as it is, and the job core says which file. A start notice is yielded just before a chunk runs.
    """

    def warm_up(self) -> None:
        return None

    @staticmethod
    def gpus() -> float:
        try:
            import torch
        except ImportError:
            return 0.0
        return float(torch.cuda.device_count())

    def run(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle, deadline: float) -> Iterator[Item]:
        for i, c in enumerate(chunks):
            if time.monotonic() > deadline:
                raise budget_exhausted(len(chunks) - i, units[c.unit].what, more="")
            if units[c.unit].notify_start:
                yield ChunkStarted(c.unit, c.index)
            try:
                item = run_chunk(units[c.unit], c, bundle)
            except LakescoreError as e:
                item = failure(c.unit, c.index, e)
            yield item


__all__ = ["Executor", "LocalExecutor", "budget_exhausted", "decode_item", "decode_result", "encode_item",
           "encode_result", "error_class", "failure", "is_contract", "one_line", "raised", "run_chunk", "side_run"]
