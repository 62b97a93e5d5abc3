"""lakescore's commit protocol for its own Delta tables (DESIGN.md: Snapshots, idempotency, exactly-once).

One unit = one output partition. Its data files are written first (invisible until referenced), then
committed in one transaction that overwrites exactly that partition and records two Delta application
transactions: `app_id` names the unit (its version encodes the unit's input fingerprint), and
`app_id#input=<table>` records the input version the unit was computed from; a third, `app_id#context`,
records what else the result depends on (a contract's hash), so that a unit whose input files were only
rewritten (compacted) since that version can be told up to date without its fingerprint. Two runs of the same unit
therefore always conflict at commit; the loser reloads and finds its own fingerprint (a no-op), a newer
input (it yields, unless forced), or neither (it commits again). A run never appends blindly.

The transactions are trusted only as far as the table's files back them (`Backing`, `Evidence`). A Delta RESTORE
(or any time travel back, or a hand-made overwrite) brings back older files, or none, while Delta keeps the newest
version of every application transaction, so a transaction can name a fingerprint the partition no longer holds.
Before a transaction lets a unit be skipped (up to date, superseded, rewritten only), the partition's current files
must say the same: every file's min and max statistics of the table's fingerprint stamp column (read from the
log's add actions, no data read) equal the recorded fingerprint. A partition without files backs only a commit
recorded as writing none (a fourth transaction, `app_id#rows`, records the rows each commit wrote). Anything else
(older stamps, no files where rows were written, a file without the statistics, a table written before the stamp
existed) is not evidence: the unit is redone. The choice fails towards redoing work, never towards skipping it; the
one exception keeps deleted data deleted: in a table written before `#rows` existed, an empty partition whose
record is from a newer input version (a day retracted since) is not refilled by a run of an older version.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass

import pyarrow as pa

from engine.errors import ConfigError, UnitFailed
from engine.lake.snapshot import filesystem
from engine.lake.writer import delete_quietly

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
    input_table: str = ""  # which input the unit was computed from, and at which version
    input_version: int | None = None
    context: str | None = None  # what besides the input files the result depends on (a contract's hash, or "")
    empty: bool = False  # the unit commits no rows (its input is gone): a partition without files is what it holds

    @property
    def txn_version(self) -> int:
        return fingerprint_version(self.fingerprint)

    @property
    def input_app_id(self) -> str:
        """A second application transaction of each commit: its version is the input version the unit came from.

        Read back in O(1) from the snapshot (`transaction_version`), for empty commits too, so a run can tell that
        a unit was committed from a newer version of its input without reading data or history.
        """
        return f"{self.app_id}#input={self.input_table}"

    @property
    def rows_app_id(self) -> str:
        """A fourth transaction: its version is the number of rows the unit's commit wrote, so that a partition
        without files can be told apart: emptied on purpose (0: a retracted day) or restored to before its commit."""
        return f"{self.app_id}#rows"

    @property
    def context_app_id(self) -> str:
        return f"{self.app_id}#context"

    @property
    def context_version(self) -> int:
        return fingerprint_version(hashlib.sha256((self.context or "").encode()).hexdigest())


def recorded_input_version(table, unit: Unit) -> int | None:
    return table.transaction_version(unit.input_app_id) if unit.input_table else None


def same_context(table, unit: Unit) -> bool:
    """Whether the unit was last committed under this context (False when that was not recorded)."""
    return unit.context is not None and table.transaction_version(unit.context_app_id) == unit.context_version


def superseded(table, unit: Unit) -> int | None:
    """The newer input version this unit was last committed from, if newer than this run's; else None."""
    rec = recorded_input_version(table, unit)
    if rec is not None and unit.input_version is not None and rec > unit.input_version:
        return rec
    return None


@dataclass(frozen=True)
class Backing:
    """How a table's files back the transactions it records.

    `column`: the string stamp column in which every row carries its unit's fingerprint; a transaction is backed
    when every file of the unit's partition has that fingerprint as its min and max statistics. None: the partition
    key alone fixes what a unit holds (a backtest fold), so files being there is the evidence.
    """

    column: str | None = None


