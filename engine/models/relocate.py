"""Where a project's MLflow artifacts are, after the project folder was moved or copied.

MLflow records absolute artifact locations: each experiment's `artifact_location` (lakescore creates its experiments,
all named `lakescore-*`, at `mlflow.artifact_root`), and under it each run's `artifact_uri`, each logged model's
`artifact_location` and each model version's `storage_location`. A moved project keeps pointing into the old folder:
new runs would write their artifacts there (recreating it) and models would no longer load.

Detection (`require_location`, `check_experiment`): an experiment whose local artifact folder is gone, and the folder
above it too (a moved or renamed project; a folder not created yet under an existing one is a fresh experiment that
logged nothing), is a config error (exit 2) naming the experiment, its stale location and the repair, before the job
writes anything. A location that is mlflow.artifact_root itself is never stale: MLflow creates it.

Repair (`relocate`, `lakescore relocate`): in a local sqlite tracking store, every location under the old root is
rewritten to lie under mlflow.artifact_root instead, in one transaction. It refuses, changing nothing, unless
mlflow.artifact_root exists and holds every run and model folder it would point at: a pointer is only moved to where
the files already are, so it never loses an artifact. A copied project whose original still exists is not stale
(its runs would still write into the original's folder): `lakescore relocate --from <old root>` repairs it too.
MLflow's store schema is used directly (the four columns above): MLflow has no API to move an artifact location.
"""
from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass, field

from engine.errors import ConfigError

PREFIX = "lakescore-"  # lakescore's own experiments: lakescore-demo, -evaluate, -backtest, -contract-reports
# (table, column): every absolute artifact location MLflow's sqlite store keeps.
COLUMNS = [("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"),
           ("model_versions", "storage_location")]


def local_folder(location: str | None) -> str | None:
    """The local folder of an artifact location (file:///x or /x), None for a store such as s3://."""
    if not location:
        return None
    if location.startswith("file://"):
        return location.removeprefix("file://").rstrip("/") or "/"
    if "://" in location or not os.path.isabs(location):
        return None
    return location.rstrip("/") or "/"


def stale(location: str | None, artifact_root: str) -> bool:
    """Whether a recorded location points into a folder that is gone (see the module docstring)."""
    folder = local_folder(location)
    if folder is None or folder == local_folder(artifact_root):
        return False
    return not os.path.exists(folder) and not os.path.exists(os.path.dirname(folder))


def require_location(name: str, location: str | None, artifact_root: str, tracking_uri: str) -> None:
    """ConfigError (exit 2) when experiment `name` records a stale artifact location."""
    if stale(location, artifact_root):
        raise ConfigError(
            f"MLflow experiment {name!r} keeps its artifacts at {location}, which no longer exists (was the project "
            f"moved?); run `lakescore relocate` with this job's config to point {tracking_uri} at mlflow.artifact_root "
            f"{artifact_root} (README: Moving or copying a project), or set mlflow.artifact_root to where they are now")


def check_experiment(mlflow_cfg, name: str) -> None:
    """Before a job that logs to experiment `name` starts (when `mlflow.log_reports`): its recorded artifact location
    is not stale, so the job fails before it writes anything rather than at the end."""
    if not mlflow_cfg.log_reports:
        return
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(mlflow_cfg.tracking_uri).get_experiment_by_name(name)
    if exp is not None:
        require_location(name, exp.artifact_location, mlflow_cfg.artifact_root, mlflow_cfg.tracking_uri)


@dataclass
class Relocation:
    old: str  # the old artifact root (a local folder)
    new: str  # mlflow.artifact_root
    dry_run: bool
    changed: dict[str, int] = field(default_factory=dict)  # "table.column" → locations rewritten


