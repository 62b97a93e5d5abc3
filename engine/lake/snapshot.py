"""Pinned Delta snapshots of input tables: version resolution, partition listing, fingerprints, file access.

A job resolves `latest` to a concrete version once, at start, and reads only the files that version's log
lists. Those files are read directly with pyarrow (the fast path), shaped to the snapshot's schema (columns
added later read as nulls in older files). That is correct only for tables whose reader features leave
the files plain Parquet (no deletion vectors, column mapping, type widening, variants…); other tables are
refused with a message. Partition values come from the log, never from file paths.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.errors import ConfigError, ContractViolation, InputUnavailable, short_list
from engine.lake.paths import is_url

PARTITION = "ds"


@dataclass(frozen=True)
class DataFile:
    path: str  # as in the log: relative to the table root, or an absolute URI
    size: int
    num_records: int | None
    modification_time: int | None = None  # ms since the epoch, from the add action


@dataclass(frozen=True)
class Snapshot:
    name: str  # the table as configured (e.g. "features")
    uri: str
    version: int
    schema: pa.Schema
    files: dict[str, tuple[DataFile, ...]]  # ds → files, sorted by path

    @property
    def partitions(self) -> list[str]:
        return sorted(self.files)

    def fingerprint(self, ds: str, extra: str = "") -> str:
        """Hash of the data files holding `ds`, sorted by path (plus e.g. a contract hash).

        Each file counts with its size and modification time from the log (free to read), so a day rewritten
        under the same file names still moves the fingerprint.
        """
        h = hashlib.sha256()
        for f in self.files.get(ds, ()):
            h.update(f"{f.path}\t{f.size}\t{f.modification_time}\n".encode())
        h.update(extra.encode())
        return h.hexdigest()

    def rows(self, ds: str) -> int | None:
        counts = [f.num_records for f in self.files.get(ds, ())]
        return None if any(c is None for c in counts) else sum(counts)

    def where(self, ds: str | None = None) -> str:
        return f"{self.name}@v{self.version}" + (f" ds={ds}" if ds else "")


def open_snapshot(name: str, uri: str, version: int | str = "latest", storage_options: dict | None = None,
                  setting: str = "input") -> Snapshot:
    """Resolve `version` ("latest" → N) and list the files of that snapshot by partition. `setting`: the job's config
    section naming the table (input, scores, features…), for the messages' "fix <setting>.table"."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    try:
        table = DeltaTable(uri, storage_options=storage_options or None)
    except TableNotFoundError as e:
        raise InputUnavailable(f"input table {name} not found at {uri}; build it (make demo) or fix {setting}.table") from e
    except DeltaError as e:  # e.g. a table feature delta-rs cannot read (catalog-managed, unknown reader features)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise InputUnavailable(f"input table {name} at {uri} cannot be opened ({type(e).__name__}: {first}); "
                               "check the table's protocol and storage options") from e
    latest = table.version()
    if version != "latest":
        if int(version) > latest:
            raise InputUnavailable(f"input table {name} has no version {version} (latest is {latest}); fix {setting}.version")
        try:
            table.load_as_version(int(version))
        except DeltaError as e:
            raise InputUnavailable(
                f"input table {name} version {version} can no longer be read (log expired or checkpointed away; "
                f"latest is {latest}); pin a newer {setting}.version"
            ) from e
    _refuse_unsupported_layout(table, name)
    parts = table.metadata().partition_columns
    if PARTITION not in parts:
        raise InputUnavailable(f"input table {name} at {uri} is not partitioned by {PARTITION!r} (partitioned by {parts})")
    actions = pa.table(table.get_add_actions(flatten=True))
    files: dict[str, list[DataFile]] = {}
    nulls: list[str] = []
    counts = actions.column("num_records").to_pylist() if "num_records" in actions.column_names else [None] * actions.num_rows
    mtimes = [_epoch_ms(t) for t in actions.column("modification_time").to_pylist()]
    for path, size, n, mtime, ds in zip(
        actions.column("path").to_pylist(),
        actions.column("size_bytes").to_pylist(),
        counts,
        mtimes,
        actions.column(f"partition.{PARTITION}").to_pylist(),
    ):
        if ds is None:
            nulls.append(path)
        else:
            files.setdefault(str(ds), []).append(DataFile(path, size, n, mtime))
    # Partitions are days: everything downstream (ranges, event-time and freshness checks, ordering) reads ds as
    # YYYY-MM-DD. A null ds (a __HIVE_DEFAULT_PARTITION__ folder) or any other value is a data problem: refused.
    invalid = {}
    for ds, fs in files.items():
        try:
            valid = len(ds) == 10 and dt.date.fromisoformat(ds).isoformat() == ds
        except ValueError:
            valid = False
        if not valid:
            invalid[ds] = len(fs)
    if nulls or invalid:
        from engine.errors import ContractViolation

        what = [f"{len(nulls)} with a null {PARTITION}"] if nulls else []
        what += [f"{sum(invalid.values())} with {PARTITION} {short_list(sorted(invalid))}"] if invalid else []
        raise ContractViolation(
            f"input table {name}@v{table.version()}: {len(nulls) + sum(invalid.values())} data file(s) have a null or "
            f"invalid partition value ({'; '.join(what)}); partitions are days (YYYY-MM-DD): fix or delete those "
            f"rows upstream (e.g. DELETE … WHERE {PARTITION} IS NULL), or pin input.version to a version before them"
        )
    schema = pa.schema(table.schema().to_arrow())
    return Snapshot(
        name=name,
        uri=uri,
        version=table.version(),
        schema=schema,
        files={ds: tuple(sorted(fs, key=lambda f: f.path)) for ds, fs in files.items()},
    )