def _stamp(lo, hi) -> int | None:
    """The fingerprint a file's statistics say all its rows carry (compared as a transaction version, so statistics
    truncated by another writer still match), or None."""
    try:
        a, b = fingerprint_version(lo), fingerprint_version(hi)
    except (TypeError, ValueError):
        return None
    return a if a == b else None


class Evidence:
    """What the files of one table version hold per partition, from the log's add actions (read once, lazily)."""

    def __init__(self, table, partition_columns: list[str], backing: Backing):
        self.table, self.partition_columns, self.backing = table, partition_columns, backing
        self.version = table.version()
        self._held: dict[tuple, set] | None = None

    def held(self, unit: Unit) -> set:
        if self._held is None:
            actions = pa.table(self.table.get_add_actions(flatten=True))
            n, names, col = actions.num_rows, actions.column_names, self.backing.column
            parts = [actions.column(f"partition.{c}").to_pylist() for c in self.partition_columns]
            lo = actions.column(f"min.{col}").to_pylist() if col and f"min.{col}" in names else [None] * n
            hi = actions.column(f"max.{col}").to_pylist() if col and f"max.{col}" in names else [None] * n
            self._held = {}
            for i in range(n):
                key = tuple(str(p[i]) for p in parts)
                self._held.setdefault(key, set()).add(_stamp(lo[i], hi[i]) if col else "present")
        return self._held.get(tuple(str(unit.partition_values[c]) for c in self.partition_columns), set())

    def backs(self, unit: Unit) -> bool:
        """Whether the unit's partition holds what its recorded transaction says it holds.

        A partition without files backs a commit recorded as writing no rows (`#rows` 0). Where no row count was
        recorded (a table written before it was), it backs a unit that writes none, or a record from a newer input
        version (a day retracted since: never brought back by a run of an older version)."""
        held = self.held(unit)
        if not held:
            rows = self.table.transaction_version(unit.rows_app_id)
            if rows is not None:
                return rows == 0
            return unit.empty or superseded(self.table, unit) is not None
        if self.backing.column is None:
            return True
        return held == {recorded_version(self.table, unit)}


def partition_filter(unit: Unit, partition_columns: list[str]) -> list[tuple[str, str, str]]:
    """The predicate of a unit's overwrite; asserted complete, since an empty filter replaces the table."""
    filt = [(c, "=", str(unit.partition_values[c])) for c in partition_columns]
    if len(filt) != len(partition_columns) or not filt or any(v[2] in ("", "None") for v in filt):
        raise UnitFailed(f"refusing to commit {unit.app_id}: incomplete partition filter {filt}")
    return filt


def open_or_create(uri: str, schema: pa.Schema, partition_by: list[str], storage_options: dict | None = None,
                   added: tuple[str, ...] = ()):
    """The output table, created empty on first use; a schema that differs is a config error.

    `added`: columns a table written by an earlier release may lack (a stamp); they are added to it as nullable
    columns (a metadata-only commit), so its older files read them as null: no evidence, redone when next due.
    """
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
    missing = [c for c in added if c in want and c not in have]
    if missing and {k: v for k, v in want.items() if k not in missing} == have:
        table = _add_columns(table, [schema.field(c) for c in missing], uri, opts)
        have = {f["name"]: json.dumps(f["type"], sort_keys=True) for f in json.loads(table.schema().to_json())["fields"]}
    if want != have or table.metadata().partition_columns != partition_by:
        diff = sorted(set(want.items()) ^ set(have.items()))[:6]
        raise ConfigError(
            f"output table {uri} has another schema or partitioning than this job writes (differences: {diff}); "
            "write to a new output.table or migrate the table"
        )
    return table


def _add_columns(table, fields: list[pa.Field], uri: str, opts: dict | None):
    """Add nullable columns to an existing table; a concurrent run that added them first is fine."""
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import DeltaError

    try:
        table.alter.add_columns(list(Schema.from_arrow(pa.schema(fields)).fields))
        log.warning("output table %s: added column(s) %s (written by an earlier release; its units are redone when "
                    "next run)", uri, [f.name for f in fields])
    except DeltaError as e:
        log.info("output table %s: adding %s failed (%s); reloading", uri, [f.name for f in fields], e)
    return DeltaTable(uri, storage_options=opts)


