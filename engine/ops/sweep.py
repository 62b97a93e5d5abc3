"""What `lakescore vacuum` removes besides a table's unreferenced files: dead runs' scratch folders, and drift
references that no run can reuse. Both fail closed: when a run or a reference cannot be shown to be unused, it stays.

Scratch (`<lake.root>/_scratch/<run_id>/`, DESIGN: Tables): a run removes its own folder when it ends; a killed run
leaves it behind. A folder is removed when its run has ended (a final row in the ledger) or was killed (a running
row whose lease expired, no final row). A live running run's folder stays. A folder whose run the ledger does not
know (a job that records no running row, or a ledger that could not be written) stays until what it holds is
ORPHAN_MIN_AGE_HOURS old, the same floor as a table's never-committed files. engine.lake.scratch's own cleanup never
touches another run's folder.

Drift references (`drift_reference`, engine.tables.drift_reference; pruned when `--table drift_reference` is vacuumed): a
reference is reused only by a run whose input snapshot gives its key, i.e. the same input fingerprint over its
days. "No current config uses it" is therefore read conservatively as: its fingerprint matches neither the input
table's current version nor any version that a run pinned inside the retention window or a running run pinned. Any
doubt keeps it: an input table or version that cannot be opened, whatever the reason, keeps every reference of that
table (reported as kept-unsure). A config that names another window of a table reading its current version builds
its own reference; one removed here is rebuilt by the next run that needs it (its stale application transaction is
handled by engine.tables.drift_reference: rows not matching their key are rebuilt).
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from engine.tables import ledger
from engine.lake import scratch as scratch_space
from engine.config.sections import LakeConfig
from engine.errors import InputUnavailable, LakescoreError


@dataclass
class ReferenceSweep:
    removed: list[str] = field(default_factory=list)  # "<table>/<reference_id>"
    kept_unsure: dict[str, str] = field(default_factory=dict)  # input table uri → why its references stay


def sweep_scratch(lake: LakeConfig, dry_run: bool, min_age_hours: int, now: dt.datetime) -> list[str]:
    """Remove (unless `dry_run`) the scratch folders of runs that ended or were killed; the run ids removed."""
    opts = lake.storage_options or {}
    try:
        folders = scratch_space.run_folders(lake.root, opts)
    except OSError as e:
        raise InputUnavailable(f"vacuum: {lake.root}/_scratch cannot be listed ({type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]}); nothing removed from it; check the lake's "
                               "storage") from e
    if not folders:
        return []
    # Listed before the ledger is read: a run creates its folder after its running row, so a folder listed here
    # whose run is live has that row in the read below.
    rows = ledger.read(lake, running=True).select(["run_id", "status"]).to_pylist()
    known = {r["run_id"] for r in rows}  # ended (a final row) or started (a running row)
    live = {r["run_id"] for r in ledger.running_runs(lake, now)}
    floor = now.timestamp() - min_age_hours * 3600
    dead = sorted(run for run, newest in folders.items()
                  if run not in live and (run in known or (newest is not None and newest < floor)))
    if not dry_run:
        for run in dead:
            scratch_space.remove_folder(f"{lake.root.rstrip('/')}/_scratch/{run}", opts)
    return dead


def prune_references(lake: LakeConfig, uri: str, since: dt.datetime, now: dt.datetime, dry_run: bool,
                     run_id: str) -> ReferenceSweep:
    """Remove (unless `dry_run`) the drift references at `uri` that no run can reuse (see the module docstring)."""
    from deltalake import CommitProperties, DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from engine.tables.drift_reference import reference_key
    from engine.lake.snapshot import open_snapshot

    out = ReferenceSweep()
    try:
        table = DeltaTable(uri, storage_options=lake.storage_options or None)
    except TableNotFoundError:
        return out
    refs = {}
    for r in table.to_pyarrow_table(columns=["table", "reference_id", "table_uri", "window", "days", "fingerprint",
                                             "bins", "column"]).to_pylist():
        ref = refs.setdefault((r["table"], r["reference_id"]), dict(r, columns=[]))
        ref["columns"].append(r["column"])
    live: dict[str, list] = {}  # input uri → snapshots of the versions runs may read
    for ref in refs.values():
        src = ref["table_uri"]
        if src in live or src in out.kept_unsure:
            continue
        try:
            current = open_snapshot(ref["table"], src, "latest", lake.storage_options)
            pinned = ledger.pinned_versions(lake, src, since, now)
            live[src] = [current, *(open_snapshot(ref["table"], src, v, lake.storage_options)
                                    for v in sorted(pinned) if v != current.version)]
        except LakescoreError as e:
            out.kept_unsure[src] = str(e)
    for (name, ref_id), ref in sorted(refs.items()):
        snaps = live.get(ref["table_uri"])
        if snaps is None:
            continue
        used = any(reference_key(s, ref["window"], ref["days"], ref["columns"], ref["bins"]).fingerprint
                   == ref["fingerprint"] for s in snaps)
        if not used:
            out.removed.append(f"{name}/{ref_id}")
    if out.removed and not dry_run:
        ids = [r.split("/", 1)[1] for r in out.removed]
        meta = {"job": "vacuum", "run_id": run_id, "removed_references": out.removed}
        table.delete(predicate=f"reference_id IN ({', '.join(repr(i) for i in ids)})",
                     commit_properties=CommitProperties(custom_metadata={"userMetadata": json.dumps(meta)}))
    return out