def _epoch_ms(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp() * 1000)
    return int(value)


# Reader features that leave the data files readable as plain Parquet (they change the log or the timestamp
# type only). Any other reader feature is refused: an allowlist fails closed on features added to Delta later.
READABLE_FEATURES = {"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"}
_FEATURE_NAMES = {"deletionVectors": "deletion vectors", "columnMapping": "column mapping",
                  "typeWidening": "type widening", "typeWidening-preview": "type widening",
                  "variantType": "variant columns", "variantType-preview": "variant columns"}


def _refuse_unsupported_layout(table, name: str) -> None:
    """Refuse (exit 5) tables whose data files the direct Parquet reader would misread."""
    proto = table.protocol()
    conf = table.metadata().configuration or {}
    bad = sorted(set(proto.reader_features or []) - READABLE_FEATURES)
    if conf.get("delta.columnMapping.mode", "none") != "none" and "columnMapping" not in bad:
        bad.append("columnMapping")
    if bad:
        what = ", ".join(f"{f} ({_FEATURE_NAMES[f]})" if f in _FEATURE_NAMES else f for f in bad)
        raise InputUnavailable(
            f"input table {name} uses reader feature(s) {what}, which lakescore's direct Parquet reader would "
            "misread; rewrite the table without them (ALTER TABLE … DROP FEATURE …; REORG TABLE … APPLY (PURGE) "
            "for deletion vectors) before scoring"
        )