def recorded_version(table, unit: Unit) -> int | None:
    return table.transaction_version(unit.app_id)


DELTA_RETRIES = 20  # delta-rs re-attempts a commit when only other partitions changed (no conflict with this unit)


class Committer:
    """Commits a run's units to one table, each decided on the newest snapshot just before its commit.

    Before each commit the table is brought up to date and the unit is checked again: committed by a rival with
    the same fingerprint → "already-done"; committed from a newer version of the same input → "superseded"
    (unless forced). Otherwise the unit is committed on that snapshot; delta-rs resolves commits of other units
    that land meanwhile, and a rival commit of this unit makes ours fail (same `app_id`, same partition). The
    failure is then settled on the reloaded table, newest state first: our own commit landed after all (object
    stores can report a retried write that succeeded as a conflict), a rival's same input, a rival's newer
    input; or else we commit again, after a jittered backoff, at most `retries` more times. With a `backing`, a
    transaction counts only where the partition's files back it (`Evidence`): one they do not (a RESTORE) is
    committed again.
    """

    def __init__(self, uri: str, schema: pa.Schema, partition_by: list[str], run_id: str, retries: int = 5,
                 storage_options: dict | None = None, force: bool = False, backing: Backing | None = None):
        self.uri, self.schema, self.partition_by = uri, schema, partition_by
        self.run_id, self.retries, self.opts, self.force = run_id, retries, storage_options or None, force
        self.backing = backing
        self._table = None
        self._evidence: Evidence | None = None
        self._jitter = random.Random(run_id)  # differs between concurrent runs, reproducible within one

    def latest(self):
        from deltalake import DeltaTable

        if self._table is None:
            self._table = DeltaTable(self.uri, storage_options=self.opts)
        else:
            self._table.update_incremental()
        return self._table

    def commit(self, unit: Unit, adds: list[dict], metadata: dict) -> str:
        """Returns "committed", "already-done" or "superseded"; the files of a unit not committed are dropped."""
        from deltalake import CommitProperties, Transaction
        from deltalake.exceptions import CommitFailedError, DeltaError
        from deltalake.transaction import AddAction

        actions = [AddAction(a["path"], a["size"], a["partition_values"], a["modification_time"], a["data_change"],
                             a["stats"]) for a in adds]
        filt = partition_filter(unit, self.partition_by)
        now = int(time.time() * 1000)
        txns = [Transaction(unit.app_id, unit.txn_version, now)]
        if unit.input_table and unit.input_version is not None:
            txns.append(Transaction(unit.input_app_id, unit.input_version, now))
        if unit.context is not None:
            txns.append(Transaction(unit.context_app_id, unit.context_version, now))
        rows = _rows_written(adds)
        if rows is not None:
            txns.append(Transaction(unit.rows_app_id, rows, now))
        props = CommitProperties(
            custom_metadata={"userMetadata": json.dumps({**metadata, "run_id": self.run_id}, sort_keys=True)},
            app_transactions=txns,
            max_commit_retries=DELTA_RETRIES,
        )
        table = self.latest()
        # Forced: replace whatever is there now; only a rival that lands during the commit is settled below.
        outcome = None if self.force else self._decided(table, unit)
        for attempt in range(self.retries + 1):
            if outcome is not None:
                break
            read_at = table.version()
            try:
                self._write(table, actions, filt, props)
                outcome = "committed"
                break
            except CommitFailedError as e:
                table = self.latest()
                if self._landed(table, unit, adds, read_at):
                    log.warning("unit %s: the commit was reported failed but it landed; keeping it", unit.app_id)
                    outcome = "committed"
                    break
                outcome = self._decided(table, unit)
                if outcome is None and attempt == self.retries:
                    raise UnitFailed(f"unit {unit.app_id}: commit to {self.uri} kept conflicting with other runs "
                                     f"after {self.retries + 1} attempt(s); re-run the job") from e
                if outcome is None:
                    delay = min(0.05 * 2**attempt, 5.0) * self._jitter.uniform(0.5, 1.5)
                    log.info("unit %s: commit conflicted (%s); retrying in %.2fs", unit.app_id, e, delay)
                    time.sleep(delay)
            except (OSError, DeltaError):
                # A storage error: the commit may still have landed (a timeout after the write). Ask the log;
                # if the log cannot be read either, the original error goes up and the files stay.
                try:
                    landed = self._landed(self.latest(), unit, adds, read_at)
                except (OSError, DeltaError):
                    landed = False
                if not landed:
                    raise
                outcome = "committed"
                break
        if outcome != "committed":
            discard(self.uri, adds, self.opts)
        return outcome

    def discard_unless_landed(self, unit: Unit, adds: list[dict]) -> None:
        """Drop the files of a unit whose commit failed, unless the log references them or cannot be read
        (then they stay: an unreferenced leftover is invisible, a deleted referenced file breaks the table)."""
        from deltalake.exceptions import DeltaError

        if not adds:
            return
        try:
            table = self.latest()
            landed = self._landed(table, unit, adds, table.version())
        except (OSError, DeltaError) as e:
            log.warning("unit %s: cannot read %s (%s); leaving %d uncommitted file(s) in place", unit.app_id,
                        self.uri, type(e).__name__, len(adds))
            return
        if not landed:
            discard(self.uri, adds, self.opts)

    def _write(self, table, actions, filt, props) -> None:
        table.create_write_transaction(actions, "overwrite", self.schema, self.partition_by, filt,
                                       commit_properties=props)

    def backed(self, table, unit: Unit) -> bool:
        """Whether the table's files back the unit's recorded transaction (always, without a `backing`)."""
        if self.backing is None:
            return True
        if self._evidence is None or self._evidence.version != table.version() or self._evidence.table is not table:
            self._evidence = Evidence(table, self.partition_by, self.backing)
        return self._evidence.backs(unit)

    def _decided(self, table, unit: Unit) -> str | None:
        """What the table's current state says about this unit: already done, superseded, or None (commit it)."""
        if recorded_version(table, unit) == unit.txn_version:
            outcome, newer = "already-done", None
        else:
            newer = None if self.force else superseded(table, unit)
            outcome = None if newer is None else "superseded"
        if outcome is not None and not self.backed(table, unit):
            log.warning("unit %s: its transaction says %s but the partition's files do not hold that (restored to "
                        "an earlier version?); committing it again", unit.app_id, outcome)
            return None
        if outcome == "already-done":
            log.info("unit %s: another run committed the same input; dropping this run's files", unit.app_id)
        elif outcome == "superseded":
            log.warning("unit %s: another run committed it from %s version %d, newer than this run's %d; not "
                        "replaced (--force replaces it)", unit.app_id, unit.input_table, newer, unit.input_version)
        return outcome

    def _landed(self, table, unit: Unit, adds: list[dict], read_at: int) -> bool:
        """Did this run's own commit of `unit` land? Its files are in the table, or (no files) the unit's newest
        commit since `read_at` carries this run's id."""
        if adds:
            mine = {a["path"].rsplit("/", 1)[-1] for a in adds}
            present = {u.rsplit("/", 1)[-1] for u in table.file_uris(file_pruning_predicate=partition_filter(unit, self.partition_by))}
            return mine <= present
        if table.version() <= read_at:
            return False
        for h in table.history(limit=table.version() - read_at):
            try:
                meta = json.loads(h.get("userMetadata") or "{}")
            except ValueError:
                continue
            if meta.get("app_id") == unit.app_id:
                return meta.get("run_id") == self.run_id
        return False


def _rows_written(adds: list[dict]) -> int | None:
    """The rows of a commit's files from their statistics; None when a file has none."""
    total = 0
    for a in adds:
        try:
            total += int(json.loads(a.get("stats") or "{}")["numRecords"])
        except (KeyError, TypeError, ValueError):
            return None
    return total


def discard(uri: str, adds: list[dict], storage_options: dict | None = None) -> None:
    fs, base = filesystem(uri, storage_options)
    for a in adds:
        delete_quietly(fs, f"{base}/{a['path']}" if base else a["path"])
