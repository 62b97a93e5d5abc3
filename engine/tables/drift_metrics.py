"""The `drift_metrics` Delta table: drift per (feature, slice) of every evaluation, kept as history.

A row is one feature column in one slice of one evaluation: its PSI and its Wasserstein-1 distance (in standard
deviations of the reference, engine.drift.binned_wasserstein) between the reference window's histogram of the slice
and the evaluated window's, over the reference's global quantile edges; the slice's rows on each side (support);
whether it is flagged and its status ("drift": both effect sizes above their limits with enough support on both
sides; "ok"; "under_support": fewer than `min_support` rows on a side, never flagged; "missing": no finite value on
a side); the limits it was judged by; the evaluated window, the as-of time, the reference window and its ids in
`drift_reference` / `drift_reference_slices`; the features table and pinned version; run id and config hash.
The overall slice is a row too ("overall"), so a slice's figure sits beside the whole window's.

Partitioned by `evaluation`, the same key as `eval_metrics`' (engine.tables.eval_metrics.evaluation_key: window,
as-of time, model set), so an evaluation's drift joins its metrics on one column. Each evaluation is one unit of the
commit protocol (app_id lakescore/evaluate_drift/<evaluation>; its fingerprint covers the window's feature files,
the reference ids, the limits and the config hash, stamped on every row as `input_fingerprint`): committed once,
idempotent on a re-run, and a new window or as-of time is a new partition that never overwrites an earlier one.
Written by `evaluate` after its metrics, only when the drift section is on (`drift.reference`).
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

from engine.lake import commit as protocol
from engine.lake.snapshot import filesystem
from engine.lake.writer import write_files

TABLE = "drift_metrics"
JOB = "evaluate_drift"
PARTITION_COLUMNS = ["evaluation"]
FILE_FIELDS = [
    pa.field("feature", pa.string()),
    pa.field("slice", pa.string()),  # "overall", "region=east", "segment=smb & channel=app"
    pa.field("slice_columns", pa.string()),
    pa.field("slice_values", pa.string()),
    pa.field("psi", pa.float64()),
    pa.field("wasserstein", pa.float64()),  # in standard deviations of the reference's binned distribution
    pa.field("support_reference", pa.int64()),
    pa.field("support_current", pa.int64()),
    pa.field("flagged", pa.bool_()),
    pa.field("status", pa.string()),
    pa.field("rank", pa.int32()),  # 1 = the most drifted pair of the evaluation (flagged first, then PSI)
    pa.field("psi_max", pa.float64()),
    pa.field("wasserstein_max", pa.float64()),
    pa.field("min_support", pa.int64()),
    pa.field("window_start", pa.string()),
    pa.field("window_end", pa.string()),
    pa.field("as_of", pa.timestamp("us", tz="UTC")),
    pa.field("reference_window", pa.string()),
    pa.field("reference_id", pa.string()),
    pa.field("features_table", pa.string()),
    pa.field("features_version", pa.int64()),
    pa.field("run_id", pa.string()),
    pa.field("config_hash", pa.string()),
    pa.field("evaluated_at", pa.timestamp("us", tz="UTC")),
    pa.field("input_fingerprint", pa.string()),
]
FILE_SCHEMA = pa.schema(FILE_FIELDS)
TABLE_SCHEMA = pa.schema([*FILE_FIELDS, pa.field("evaluation", pa.string())])
BACKING = protocol.Backing("input_fingerprint")


def fingerprint(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def unit(evaluation: str, fp: str, features_table: str, features_version: int) -> protocol.Unit:
    pv = {"evaluation": evaluation}
    return protocol.Unit(protocol.app_id(JOB, pv, PARTITION_COLUMNS), pv, fp, features_table, features_version)


def rows_batch(rows: list[dict], common: dict) -> pa.RecordBatch:
    cols = {f.name: [] for f in FILE_FIELDS}
    for r in rows:
        full = {**common, **r}
        for name in cols:
            cols[name].append(full.get(name))
    return pa.RecordBatch.from_pydict(cols, schema=FILE_SCHEMA)


def commit(uri: str, u: protocol.Unit, batch: pa.RecordBatch, run_id: str, storage_options: dict | None,
           retries: int = 5) -> str:
    """Commit one evaluation's rows as its unit: "committed", or "already-done" when the same unit with the same
    fingerprint is recorded and its files are there (nothing written)."""
    protocol.open_or_create(uri, TABLE_SCHEMA, PARTITION_COLUMNS, storage_options)
    committer = protocol.Committer(uri, TABLE_SCHEMA, PARTITION_COLUMNS, run_id, retries=retries,
                                   storage_options=storage_options, backing=BACKING)
    table = committer.latest()
    if protocol.recorded_version(table, u) == u.txn_version and committer.backed(table, u):
        return "already-done"
    fs, base = filesystem(uri, storage_options)
    rel = f"evaluation={u.partition_values['evaluation']}".replace(":", "%3A")
    adds = write_files(fs, base, rel, FILE_SCHEMA, u.partition_values, batch, f"part-{run_id[:12]}")
    return committer.commit(u, adds, {"app_id": u.app_id, "job": "evaluate", "rows": batch.num_rows})
