"""A run's scratch space under the lake: files a unit's chunks leave for a second stage on the driver's executor.

`<lake.root>/_scratch/<run_id>/keys/<unit position>/` holds the key hashes a unit of several chunks spills for the
contract's per-bucket uniqueness count (contracts.unique). Shared storage, so any worker reads what another wrote;
removed when the unit's second stage ends, and the run's folder when the run ends.

`_scratch` itself is shared by every run on the lake. A run's cleanup removes only its own folder recursively; the
shared folder it removes with `os.rmdir`, which the file system refuses while anything is inside. A listing ("empty")
followed by a recursive delete would take the spills of a run that created its folder in between, and that run's
day would fail its uniqueness check. We chose the atomic non-recursive removal over leaving the folder: the lake
is left as it was found when no other run is active, and a run that is active keeps its folder. On an object store
there are no folders, only the run's own files, which `remove_folder` deletes.
"""
from __future__ import annotations

import math
import os
import secrets
from typing import Callable

import pyarrow.fs as pafs

from engine.lake.snapshot import filesystem
from engine.lake.writer import delete_quietly

ROWS_PER_BUCKET = 8_000_000  # key hashes per second-stage task: 64 MB


def buckets_for(rows: int | None) -> int:
    """Buckets for a unit of `rows` rows: about ROWS_PER_BUCKET hashes in each bucket task."""
    return max(1, math.ceil((rows or 0) / ROWS_PER_BUCKET))


def scratch_dir(lake_root: str, run_id: str, index: int) -> str:
    """Where the chunks of one unit (its position in the run's plan) spill their key hashes."""
    return f"{lake_root.rstrip('/')}/_scratch/{run_id}/keys/{index:06d}"


def unit_scratch(lake_root: str, run_id: str, index: int, planned: list, rows: int | None) -> dict:
    """The UnitWork fields of a unit read in `planned` chunks: a spill folder, bucket count and the random key its
    chunks encrypt their spilled key hashes under (contracts.unique), when it has several."""
    if len(planned) < 2:
        return {}
    return {"scratch_uri": scratch_dir(lake_root, run_id, index), "key_buckets": buckets_for(rows),
            "key_salt": secrets.token_bytes(16)}


def remove_folder(uri: str, storage_options: dict) -> None:
    """Delete a scratch folder and what it holds, on a local disk or an object store (which has no folders to
    remove, only the files under the prefix); best effort: a leftover is never read again."""
    fs, base = filesystem(uri, storage_options)
    try:
        if base:
            fs.delete_dir(base)
            return
        for info in fs.get_file_info(pafs.FileSelector("", allow_not_found=True, recursive=True)):
            if info.type == pafs.FileType.File:
                delete_quietly(fs, info.path)
    except OSError:
        pass


def remove_scratch(lake_root: str, run_id: str, storage_options: dict,
                   before_root_removal: Callable[[], None] | None = None) -> None:
    """Remove what the run's chunks spilled and no second stage removed (a unit that failed first), and the local
    `_scratch` folder once it is empty. `before_root_removal()` runs just before that folder is removed (tests hold
    another run's spill there)."""
    scratch = f"{lake_root.rstrip('/')}/_scratch"
    remove_folder(f"{scratch}/{run_id}", storage_options)
    _fs, base = filesystem(scratch, storage_options)
    if base:  # a local disk (an object store has no folder to remove)
        if before_root_removal is not None:
            before_root_removal()
        try:
            os.rmdir(base)  # only while empty, checked atomically: never a recursive delete of other runs' folders
        except OSError:
            pass  # not empty (another run is spilling) or already gone: left to the last run out


def run_folders(lake_root: str, storage_options: dict) -> dict[str, float | None]:
    """The run ids that have a folder under `<lake.root>/_scratch`, each with the newest modification time of what it
    holds (seconds since the epoch; None when the store gives none or the folder is empty)."""
    scratch = f"{lake_root.rstrip('/')}/_scratch"
    fs, base = filesystem(scratch, storage_options)
    found: dict[str, float | None] = {}
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True)):
        run = info.path[len(base):].lstrip("/").split("/", 1)[0] if base else info.path.split("/", 1)[0]
        if not run:
            continue
        found.setdefault(run, None)
        if info.type == pafs.FileType.File and info.mtime is not None:
            t = info.mtime.timestamp()
            found[run] = t if found[run] is None else max(found[run], t)
    return found

