"""What `lakescore explain` answers for a scored row: which model (name, version, its MLflow run), which run of
lakescore, which input table and version, which config and code revision made it, the run's ledger entry, and
the command that reproduces it from the same pinned input, and, from the `model_events` table, which version held
the serving alias when the row was scored (the alias the run's config named, else every alias of the model that has
events) and whether it still does.

Rows are found with DataFusion SQL (deltalake's QueryBuilder) over the table's current snapshot, so `--where`
takes any SQL predicate, e.g. "entity_id = 123 AND ds = '2026-01-05'"; partition columns prune files.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import shlex

import pyarrow as pa
import pyarrow.compute as pc

from engine.tables import ledger, model_events
from engine.config.sections import LakeConfig
from engine.errors import ConfigError
from engine.score.scoring import FINGERPRINT, PARTITION_COLUMNS, STAMP_FIELDS
from engine.ops.status import open_output

STAMPS = [f.name for f in STAMP_FIELDS] + [FINGERPRINT.name]
PINNED = ("input.version", "input.ds", "model.uri", "output.table", "output.quarantine_table")


def find_rows(lake: LakeConfig, table: str, where: str, limit: int) -> tuple[pa.Table, int]:
    """Up to `limit` rows of `table` matching the SQL predicate `where`, and how many match in all."""
    from deltalake import QueryBuilder
    from deltalake.exceptions import DeltaError

    out = open_output(lake, table)
    if not where.strip():
        raise ConfigError("--where is empty; give a predicate, e.g. --where \"entity_id = 123 AND ds = '2026-01-05'\"")
    qb = QueryBuilder().register("t", out)
    try:
        total = pa.table(qb.execute(f"SELECT count(*) AS n FROM t WHERE {where}").read_all()).column("n")[0].as_py()
        rows = pa.table(qb.execute(f"SELECT * FROM t WHERE {where} ORDER BY ds, model_name, model_version "
                                   f"LIMIT {int(limit)}").read_all())
    except (DeltaError, Exception) as e:  # noqa: BLE001 - DataFusion raises a bare Exception for a failed cast
        if isinstance(e, (OSError, MemoryError)):  # the lake, not the predicate: not an argument error
            raise
        raise ConfigError(bad_predicate(where, table, e)) from None
    cast = pa.schema([pa.field(f.name, pa.string() if pa.types.is_string_view(f.type) else f.type) for f in rows.schema])
    return rows.cast(cast), total


_UNQUOTED_DATE = re.compile(r"(?<!['\"\w-])(\d{4}-\d{2}-\d{2})(?!['\"\w-])")


def bad_predicate(where: str, table: str, error: Exception) -> str:
    """The one line for a predicate the SQL engine rejects; an unquoted date (`ds = 2026-01-05`, which SQL reads
    as 2026 minus 1 minus 5) gets the quoted form to use instead."""
    first = " ".join(str(error).split())[:300]
    dates = _UNQUOTED_DATE.findall(where)
    if dates:
        quoted = _UNQUOTED_DATE.sub(r"'\1'", where)
        return (f"--where {where!r} on table {table!r}: {', '.join(dates)} is not quoted, so SQL reads it as "
                f"arithmetic; quote dates: --where \"{quoted}\" ({first})")
    return f"--where {where!r} on table {table!r}: {first}"


def ledger_entries(lake: LakeConfig, run_ids: set[str]) -> dict[str, dict]:
    """The score runs' ledger rows by run id (the newest where a run id repeats), from one read of the ledger."""
    runs = ledger.read(lake, job="score")
    found = runs.filter(pc.is_in(runs.column("run_id"), pa.array(sorted(run_ids), pa.string())))
    return {r["run_id"]: r for r in found.to_pylist()}


