"""What executors move: a unit's shared work, its chunks, their results, and the row-check seam.

- `UnitWork` is what every chunk of one unit shares (input table and schema, read options, the chunk function,
  the row check, and for the score job its `Output`: table, stamps, schema, writer options, quarantine target).
  An executor ships it once per unit (Ray: one object ref; Spark: one broadcast).
- `ChunkWork` is the unit's name, its position in the plan and a few input files: all a chunk carries.
- `RowCheck` is what a row check must give the scoring pass (a bad-row mask, mergeable statistics, the rows
  to quarantine). The core defines it and knows nothing of contracts; `contracts.enforce.ContractCheck`
  implements it. The validate job's chunk function lives in `contracts.validate`, not here.
- `encode_result` / `decode_result`: a ChunkResult as JSON and statistics bytes (no pickle), for every engine
  whose results come back as rows (Ray Data actors, Spark tasks).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import pyarrow as pa


class MergeableStats(Protocol):
    rows: int

    def merge(self, other: Any) -> Any: ...

    def to_bytes(self) -> bytes: ...


class RowCheck(Protocol):
    """A row check run inside the scoring pass, once per batch, on every engine."""

    quarantine_schema: pa.Schema  # the quarantine table's file schema
    quarantine_partition_columns: list[str]

    def columns(self) -> list[str]:
        """Input columns the check reads."""

    def new_stats(self) -> MergeableStats:
        """Empty statistics for one chunk; the driver merges chunks into a unit's verdict."""

    def check(self, batch: pa.RecordBatch, ds: str, stats: MergeableStats) -> tuple[np.ndarray, Any]:
        """Fold `batch` into `stats`; returns its bad-row mask and the detail `quarantine` needs."""

    def quarantine(self, batch: pa.RecordBatch, bad: np.ndarray, detail: Any, source_version: int, run_id: str,
                   at) -> pa.RecordBatch:
        """The rows flagged in `bad` as quarantine rows (file schema `quarantine_schema`)."""

    def stats_from_bytes(self, data: bytes) -> MergeableStats: ...

    def seal(self, stats: MergeableStats, unit: "UnitWork", chunk: "ChunkWork") -> MergeableStats:
        """End of a chunk, in the worker: make `stats` ready to ship (it may leave files in `unit.scratch_uri`)."""

    def complete(self, stats: MergeableStats, unit: "UnitWork", run: Callable, deadline: float) -> None:
        """On the driver, the unit's chunks all in and merged: finish what needs every chunk (a second stage run with
        `run`, an executor's `run`, over the files the chunks left), before the verdict."""


@dataclass(frozen=True)
class Output:
    """What a scoring unit writes: shared by all its chunks; the validate job has none."""

    uri: str
    partition_values: dict
    keys: tuple[str, ...]
    passthrough: tuple[str, ...]
    score_column: str
    stamps: Any  # engine.score.scoring.Stamps
    schema: pa.Schema
    target_file_rows: int = 1_000_000
    compression: str = "zstd"
    device: str = "cpu"
    micro_batch_rows: int = 4096
    nthread: int | None = None
    quarantine_uri: str = ""  # set in quarantine mode: bad rows go there instead of being scored
    quarantine_values: dict = field(default_factory=dict)  # its partition: ds, source_table
    fingerprint: str = ""  # the unit's input fingerprint, stamped on every row (engine.score.scoring.FINGERPRINT)


@dataclass(frozen=True)
class UnitWork:
    """What every chunk of one unit shares; shipped once per unit."""

    unit: str  # the unit's name (the score job: its app_id)
    ds: str
    input_uri: str
    input_schema: pa.Schema | None  # the snapshot's schema: files are read as it says (added columns → nulls)
    task: Callable  # (UnitWork, ChunkWork, bundle) -> ChunkResult: engine.score.scoring.score_chunk, contracts' check
    batch_rows: int = 131_072
    storage_options: dict = field(default_factory=dict)
    row_check: RowCheck | None = None
    output: Output | None = None
    # A unit of several chunks: a folder on shared storage (under the lake) where its chunks leave what the row
    # check finishes on the driver's second stage (key hashes, in `key_buckets` buckets); "" for a one-chunk unit.
    scratch_uri: str = ""
    key_buckets: int = 1
    key_salt: bytes = b""  # the key under which those hashes are spilled (random per unit, never on the lake)


@dataclass(frozen=True)
class ChunkWork:
    """A few input files of one unit; the smallest piece of work shipped to a worker."""

    unit: str
    files: tuple[str, ...]
    index: int = 0  # position in the run's plan: results are merged in this order, whatever order they arrive in


@dataclass
class ChunkResult:
    unit: str
    rows_in: int
    rows_out: int
    adds: list[dict]
    checks: object | None = None  # the row check's MergeableStats
    bad_scores: int = 0  # output contract: scores that are not finite or outside [0, 1]
    quarantine_adds: list[dict] = field(default_factory=list)
    rows_quarantined: int = 0
    chunk: int = 0  # ChunkWork.index
    timings: dict = field(default_factory=dict)  # seconds spent per phase: read, contract, score, write
    latency: dict = field(default_factory=dict)  # per-batch scoring latency histogram (engine.latency)
    node: str = ""  # where it ran: set by the executor (Ray node id, Spark executor host), "" in process


@dataclass
class ChunkFailure:
    unit: str
    error: str
    contract: bool = False  # the chunk hit a data problem (ContractViolation), not a crash
    chunk: int = 0


def timed(batches: Iterable, timings: dict, phase: str = "read") -> Iterator:
    """Yield from `batches`, adding the seconds spent producing them to `timings[phase]`."""
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t
            return
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t
        yield item


def side_run(executor) -> Callable:
    """The executor's runner for a row check's second stage (short tasks, no model): its `run_side` where it has
    one (the Ray actor pool, whose actors may hold every CPU), else its `run`."""
    return getattr(executor, "run_side", executor.run)


def run_chunk(unit: UnitWork, chunk: ChunkWork, bundle) -> ChunkResult:
    """What an executor runs per chunk: the unit's chunk function, tagged with the chunk's plan position."""
    result = unit.task(unit, chunk, bundle)
    result.chunk = chunk.index
    return result


def encode_result(r: ChunkResult) -> tuple[str, bytes]:
    """A chunk's result as (JSON of counts and add actions, statistics bytes or b"" without a row check)."""
    head = {"unit": r.unit, "chunk": r.chunk, "rows_in": r.rows_in, "rows_out": r.rows_out, "adds": r.adds,
            "bad_scores": r.bad_scores, "quarantine_adds": r.quarantine_adds, "rows_quarantined": r.rows_quarantined,
            "has_checks": r.checks is not None, "timings": r.timings, "latency": r.latency, "node": r.node}
    return json.dumps(head), r.checks.to_bytes() if r.checks is not None else b""


def decode_result(result: str, checks: bytes, row_check: RowCheck | None) -> ChunkResult:
    """The exact inverse of `encode_result`: the driver sees the ChunkResult the worker built."""
    head = json.loads(result)
    stats = row_check.stats_from_bytes(checks) if head["has_checks"] else None
    return ChunkResult(head["unit"], head["rows_in"], head["rows_out"], head["adds"], stats, head["bad_scores"],
                       head["quarantine_adds"], head["rows_quarantined"], head["chunk"], head["timings"],
                       head["latency"], head["node"])


def is_contract(e: BaseException) -> bool:
    from engine.errors import ContractViolation

    return isinstance(getattr(e, "cause", None) or e, ContractViolation)


def one_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]
