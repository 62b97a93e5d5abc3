"""The `drift_reference` table: reference histograms computed once per (table, window, its files) and reused.

A job that checks drift needs quantile edges and histograms of a reference window (a range of days of its input
table). Reading that window on every run costs a pass (two, for a large window) over days that rarely change, so
each reference is stored once, as one row per column (edges as list<double>, counts as list<int64>), and reused
while the window's files are the same. The key of a reference is everything its numbers depend on: the input
table (name and location), the window, the days it holds and each day's input fingerprint (`Snapshot.fingerprint`:
the data files with size and modification time), the columns, the bins and the method. The table version is not
part of it: a daily append moves the version but leaves the window's files as they are, so the next day's run
reuses the reference (the version it was first read at is recorded, `table_version`). A rewritten reference day
changes its fingerprint, hence the key: the next run builds and stores a new reference.

Commit protocol (engine.lake.commit, unchanged): one unit = one output partition. DESIGN says the table is
partitioned by `table`; a unit that were a whole `table` partition would overwrite the other references of the
same table (other windows, other bins) on every commit. So the table is partitioned by (`table`, `reference_id`),
`reference_id` being a hash of the key: `table` stays the first partition column (a table's references are one
prune), and each reference is its own unit, with `app_id` lakescore/drift_reference/<table>/<reference_id> whose
transaction version encodes the same key. Deciding "stored or not" is then an O(1) read of the snapshot's
application transactions; two runs that build the same reference at once conflict at commit and the second finds
it done (its files dropped); a reference is never appended twice nor overwritten by another one. A reference is
fully determined by its key (the window's rows in file order), so any run that rebuilds it writes the same numbers.

Building one (`build_reference`) never reads the window on the driver: the executor's side tasks read it, one task
per file, in two stages (the files' rows of the stride sample for the edges, then histograms over those edges), and
the driver receives the bounded sample and integer counts, which it adds (exact). Its work is O(files + days).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from engine.lake import commit as protocol
from engine.drift import (REFERENCE_METHOD, REFERENCE_SAMPLE_ROWS, SliceHistograms, bin_counts, column_floats,
                          quantile_edges)
from engine.errors import InputUnavailable, LakescoreError
from engine.executor import raised
from engine.lake.snapshot import file_path, filesystem, iter_file_batches
from engine.lake.writer import write_files
from engine.work import ChunkFailure, ChunkResult, ChunkWork, UnitWork

log = logging.getLogger("lakescore")

TABLE = "drift_reference"
JOB = "drift_reference"
PARTITION_COLUMNS = ["table", "reference_id"]
FILE_SCHEMA = pa.schema([
    pa.field("table_uri", pa.string()),
    pa.field("table_version", pa.int64()),  # the input version the reference was read at (first built)
    pa.field("window", pa.string()),  # "a..b" as configured
    pa.field("days", pa.list_(pa.string())),  # the window's days present in that version
    pa.field("fingerprint", pa.string()),  # hash of the days' input fingerprints
    pa.field("bins", pa.int32()),
    pa.field("method", pa.string()),
    pa.field("column", pa.string()),
    pa.field("edges", pa.list_(pa.float64())),  # inner bin edges; null when the column had no finite value
    pa.field("counts", pa.list_(pa.int64())),  # len(edges) + 1 counts of finite values
    pa.field("rows", pa.int64()),  # finite values counted (the sum of counts)
    pa.field("run_id", pa.string()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")),
])
TABLE_SCHEMA = pa.schema([*FILE_SCHEMA, pa.field("table", pa.string()), pa.field("reference_id", pa.string())])

Edges = dict[str, np.ndarray]
Hist = dict[str, np.ndarray]
REFERENCE_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class ReferenceKey:
    """Everything a reference's numbers depend on; `reference_id` and `digest` are hashes of it."""

    table: str
    table_uri: str
    window: str
    days: tuple[str, ...]
    fingerprint: str  # of the window's files, from the snapshot's log
    columns: tuple[str, ...]  # sorted: a column's edges do not depend on the other columns
    bins: int
    method: str = REFERENCE_METHOD

    @property
    def digest(self) -> str:
        canon = json.dumps({"table": self.table, "table_uri": self.table_uri, "window": self.window,
                            "days": list(self.days), "fingerprint": self.fingerprint, "columns": list(self.columns),
                            "bins": self.bins, "method": self.method}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    @property
    def reference_id(self) -> str:
        return self.digest[:32]

    def unit(self, table_version: int) -> protocol.Unit:
        pv = {"table": self.table, "reference_id": self.reference_id}
        return protocol.Unit(protocol.app_id(JOB, pv, PARTITION_COLUMNS), pv, self.digest, self.table, table_version)


def reference_key(snap, window: str, days: list[str], columns: list[str], bins: int) -> ReferenceKey:
    """The key of the reference of `columns` over `days` (the window `window`) of a snapshot."""
    h = hashlib.sha256()
    for d in sorted(days):
        h.update(f"{d}\t{snap.fingerprint(d)}\n".encode())
    return ReferenceKey(snap.name, snap.uri, window, tuple(sorted(days)), h.hexdigest(), tuple(sorted(set(columns))),
                        int(bins))


def load_or_build(uri: str, snap, window: str, days: list[str], columns: list[str], bins: int,
                  build: Callable[[], tuple[Edges, Hist]], storage_options: dict | None = None,
                  run_id: str | None = None) -> tuple[Edges, Hist, bool]:
    """(edges, histograms, reused): the stored reference of this key if there is one, else `build()`'s, stored.

    `build()` reads the window and returns (edges, histograms) of the columns (a column without a finite value
    has neither). A stored reference is found through the unit's application transaction, without reading data,
    then its one small file is read. Errors of the drift_reference table itself are exit 5 with what to do.
    """
    if not columns:
        return {}, {}, False
    key = reference_key(snap, window, days, columns, bins)
    unit = key.unit(snap.version)
    opts = storage_options or None
    table = _open(uri, opts)
    recorded = table is not None and protocol.recorded_version(table, unit) == unit.txn_version
    if recorded:
        stored = _read(table, uri, key)
        if stored is not None:
            log.info("drift reference reused: %s window %s (%d column(s), reference_id %s, read at v%s)", key.table,
                     window, len(key.columns), key.reference_id, stored[2])
            return stored[0], stored[1], True
        log.warning("drift reference %s of %s: the stored rows do not match its key; rebuilding and replacing them",
                    key.reference_id, key.table)
    edges, hist = build()
    # Forced only to replace stored rows that do not match their key (edited by hand): the unit is otherwise new.
    store(uri, key, snap.version, edges, hist, opts, run_id or uuid.uuid4().hex, force=recorded)
    return edges, hist, False


def store(uri: str, key: ReferenceKey, table_version: int, edges: Edges, hist: Hist,
          storage_options: dict | None = None, run_id: str = "", force: bool = False) -> str:
    """Commit one reference as its own unit; returns the commit protocol's outcome ("committed", "already-done"…)."""
    from deltalake.exceptions import DeltaError

    try:
        protocol.open_or_create(uri, TABLE_SCHEMA, PARTITION_COLUMNS, storage_options)
        unit = key.unit(table_version)
        fs, base = filesystem(uri, storage_options)
        rel = "/".join(f"{c}={quote(str(unit.partition_values[c]), safe='')}" for c in PARTITION_COLUMNS)
        adds = write_files(fs, base, rel, FILE_SCHEMA, unit.partition_values,
                           _rows(key, table_version, edges, hist, run_id), f"part-{run_id[:12]}-{uuid.uuid4().hex[:12]}",
                           target_rows=1_000_000)
        committer = protocol.Committer(uri, TABLE_SCHEMA, PARTITION_COLUMNS, run_id, storage_options=storage_options,
                                       force=force)
        meta = {"job": JOB, "app_id": unit.app_id, "table": key.table, "table_version": table_version,
                "window": key.window, "reference_id": key.reference_id}
        outcome = committer.commit(unit, adds, meta)
    except (OSError, DeltaError) as e:
        raise InputUnavailable(f"drift reference table {uri}: cannot store the reference of {key.table} window "
                               f"{key.window} ({type(e).__name__}: {' '.join(str(e).split())[:200]}); check the lake's "
                               "storage and permissions") from e
    log.info("drift reference %s: %s window %s (%d column(s), reference_id %s, read at v%d)", outcome, key.table,
             key.window, len(key.columns), key.reference_id, table_version)
    return outcome


def _rows(key: ReferenceKey, table_version: int, edges: Edges, hist: Hist, run_id: str) -> pa.RecordBatch:
    cols = list(key.columns)
    n = len(cols)
    now = dt.datetime.now(dt.timezone.utc)
    return pa.RecordBatch.from_pydict({
        "table_uri": [key.table_uri] * n,
        "table_version": [table_version] * n,
        "window": [key.window] * n,
        "days": [list(key.days)] * n,
        "fingerprint": [key.fingerprint] * n,
        "bins": [key.bins] * n,
        "method": [key.method] * n,
        "column": cols,
        "edges": [np.asarray(edges[c], dtype=np.float64).tolist() if c in edges else None for c in cols],
        "counts": [np.asarray(hist[c], dtype=np.int64).tolist() if c in edges else None for c in cols],
        "rows": [int(np.sum(hist[c])) if c in edges else 0 for c in cols],
        "run_id": [run_id] * n,
        "created_at": [now] * n,
    }, schema=FILE_SCHEMA)


def _open(uri: str, opts: dict | None):
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    try:
        return DeltaTable(uri, storage_options=opts)
    except TableNotFoundError:
        return None
    except (OSError, DeltaError) as e:
        raise InputUnavailable(f"drift reference table {uri} cannot be opened ({type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]}); repair it, or delete it (references are rebuilt "
                               "from the input tables)") from e


def _read(table, uri: str, key: ReferenceKey) -> tuple[Edges, Hist, int] | None:
    """The stored rows of `key`, or None when they do not match it (then the reference is rebuilt and stored)."""
    from deltalake.exceptions import DeltaError

    try:
        t = table.to_pyarrow_table(filters=[("table", "=", key.table), ("reference_id", "=", key.reference_id)])
    except (OSError, DeltaError, pa.ArrowException) as e:
        raise InputUnavailable(f"drift reference table {uri}: reference {key.reference_id} of {key.table} window "
                               f"{key.window} cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                               "repair the table, or delete it (references are rebuilt from the input tables)") from e
    rows = t.to_pylist()
    if sorted(r["column"] for r in rows) != list(key.columns) or any(
            r["fingerprint"] != key.fingerprint or r["bins"] != key.bins or r["method"] != key.method for r in rows):
        return None
    edges = {r["column"]: np.asarray(r["edges"], dtype=np.float64) for r in rows if r["edges"] is not None}
    hist = {r["column"]: np.asarray(r["counts"], dtype=np.int64) for r in rows if r["edges"] is not None}
    return edges, hist, rows[0]["table_version"]


# ------------------------------------------------------------------ built in the workers, never on the driver


def build_reference(snap, days: list[str], columns: list[str], bins: int, run: Callable, deadline: float, where: str,
                    storage_options: dict | None = None, sample_rows: int = REFERENCE_SAMPLE_ROWS,
                    files: list | None = None, source: dict[str, str] | None = None) -> tuple[Edges, Hist]:
    """Edges and histograms of `columns` over the files of `days`, read by the executor's tasks (`run`: its side
    runner, engine.executor.side_run), one task per file, in two stages; the driver receives only the bounded sample
    and integer counts.

    The rule is `engine.drift.stream_reference`'s (REFERENCE_METHOD), so stored references stay valid: the window's
    rows in file order (days in order, each day's files in the log's order), every s-th row kept for the edges, s the
    smallest power of two that keeps at most `sample_rows` rows. Stage 1: each file's task keeps the rows of the
    sample that fall in it, knowing its first row's position from the log's row counts (the files' footers, read by
    tasks, when the log has none): the sample, hence the edges, depend only on the files, never on how many workers
    there are or in what order tasks end. Stage 2: each file's task counts its rows over those edges; the driver adds
    the counts (integers: exact in any order).

    `files`: the window's data files (engine.lake.snapshot.DataFile, in order) when not all of the days' files (one
    model's files of a scores table); `source`: column → the file column it is read from (a model's scores are read
    from `score` and named "score:<model>")."""
    entries = files if files is not None else [f for d in days for f in snap.files[d]]
    files = [f.path for f in entries]
    if not columns or not files:
        return {}, {}
    counts = [f.num_records for f in entries]
    src = dict(source or {})
    if any(n is None for n in counts):
        counts = [r.rows_in for r in _stage(run, snap, files, {"stage": "rows"}, deadline, where, storage_options)]
    stride = 1
    while -(-sum(counts) // stride) > sample_rows:
        stride *= 2
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
    sampled = _stage(run, snap, files, {"stage": "sample", "columns": columns, "stride": stride, "source": src},
                     deadline, where, storage_options, offsets)
    for r, n, path in zip(sampled, counts, files):
        if r.rows_in != n:
            raise InputUnavailable(f"{where}: the Delta log counts {n} rows in {path} but the file holds {r.rows_in}; "
                                   "the table's statistics are wrong: rewrite those days upstream, or move drift.reference")
    sample = {c: np.concatenate([_floats(r, c) for r in sampled]) for c in columns}
    edges = {c: e for c in columns if (e := quantile_edges(sample[c], bins)) is not None}
    if not edges:
        return {}, {}
    spec = {"stage": "hist", "columns": sorted(edges), "edges": {c: e.tolist() for c, e in edges.items()},
            "source": src}
    hist = {c: np.zeros(len(e) + 1, dtype=np.int64) for c, e in edges.items()}
    for r in _stage(run, snap, files, spec, deadline, where, storage_options):
        for c, n in json.loads(r.payload).items():
            hist[c] += np.asarray(n, dtype=np.int64)
    return edges, hist


def _stage(run: Callable, snap, files: list[str], spec: dict, deadline: float, where: str,
           storage_options: dict | None, offsets: list[int] | None = None) -> list[ChunkResult]:
    """One task per file through `run`; the results in file order. A failed task is exit 5 naming the window."""
    name = f"drift_reference/{snap.name}"
    work = UnitWork(name, "", snap.uri, None, reference_task, storage_options=dict(storage_options or {}),
                    args=(json.dumps(spec),), what="drift reference file(s)")
    chunks = [ChunkWork(name, (f,), i, json.dumps({"offset": offsets[i] if offsets else 0}))
              for i, f in enumerate(files)]
    out: dict[int, ChunkResult] = {}
    try:
        for item in run({name: work}, chunks, None, deadline):
            if isinstance(item, ChunkFailure):
                raise raised(item)
            out[item.chunk] = item
    except (LakescoreError, OSError, pa.ArrowException) as e:
        if str(e).startswith("time budget exhausted"):
            raise  # the run's time budget, not the window's files
        detail = " ".join(str(e).split())[:200]
        raise InputUnavailable(f"{where} cannot be read ({type(e).__name__}: {detail}); repair or restore its files, "
                               "pin another input.version, or move drift.reference") from e
    return [out[i] for i in range(len(files))]


def reference_task(unit: UnitWork, chunk: ChunkWork, _bundle=None) -> ChunkResult:
    """On a worker, one file of a reference window: its row count ("rows"), its rows of the stride sample ("sample":
    float64 bytes per column, in `columns` order), its histograms over the edges ("hist": JSON integers), or its
    histograms per slice over the same edges ("slices": engine.drift.SliceHistograms' JSON)."""
    spec, offset = json.loads(unit.args[0]), json.loads(chunk.args)["offset"]
    fs, base = filesystem(unit.input_uri, unit.storage_options)
    path = file_path(base, chunk.files[0])
    if spec["stage"] == "rows":
        import pyarrow.parquet as pq

        with fs.open_input_file(path) as f:
            return ChunkResult(unit.unit, pq.ParquetFile(f).metadata.num_rows, 0, [])
    cols, rows, source = spec["columns"], 0, spec.get("source") or {}
    if spec["stage"] == "sample":
        stride, parts = spec["stride"], {c: [] for c in cols}
        for batch in _batches(fs, path, cols, source):
            start = (-(offset + rows)) % stride  # the first row of this batch whose position is a multiple of stride
            for c in cols:
                parts[c].append(column_floats(batch, c, start, stride))
            rows += batch.num_rows
        kept = {c: np.concatenate(p) if p else np.empty(0) for c, p in parts.items()}
        return ChunkResult(unit.unit, rows, 0, [], payload=json.dumps({c: len(kept[c]) for c in cols}),
                           blob=b"".join(kept[c].astype(np.float64).tobytes() for c in cols))
    edges = {c: np.asarray(spec["edges"][c], dtype=np.float64) for c in cols}
    if spec["stage"] == "slices":
        groups = [tuple(g) for g in spec["groups"]]
        hist = SliceHistograms(edges, groups)
        for batch in _batches(fs, path, cols + sorted({c for g in groups for c in g} - set(cols)), source):
            hist.update(batch)
        return ChunkResult(unit.unit, hist.rows.get("overall", 0), 0, [], payload=hist.to_json())
    counts = {c: np.zeros(len(e) + 1, dtype=np.int64) for c, e in edges.items()}
    for batch in _batches(fs, path, cols, source):
        for c, e in edges.items():
            counts[c] += bin_counts(column_floats(batch, c), e)
        rows += batch.num_rows
    return ChunkResult(unit.unit, rows, 0, [], payload=json.dumps({c: n.tolist() for c, n in counts.items()}))


def _batches(fs, path: str, cols: list[str], source: dict[str, str]):
    """A file's batches of `cols`, each read from its `source` column when it has one (then renamed)."""
    named = {source.get(c, c): c for c in cols}
    for batch in iter_file_batches(fs, path, list(named), REFERENCE_BATCH_ROWS):
        yield batch.rename_columns([named.get(n, n) for n in batch.schema.names]) if source else batch


def _floats(r: ChunkResult, column: str) -> np.ndarray:
    """One column of a file's stride sample (stage 1's payload: lengths in column order, then the float64 bytes)."""
    lengths = json.loads(r.payload)
    at = 0
    for c, n in lengths.items():
        if c == column:
            return np.frombuffer(r.blob, dtype=np.float64, count=n, offset=at * 8)
        at += n
    raise KeyError(column)