def reproduce_command(entry: dict | None, row: dict, table: str) -> str:
    """The score command that recomputes `row` from the same input version and model version, into a scratch table
    (`<table>_repro`) so the original stays untouched."""
    args = shlex.split(entry["command"]) if entry and entry.get("command") else ["score", "--config", "conf/score.yaml"]
    keep = [a for a in args[1:] if a != "--force" and a.split("=", 1)[0] not in PINNED]
    pins = [f"input.version={row['input_version']}", f"input.ds={row['ds']}",
            f"model.uri=models:/{row['model_name']}/{row['model_version']}", f"output.table={table}_repro",
            f"output.quarantine_table={table}_repro_quarantine", "--force"]
    return shlex.join(["lakescore", "score", *keep, *pins])


def run_alias(entry: dict | None) -> str | None:
    """The alias the scoring run's config named (`model.uri=models:/NAME@ALIAS`), from its ledger entry."""
    try:
        uri = json.loads(entry["config"])["model"]["uri"] if entry and entry.get("config") else ""
    except (ValueError, KeyError, TypeError):
        return None
    m = re.fullmatch(r"models:/[^/@]+@([^/@]+)", uri or "")
    return m.group(1) if m else None


def alias_holders(lake: LakeConfig, row: dict, entry: dict | None, events) -> list[dict]:
    """For each alias (the run's, else every alias the model has events for): the version that held it when the row
    was scored (`scored_at` against the event timeline), the version that holds it now, and whether it still does."""
    name, scored_at = row.get("model_name"), row.get("scored_at")
    if not name or scored_at is None:
        return []
    mine = events.filter(pc.equal(events.column("model_name"), name)).to_pylist()
    alias = run_alias(entry)
    aliases = [alias] if alias else sorted({e["alias"] for e in mine})
    out = []
    # scored_at is stamped to the second (engine.score.run): an event within that second (the run's own first sight
    # of the alias, recorded before it scored) counts as before the row.
    until = scored_at + dt.timedelta(seconds=1, microseconds=-1) if scored_at.microsecond == 0 else scored_at
    for a in aliases:
        held = model_events.holder_at(lake, name, a, until)
        now = [e for e in mine if e["alias"] == a]
        now_v = now[-1]["to_version"] if now else None
        then_v = None if held is None else held["to_version"]
        out.append({"alias": a, "held_at_scoring": then_v, "since": None if held is None else str(held["at"]),
                    "kind": None if held is None else held["kind"], "holds_now": now_v,
                    "still_holds": None if then_v is None else then_v == now_v,
                    "scored_by_holder": None if then_v is None else then_v == row.get("model_version")})
    return out


def explain(lake: LakeConfig, table: str, where: str, limit: int = 10) -> dict:
    rows, total = find_rows(lake, table, where, limit)
    explained = []
    found = rows.to_pylist()
    entries = ledger_entries(lake, {r["run_id"] for r in found if r.get("run_id")}) if found else {}
    events = model_events.read(lake) if found else None
    for row in found:
        entry = entries.get(row.get("run_id"))
        values = {k: v for k, v in row.items() if k not in STAMPS and k not in PARTITION_COLUMNS}
        explained.append({
            "row": {k: str(v) for k, v in values.items()},
            "partition": {k: row.get(k) for k in PARTITION_COLUMNS},
            "model": f"models:/{row.get('model_name')}/{row.get('model_version')}",
            "model_run_id": row.get("model_run_id"),
            "run_id": row.get("run_id"),
            "input": f"{row.get('input_table')}@v{row.get('input_version')}",
            "config_hash": row.get("config_hash"),
            "scored_at": str(row.get("scored_at")),
            "code": None if entry is None else f"{entry['code_version']} ({entry['code_commit'] or 'no git commit'})",
            "ledger": None if entry is None else {
                k: str(entry[k]) if k.endswith("_at") else entry[k]
                for k in ("run_id", "status", "exit_code", "started_at", "duration_s", "units_committed",
                          "rows_scored", "command", "engine")},
            "reproduce": reproduce_command(entry, row, table),
            "aliases": alias_holders(lake, row, entry, events),
        })
    return {"table": table, "where": where, "matched": total, "shown": len(explained), "rows": explained}
