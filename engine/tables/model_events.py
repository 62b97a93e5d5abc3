"""The `model_events` Delta table: who served what, when, and why. One row per move of a registry alias.

A row is one event: `model_name`, `alias`, `from_version` (null: the alias had no holder we knew of), `to_version`,
`kind`, `by`, `at` (UTC, microseconds), `why`, `evidence` (a JSON object: for a promotion the evaluate run id, its
MLflow run, the gate verdicts and the report's path), `run_id` (the lakescore run that recorded it), `seq` (how many
events of this model and alias the writer saw before it) and `event_id`. Kinds:
- `promotion`: evaluate moved the alias after its gates passed (engine.evaluation.publish.promote);
- `rollback`: `lakescore rollback` moved it back;
- `promote`: a person moved it with `lakescore promote --why …`;
- `external`: the registry's alias differs from the last recorded event (a move made outside lakescore: the MLflow
  UI, a script), seen at the start of a job that resolves `models:/NAME@ALIAS`, or an alias seen for the first time
  (from null: the history's start). Who and why are unknown: `by` and `why` are null, never guessed.

Partitioned by `model_name`: one model's history (every query here, the notebook's and `lakescore models
--history`) is one partition prune, and the table stays a handful of files per model (events are rare: a few a day
at most). Each event is its own unit of the commit protocol (engine.lake.commit): its data file is written first,
then appended in one commit that carries the application transaction `lakescore/model_events/<model>/<event_id>`.
A retried write of the same event (same `event_id`) finds that transaction and is a no-op, and two writers of one
event conflict at commit, the loser reloads and finds it done. The commit appends (it never overwrites the
partition): events of one model by concurrent writers all land.

`event_id` is a hash of what the event is, so that the same event always gets the same id: for a move lakescore
makes, of its kind, model, alias, from and to versions and the run that made it; for an external move, of the model,
alias, from and to versions and `seq`, with no run id, so that two jobs that notice the same external move at once
write it once. Recording an external move must never fail or slow a job much: `observe_quietly` reads one partition
and, on any error, logs one warning line (as the run ledger does) and lets the job go on.

The alias's holder history (`holders`) replays the events as a stack: a promotion, a person's promote or an external
move puts the new holder on top; a rollback takes the rolled-back holder off and goes down to its target (or puts it
on top when it is not below). The holder under the top is what the next `lakescore rollback` restores; a rollback
therefore walks back through the history and never returns to the version just rolled back. A move whose new
holder is already on top changes nothing: a job that read the registry between a promotion's alias move and the
commit of its event records the move as `external`, and the promotion's own event follows it; both rows are kept (the
history says what each writer saw), and the replay counts the move once.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc

from engine.config.sections import LakeConfig
from engine.lake import commit as protocol
from engine.lake.paths import table_uri
from engine.lake.snapshot import filesystem
from engine.lake.writer import write_files

log = logging.getLogger("lakescore")

TABLE = "model_events"
Kind = Literal["promotion", "rollback", "promote", "external"]
KINDS: tuple[str, ...] = get_args(Kind)
PARTITION_COLUMNS = ["model_name"]
FILE_FIELDS = [
    pa.field("event_id", pa.string()),
    pa.field("alias", pa.string()),
    pa.field("from_version", pa.int64()),
    pa.field("to_version", pa.int64()),
    pa.field("kind", pa.string()),
    pa.field("by", pa.string()),
    pa.field("at", pa.timestamp("us", tz="UTC")),
    pa.field("why", pa.string()),
    pa.field("evidence", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("seq", pa.int64()),
]
FILE_SCHEMA = pa.schema(FILE_FIELDS)
TABLE_SCHEMA = pa.schema([*FILE_FIELDS, pa.field("model_name", pa.string())])
# Called by `record` after the event's file is written and before its commit (tests write the same event there).
before_commit = None


@dataclass(frozen=True)
class Event:
    model_name: str
    alias: str
    from_version: int | None
    to_version: int
    kind: Kind
    run_id: str
    by: str | None = None
    why: str | None = None
    evidence: dict = field(default_factory=dict)
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    seq: int = 0

    @property
    def event_id(self) -> str:
        who = "" if self.kind == "external" else self.run_id
        key = [self.kind, self.model_name, self.alias, self.from_version, self.to_version, who]
        if self.kind == "external":
            key.append(self.seq)
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]

    def row(self) -> dict:
        return {"event_id": self.event_id, "alias": self.alias, "from_version": self.from_version,
                "to_version": self.to_version, "kind": self.kind, "by": self.by,
                "at": self.at.astimezone(dt.timezone.utc), "why": self.why,
                "evidence": json.dumps(self.evidence, sort_keys=True, default=str), "run_id": self.run_id,
                "seq": self.seq}


def events_uri(lake: LakeConfig) -> str:
    return table_uri(lake, TABLE)


class _Appender(protocol.Committer):
    """The commit protocol with an append instead of a partition overwrite: a unit is one event, not a partition."""

    def _write(self, table, actions, filt, props) -> None:
        table.create_write_transaction(actions, "append", self.schema, self.partition_by, None,
                                       commit_properties=props)


def unit(event: Event) -> protocol.Unit:
    values = {"model_name": event.model_name, "event_id": event.event_id}
    return protocol.Unit(protocol.app_id(TABLE, values, ["model_name", "event_id"]),
                         {"model_name": event.model_name}, hashlib.sha256(event.event_id.encode()).hexdigest())


def record(lake: LakeConfig, event: Event) -> str:
    """Commit one event: "committed", or "already-done" when the same event is in the table already."""
    if event.kind not in KINDS:
        raise ValueError(f"unknown event kind {event.kind!r}")
    uri, opts = events_uri(lake), lake.storage_options or None
    protocol.open_or_create(uri, TABLE_SCHEMA, PARTITION_COLUMNS, opts)
    u = unit(event)
    batch = pa.RecordBatch.from_pylist([event.row()], schema=FILE_SCHEMA)
    fs, base = filesystem(uri, opts)
    # One file name per write: a retried write of the same event must never overwrite (and then drop) the file that
    # landed.
    adds = write_files(fs, base, f"model_name={event.model_name}", FILE_SCHEMA, u.partition_values, batch,
                       f"part-{event.event_id[:12]}-{uuid.uuid4().hex[:12]}")
    if before_commit is not None:
        before_commit()
    committer = _Appender(uri, TABLE_SCHEMA, PARTITION_COLUMNS, event.run_id, storage_options=opts)
    meta = {"app_id": u.app_id, "job": TABLE, "model_name": event.model_name, "alias": event.alias,
            "kind": event.kind, "from_version": event.from_version, "to_version": event.to_version}
    return committer.commit(u, adds, meta)


def read(lake: LakeConfig, name: str | None = None, alias: str | None = None) -> pa.Table:
    """The events (of one model, and alias), oldest first; empty when the table does not exist yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(events_uri(lake), storage_options=lake.storage_options or None)
    except TableNotFoundError:
        return TABLE_SCHEMA.empty_table()
    data = table.to_pyarrow_table(filters=[("model_name", "=", name)] if name else None)
    if alias is not None:
        data = data.filter(pc.equal(data.column("alias"), alias))
    return data.select(TABLE_SCHEMA.names).sort_by([("at", "ascending"), ("seq", "ascending")])