def _sqlite_file(tracking_uri: str) -> str:
    m = re.fullmatch(r"sqlite:///(.+)", tracking_uri)
    if not m or not os.path.isfile("/" + m.group(1).lstrip("/")):
        raise ConfigError(f"lakescore relocate works on a local sqlite tracking store, and mlflow.tracking_uri is "
                          f"{tracking_uri}; a tracking server keeps its own artifact locations")
    return "/" + m.group(1).lstrip("/")


def old_roots(db: sqlite3.Connection, new: str) -> list[str]:
    """The local artifact roots of lakescore's experiments that are not `new`."""
    rows = db.execute("SELECT artifact_location FROM experiments WHERE name LIKE ?", (PREFIX + "%",)).fetchall()
    return sorted({f for (loc,) in rows if (f := local_folder(loc)) is not None and f != new})


def _columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
    have = []
    for table, column in COLUMNS:
        if column in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
            have.append((table, column))
    return have


def _moved(value: str, old: str, new: str) -> str | None:
    for scheme in ("file://", ""):
        prefix = scheme + old
        if value == prefix or value.startswith(prefix + "/"):
            return scheme + new + value[len(prefix):]
    return None


def _require_files(updates: list[tuple[str, str, int, str]], old: str, new: str) -> None:
    """Refuse (ConfigError, nothing changed) unless the files are at `new`: `new` is a folder, every folder that still
    exists under `old` exists under `new` too (a copy), and where `old` is gone, some referenced folder is under `new`
    (not a mistyped root). Runs that logged no artifact have no folder anywhere: they move as they are."""
    folders = [(local_folder(u[3]) or "", old + (local_folder(u[3]) or "")[len(new):]) for u in updates
               if u[0] != "experiments"]
    lost = [there for there, before in folders if os.path.exists(before) and not os.path.exists(there)]
    if not os.path.isdir(new):
        lost.insert(0, new)
    elif folders and not os.path.exists(old) and not any(os.path.exists(there) for there, _ in folders):
        lost.append(folders[0][0])
    if lost:
        raise ConfigError(f"lakescore relocate: {len(lost)} artifact folder(s) of {old} are not under "
                          f"mlflow.artifact_root {new} (e.g. {lost[0]}); nothing changed; copy or move {old} there "
                          "first, or pass --from with the root that moved")


def relocate(tracking_uri: str, artifact_root: str, old: str | None = None, dry_run: bool = False) -> Relocation:
    """Point every artifact location under `old` (default: the one old root of lakescore's experiments) at
    `artifact_root`; see the module docstring for what is checked first."""
    new = local_folder(artifact_root)
    if new is None:
        raise ConfigError(f"mlflow.artifact_root {artifact_root} is not a local folder; lakescore relocate moves local "
                          "artifact locations only")
    db = sqlite3.connect(_sqlite_file(tracking_uri))
    try:
        with db:  # one transaction: every location moves, or none
            return _relocate(db, old, new, dry_run)
    finally:
        db.close()


def _relocate(db: sqlite3.Connection, old: str | None, new: str, dry_run: bool) -> Relocation:
    if old is None:
        roots = old_roots(db, new)
        if not roots:
            return Relocation(new, new, dry_run)
        if len(roots) > 1:
            raise ConfigError(f"lakescore's experiments keep artifacts under {len(roots)} other roots "
                              f"({', '.join(roots)}); pass --from with the one that moved to {new}")
        old = roots[0]
    old = local_folder(old if "://" in old else os.path.abspath(old)) or old.rstrip("/")
    result = Relocation(old, new, dry_run)
    updates = []
    for table, column in _columns(db):
        for rowid, value in db.execute(f"SELECT rowid, {column} FROM {table}").fetchall():
            moved = _moved(value or "", old, new)
            if moved is not None:
                updates.append((table, column, rowid, moved))
    _require_files(updates, old, new)
    for table, column, rowid, moved in updates:
        key = f"{table}.{column}"
        result.changed[key] = result.changed.get(key, 0) + 1
        if not dry_run:
            db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (moved, rowid))
    return result
