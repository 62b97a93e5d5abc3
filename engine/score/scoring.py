"""The batch scoring function and the per-chunk worker that both engines call.

`score_batch` turns one Arrow batch of input rows into one Arrow batch of stamped scores. `score_chunk`
streams a few input files through it and writes the results as Parquet data files of the output table,
returning their Delta add actions; the driver commits them (engine.lake.commit). No Ray or Spark here, and no
contracts: a unit's row check arrives as an `engine.work.RowCheck`.
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from engine.models.registry import ModelBundle
from engine.models.scorers import Scorer, cached_scorer
from engine.models.preprocess import to_matrix
from engine.lake.snapshot import file_path, filesystem, iter_file_batches
from engine.latency import add as latency_add
from engine.work import ChunkResult, ChunkWork, UnitWork, timed
from engine.lake.writer import RollingParquetWriter

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
# Per unit, not per run: the unit's input fingerprint (engine.lake.commit), so that the log's min/max statistics of the
# partition's files say which input the rows were scored from (what a RESTORE brought back), without reading data.
FINGERPRINT = pa.field("input_fingerprint", pa.string())
PARTITION_FIELDS = [pa.field("ds", pa.string()), pa.field("model_name", pa.string()), pa.field("model_version", pa.int64())]


def file_schema(input_schema: pa.Schema, keys: list[str], passthrough: list[str], score_column: str,
                unit_stamp: bool = True) -> pa.Schema:
    """Schema of the Parquet files written (partition columns live in the Delta log, not in files); `unit_stamp`:
    with the input fingerprint column (the score job's; a DataFrame scored outside it has no unit)."""
    fields = [input_schema.field(c) for c in [*keys, *passthrough]]
    return pa.schema([*fields, pa.field(score_column, pa.float32()), *STAMP_FIELDS, *([FINGERPRINT] if unit_stamp else [])])


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


def predict_batch(batch: pa.RecordBatch | pa.Table, scorer: Scorer) -> np.ndarray:
    """The model's scores for `batch`: its preprocessing spec, then predict. Every job scores through this
    (score, evaluate's baselines, backtest folds), so training, backtests and serving cannot drift apart."""
    return scorer.predict(to_matrix(batch, scorer.spec))


def score_batch(
    batch: pa.RecordBatch, scorer: Scorer, schema: pa.Schema, keys: list[str], passthrough: list[str], stamps: Stamps,
    fingerprint: str | None = None,
) -> pa.RecordBatch:
    """Input rows → stamped scores, same row order, one output row per input row (with the unit's `fingerprint`
    where `schema` has its column)."""
    scores = predict_batch(batch, scorer)
    n = batch.num_rows
    cols = [batch.column(c) for c in [*keys, *passthrough]]
    cols.append(pa.array(scores, pa.float32()))
    for f in STAMP_FIELDS:
        cols.append(_constant(getattr(stamps, f.name), f.type, n))
    if FINGERPRINT.name in schema.names:
        cols.append(_constant(fingerprint, FINGERPRINT.type, n) if fingerprint else pa.nulls(n, FINGERPRINT.type))
    return pa.RecordBatch.from_arrays(cols, names=schema.names)



def partition_dir(values: dict, columns: list[str] = PARTITION_COLUMNS) -> str:
    return "/".join(f"{k}={quote(str(values[k]), safe='')}" for k in columns)


def score_chunk(unit: UnitWork, chunk: ChunkWork, bundle: ModelBundle) -> ChunkResult:
    """Stream the chunk's input files through the model (and the unit's row check) into output data files."""
    out = unit.output
    t = time.perf_counter()
    scorer = cached_scorer(bundle, out.device, out.micro_batch_rows, out.nthread)
    load = time.perf_counter() - t  # the model's load: this worker's first chunk of it only
    in_fs, in_base = filesystem(unit.input_uri, unit.storage_options)
    rc = unit.row_check
    checked = [] if rc is None else rc.columns()
    columns = list(dict.fromkeys([*out.keys, *out.passthrough, *scorer.spec.feature_names, *checked]))
    stats = None if rc is None else rc.new_stats()
    writer, qwriter = _writers(unit)
    rows_in = bad_scores = 0
    timings: dict[str, float] = {"load": load}
    latency: dict[str, int] = {}
    clock = time.perf_counter
    score_idx = out.schema.get_field_index(out.score_column)
    keys, passthrough = list(out.keys), list(out.passthrough)
    try:
        for path in chunk.files:
            for batch in timed(iter_file_batches(in_fs, file_path(in_base, path), columns, unit.batch_rows,
                                                 unit.input_schema), timings):
                rows_in += batch.num_rows
                t0 = clock()
                if stats is not None:
                    bad, detail = rc.check(batch, unit.ds, stats)
                    if qwriter is not None and bad.any():
                        qwriter.write(rc.quarantine(batch, bad, detail, out.stamps.input_version, out.stamps.run_id,
                                                    out.stamps.scored_at))
                        batch = batch.filter(pa.array(~bad))
                t1 = clock()
                if batch.num_rows == 0:
                    timings["contract"] = timings.get("contract", 0.0) + t1 - t0
                    continue
                scored = score_batch(batch, scorer, out.schema, keys, passthrough, out.stamps, out.fingerprint)
                s = scored.column(score_idx).to_numpy(zero_copy_only=False)
                bad_scores += int((~np.isfinite(s) | (s < 0) | (s > 1)).sum())
                t2 = clock()
                writer.write(scored)
                t3 = clock()
                latency_add(latency, t2 - t1)
                for phase, secs in (("contract", t1 - t0), ("score", t2 - t1), ("write", t3 - t2)):
                    timings[phase] = timings.get(phase, 0.0) + secs
        adds, qadds, stats = _close(writer, qwriter, stats, unit, chunk, timings)
    except BaseException:
        writer.abort()
        if qwriter is not None:
            qwriter.abort()
        raise
    return ChunkResult(unit=unit.unit, rows_in=rows_in, rows_out=writer.rows, adds=adds, checks=stats,
                       bad_scores=bad_scores, quarantine_adds=qadds,
                       rows_quarantined=qwriter.rows if qwriter is not None else 0, timings=timings, latency=latency)


def _writers(unit: UnitWork) -> tuple[RollingParquetWriter, RollingParquetWriter | None]:
    """The chunk's writer of scores, and of quarantined rows where the unit quarantines (else None)."""
    out, rc = unit.output, unit.row_check
    prefix = f"part-{out.stamps.run_id[:12]}"
    out_fs, out_base = filesystem(out.uri, unit.storage_options)
    writer = RollingParquetWriter(out_fs, out_base, partition_dir(out.partition_values), out.schema,
                                  out.partition_values, target_rows=out.target_file_rows,
                                  compression=out.compression, prefix=f"{prefix}-{uuid.uuid4().hex[:12]}")
    qwriter = None
    if rc is not None and out.quarantine_uri:
        qfs, qbase = filesystem(out.quarantine_uri, unit.storage_options)
        qwriter = RollingParquetWriter(qfs, qbase, partition_dir(out.quarantine_values, rc.quarantine_partition_columns),
                                       rc.quarantine_schema, out.quarantine_values, target_rows=out.target_file_rows,
                                       compression=out.compression, prefix=f"{prefix}-{uuid.uuid4().hex[:12]}")
    return writer, qwriter


def _close(writer: RollingParquetWriter, qwriter: RollingParquetWriter | None, stats, unit: UnitWork,
           chunk: ChunkWork, timings: dict[str, float]) -> tuple[list[dict], list[dict], object]:
    """Close the chunk's files (their add actions) and seal its row-check statistics (key hashes: counted here, or
    spilled for the unit's per-bucket count)."""
    clock = time.perf_counter
    t = clock()
    adds = writer.close()
    qadds = qwriter.close() if qwriter is not None else []
    timings["write"] = timings.get("write", 0.0) + clock() - t
    if stats is not None:
        t = clock()
        stats = unit.row_check.seal(stats, unit, chunk)
        timings["contract"] = timings.get("contract", 0.0) + clock() - t
    return adds, qadds, stats


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
