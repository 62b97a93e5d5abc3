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
    from deltalake import Schema

    # Compared as Delta schemas: Arrow names of nested fields differ after a round trip (list "item"/"element").
    want = {f["name"]: json.dumps(f["type"], sort_keys=True) for f in json.loads(Schema.from_arrow(schema).to_json())["fields"]}
    have = {f["name"]: json.dumps(f["type"], sort_keys=True) for f in json.loads(table.schema().to_json())["fields"]}
    if want != have or table.metadata().partition_columns != partition_by:
        diff = sorted(set(want.items()) ^ set(have.items()))[:6]
        raise ConfigError(
            f"output table {uri} has another schema or partitioning than this job writes (differences: {diff}); "
            "write to a new output.table or migrate the table"
        )
    return table


def recorded_version(table, unit: Unit) -> int | None:
    return table.transaction_version(unit.app_id)


def commits_since(table, base_version: int) -> list[dict]:
    """userMetadata of the commits after `base_version` (as written by commit_unit; others are {})."""
    latest = table.version()
    if latest <= base_version:
        return []
    out = []
    for h in table.history(limit=latest - base_version):
        if h.get("version", -1) <= base_version:
            continue
        try:
            out.append(json.loads(h.get("userMetadata") or "{}"))
        except ValueError:
            out.append({})
    return out


class Committer:
    """Commits a run's units against the table version at which they were checked.

    Conflicts are resolved from the log: if no one committed this unit since the check, the conflict came from
    another unit and the commit is retried on the latest version; if a concurrent run committed this unit with
    the same fingerprint, this run's commit is a no-op; with another fingerprint, this run commits again.
    """

    def __init__(self, uri: str, base_version: int, schema: pa.Schema, partition_by: list[str], run_id: str,
                 retries: int = 5, storage_options: dict | None = None):
        self.uri, self.base, self.schema, self.partition_by = uri, base_version, schema, partition_by
        self.run_id, self.retries, self.opts = run_id, retries, storage_options or None

    def commit(self, unit: Unit, adds: list[dict], metadata: dict) -> str:
        """Returns "committed" or "already-done"."""
        from deltalake import CommitProperties, DeltaTable, Transaction
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import AddAction

        actions = [AddAction(a["path"], a["size"], a["partition_values"], a["modification_time"], a["data_change"],
                             a["stats"]) for a in adds]
        filt = partition_filter(unit, self.partition_by)
        props = CommitProperties(
            custom_metadata={"userMetadata": json.dumps({**metadata, "run_id": self.run_id}, sort_keys=True)},
            app_transactions=[Transaction(unit.app_id, unit.txn_version, int(time.time() * 1000))],
            max_commit_retries=0,
        )
        table = DeltaTable(self.uri, version=self.base, storage_options=self.opts)
        checked_at = self.base
        for attempt in range(self.retries + 1):
            try:
                table.create_write_transaction(actions, "overwrite", self.schema, self.partition_by, filt,
                                               commit_properties=props)
                self._advance()
                return "committed"
            except CommitFailedError as e:
                table = DeltaTable(self.uri, storage_options=self.opts)
                rivals = [m for m in commits_since(table, checked_at) if m.get("app_id") == unit.app_id]
                if rivals and rivals[-1].get("input_fingerprint") == unit.fingerprint:
                    log.info("unit %s: a concurrent run committed the same input; dropping this run's files", unit.app_id)
                    discard(self.uri, adds, self.opts)
                    return "already-done"
                if attempt == self.retries:
                    raise UnitFailed(f"unit {unit.app_id}: commit kept conflicting after {self.retries + 1} attempts; "
                                     "re-run the job") from e
                checked_at = table.version()
                time.sleep(min(0.1 * 2**attempt, 5.0) if rivals else 0)
        raise AssertionError("unreachable")

    def _advance(self) -> None:
        """Move the base past commits of this run only: they touched other units, which stay checked."""
        from deltalake import DeltaTable

        table = DeltaTable(self.uri, storage_options=self.opts)
        if all(m.get("run_id") == self.run_id for m in commits_since(table, self.base)):
            self.base = table.version()


def discard(uri: str, adds: list[dict], storage_options: dict | None = None) -> None:
    fs, base = filesystem(uri, storage_options)
    for a in adds:
        delete_quietly(fs, f"{base}/{a['path']}" if base else a["path"])
