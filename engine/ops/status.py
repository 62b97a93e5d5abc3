"""What `lakescore status` answers: per day and model version, what is scored, from which input version, and
what needs attention — days not scored, days scored from other input rows than the current snapshot holds
(stale; with a hint where `lakescore forget` already removed the deleted keys), partitions scored under another
config than the model's latest run into that table, and days that failed in the last run.

Everything comes from Delta logs and the run ledger (no data read): partition values, row counts and stamp
statistics from the scores table's add actions, the input version each unit was computed from from its
application transaction, the input's files per day at both versions for the comparison.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pyarrow as pa

from engine.tables import ledger
from engine.lake.commit import Unit, app_id
from engine.lake.paths import table_uri
from engine.config.sections import LakeConfig
from engine.errors import ConfigError
from engine.score.scoring import PARTITION_COLUMNS
from engine.lake.snapshot import Snapshot, open_snapshot


@dataclass
class DayState:
    ds: str
    model_name: str
    model_version: int
    state: str  # ok | stale | gone | unscored | failed
    rows: int | None = None
    input_table: str | None = None
    input_version: int | None = None
    config_hashes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    orphan_rows: int | None = None  # rows whose key left the input day (stale or gone partitions only)


def open_output(lake: LakeConfig, table: str, need: list[str] = PARTITION_COLUMNS):
    """A lakescore output table by name; an unknown table or one without `need` partitions is exit 2."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = table_uri(lake, table)
    try:
        out = DeltaTable(uri, storage_options=lake.storage_options or None)
    except TableNotFoundError:
        raise ConfigError(f"table {table!r} not found at {uri}; pass --table with a table of lake.root "
                          f"{lake.root} (e.g. scores)") from None
    parts = out.metadata().partition_columns
    if parts != need:
        raise ConfigError(f"table {table!r} at {uri} is partitioned by {parts}, not {need}: pass a scores table")
    return out


def _partitions(out) -> dict[tuple, dict]:
    """(ds, model_name, model_version) → rows, input table, input versions, config hashes: from the log only."""
    actions = pa.table(out.get_add_actions(flatten=True)).to_pylist()
    parts: dict[tuple, dict] = {}
    for a in actions:
        key = (str(a["partition.ds"]), str(a["partition.model_name"]), int(a["partition.model_version"]))
        p = parts.setdefault(key, {"rows": 0, "input_table": None, "versions": set(), "hashes": set()})
        p["rows"] += a.get("num_records") or 0
        p["input_table"] = p["input_table"] or a.get("min.input_table")
        p["versions"] |= {v for v in (a.get("min.input_version"), a.get("max.input_version")) if v is not None}
        p["hashes"] |= {v for v in (a.get("min.config_hash"), a.get("max.config_hash")) if v is not None}
    return parts


class _Inputs:
    """Input snapshots by (table, version), opened once each."""

    def __init__(self, lake: LakeConfig):
        self.lake, self.cache = lake, {}

    def get(self, table: str, version: int | str = "latest") -> Snapshot:
        key = (table, version)
        if key not in self.cache:
            self.cache[key] = open_snapshot(table, table_uri(self.lake, table), version, self.lake.storage_options)
        return self.cache[key]


def _latest_runs(lake: LakeConfig, table: str) -> dict[tuple, dict]:
    """The newest score run of each model version in the ledger that wrote `table`: a run into another table (the
    `redo` command of `lakescore explain` writes `<table>_repro`) says nothing about this table's config."""
    uri = table_uri(lake, table)
    newest = {}
    for r in ledger.read(lake, job="score").to_pylist():
        if r["output_table"] is None or table_uri(lake, r["output_table"]) != uri:
            continue
        if r["model_name"] is not None and r["model_version"] is not None:
            newest[(r["model_name"], r["model_version"])] = r  # rows come oldest first
    return newest


def _forgotten(lake: LakeConfig, table: str) -> dict[str, int]:
    """Partition → the input version its deleted keys were checked against by the newest `forget` that removed rows
    from it (ledger; ok runs into `table` only)."""
    uri = table_uri(lake, table)
    done: dict[str, int] = {}
    for r in ledger.read(lake, job="forget").to_pylist():
        if r["status"] != "ok" or not r["inputs"] or not r["output_table"]:
            continue
        if table_uri(lake, r["output_table"]) != uri:
            continue
        for o in r["unit_outcomes"] or []:
            if o["outcome"] == "committed":
                done[o["unit"]] = r["inputs"][0]["version"]
    return done


