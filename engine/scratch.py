"""A run's scratch space under the lake: files a unit's chunks leave for a second stage on the driver's executor.

`<lake.root>/_scratch/<run_id>/keys/<unit position>/` holds the key hashes a unit of several chunks spills for the
contract's per-bucket uniqueness count (contracts.unique). Shared storage, so any worker reads what another wrote;
removed when the unit's second stage ends, and the run's folder when the run ends.
"""
from __future__ import annotations

import math

import pyarrow.fs as pafs

from engine.snapshot import filesystem
from engine.writer import delete_quietly

ROWS_PER_BUCKET = 8_000_000  # key hashes per second-stage task: 64 MB


def buckets_for(rows: int | None) -> int:
    """Buckets for a unit of `rows` rows: about ROWS_PER_BUCKET hashes in each bucket task."""
    return max(1, math.ceil((rows or 0) / ROWS_PER_BUCKET))


def scratch_dir(lake_root: str, run_id: str, index: int) -> str:
    """Where the chunks of one unit (its position in the run's plan) spill their key hashes."""
    return f"{lake_root.rstrip('/')}/_scratch/{run_id}/keys/{index:06d}"


def unit_scratch(lake_root: str, run_id: str, index: int, planned: list, rows: int | None) -> dict:
    """The UnitWork fields of a unit read in `planned` chunks: a spill folder and bucket count when it has several."""
    if len(planned) < 2:
        return {}
    return {"scratch_uri": scratch_dir(lake_root, run_id, index), "key_buckets": buckets_for(rows)}


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


def remove_scratch(lake_root: str, run_id: str, storage_options: dict) -> None:
    """Remove what the run's chunks spilled and no second stage removed (a unit that failed first), and the local
    `_scratch` folder once it is empty."""
    scratch = f"{lake_root.rstrip('/')}/_scratch"
    remove_folder(f"{scratch}/{run_id}", storage_options)
    fs, base = filesystem(scratch, storage_options)
    if base:
        try:
            if not fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
                fs.delete_dir(base)
        except OSError:
            pass


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