def holder_at(lake: LakeConfig, name: str, alias: str, at: dt.datetime) -> dict | None:
    """The event that put the alias's holder at time `at` in place (its `to_version`), or None: one SQL query."""
    from deltalake import DeltaTable, QueryBuilder
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(events_uri(lake), storage_options=lake.storage_options or None)
    except TableNotFoundError:
        return None
    when = at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sql = (f"SELECT * FROM model_events WHERE model_name = {_quote(name)} AND alias = {_quote(alias)} "
           f"AND at <= TIMESTAMP '{when}' ORDER BY at DESC, seq DESC LIMIT 1")
    rows = pa.table(QueryBuilder().register("model_events", table).execute(sql).read_all()).to_pylist()
    return rows[0] if rows else None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def holders(events: list[dict], start: list[int] | None = None) -> list[int]:
    """The alias's holder stack after `events` (oldest first), replayed on `start` (default empty): the current
    holder last (module docstring)."""
    stack: list[int] = list(start or [])
    for e in events:
        frm, to = e["from_version"], int(e["to_version"])
        if e["kind"] == "rollback":
            if stack and stack[-1] == frm:
                stack.pop()
            if to in stack:
                del stack[len(stack) - stack[::-1].index(to):]
            else:
                stack.append(to)
        elif not stack or stack[-1] != to:  # a move to the holder on top is one already seen (see below): skipped
            if frm is not None and (not stack or stack[-1] != frm):
                stack.append(int(frm))
            stack.append(to)
    return stack


def observe(lake: LakeConfig, name: str, alias: str, version: int, run_id: str) -> Event | None:
    """Record an `external` event when the registry's `version` for `name@alias` is not the last recorded holder (or
    no event of that alias exists yet); returns the event recorded, or None when the table already agrees."""
    past = read(lake, name, alias)
    last = past.slice(past.num_rows - 1).to_pylist()[0] if past.num_rows else None
    if last is not None and last["to_version"] == version:
        return None
    event = Event(model_name=name, alias=alias, from_version=None if last is None else last["to_version"],
                  to_version=int(version), kind="external", run_id=run_id, seq=past.num_rows,
                  evidence={"seen_by_run": run_id, "note": "the registry's alias differs from the last recorded "
                            "event; who moved it and why are unknown"})
    record(lake, event)
    log.warning("model_events: %s@%s names version %s but the last recorded holder is %s; recorded an external move "
                "(who and why unknown)", name, alias, version,
                "none (first sight)" if last is None else f"version {last['to_version']}")
    return event


def observe_quietly(lake: LakeConfig, ref, run_id: str) -> None:
    """`observe` for a job's resolved model reference (a `ModelRef` with its alias); never fails the job."""
    if not getattr(ref, "alias", None):
        return
    try:
        observe(lake, ref.name, ref.alias, ref.version, run_id)
    except Exception as e:  # noqa: BLE001 - the event log must not turn a job into a failed one (like the ledger)
        log.warning("model_events not written to %s: %s: %s", events_uri(lake), type(e).__name__,
                    str(e).splitlines()[0][:200] if str(e) else "")
