"""Deletion requests reach every derived table: remove, from every partition of `scores` (or `quarantine`), the rows
whose key no longer exists in the current input day, without re-scoring.

A score run replaces a day only for the model it runs; the other models' partitions of that day would keep a
deleted entity's scores until each of them runs again, possibly never. `forget` reads each input day's keys once
from the input's current snapshot (key columns only), compares every partition of the day with them, and rewrites
just the partitions holding orphan rows: an overwrite of exactly that partition (the partition filter of
`engine.lake.commit`, asserted complete: an empty filter would replace the table), its `userMetadata` saying job, run
id, rows before and after and rows removed. A conflicting commit (a score run replacing the same partition meanwhile)
makes ours fail; the partition is then read again and re-decided, a bounded number of times. A day whose input is
gone entirely loses all its rows.

Keys never older than the rows they judge. A score run may re-score a day from a newer input version after forget
read that day's keys and before it rewrites the partition (its commit lands first, so ours does not conflict). The
new rows (an entity added since) are absent from the keys forget read, and judging them by those keys would remove
valid scores, while the partition's application transaction, recording the newer input, would tell every later
score run that the day is up to date. So each time a partition is judged, the newest input version it records is
read from the partition itself: the highest of its rows' stamps (`input_version`; the quarantine's
`source_version`) and of the score unit's `#input=` application transaction (`engine.lake.commit.recorded_input_version`).
Newer than the snapshot whose keys forget holds → that input table's snapshot is opened again at its latest
version and the day's keys are re-read before any row is judged. We chose re-reading over skipping the partition:
it keeps the new rows, still removes what was deleted since, and needs no second forget; judging by the latest
input is what forget promises anyway. The stamps count as well as the transaction because after a `RESTORE` the
rows are the evidence (a transaction version can outlive the rows it described); re-reading more often than needed
costs one day's key read, never a row.

The unit's application transactions are left as they are, on purpose. They record the input fingerprint and version
the partition was *scored* from; forget computed nothing from the new input, it only dropped rows. Recording the
new fingerprint would claim the partition is up to date with the current day, and if the same input change also
added or corrected rows, no score run would ever pick them up. Left alone, the next run of each model sees the
day as changed and re-scores it (the same scores for the rows that remain, plus anything new): a little redundant
work, never a wrong "up to date". Rows kept are not touched: their stamps still name the run and input version
that produced them.

Cost: the key columns (and the input-version stamp) of every partition of the table and of each input day are read
(one day at a time); the full rows only of partitions that hold orphans; an input's log and day keys once more when
a partition records a newer version of it than the one read.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.lake import commit as protocol
from engine.lake.paths import table_uri
from engine.config.sections import LakeConfig
from engine.errors import ConfigError, UnitFailed, short_list
from engine.score.scoring import partition_dir
from engine.lake.snapshot import Snapshot, filesystem, open_snapshot
from engine.lake.writer import RollingParquetWriter

log = logging.getLogger("lakescore")

SCORES = ["ds", "model_name", "model_version"]
QUARANTINE = ["ds", "source_table"]
KeyEncoder = Callable[[pa.Table], pa.Array]  # an input day's key columns → the JSON keys the quarantine table holds


@dataclass(frozen=True)
class Partition:
    values: dict  # partition column → value (model_version as int)
    input_table: str
    rows: int

    @property
    def key(self) -> tuple:
        return tuple(self.values.values())


@dataclass
class Outcome:
    unit: str
    outcome: str  # committed | would-remove | clean (a concurrent run already removed them)
    rows_in: int
    rows_out: int
    input_version: int | None
    message: str | None = None


@dataclass
class ForgetResult:
    table: str
    partitions: int  # partitions examined
    inputs: dict[str, int] = field(default_factory=dict)  # input table → version read
    outcomes: list[Outcome] = field(default_factory=list)


class _Scan:
    """One output table and the current snapshots of its inputs, read once per run."""

    def __init__(self, lake: LakeConfig, table: str, key_columns: Sequence[str], input_table: str,
                 encode_key: KeyEncoder | None):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        self.lake, self.table, self.default_input = lake, table, input_table
        self.opts = lake.storage_options or None
        self.uri = table_uri(lake, table)
        try:
            self.out = DeltaTable(self.uri, storage_options=self.opts)
        except TableNotFoundError:
            raise ConfigError(f"table {table!r} not found at {self.uri}; pass --table scores or --table quarantine "
                              f"(tables of lake.root {lake.root})") from None
        self.columns = self.out.metadata().partition_columns
        if self.columns not in (SCORES, QUARANTINE):
            raise ConfigError(f"table {table!r} is partitioned by {self.columns}: forget works on scores tables "
                              f"{SCORES} and quarantine tables {QUARANTINE}")
        self.quarantine = self.columns == QUARANTINE
        if self.quarantine and encode_key is None:
            raise ConfigError(f"table {table!r} is a quarantine table; its keys are JSON: pass the contracts "
                              "package's key encoder (lakescore forget does)")
        self.schema = pa.schema(self.out.schema().to_arrow())
        self.keys = ["key"] if self.quarantine else list(key_columns)
        stamp = "source_version" if self.quarantine else "input_version"  # the input version each row came from
        self.stamp = stamp if stamp in self.schema.names else None
        self.judged = [*self.keys, *([self.stamp] if self.stamp else [])]  # what judging a partition reads
        missing = [k for k in self.keys if k not in self.schema.names]
        if missing:
            raise ConfigError(f"key column(s) {missing} not in table {table!r} (columns: "
                              f"{short_list(self.schema.names)}); fix input.key_columns")
        self.encode_key = encode_key
        self.snaps: dict[str, Snapshot] = {}
        self.day_keys: dict[tuple, pa.Table | None] = {}

    def partitions(self, since: str | None) -> list[Partition]:
        actions = pa.table(self.out.get_add_actions(flatten=True)).to_pylist()
        parts: dict[tuple, dict] = {}
        for a in actions:
            values = {c: a[f"partition.{c}"] for c in self.columns}
            if "model_version" in values:
                values["model_version"] = int(values["model_version"])
            p = parts.setdefault(tuple(values.values()), {"values": values, "rows": 0, "input": None})
            p["rows"] += a.get("num_records") or 0
            p["input"] = p["input"] or (values["source_table"] if self.quarantine else a.get("min.input_table"))
        return [Partition(p["values"], p["input"] or self.default_input, p["rows"])
                for k, p in sorted(parts.items()) if since is None or str(k[0]) >= since]

    def snapshot(self, name: str, at_least: int | None = None) -> Snapshot:
        """The input table's snapshot read by this run; opened again at the latest version (and its day keys read
        again) when a partition records an input version newer than the one held (`at_least`)."""
        if name in self.snaps and at_least is not None and self.snaps[name].version < at_least:
            log.info("forget %s: a partition was scored from %s version %d, newer than the version %d read; "
                     "reading that table's keys again", self.table, name, at_least, self.snaps[name].version)
            del self.snaps[name]
            self.day_keys = {k: v for k, v in self.day_keys.items() if k[0] != name}
        if name not in self.snaps:
            self.snaps[name] = open_snapshot(name, table_uri(self.lake, name), "latest", self.opts)
        return self.snaps[name]

    def recorded_input(self, part: Partition, rows: pa.Table) -> int | None:
        """The newest input version `rows` (the partition as just read) were computed from: their stamps and, for a
        scores partition, the score unit's `#input=` application transaction."""
        found = []
        if self.stamp and self.stamp in rows.column_names and rows.num_rows:
            found.append(pc.max(rows.column(self.stamp)).as_py())
        if not self.quarantine:
            unit = protocol.Unit(protocol.app_id("score", part.values, self.columns), part.values, "",
                                 part.input_table)
            found.append(protocol.recorded_input_version(self.out, unit))
        found = [v for v in found if v is not None]
        return max(found) if found else None

    def input_keys(self, part: Partition, key_names: list[str], at_least: int | None = None) -> pa.Table | None:
        """The keys of the partition's input day in the current snapshot (at version `at_least` or later); None if
        the day is gone."""
        from deltalake import DeltaTable

        snap = self.snapshot(part.input_table, at_least)
        ds = str(part.values["ds"])
        cache = (part.input_table, ds, tuple(key_names))
        if cache not in self.day_keys:
            if ds not in snap.files:
                self.day_keys[cache] = None
            else:
                missing = [k for k in key_names if k not in snap.schema.names]
                if missing:
                    raise ConfigError(f"key column(s) {missing} of table {self.table!r} not in input table "
                                      f"{snap.where()}; fix input.key_columns")
                t = DeltaTable(snap.uri, version=snap.version, storage_options=self.opts)
                keys = t.to_pyarrow_table(columns=key_names, filters=[("ds", "=", ds)])
                keys = keys.group_by(key_names).aggregate([])  # distinct keys: the join below stays one-to-one
                if self.quarantine:
                    keys = pa.table({"key": self.encode_key(keys)})
                self.day_keys[cache] = keys
        return self.day_keys[cache]

    def filters(self, part: Partition) -> list[tuple[str, str, str]]:
        """The partition's overwrite predicate (engine.lake.commit's, asserted complete)."""
        unit = protocol.Unit(protocol.app_id("forget", part.values, self.columns), part.values, "")
        return protocol.partition_filter(unit, self.columns)

    def read(self, part: Partition, columns: list[str] | None = None) -> pa.Table:
        """The partition's rows (the same predicate, with values typed as the columns are for the reader)."""
        typed = [(c, "=", part.values[c]) for c, _op, _v in self.filters(part)]
        return self.out.to_pyarrow_table(columns=columns, filters=typed)

    def orphans(self, part: Partition, rows: pa.Table) -> np.ndarray:
        """Mask of `rows` (of `part`, read with at least `judged`) whose key is absent from the current input day,
        judged by keys no older than the input the rows record. A row whose key holds a null cannot be matched and
        is kept."""
        names = self.keys
        if self.quarantine:
            first = next((k for k in rows.column("key").to_pylist() if k), None)
            if first is None:
                return np.zeros(rows.num_rows, bool)
            names = sorted(json.loads(first))
        day = self.input_keys(part, names, self.recorded_input(part, rows))
        if day is None:
            return np.ones(rows.num_rows, bool)
        mine = rows.select(self.keys)
        try:
            day = day.cast(mine.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ConfigError(f"key columns {self.keys} of {self.table!r} and input {part.input_table} have other "
                              f"types ({mine.schema} vs {day.schema}); fix input.key_columns") from e
        idx = pa.array(np.arange(rows.num_rows, dtype=np.int64))
        found = mine.append_column("__row", idx).join(day, keys=self.keys, join_type="left semi")
        absent = np.ones(rows.num_rows, bool)
        absent[found.column("__row").to_numpy()] = False
        for k in self.keys:
            col = mine.column(k)
            if col.null_count:
                absent &= ~pc.is_null(col).to_numpy(zero_copy_only=False)
        return absent


def orphan_counts(lake: LakeConfig, table: str = "scores", key_columns: Sequence[str] = ("entity_id",),
                  input_table: str = "features", since: str | None = None,
                  encode_key: KeyEncoder | None = None, only: set[tuple] | None = None) -> dict[tuple, int]:
    """Per partition of `table` (its partition values in order, e.g. (ds, model_name, model_version) for scores),
    the number of rows whose key no longer exists in the current input day; partitions without any are left out.

    A partition's input table is its rows' `input_table` stamp (the quarantine's `source_table`), else
    `input_table`. An unknown table or key column is a ConfigError (exit 2). `only` limits the scan to those
    partitions (`lakescore status` passes the ones whose input changed: no other partition can hold such rows)."""
    scan = _Scan(lake, table, list(key_columns), input_table, encode_key)
    counts = {}
    for part in scan.partitions(since):
        if only is not None and part.key not in only:
            continue
        rows = scan.read(part, scan.judged)
        n = int(scan.orphans(part, rows).sum())
        if n:
            counts[part.key] = n
    return counts


def forget(lake: LakeConfig, table: str, key_columns: Sequence[str], input_table: str, run_id: str,
           dry_run: bool = False, retries: int = 5, since: str | None = None, target_file_rows: int = 1_000_000,
           encode_key: KeyEncoder | None = None,
           before_rewrite: Callable[[Partition], None] | None = None) -> ForgetResult:
    """Remove every orphan row of `table` (see the module docstring); one commit per partition holding any.

    `before_rewrite(part)` runs before each attempt to rewrite a partition (tests hold a rival run there)."""
    scan = _Scan(lake, table, list(key_columns), input_table, encode_key)
    parts = scan.partitions(since)
    result = ForgetResult(table, len(parts))
    jitter = random.Random(run_id)
    for part in parts:
        rows = scan.read(part, scan.judged)
        n = int(scan.orphans(part, rows).sum())
        version = scan.snapshot(part.input_table).version
        result.inputs[part.input_table] = max(version, result.inputs.get(part.input_table, version))
        unit = partition_dir(part.values, scan.columns)
        if not n:
            continue
        if dry_run:
            result.outcomes.append(Outcome(unit, "would-remove", rows.num_rows, rows.num_rows - n, version))
            continue
        outcome = _rewrite(scan, part, unit, run_id, retries, target_file_rows, jitter, before_rewrite)
        result.outcomes.append(outcome)
        result.inputs[part.input_table] = max(outcome.input_version, result.inputs[part.input_table])
    return result


def _rewrite(scan: _Scan, part: Partition, unit: str, run_id: str, retries: int, target_rows: int,
             jitter: random.Random, before_rewrite: Callable[[Partition], None] | None = None) -> Outcome:
    """Overwrite the partition with its rows minus the orphans, re-read and re-decided after each conflict (each
    time by keys at least as new as the input its rows record)."""
    from deltalake import CommitProperties
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction

    filt = scan.filters(part)
    file_schema = pa.schema([f for f in scan.schema if f.name not in scan.columns])
    fs, base = filesystem(scan.uri, scan.opts)
    attempt = 0
    while True:
        if before_rewrite is not None:
            before_rewrite(part)
        scan.out.update_incremental()
        rows = scan.read(part)
        orphan = scan.orphans(part, rows)
        input_version = scan.snapshot(part.input_table).version
        if not orphan.any():
            return Outcome(unit, "clean", rows.num_rows, rows.num_rows, input_version,
                           "a concurrent commit already removed them")
        keep = rows.filter(pa.array(~orphan)).select(file_schema.names).cast(file_schema)
        writer = RollingParquetWriter(fs, base, partition_dir(part.values, scan.columns), file_schema, part.values,
                                      target_rows, "zstd", f"forget-{run_id[:12]}-{attempt}")
        for batch in keep.to_batches():
            writer.write(batch)
        adds = writer.close()
        actions = [AddAction(a["path"], a["size"], a["partition_values"], a["modification_time"], a["data_change"],
                             a["stats"]) for a in adds]
        meta = {"job": "forget", "run_id": run_id, "table": scan.table, "partition": unit,
                "rows_in": rows.num_rows, "rows_out": keep.num_rows, "rows_removed": rows.num_rows - keep.num_rows,
                "input_table": part.input_table, "input_version": input_version}
        props = CommitProperties(custom_metadata={"userMetadata": json.dumps(meta, sort_keys=True, default=str)},
                                 max_commit_retries=protocol.DELTA_RETRIES)
        try:
            scan.out.create_write_transaction(actions, "overwrite", scan.schema, scan.columns, filt,
                                              commit_properties=props)
        except CommitFailedError as e:
            protocol.discard(scan.uri, adds, scan.opts)
            if attempt == retries:
                raise UnitFailed(f"forget {scan.table} {unit}: the commit kept conflicting with other runs after "
                                 f"{retries + 1} attempt(s); re-run lakescore forget") from e
            delay = min(0.05 * 2**attempt, 5.0) * jitter.uniform(0.5, 1.5)
            log.info("forget %s: commit conflicted (%s); retrying in %.2fs", unit, e, delay)
            time.sleep(delay)
            attempt += 1
            continue
        log.info("forget %s %s: removed %d row(s) whose key is gone from %s", scan.table, unit,
                 rows.num_rows - keep.num_rows, part.input_table)
        return Outcome(unit, "committed", rows.num_rows, keep.num_rows, input_version)
