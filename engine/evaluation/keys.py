"""Deterministic, engine-independent 64-bit hashes of row keys (they pick a row's bootstrap bucket).

The hash depends only on the key's logical values, never on how an engine typed or chunked them: integers of any
width hash as int64, timestamps as int64 microseconds since the epoch (UTC), dates as int32 days, strings (and
dictionary-encoded strings) as their UTF-8 bytes, floats as their float64 bit pattern, nulls as one fixed value.
Ray (deltalake reads) and Spark (Arrow batches from `mapInArrow`) therefore give every row the same hash.
Mixing is splitmix64's finalizer, vectorized with wrapping uint64 arithmetic.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x6A09E667F3BCC908)
# Strings are gathered into an (rows, width) byte matrix; rows are processed in chunks so it stays under this size.
_MAX_MATRIX_BYTES = 1 << 26


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (in place on a uint64 array)."""
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _string_words(arr: pa.Array) -> np.ndarray:
    """Hash each UTF-8 string of `arr` (no nulls) to uint64: its length, then its 8-byte little-endian words."""
    n = len(arr)
    bufs = arr.buffers()
    off_type = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_type)[arr.offset:arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    out = np.empty(n, dtype=np.uint64)
    width = int(-(-max(int(lengths.max(initial=0)), 1) // 8) * 8)
    step = max(1, _MAX_MATRIX_BYTES // width)
    cols = np.arange(width, dtype=np.int64)
    padded = np.concatenate([data, np.zeros(width, np.uint8)])
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        starts, lens = offsets[lo:hi], lengths[lo:hi]
        mat = padded[starts[:, None] + cols[None, :]]
        mat[cols[None, :] >= lens[:, None]] = 0
        words = mat.view("<u8")
        h = lens.astype(np.uint64) * _GOLDEN
        for j in range(words.shape[1]):
            h ^= words[:, j]
            _mix(h)
        out[lo:hi] = h
    return out


def _column_hash(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 per row of one key column, from its logical value (see the module docstring)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    valid = None if col.null_count == 0 else np.asarray(col.is_valid().to_numpy(zero_copy_only=False))
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        filled = col.fill_null("") if valid is not None else col
        h = _string_words(filled)
    else:
        if pa.types.is_timestamp(t):
            col = pc.cast(col, pa.timestamp("us", tz=t.tz), safe=False).cast(pa.int64())
        elif pa.types.is_date(t):
            col = col.cast(pa.date32()).cast(pa.int32()).cast(pa.int64())
        elif pa.types.is_boolean(t) or pa.types.is_integer(t):
            col = col.cast(pa.int64())
        elif pa.types.is_floating(t):
            col = col.cast(pa.float64())
        else:
            raise TypeError(f"row_key_hash: key column type {t} is not supported; use integer, string, "
                            "timestamp, date, boolean or float key columns")
        vals = col.fill_null(0).to_numpy(zero_copy_only=False)
        h = np.ascontiguousarray(vals).view(np.uint64).copy()
        _mix(h)
    if valid is not None:
        h[~valid] = _NULL
    return h


def row_key_hash(table_or_batch: pa.Table | pa.RecordBatch, key_columns: list[str], seed: int) -> np.ndarray:
    """uint64 hash per row of the key columns and the seed: deterministic across runs, engines and batchings."""
    if not key_columns:
        raise ValueError("row_key_hash: key_columns is empty; name the columns that identify a row")
    n = table_or_batch.num_rows
    with np.errstate(over="ignore"):
        start = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) ^ _GOLDEN)  # the seed's part, mixed once
        h = np.full(n, start[0], dtype=np.uint64)
        for name in key_columns:
            h *= _GOLDEN
            h ^= _column_hash(table_or_batch.column(name))
            _mix(h)
    return h
