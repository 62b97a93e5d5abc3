"""The `eval_metrics` Delta table: one row per (model version, slice, metric) of an evaluation, with its interval,
support, window, as-of time, the pinned versions of its inputs, run id and config hash; and, with `kind =
"maturity"`, one row per (model version, k, metric) of the window's label maturity curve: the value as of event + k
days (`maturity_days = k`; metric `labelled_fraction` is the share of the window's rows labelled by then, its
`support` the rows labelled), written by `evaluate` in the same unit as the evaluation's metric rows.

Partitioned by `model_name`, `model_version` and `evaluation` (see `evaluation_key`: the window, the as-of time to
the microsecond and the model set the deltas were computed against, e.g.
`2026-01-04..2026-01-06@2026-01-14T00:00:00.000000Z~vs-lakescore-demo-xgb.1~3f09c2a1b7`): one model's history is one
partition prune, and each evaluation is its own unit of the commit protocol (engine.lake.commit): committed once,
idempotent on a re-run with the same inputs, and a new window, as-of time or model set is a new partition that never
overwrites an earlier one (two evaluations a moment apart, or of one challenger against two champions, are kept
apart: a key that merged them would let the later overwrite the earlier, or report it already done).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re

import pyarrow as pa

from engine.lake import commit as protocol
from engine.lake.snapshot import filesystem
from engine.lake.writer import write_files

PARTITION_COLUMNS = ["model_name", "model_version", "evaluation"]
FILE_FIELDS = [
    pa.field("kind", pa.string()),  # "metric", "delta" (challenger − baseline on the same rows) or "maturity"
    pa.field("baseline", pa.string()),  # the champion "name/version" for deltas, else null
    pa.field("window_start", pa.string()),
    pa.field("window_end", pa.string()),
    pa.field("as_of", pa.timestamp("us", tz="UTC")),
    pa.field("slice", pa.string()),
    pa.field("slice_columns", pa.string()),
    pa.field("slice_values", pa.string()),
    pa.field("metric", pa.string()),
    pa.field("value", pa.float64()),
    pa.field("ci_low", pa.float64()),
    pa.field("ci_high", pa.float64()),
    pa.field("confidence", pa.float64()),
    pa.field("support", pa.int64()),
    pa.field("status", pa.string()),
    pa.field("scores_version", pa.int64()),
    pa.field("labels_version", pa.int64()),
    pa.field("features_version", pa.int64()),
    pa.field("run_id", pa.string()),
    pa.field("config_hash", pa.string()),
    pa.field("evaluated_at", pa.timestamp("us", tz="UTC")),
    # The unit's input fingerprint on every row: what its files' statistics say they hold, checked against the
    # unit's transaction before it counts as done (engine.lake.commit.Evidence: a RESTORE keeps newer transactions).
    pa.field("input_fingerprint", pa.string()),
    # kind "maturity": the label maturity curve's k (the value as of event + k days, engine.evaluation.maturity);
    # null on other rows. Added after the first release: older tables gain it as a nullable column (open_table).
    pa.field("maturity_days", pa.int64()),
]
FILE_SCHEMA = pa.schema(FILE_FIELDS)
TABLE_SCHEMA = pa.schema([*FILE_FIELDS, pa.field("model_name", pa.string()), pa.field("model_version", pa.int64()),
                          pa.field("evaluation", pa.string())])


def evaluation_key(window_start: str, window_end: str, as_of: dt.datetime, models: list[str]) -> str:
    """One evaluation's partition value: `<start>..<end>@<as_of, UTC, microseconds>Z~vs-<champion>~<models hash>`.

    `models` is the model set in report order (champion first, "name/version"): the deltas depend on it, so it is
    part of the key. The champion is spelled out (characters outside `A-Za-z0-9._-` as `_`) so that a reader sees
    what the deltas were taken against; a hash of the full set tells apart evaluations whose champion names only
    differ in such characters, or that add other challengers. The value stays one path segment (no `/`); its `:`
    is escaped in the folder name (`_escape`), while the log keeps the value as it is.
    """
    when = as_of.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    champion = re.sub(r"[^A-Za-z0-9._-]", "_", models[0].replace("/", "."))
    digest = hashlib.sha256("\n".join(models).encode()).hexdigest()[:10]
    return f"{window_start}..{window_end}@{when}~vs-{champion}~{digest}"


def rows_batch(rows: list[dict], common: dict) -> pa.RecordBatch:
    """Metric or delta rows (engine.evaluation.metrics' long form) plus the columns every row shares."""
    cols = {f.name: [] for f in FILE_FIELDS}
    for r in rows:
        full = {**common, **r, "kind": "delta" if "baseline" in r else "maturity" if "maturity_days" in r else "metric"}
        for name in cols:
            cols[name].append(full.get(name))
    return pa.RecordBatch.from_pydict(cols, schema=FILE_SCHEMA)


def write_unit(uri: str, batch: pa.RecordBatch, partition_values: dict, run_id: str,
               storage_options: dict | None) -> list[dict]:
    """The unit's rows as one Parquet file in its partition (not yet visible); returns its add action."""
    fs, base = filesystem(uri, storage_options)
    rel = "/".join(f"{k}={partition_values[k]}" for k in PARTITION_COLUMNS)
    return write_files(fs, base, _escape(rel), FILE_SCHEMA, partition_values, batch, f"part-{run_id[:12]}")


def _escape(rel: str) -> str:
    """Partition folder names: ':' is not allowed in object-store-friendly paths; Delta reads values from the log."""
    return rel.replace(":", "%3A")


def unit(partition_values: dict, fingerprint: str, scores_table: str, scores_version: int) -> protocol.Unit:
    return protocol.Unit(protocol.app_id("evaluate", partition_values, PARTITION_COLUMNS), partition_values,
                         fingerprint, scores_table, scores_version)


BACKING = protocol.Backing("input_fingerprint")


def open_table(uri: str, storage_options: dict | None):
    return protocol.open_or_create(uri, TABLE_SCHEMA, PARTITION_COLUMNS, storage_options,
                                   added=("input_fingerprint", "maturity_days"))
