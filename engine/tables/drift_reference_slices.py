"""The `drift_reference_slices` table: a drift reference's histograms per slice, computed once and reused.

A row is one (column, slice) of one reference: the counts of the column's finite values of the slice's rows in the
bins of the reference's edges (`drift_reference`'s, the global quantile edges of the whole window, not stored again
here: a slice's histogram is compared with its current histogram over the same bins), and the slice's rows (its
support). The
slices are the overall slice and every value of each configured group of slice columns (crosses included),
named as the evaluation names them ("region=east", "segment=smb & channel=app").

The key of a slice reference is its reference's key (`drift_reference.ReferenceKey`: table, window, the days' files,
columns, bins, method: everything the edges and the counts depend on) plus the groups of slice columns and this
table's method; `reference_id` is a hash of it. A rewritten reference day changes the reference's key, hence this
one. Partitioned by (`table`, `reference_id`) like `drift_reference`: each slice reference is its own unit of the
commit protocol (app_id lakescore/drift_reference_slices/<table>/<reference_id>), committed once; a second run that
builds the same one finds it done. Written by `evaluate` (the evaluation's per-slice drift); read by `evaluate`.

Building one never reads the window on the driver: the executor's side tasks read it, one task per file
(`drift_reference.reference_task`, stage "slices"), and the driver adds the files' integer counts (exact in any
order). A stored slice reference whose rows do not match its key is rebuilt and replaced (the data are kept: only
this derived table is rewritten).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from typing import Callable
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from engine.drift import SliceHistograms
from engine.errors import InputUnavailable
from engine.lake import commit as protocol
from engine.lake.snapshot import filesystem
from engine.lake.writer import write_files
from engine.tables import drift_reference
from engine.tables.drift_reference import ReferenceKey

log = logging.getLogger("lakescore")

TABLE = "drift_reference_slices"
JOB = "drift_reference_slices"
METHOD = "slice-hist/1"
PARTITION_COLUMNS = ["table", "reference_id"]
FILE_SCHEMA = pa.schema([
    pa.field("table_uri", pa.string()),
    pa.field("table_version", pa.int64()),  # the input version the slices were read at (first built)
    pa.field("window", pa.string()),
    pa.field("base_reference_id", pa.string()),  # the drift_reference whose edges the counts use
    pa.field("groups", pa.string()),  # the slice column groups, JSON
    pa.field("method", pa.string()),
    pa.field("column", pa.string()),
    pa.field("slice", pa.string()),
    pa.field("slice_columns", pa.string()),  # comma-separated
    pa.field("slice_values", pa.string()),  # comma-separated
    pa.field("counts", pa.list_(pa.int64())),
    pa.field("rows", pa.int64()),  # the slice's rows (support), finite or not
    pa.field("run_id", pa.string()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")),
])
TABLE_SCHEMA = pa.schema([*FILE_SCHEMA, pa.field("table", pa.string()), pa.field("reference_id", pa.string())])


def _groups_json(groups) -> str:
    return json.dumps([list(g) for g in groups], separators=(",", ":"))


def key_digest(base: ReferenceKey, groups) -> str:
    return hashlib.sha256(f"{base.digest}\n{_groups_json(groups)}\n{METHOD}".encode()).hexdigest()


def _unit(base: ReferenceKey, groups, table_version: int) -> protocol.Unit:
    digest = key_digest(base, groups)
    pv = {"table": base.table, "reference_id": digest[:32]}
    return protocol.Unit(protocol.app_id(JOB, pv, PARTITION_COLUMNS), pv, digest, base.table, table_version)


def load_or_build(uri: str, base: ReferenceKey, table_version: int, groups: list[tuple[str, ...]],
                  edges: dict[str, np.ndarray], build: Callable[[], SliceHistograms],
                  storage_options: dict | None = None, run_id: str | None = None) -> tuple[SliceHistograms, bool]:
    """(slice histograms, reused): the stored ones of this key if there are some, else `build()`'s, stored.
    `edges` are the reference's (`drift_reference`'s, of the same key): they are not stored again here."""
    unit = _unit(base, groups, table_version)
    opts = storage_options or None
    table = drift_reference._open(uri, opts)
    recorded = table is not None and protocol.recorded_version(table, unit) == unit.txn_version
    if recorded:
        stored = _read(table, uri, base, groups, unit, edges)
        if stored is not None:
            log.info("drift slice reference reused: %s window %s (reference_id %s)", base.table, base.window,
                     unit.partition_values["reference_id"])
            return stored, True
        log.warning("drift slice reference %s of %s: the stored rows do not match its key; rebuilding them",
                    unit.partition_values["reference_id"], base.table)
    hist = build()
    _store(uri, base, groups, unit, hist, opts, run_id or uuid.uuid4().hex, force=recorded)
    return hist, False


def _store(uri: str, base: ReferenceKey, groups, unit: protocol.Unit, hist: SliceHistograms, opts: dict | None,
           run_id: str, force: bool) -> str:
    from deltalake.exceptions import DeltaError

    try:
        protocol.open_or_create(uri, TABLE_SCHEMA, PARTITION_COLUMNS, opts)
        fs, root = filesystem(uri, opts)
        rel = "/".join(f"{c}={quote(str(unit.partition_values[c]), safe='')}" for c in PARTITION_COLUMNS)
        adds = write_files(fs, root, rel, FILE_SCHEMA, unit.partition_values,
                           _rows(base, groups, unit.input_version, hist, run_id),
                           f"part-{run_id[:12]}-{uuid.uuid4().hex[:12]}", target_rows=1_000_000)
        committer = protocol.Committer(uri, TABLE_SCHEMA, PARTITION_COLUMNS, run_id, storage_options=opts, force=force)
        meta = {"job": JOB, "app_id": unit.app_id, "table": base.table, "window": base.window,
                "reference_id": unit.partition_values["reference_id"], "base_reference_id": base.reference_id}
        outcome = committer.commit(unit, adds, meta)
    except (OSError, DeltaError) as e:
        raise InputUnavailable(f"drift slice reference table {uri}: cannot store the slices of {base.table} window "
                               f"{base.window} ({type(e).__name__}: {' '.join(str(e).split())[:200]}); check the "
                               "lake's storage and permissions") from e
    log.info("drift slice reference %s: %s window %s (%d slice(s))", outcome, base.table, base.window,
             len(hist.slices))
    return outcome


def _rows(base: ReferenceKey, groups, table_version: int, hist: SliceHistograms, run_id: str) -> pa.RecordBatch:
    cols = {f.name: [] for f in FILE_SCHEMA}
    now = dt.datetime.now(dt.timezone.utc)
    for name in sorted(hist.slices):
        s = hist.slices[name]
        for c in sorted(hist.edges):
            row = {"table_uri": base.table_uri, "table_version": table_version, "window": base.window,
                   "base_reference_id": base.reference_id, "groups": _groups_json(groups), "method": METHOD,
                   "column": c, "slice": name, "slice_columns": ",".join(s["columns"]),
                   "slice_values": ",".join(s["values"]),
                   "counts": np.asarray(s["counts"][c], dtype=np.int64).tolist(), "rows": int(s["rows"]),
                   "run_id": run_id, "created_at": now}
            for k, v in row.items():
                cols[k].append(v)
    return pa.RecordBatch.from_pydict(cols, schema=FILE_SCHEMA)


def _read(table, uri: str, base: ReferenceKey, groups, unit: protocol.Unit,
          edges: dict[str, np.ndarray]) -> SliceHistograms | None:
    """The stored slices of the key, or None when its rows do not match it (then they are rebuilt)."""
    from deltalake.exceptions import DeltaError

    try:
        t = table.to_pyarrow_table(filters=[("table", "=", base.table),
                                            ("reference_id", "=", unit.partition_values["reference_id"])])
    except (OSError, DeltaError, pa.ArrowException) as e:
        raise InputUnavailable(f"drift slice reference table {uri}: the slices of {base.table} window {base.window} "
                               f"cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]}); repair the "
                               "table, or delete it (slice references are rebuilt from the input tables)") from e
    rows = t.to_pylist()
    if not rows or any(r["base_reference_id"] != base.reference_id or r["groups"] != _groups_json(groups)
                       or r["method"] != METHOD for r in rows):
        return None
    hist = SliceHistograms(edges, groups)
    for r in rows:
        s = hist.slices.setdefault(r["slice"], {"columns": r["slice_columns"].split(",") if r["slice_columns"] else [],
                                                "values": r["slice_values"].split(",") if r["slice_columns"] else [],
                                                "rows": int(r["rows"]), "counts": {}})
        s["counts"][r["column"]] = np.asarray(r["counts"], dtype=np.int64)
    if any(set(s["counts"]) != set(hist.edges) or any(len(h) != len(hist.edges[c]) + 1 for c, h in s["counts"].items())
           for s in hist.slices.values()):
        return None
    return hist


def build_slices(snap, days: list[str], edges: dict[str, np.ndarray], groups: list[tuple[str, ...]], run: Callable,
                 deadline: float, where: str, storage_options: dict | None = None) -> SliceHistograms:
    """The window's histograms per slice over `edges`, read by the executor's tasks (`run`: its side runner), one
    task per file; the driver adds the files' counts."""
    files = [f.path for d in days for f in snap.files[d]]
    out = SliceHistograms(edges, groups)
    if not edges or not files:
        return out
    spec = {"stage": "slices", "columns": sorted(edges), "edges": {c: np.asarray(e).tolist() for c, e in edges.items()},
            "groups": [list(g) for g in groups]}
    for r in drift_reference._stage(run, snap, files, spec, deadline, where, storage_options):
        out.merge(SliceHistograms.from_json(r.payload))
    return out
