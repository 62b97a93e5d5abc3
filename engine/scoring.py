"""The batch scoring function and the per-chunk worker that both engines call.

`score_batch` turns one Arrow batch of input rows into one Arrow batch of stamped scores. `score_chunk`
streams a few input files through it and writes the results as Parquet data files of the output table,
returning their Delta add actions; the driver commits them (engine.commit). No Ray or Spark here.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from engine.models import ModelBundle, Scorer, cached_scorer
from engine.preprocess import to_matrix
from engine.snapshot import file_path, filesystem, iter_file_batches
from engine.writer import RollingParquetWriter

PARTITION_COLUMNS = ["ds", "model_name", "model_version"]


@dataclass(frozen=True)
class Stamps:
    """Constant per run and unit; every scored row carries them."""

    model_name: str
    model_version: int
    model_run_id: str
    input_table: str
    input_version: int
    run_id: str
    config_hash: str
    scored_at: dt.datetime

    def as_json(self) -> dict:
        d = dict(self.__dict__)
        d["scored_at"] = self.scored_at.isoformat().replace("+00:00", "Z")
        return d


STAMP_FIELDS = [
    pa.field("model_run_id", pa.string()),
    pa.field("input_table", pa.string()),
    pa.field("input_version", pa.int64()),
    pa.field("run_id", pa.string()),
    pa.field("config_hash", pa.string()),
    pa.field("scored_at", pa.timestamp("us", tz="UTC")),
]
PARTITION_FIELDS = [pa.field("ds", pa.string()), pa.field("model_name", pa.string()), pa.field("model_version", pa.int64())]


def file_schema(input_schema: pa.Schema, keys: list[str], passthrough: list[str], score_column: str) -> pa.Schema:
    """Schema of the Parquet files written (partition columns live in the Delta log, not in files)."""
    fields = [input_schema.field(c) for c in [*keys, *passthrough]]
    return pa.schema([*fields, pa.field(score_column, pa.float32()), *STAMP_FIELDS])


def table_schema(file_schema_: pa.Schema) -> pa.Schema:
    return pa.schema([*file_schema_, *PARTITION_FIELDS])


def _constant(value, typ: pa.DataType, n: int) -> pa.Array:
    if pa.types.is_string(typ):
        # Dictionary-encoded constant: O(1) to build, written as a dictionary page by Parquet.
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], typ))
    if pa.types.is_timestamp(typ):
        us = int(value.timestamp() * 1_000_000)
        return pa.array(np.full(n, us, dtype="datetime64[us]")).cast(typ)
    return pa.array(np.full(n, value), typ)


def score_batch(
    batch: pa.RecordBatch, scorer: Scorer, schema: pa.Schema, keys: list[str], passthrough: list[str], stamps: Stamps
) -> pa.RecordBatch:
    """Input rows → stamped scores, same row order, one output row per input row."""
    x = to_matrix(batch, scorer.spec)
    scores = scorer.predict(x)
    n = batch.num_rows
    cols = [batch.column(c) for c in [*keys, *passthrough]]
    cols.append(pa.array(scores, pa.float32()))
    for f in STAMP_FIELDS:
        cols.append(_constant(getattr(stamps, f.name), f.type, n))
    return pa.RecordBatch.from_arrays(cols, names=schema.names)



@dataclass(frozen=True)
class ChunkWork:
    """A few input files of one unit; the smallest piece of work shipped to a worker."""

    unit: str  # the unit's app_id
    ds: str
    input_uri: str
    input_files: tuple[str, ...]
    output_uri: str
    partition_values: dict
    keys: tuple[str, ...]
    passthrough: tuple[str, ...]
    score_column: str
    stamps: Stamps
    schema: pa.Schema
    batch_rows: int = 131_072
    target_file_rows: int = 1_000_000
    compression: str = "zstd"
    device: str = "cpu"
    micro_batch_rows: int = 4096
    nthread: int | None = None
    storage_options: dict = field(default_factory=dict)
    contract: object | None = None  # contracts.spec.ResolvedContract: row checks run in the scoring pass
    drift_edges: dict = field(default_factory=dict)
    quarantine_uri: str = ""  # set in quarantine mode: bad rows go there instead of being scored
    quarantine_values: dict = field(default_factory=dict)  # its partition: ds, source_table
    input_schema: pa.Schema | None = None  # the snapshot's schema: files are read as it says (added columns → nulls)


@dataclass
class ChunkResult:
    unit: str
    rows_in: int
    rows_out: int
    adds: list[dict]
    checks: object | None = None  # contracts.checks.CheckStats
    bad_scores: int = 0  # output contract: scores that are not finite or outside [0, 1]
    quarantine_adds: list[dict] = field(default_factory=list)
    rows_quarantined: int = 0


def partition_dir(values: dict, columns: list[str] = PARTITION_COLUMNS) -> str:
    return "/".join(f"{k}={quote(str(values[k]), safe='')}" for k in columns)


def run_chunk(work: ChunkWork, bundle: ModelBundle | None) -> ChunkResult:
    """What an executor runs per chunk: score it, or (no model: the validate job) only check it."""
    if bundle is None:
        from contracts.validate import check_chunk

        return check_chunk(work)
    return score_chunk(work, bundle)


def score_chunk(work: ChunkWork, bundle: ModelBundle) -> ChunkResult:
    """Stream the chunk's input files through the model into the output table's data files."""
    scorer = cached_scorer(bundle, work.device, work.micro_batch_rows, work.nthread)
    in_fs, in_base = filesystem(work.input_uri, work.storage_options)
    out_fs, out_base = filesystem(work.output_uri, work.storage_options)
    rc = work.contract
    checked = [] if rc is None else [*rc.check_columns(), *rc.contract.key, *filter(None, [rc.contract.event_time])]
    columns = list(dict.fromkeys([*work.keys, *work.passthrough, *scorer.spec.feature_names, *checked]))
    stats = None
    if rc is not None:
        from contracts.checks import CheckStats, row_masks

        stats = CheckStats()
    rel_dir = partition_dir(work.partition_values)
    writer = RollingParquetWriter(
        out_fs,
        out_base,
        rel_dir,
        work.schema,
        work.partition_values,
        work.target_file_rows,
        work.compression,
        prefix=f"part-{work.stamps.run_id[:12]}-{uuid.uuid4().hex[:12]}",
    )
    qwriter = _quarantine_writer(work) if rc is not None and work.quarantine_uri else None
    if qwriter is not None:
        from contracts.quarantine import quarantine_batch
    rows_in = bad_scores = 0
    score_idx = work.schema.get_field_index(work.score_column)
    try:
        for path in work.input_files:
            for batch in iter_file_batches(in_fs, file_path(in_base, path), columns, work.batch_rows,
                                           work.input_schema):
                rows_in += batch.num_rows
                if stats is not None:
                    masks = row_masks(batch, rc, work.ds)
                    bad = stats.update(batch, masks, rc, work.drift_edges)
                    if qwriter is not None and bad.any():
                        qwriter.write(quarantine_batch(batch, bad, masks, rc, work.stamps.input_version,
                                                       work.stamps.run_id, work.stamps.scored_at))
                        batch = batch.filter(pa.array(~bad))
                if batch.num_rows == 0:
                    continue
                out = score_batch(batch, scorer, work.schema, list(work.keys), list(work.passthrough), work.stamps)
                s = out.column(score_idx).to_numpy(zero_copy_only=False)
                bad_scores += int((~np.isfinite(s) | (s < 0) | (s > 1)).sum())
                writer.write(out)
        adds = writer.close()
        qadds = qwriter.close() if qwriter is not None else []
    except BaseException:
        writer.abort()
        if qwriter is not None:
            qwriter.abort()
        raise
    return ChunkResult(work.unit, rows_in, writer.rows, adds, stats, bad_scores, qadds,
                       qwriter.rows if qwriter is not None else 0)


def _quarantine_writer(work: ChunkWork) -> RollingParquetWriter:
    from contracts.quarantine import FILE_SCHEMA
    from contracts.quarantine import PARTITION_COLUMNS as QCOLS

    fs, base = filesystem(work.quarantine_uri, work.storage_options)
    return RollingParquetWriter(fs, base, partition_dir(work.quarantine_values, QCOLS), FILE_SCHEMA,
                                work.quarantine_values, work.target_file_rows, work.compression,
                                prefix=f"part-{work.stamps.run_id[:12]}-{uuid.uuid4().hex[:12]}")


def plan_chunks(files: list[tuple[str, int | None]], target_rows: int) -> list[list[str]]:
    """Pack a unit's files (in path order) into chunks of about `target_rows` rows; one output file each."""
    chunks: list[list[str]] = []
    current: list[str] = []
    acc = 0
    for path, n in files:
        n = n if n is not None else target_rows
        if current and acc + n > target_rows:
            chunks.append(current)
            current, acc = [], 0
        current.append(path)
        acc += n
    if current:
        chunks.append(current)
    return chunks
