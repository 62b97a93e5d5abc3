"""lakescore's commit protocol for its own Delta tables (DESIGN.md: Snapshots, idempotency, exactly-once).

One unit = one output partition. Its data files are written first (invisible until referenced), then
committed in one transaction that overwrites exactly that partition and records a Delta application
transaction: `app_id` names the unit, and the transaction's version encodes the unit's input fingerprint.
Two runs of the same unit therefore always conflict at commit; the loser reloads and either finds its
own fingerprint (a no-op) or commits again.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import pyarrow as pa

from engine.errors import ConfigError, UnitFailed
from engine.snapshot import filesystem
from engine.writer import delete_quietly

log = logging.getLogger("lakescore")


def app_id(job: str, partition_values: dict, partition_columns: list[str]) -> str:
    """`lakescore/<job>/<v1>/<v2>/…`: the unit only, no paths, no fingerprint."""
    return "/".join(["lakescore", job, *(str(partition_values[c]) for c in partition_columns)])


def fingerprint_version(fingerprint: str) -> int:
    """The first 60 bits of the fingerprint as a positive int64 (a Delta transaction version)."""
    return int(fingerprint[:15], 16)


@dataclass(frozen=True)
class Unit:
    app_id: str
    partition_values: dict
    fingerprint: str

    @property
    def txn_version(self) -> int:
        return fingerprint_version(self.fingerprint)


def partition_filter(unit: Unit, partition_columns: list[str]) -> list[tuple[str, str, str]]:
    """The predicate of a unit's overwrite; asserted complete, since an empty filter replaces the table."""
    filt = [(c, "=", str(unit.partition_values[c])) for c in partition_columns]
    if len(filt) != len(partition_columns) or not filt or any(v[2] in ("", "None") for v in filt):
        raise UnitFailed(f"refusing to commit {unit.app_id}: incomplete partition filter {filt}")
    return filt


def open_or_create(uri: str, schema: pa.Schema, partition_by: list[str], storage_options: dict | None = None):
    """The output table, created empty on first use; a schema that differs is a config error."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    opts = storage_options or None
    for attempt in range(3):
        try:
            table = DeltaTable(uri, storage_options=opts)
            break
        except TableNotFoundError:
            try:
                return DeltaTable.create(uri, schema, partition_by=partition_by, mode="ignore", storage_options=opts)
            except DeltaError:
                # Two first runs raced to create the table: one won; load it.
                time.sleep(0.2 * (attempt + 1))
    else:
        table = DeltaTable(uri, storage_options=opts)
    existing = pa.schema(table.schema().to_arrow())
    want = {f.name: str(f.type) for f in schema}
    have = {f.name: str(f.type) for f in existing}
    if want != have or table.metadata().partition_columns != partition_by:
        diff = sorted(set(want.items()) ^ set(have.items()))[:6]
        raise ConfigError(
            f"output table {uri} has another schema or partitioning than this job writes (differences: {diff}); "
            "write to a new output.table or migrate the table"
        )
    return table


def recorded_version(table, unit: Unit) -> int | None:
    return table.transaction_version(unit.app_id)


def commit_unit(
    uri: str,
    base_version: int,
    unit: Unit,
    adds: list[dict],
    schema: pa.Schema,
    partition_by: list[str],
    metadata: dict,
    retries: int = 5,
    storage_options: dict | None = None,
) -> str:
    """Commit a unit's files; returns "committed" or "already-done" (a concurrent run committed the same input).

    The first attempt commits against `base_version`, the table version at which the job checked the unit,
    so that a concurrent commit of the same unit is a conflict rather than a silent double overwrite.
    """
    from deltalake import CommitProperties, DeltaTable, Transaction
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction

    actions = [
        AddAction(a["path"], a["size"], a["partition_values"], a["modification_time"], a["data_change"], a["stats"])
        for a in adds
    ]
    filt = partition_filter(unit, partition_by)
    props = CommitProperties(
        custom_metadata={"userMetadata": json.dumps(metadata, sort_keys=True)},
        app_transactions=[Transaction(unit.app_id, unit.txn_version, int(time.time() * 1000))],
        max_commit_retries=0,
    )
    opts = storage_options or None
    table = DeltaTable(uri, version=base_version, storage_options=opts)
    for attempt in range(retries + 1):
        try:
            table.create_write_transaction(actions, "overwrite", schema, partition_by, filt, commit_properties=props)
            return "committed"
        except CommitFailedError as e:
            table = DeltaTable(uri, storage_options=opts)
            if table.transaction_version(unit.app_id) == unit.txn_version:
                log.info("unit %s: a concurrent run committed the same input; dropping this run's files", unit.app_id)
                discard(uri, adds, storage_options)
                return "already-done"
            if attempt == retries:
                raise UnitFailed(
                    f"unit {unit.app_id}: commit kept conflicting after {retries + 1} attempts; re-run the job"
                ) from e
            time.sleep(min(0.2 * 2**attempt, 5.0))
    raise AssertionError("unreachable")


def discard(uri: str, adds: list[dict], storage_options: dict | None = None) -> None:
    fs, base = filesystem(uri, storage_options)
    for a in adds:
        delete_quietly(fs, f"{base}/{a['path']}" if base else a["path"])