def select_partitions(snapshot: Snapshot, spec: str) -> tuple[list[str], list[str]]:
    """`spec` ("all" | day | "a..b") → (days present in the snapshot, requested days absent from it)."""
    if spec == "all":
        return snapshot.partitions, []
    lo, _, hi = spec.partition("..")
    hi = hi or lo
    try:
        start, end = dt.date.fromisoformat(lo), dt.date.fromisoformat(hi)
    except ValueError as e:
        raise ConfigError(f"input.ds={spec!r} is not a valid date or date range") from e
    if end < start:
        raise ConfigError(f"input.ds={spec!r}: range end is before its start")
    wanted = [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    present = [d for d in wanted if d in snapshot.files]
    return present, [d for d in wanted if d not in snapshot.files]


# --------------------------------------------------------------------------------------------- access


def filesystem(root: str, storage_options: dict | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for a table or lake root; native pyarrow for local paths."""
    if not is_url(root) or root.startswith("file://"):
        path = root[len("file://") :] if root.startswith("file://") else root
        return pafs.LocalFileSystem(), os.path.abspath(path)
    from deltalake.fs import DeltaStorageHandler

    return pafs.PyFileSystem(DeltaStorageHandler(root, storage_options or None)), ""


def file_path(base: str, path: str) -> str:
    """A data file's path on the table's filesystem (log paths are relative to the root unless absolute)."""
    if is_url(path) and not path.startswith("file://"):
        return path
    if path.startswith("file://"):
        return path[len("file://") :]
    return f"{base}/{path}" if base else path


def missing_files(snapshot: Snapshot, days: list[str], storage_options: dict | None = None) -> list[tuple[str, str]]:
    """(ds, path as in the log) of each data file of `days` that storage no longer holds."""
    fs, base = filesystem(snapshot.uri, storage_options)
    listed = [(d, f.path) for d in days for f in snapshot.files[d]]
    infos = fs.get_file_info([file_path(base, p) for _d, p in listed])
    return [dp for dp, info in zip(listed, infos) if info.type == pafs.FileType.NotFound]


def check_files_exist(snapshot: Snapshot, days: list[str], storage_options: dict | None = None) -> None:
    """A vacuumed snapshot still has a log but lost files: refuse it (exit 5) before any work."""
    missing = missing_files(snapshot, days, storage_options)
    if missing:
        raise InputUnavailable(
            f"input {snapshot.where()}: {len(missing)} data file(s) are gone (vacuumed?) e.g. "
            f"{short_list(os.path.basename(p) for _d, p in missing)}; pin a newer input.version"
        )


def check_files_stayed(snapshot: Snapshot, days: list[str], storage_options: dict | None = None,
                       pin_key: str = "input.version") -> None:
    """After work on `days` failed mid-run: a data file that vanished while the run read it (a vacuum, a manual
    delete) is input unavailable (exit 5) naming it, never a crash of the day; no-op when every file is there.
    `pin_key` is the config key that pins this input (named in the message)."""
    missing = missing_files(snapshot, days, storage_options)
    if missing:
        d, p = missing[0]
        raise InputUnavailable(
            f"input {snapshot.where(d)}: data file {p} vanished while this run read it ({len(missing)} file(s) gone "
            f"from {len({x for x, _ in missing})} day(s): vacuumed or deleted); the days read before it are "
            f"committed; re-run with a newer {pin_key}, or restore the file from a backup"
        )


def iter_file_batches(
    fs: pafs.FileSystem, path: str, columns: list[str], batch_rows: int, schema: pa.Schema | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream one Parquet file in bounded batches of `columns`.

    With the snapshot's `schema` (what jobs pass), every batch has exactly the requested columns that the table
    has, with the table's types: a column added to the table after this file was written comes back as nulls (as
    any Delta reader returns it), and file types that differ (large_string, dictionary, timestamp units) are cast.
    Without it, only the columns present in the file are read as they are (raw throughput measurements).
    """
    pf = pq.ParquetFile(fs.open_input_file(path))
    have = set(pf.schema_arrow.names)
    if schema is None:
        yield from pf.iter_batches(batch_size=batch_rows, columns=[c for c in columns if c in have], use_threads=False)
        return
    target = pa.schema([schema.field(c) for c in dict.fromkeys(columns) if c in schema.names])
    read = [f.name for f in target if f.name in have]
    if not read:  # none of the columns existed yet when this file was written: nulls, one per row
        for start in range(0, pf.metadata.num_rows, batch_rows):
            yield _conform(pa.RecordBatch.from_pydict({}), target, path, min(batch_rows, pf.metadata.num_rows - start))
        return
    for batch in pf.iter_batches(batch_size=batch_rows, columns=read, use_threads=False):
        yield _conform(batch, target, path, batch.num_rows)


def _conform(batch: pa.RecordBatch, target: pa.Schema, path: str, rows: int) -> pa.RecordBatch:
    cols = []
    for f in target:
        i = batch.schema.get_field_index(f.name)
        if i < 0:
            cols.append(pa.nulls(rows, f.type))
            continue
        col = batch.column(i)
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise ContractViolation(
                    f"data file {path}: column {f.name!r} is {col.type} in the file but {f.type} in the table "
                    "schema and cannot be cast without loss; rewrite the file or fix the table schema"
                ) from e
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=target)
