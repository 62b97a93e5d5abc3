"""What executors move, for every job: a unit's shared work, its chunks, their results, and the row-check seam.

Data only; the executor protocol, the result codec and the local executor are `engine.executor`. They are kept apart
because the chunk functions that run on workers (engine.score.scoring, contracts, engine.evaluation.join,
backtests.fold_run) need these types and nothing of how chunks are shipped. Imports: numpy and pyarrow only;
engine.executor, engine.ray, engine.spark and the job cores import this module.

- `UnitWork` is what every chunk of one unit shares: the chunk function (`task`, handed in as data by the job), and
  for the score and validate jobs the input table and schema, read options, the row check and (score) its `Output`:
  table, stamps, schema, writer options, quarantine target; for the evaluate and backtest jobs their JSON plan
  (`args`). An executor ships it once per unit (Ray: one object ref; Spark: one broadcast).
- `ChunkWork` is the unit's name, its position in the plan and a few input files (or, `args`, the JSON of the days
  or folds it covers): all a chunk carries.
- `ChunkResult` / `ChunkFailure` / `ChunkStarted` are what comes back: a result (counts, add actions, row-check
  statistics; a job's own JSON `payload` and `blob` bytes), a failure that keeps the worker error's class names, a
  start notice (for units that ask: the backtest prints a group's start line when it starts on a worker).
- `RowCheck` is what a row check must give the scoring pass (a bad-row mask, mergeable statistics, the rows
  to quarantine). The core defines it and knows nothing of contracts; `contracts.enforce.ContractCheck`
  implements it. The validate job's chunk function lives in `contracts.validate`, not here.
"""
from __future__ import annotations

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
    # The evaluate and backtest jobs: the JSON every chunk of the unit reads (their plan, the tables' schemas).
    args: tuple[str, ...] = ()
    # Yield a ChunkStarted when each chunk starts on a worker (the backtest's start lines); Ray runs such a chunk as a
    # streaming task (one more object per chunk), so only units that ask pay for it.
    notify_start: bool = False
    what: str = "chunk(s)"  # what a chunk is, for the time-budget message: "evaluation task(s)", "fold group(s)"


@dataclass(frozen=True)
class ChunkWork:
    """A few input files of one unit; the smallest piece of work shipped to a worker."""

    unit: str
    files: tuple[str, ...]
    index: int = 0  # position in the run's plan: results are merged in this order, whatever order they arrive in
    args: str = ""  # the evaluate and backtest jobs: the JSON of the chunk (a day or key bucket; a refit group)


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
    payload: str = ""  # JSON a job's chunk function returns (evaluate: counts; backtest: the group's fold rows)
    blob: bytes = b""  # bytes beside it (evaluate: the mergeable statistics)


@dataclass
class ChunkFailure:
    unit: str
    error: str  # one line: the error's class and the last line of its message
    contract: bool = False  # the chunk hit a data problem (ContractViolation), not a crash
    chunk: int = 0
    # A worker's LakescoreError: its class names (its own, then its bases) and its message, rebuilt on the driver as
    # the nearest engine.errors class (engine.executor.raised); () for a crash.
    classes: tuple[str, ...] = ()
    message: str = ""


@dataclass
class ChunkStarted:
    """A chunk of a unit that asked (`UnitWork.notify_start`) started on a worker."""

    unit: str
    chunk: int


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
