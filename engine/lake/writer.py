"""Parquet data files for Delta tables: a rolling writer that returns add actions with statistics."""
from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_STAT_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_timestamp)


class _Stats:
    """Delta file statistics (numRecords, minValues, maxValues, nullCount) accumulated per batch."""

    def __init__(self, schema: pa.Schema):
        self.cols = [f.name for f in schema if any(t(f.type) for t in _STAT_TYPES)]
        self.min: dict = {}
        self.max: dict = {}
        self.nulls = {c: 0 for c in self.cols}
        self.rows = 0

    def update(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for c in self.cols:
            col = batch.column(c)
            if isinstance(col, pa.DictionaryArray):
                col = col.dictionary.take(pc.unique(col.indices))
            self.nulls[c] += batch.column(c).null_count
            mm = pc.min_max(col)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            if lo is None or (isinstance(lo, float) and (lo != lo or hi != hi)):
                continue
            self.min[c] = lo if c not in self.min else min(self.min[c], lo)
            self.max[c] = hi if c not in self.max else max(self.max[c], hi)

    def to_json(self) -> str:
        def enc(v):
            if hasattr(v, "isoformat"):
                return v.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if isinstance(v, float) and v in (float("inf"), float("-inf")):
                return None
            return v

        mins = {k: enc(v) for k, v in self.min.items() if enc(v) is not None}
        maxs = {k: enc(v) for k, v in self.max.items() if enc(v) is not None}
        return json.dumps({"numRecords": self.rows, "minValues": mins, "maxValues": maxs, "nullCount": self.nulls})


class RollingParquetWriter:
    """Writes batches to `<base>/<rel_dir>/<prefix>-NNNNN.parquet`, a new file every `target_rows` rows."""

    def __init__(self, fs: pafs.FileSystem, base: str, rel_dir: str, schema: pa.Schema, partition_values: dict,
                 target_rows: int, compression: str, prefix: str):
        self.fs, self.base, self.rel_dir, self.schema = fs, base, rel_dir, schema
        self.partition_values = {k: str(v) for k, v in partition_values.items()}
        self.target_rows, self.compression, self.prefix = target_rows, compression, prefix
        self.adds: list[dict] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._stream = None
        self._stats: _Stats | None = None
        self._rel: str | None = None
        self._created: list[str] = []

    def _full(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def _open(self, physical: pa.Schema) -> None:
        self._rel = f"{self.rel_dir}/{self.prefix}-{len(self.adds):05d}.parquet"
        if self.base:
            self.fs.create_dir(self._full(self.rel_dir), recursive=True)
        self._stream = self.fs.open_output_stream(self._full(self._rel))
        self._created.append(self._rel)
        # store_schema=False: dictionary-encoded stamp columns read back as plain strings.
        # `physical` may hold dictionary-encoded constants; store_schema=False makes them read back as the
        # logical types of `self.schema` (plain strings).
        self._writer = pq.ParquetWriter(self._stream, physical, compression=self.compression, store_schema=False)
        self._stats = _Stats(self.schema)

    def write(self, batch: pa.RecordBatch) -> None:
        start = 0
        while start < batch.num_rows:
            if self._writer is None:
                self._open(batch.schema)
            room = self.target_rows - self._stats.rows
            part = batch.slice(start, room)
            self._writer.write_batch(part)
            self._stats.update(part)
            self.rows += part.num_rows
            start += part.num_rows
            if self._stats.rows >= self.target_rows:
                self._finish()

    def _finish(self) -> None:
        self._writer.close()
        self._stream.close()
        size = self.fs.get_file_info(self._full(self._rel)).size
        self.adds.append({
            "path": self._rel,
            "size": size,
            "partition_values": self.partition_values,
            "modification_time": int(time.time() * 1000),
            "data_change": True,
            "stats": self._stats.to_json(),
        })
        self._writer = None

    def close(self) -> list[dict]:
        if self._writer is not None:
            self._finish()
        return self.adds

    def abort(self) -> None:
        """Remove what this writer created: files that no commit will ever reference."""
        if self._writer is not None:
            try:
                self._writer.close()
                self._stream.close()
            finally:
                self._writer = None
        for rel in self._created:
            delete_quietly(self.fs, self._full(rel))


def write_files(fs: pafs.FileSystem, base: str, rel_dir: str, schema: pa.Schema, partition_values: dict,
                batch: pa.RecordBatch, prefix: str, target_rows: int | None = None) -> list[dict]:
    """`batch` as the zstd Parquet file(s) of one partition of a table we own (one file unless `target_rows` says
    otherwise), not yet visible; returns their add actions. On any failure the files written so far are removed and
    the error raised: nothing half-written is left for a commit to pick up."""
    w = RollingParquetWriter(fs, base, rel_dir, schema, partition_values, target_rows or max(1, batch.num_rows),
                             "zstd", prefix)
    try:
        w.write(batch)
        return w.close()
    except BaseException:
        w.abort()
        raise


def delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    """Best-effort removal of an uncommitted file: a leftover is invisible to readers, never wrong."""
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