def table_status(lake: LakeConfig, table: str = "scores", since: str | None = None,
                 day_changed=None, key_columns: list[str] | None = None) -> tuple[list[DayState], dict]:
    """Every (day, model version) of `table` from `since` on, plus the input days each model version has not scored.

    `day_changed(input_uri, ds, old, new, opts) -> bool | None` decides whether a day's rows changed between two
    input versions when its files differ (e.g. a data-change-free compaction); None means "files differ → stale".
    """
    out = open_output(lake, table)
    parts = _partitions(out)
    inputs = _Inputs(lake)
    runs = _latest_runs(lake, table)
    forgotten = _forgotten(lake, table)
    states: list[DayState] = []
    models = sorted({(m, v) for (_d, m, v) in parts})
    input_days: dict[str, list[str]] = {}
    for (d, m, v), p in sorted(parts.items()):
        if since and d < since:
            continue
        s = DayState(d, m, v, "ok", p["rows"], p["input_table"], None, sorted(p["hashes"]))
        unit = Unit(app_id("score", {"ds": d, "model_name": m, "model_version": v}, PARTITION_COLUMNS),
                    {"ds": d, "model_name": m, "model_version": v}, "", p["input_table"] or "")
        rec = out.transaction_version(unit.input_app_id) if p["input_table"] else None
        s.input_version = rec if rec is not None else (max(p["versions"]) if p["versions"] else None)
        if p["input_table"] and s.input_version is not None:
            current = inputs.get(p["input_table"])
            input_days.setdefault(p["input_table"], current.partitions)
            _compare(s, current, inputs, lake, day_changed)
            if s.state == "stale" and forgotten.get(f"ds={d}/model_name={m}/model_version={v}") == current.version:
                s.notes.append(f"lakescore forget already removed the rows of keys deleted by v{current.version}: "
                               "re-scoring is optional (needed only if other rows of the day changed)")
        latest = runs.get((m, v))
        if latest is not None and latest["config_hash"] and p["hashes"] - {latest["config_hash"]}:
            s.notes.append(f"scored under config {','.join(sorted(p['hashes'] - {latest['config_hash']}))}, not "
                           f"{latest['config_hash']} of the latest run ({latest['run_id'][:12]}): --force re-scores")
        states.append(s)
    scored = {(s.ds, s.model_name, s.model_version) for s in states}
    for m, v in models:
        latest = runs.get((m, v))
        tables = {p["input_table"] for (_d, mm, vv), p in parts.items() if (mm, vv) == (m, v) and p["input_table"]}
        days = sorted({d for t in tables for d in input_days.get(t) or inputs.get(t).partitions})
        failed = {o["unit"]: o["message"] for o in (latest or {}).get("unit_outcomes") or [] if o["outcome"] == "failed"}
        for d in days:
            if since and d < since:
                continue
            if (d, m, v) not in scored:
                s = DayState(d, m, v, "failed" if d in failed else "unscored")
                if d in failed:
                    s.notes.append(f"failed in run {latest['run_id'][:12]} ({latest['started_at']:%Y-%m-%d %H:%M}Z): "
                                   f"{failed[d]}")
                states.append(s)
        for s in states:
            if (s.model_name, s.model_version) == (m, v) and s.state != "failed" and s.ds in failed:
                s.notes.append(f"the latest run ({latest['run_id'][:12]}) failed to replace it: {failed[s.ds]}")
    if key_columns:
        _orphans(lake, table, states, key_columns)
    states.sort(key=lambda s: (s.ds, s.model_name, s.model_version))
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    return states, {"table": table, "version": out.version(), "counts": counts}


def _orphans(lake: LakeConfig, table: str, states: list[DayState], key_columns: list[str]) -> None:
    """Note partitions holding rows whose key left the input day (deleted upstream): only a changed or gone input
    day can leave such rows, so only those partitions' keys are read."""
    from engine.ops.forget import orphan_counts

    changed = {(s.ds, s.model_name, s.model_version): s for s in states if s.state in ("stale", "gone")}
    if not changed:
        return
    counts = orphan_counts(lake, table, key_columns, since=min(k[0] for k in changed), only=set(changed))
    for key, n in counts.items():
        s = changed[key]
        s.orphan_rows = n
        s.notes.append(f"holds {n:,} row(s) whose key is no longer in the input day: `lakescore forget --table "
                       f"{table}` removes them now (or re-score this model)")


def _compare(s: DayState, current: Snapshot, inputs: _Inputs, lake: LakeConfig, day_changed) -> None:
    if s.ds not in current.files:
        s.state = "gone"
        s.notes.append(f"input day is gone from {current.where()}: the next score run of this model removes it "
                       "(lakescore forget removes it for every model now)")
        return
    if s.input_version == current.version:
        return
    try:
        then = inputs.get(s.input_table, s.input_version)
    except Exception:  # noqa: BLE001 - an expired or vacuumed version: the comparison cannot be made
        s.state = "stale"
        s.notes.append(f"{s.input_table} v{s.input_version} can no longer be read; re-score to be sure")
        return
    if then.fingerprint(s.ds) == current.fingerprint(s.ds):
        return
    changed = None if day_changed is None else day_changed(current.uri, s.ds, s.input_version, current.version,
                                                            lake.storage_options)
    if changed is False:
        s.notes.append(f"files rewritten since v{s.input_version} without data change (compaction)")
        return
    s.state = "stale"
    s.notes.append(f"{s.input_table} ds={s.ds} changed since v{s.input_version} (now v{current.version})")


def as_dict(s: DayState) -> dict:
    return asdict(s)
