"""`lakescore vacuum`: remove a table's files that no version worth reading still needs.

Kept, whatever their age: the files of the current version, of every version that a run in the ledger pinned
as its input when that run started inside the retention window, so reproducing a recent run keeps working, and of
every version a running run pinned (its running row, engine.tables.ledger: written once it pinned them, before it reads;
a backtest's per-fold features versions among them). The window counts whole UTC days, today included:
`--retain-days 0` still keeps what today's runs pinned. A window that starts after a running run started is
refused (exit 2, naming the run) unless `--force`: the run may read versions it had no reason to record yet;
forced, its recorded pins stay protected all the same.

A pinned version loses its protection only when its log has expired (the commits it is built from are gone from
`_delta_log`): it is then listed as unreadable. Any other failure to load it (a storage timeout, a permission, a
corrupt log file) stops the vacuum before anything is removed (exit 5): that version may be readable a moment
later, and guessing otherwise would delete the files of a version someone still reads.

Removed: files that the log tombstoned more than N days ago (delta-rs' "lite" vacuum, with the kept versions passed
as `keep_versions`, verified to keep those versions readable), and files that no version ever referenced (a crashed
writer's leftovers, delta-rs' "full" vacuum) once they are at least a week old. That floor is there because a job
writing to the table right now has files that look exactly like leftovers until it commits: deleting them would
leave its commit pointing at missing files. Before deleting, the candidates are checked against the kept versions'
files read from their logs; any overlap stops the vacuum (exit 1) rather than trusting `keep_versions` blindly.

Also removed (engine.ops.sweep): the `_scratch` folders of runs that ended or were killed, and, when the table is
`drift_reference`, the references no run can reuse.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from engine.tables import ledger
from engine.lake.paths import table_uri
from engine.config.sections import LakeConfig
from engine.tables.drift_reference import TABLE
from engine.errors import ConfigError, InputUnavailable, UnitFailed, short_list
from engine.lake.snapshot import file_path, filesystem
from engine.ops.sweep import ReferenceSweep, prune_references, sweep_scratch

ORPHAN_MIN_AGE_HOURS = 7 * 24  # never-committed files younger than this may belong to a job still writing


@dataclass
class Kept:
    version: int
    why: str  # "current" | "pinned"
    run_ids: list[str] = field(default_factory=list)


@dataclass
class VacuumResult:
    table: str
    uri: str
    version: int  # the table's version before the vacuum
    retain_days: int
    dry_run: bool
    files: list[str]  # removed (or, dry run, to be removed), relative to the table root
    bytes: int | None
    kept: list[Kept]
    unreadable_pins: dict[int, list[str]]  # pinned versions already unreadable before this vacuum: version → runs
    scratch_removed: list[str] = field(default_factory=list)  # run ids whose `_scratch` folder went (engine.ops.sweep)
    references: ReferenceSweep = field(default_factory=ReferenceSweep)  # drift references pruned (engine.ops.sweep)


def window_start(retain_days: int, now: dt.datetime | None = None) -> dt.datetime:
    """The start of the UTC day `retain_days` days before today."""
    now = now or dt.datetime.now(dt.timezone.utc)
    day = now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=retain_days)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def _open(lake: LakeConfig, table: str):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = table_uri(lake, table)
    try:
        return uri, DeltaTable(uri, storage_options=lake.storage_options or None)
    except TableNotFoundError:
        raise ConfigError(f"table {table!r} not found at {uri}; pass --table with a table of lake.root {lake.root} "
                          "(e.g. scores, features, runs)") from None


def _files_of(table: str, uri: str, version: int, opts: dict | None) -> set[str] | None:
    """The data files of `version` (relative paths as in the log), or None when its log has expired.

    Only an expired log drops a pin (`_log_reaches` says the commits that version needs are gone). Any other
    failure to load a pinned version (a storage timeout, a permission, a corrupt file) is InputUnavailable: the
    vacuum stops before removing anything, since the version may be perfectly readable a moment later."""
    import pyarrow as pa
    import deltalake
    from deltalake.exceptions import DeltaError

    try:
        t = deltalake.DeltaTable(uri, version=version, storage_options=opts)
        return set(pa.table(t.get_add_actions(flatten=False)).column("path").to_pylist())
    except (DeltaError, OSError) as e:
        cause = e
    try:
        if not _log_reaches(uri, version, opts):
            return None
    except OSError as e:
        cause = e
    raise InputUnavailable(
        f"vacuum of {table}: pinned version {version} cannot be loaded ({type(cause).__name__}: "
        f"{' '.join(str(cause).split())[:200]}) although its log has not expired; nothing removed; retry once the "
        f"storage answers, or repair {uri}/_delta_log") from cause


def _log_reaches(uri: str, version: int, opts: dict | None) -> bool:
    """Whether `_delta_log` still holds what `version` is built from: the newest checkpoint at or before it (or
    commit 0) and every commit after that checkpoint up to `version`. OSError when the log cannot be listed."""
    import pyarrow.fs as pafs

    fs, base = filesystem(uri, opts)
    commits, checkpoints = set(), set()
    for info in fs.get_file_info(pafs.FileSelector(file_path(base, "_delta_log"))):
        stem, _, rest = info.base_name.partition(".")
        if not (len(stem) == 20 and stem.isdigit()):
            continue
        if rest == "json":
            commits.add(int(stem))
        elif rest.startswith("checkpoint."):
            checkpoints.add(int(stem))
    start = max((c for c in checkpoints if c <= version), default=-1)
    return all(v in commits for v in range(start + 1, version + 1))


def _present(uri: str, files: list[str], opts: dict | None) -> dict[str, int | None]:
    """The files of `files` that storage still holds, with their sizes (None where the store gives none).

    delta-rs lists a tombstoned file again on every vacuum, even once it is deleted: only present files count."""
    if not files:
        return {}
    import pyarrow.fs as pafs

    fs, base = filesystem(uri, opts)
    infos = fs.get_file_info([file_path(base, f) for f in files])
    return {f: i.size for f, i in zip(files, infos) if i.type != pafs.FileType.NotFound}


def check_running(lake: LakeConfig, retain_days: int, force: bool, now: dt.datetime | None = None) -> list[dict]:
    """The live running runs (ledger.running_runs); a ConfigError (exit 2) naming the oldest when it started before
    the retention window, unless `force`: the window must cover every running run, whatever table it reads."""
    now = now or dt.datetime.now(dt.timezone.utc)
    live = ledger.running_runs(lake, now)
    start = window_start(retain_days, now)
    early = [r for r in live if r["started_at"] < start]
    if early and not force:
        r = min(early, key=lambda x: x["started_at"])
        need = (now.astimezone(dt.timezone.utc).date() - r["started_at"].astimezone(dt.timezone.utc).date()).days
        raise ConfigError(
            f"run {r['run_id']} ({r['job']}, started {r['started_at']:%Y-%m-%d %H:%M} UTC, lease until "
            f"{r['lease_until']:%Y-%m-%d %H:%M} UTC) is still running and started before the {retain_days}-day "
            f"retention window; pass --retain-days {need} or more, or --force if that run is known to be dead "
            "(its pinned versions stay protected either way)")
    return live


def vacuum(lake: LakeConfig, table: str, retain_days: int, dry_run: bool, run_id: str,
           now: dt.datetime | None = None, force: bool = False) -> VacuumResult:
    """Plan (and unless `dry_run`, run) the vacuum of `table`; see the module docstring for what stays."""
    if retain_days < 0:
        raise ConfigError(f"--retain-days {retain_days} is negative; pass 0 or more days")
    opts = lake.storage_options or None
    uri, t = _open(lake, table)
    now = now or dt.datetime.now(dt.timezone.utc)
    check_running(lake, retain_days, force, now)
    references = ReferenceSweep()
    if table == TABLE:  # references no run can reuse go first: their files then go like any removed file
        references = prune_references(lake, uri, window_start(retain_days, now), now, dry_run, run_id)
        t = _open(lake, table)[1]
    current = t.version()
    pins = ledger.pinned_versions(lake, uri, window_start(retain_days, now), now)
    keep = {current: Kept(current, "current")}
    unreadable: dict[int, list[str]] = {}
    protected: set[str] = set()
    for v in sorted({current, *pins}):
        files = _files_of(table, uri, v, opts) if v <= current else None
        if files is None:
            unreadable[v] = sorted(set(pins.get(v, [])))
            continue
        protected |= files
        if v != current:
            keep[v] = Kept(v, "pinned", sorted(set(pins[v])))
        else:
            keep[v].run_ids = sorted(set(pins.get(v, [])))
    versions = sorted(keep)
    hours = retain_days * 24
    passes = [(hours, False), (max(hours, ORPHAN_MIN_AGE_HOURS), True)]  # (retention, full)

    def run(dry: bool, which: list[tuple[int, bool]]) -> dict[tuple[int, bool], list[str]]:
        found = {}
        for retention, full in which:
            props = None
            if not dry:
                from deltalake import CommitProperties

                meta = {"job": "vacuum", "run_id": run_id, "retain_days": retain_days, "keep_versions": versions}
                props = CommitProperties(custom_metadata={"userMetadata": json.dumps(meta, sort_keys=True)})
            found[(retention, full)] = [f.removeprefix(uri.rstrip("/") + "/") for f in t.vacuum(
                retention_hours=retention, dry_run=dry, enforce_retention_duration=False, full=full,
                keep_versions=versions, commit_properties=props)]
        return found

    per_pass = run(True, passes)
    found = _present(uri, sorted({f for fs in per_pass.values() for f in fs}), opts)
    planned = sorted(found)
    clash = protected.intersection(planned)
    if clash:
        raise UnitFailed(f"vacuum of {table} would remove {len(clash)} file(s) of kept versions {versions} "
                         f"({short_list(sorted(clash))}); nothing removed; this is a bug, please report it")
    size = None if any(v is None for v in found.values()) else sum(found.values())
    removed = planned
    if not dry_run and planned:  # only the passes that found something commit (VACUUM START/END in the log)
        done = run(False, [p for p in passes if set(per_pass[p]) & found.keys()])
        listed = {f for fs in done.values() for f in fs}
        removed = sorted(listed & found.keys())
    scratch = sweep_scratch(lake, dry_run, ORPHAN_MIN_AGE_HOURS, now)
    return VacuumResult(table, uri, current, retain_days, dry_run, removed, size, sorted(keep.values(),
                        key=lambda k: -k.version), unreadable, scratch, references)


def render(r: VacuumResult) -> str:
    verb = "would remove" if r.dry_run else "removed"
    size = "" if r.bytes is None else f", {_human(r.bytes)}"
    lines = [f"vacuum {r.table} (v{r.version}, retain {r.retain_days} day(s){', dry run' if r.dry_run else ''}): "
             f"{verb} {len(r.files)} file(s){size}"]
    lines.append("kept versions:")
    for k in r.kept:
        why = "current version" if k.why == "current" else "pinned as input"
        runs = f" by run(s) {', '.join(x[:12] for x in k.run_ids)}" if k.run_ids else ""
        lines.append(f"  v{k.version}  {why}{runs}")
    lines.append(f"  and every file removed from the log less than {r.retain_days} day(s) ago (retention), and "
                 f"never-committed files younger than {ORPHAN_MIN_AGE_HOURS // 24} days (a writer may still "
                 "commit them)")
    for v, runs in sorted(r.unreadable_pins.items()):
        lines.append(f"  v{v}  pinned by run(s) {', '.join(x[:12] for x in runs)} but already unreadable")
    if r.dry_run and r.files:
        lines.append(f"{verb}:")
        lines += [f"  {f}" for f in r.files]
    if r.scratch_removed:
        lines.append(f"{verb} the _scratch folders of {len(r.scratch_removed)} run(s) no longer running: "
                     f"{', '.join(x[:12] for x in r.scratch_removed)}")
    if r.references.removed:
        lines.append(f"{verb} {len(r.references.removed)} drift reference(s) no run can reuse: "
                     f"{', '.join(r.references.removed)}")
    for src, why in sorted(r.references.kept_unsure.items()):
        lines.append(f"  kept every drift reference of {src}: cannot tell whether a run reuses them ({why})")
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
