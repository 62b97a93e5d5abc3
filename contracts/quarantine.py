"""The `quarantine` table: one row per rejected input row, PII removed, with every check it failed.

Partitioned by `ds` and `source_table`, committed with the same protocol as `scores` (one predicate overwrite per
partition with its application transaction), so a re-run never quarantines a row twice.
"""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa

from contracts.spec import ResolvedContract

PARTITION_COLUMNS = ["ds", "source_table"]
FILE_SCHEMA = pa.schema([
    pa.field("key", pa.string()),  # JSON of the key values
    pa.field("failed_checks", pa.list_(pa.string())),
    pa.field("values", pa.string()),  # JSON of the row's non-PII values
    pa.field("source_version", pa.int64()),
    pa.field("contract_hash", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("quarantined_at", pa.timestamp("us", tz="UTC")),
])
TABLE_SCHEMA = pa.schema([*FILE_SCHEMA, pa.field("ds", pa.string()), pa.field("source_table", pa.string())])


def _json_value(v):
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v.isoformat() if hasattr(v, "isoformat") else v


def key_json(rows: list[dict], key: list[str]) -> list[str]:
    """The `key` column's values: each row's key columns as sorted JSON (what `lakescore forget` matches on)."""
    return [json.dumps({k: _json_value(r[k]) for k in key}, sort_keys=True) for r in rows]


def encode_keys(keys: pa.Table) -> pa.Array:
    """An input day's key columns as the quarantine table's JSON keys (engine.ops.forget.KeyEncoder)."""
    return pa.array(key_json(keys.to_pylist(), keys.column_names), pa.string())


def quarantine_batch(batch: pa.RecordBatch, bad: np.ndarray, masks: dict[str, np.ndarray], rc: ResolvedContract,
                     source_version: int, run_id: str, at: dt.datetime) -> pa.RecordBatch:
    """The rows of `batch` flagged in `bad`, as quarantine rows (no PII column ever copied)."""
    idx = np.flatnonzero(bad)
    rows = batch.take(pa.array(idx))
    keep = [n for n in rows.schema.names if n not in rc.pii and n != "ds"]
    key = [k for k in rc.contract.key if k not in rc.pii]
    data = rows.select(keep).to_pylist()
    failed = [[c for c, m in masks.items() if m[i]] for i in idx]
    n = len(idx)
    return pa.RecordBatch.from_arrays([
        pa.array(key_json(data, key), pa.string()),
        pa.array(failed, pa.list_(pa.string())),
        pa.array([json.dumps({k: _json_value(v) for k, v in r.items()}, sort_keys=True) for r in data], pa.string()),
        pa.array([source_version] * n, pa.int64()),
        pa.array([rc.contract.digest] * n, pa.string()),
        pa.array([run_id] * n, pa.string()),
        pa.array([at] * n, pa.timestamp("us", tz="UTC")),
    ], schema=FILE_SCHEMA)
