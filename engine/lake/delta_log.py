"""Which days of an input table changed between two versions, read from the commits in between.

A table's files move for two reasons: new data (appends, deletes, updates, overwrites) and rewrites that keep
the data (compaction, `OPTIMIZE`, Z-ordering), which Delta marks with `dataChange: false` on every add and
remove action. A unit's input fingerprint (the day's file list) moves for both; this module tells them apart,
so a compacted day is not re-scored. It reads only the commit files `_delta_log/<version>.json` of the versions
in between, through the tables' filesystem (local or object store), each at most once, and answers "unknown"
(None) whenever the log cannot say for sure: a commit file expired or missing (a checkpoint-only range), a range
longer than the bound, an unreadable commit. The caller then falls back to the fingerprint.
"""
from __future__ import annotations

import json
import logging

from engine.lake.snapshot import PARTITION, file_path, filesystem

log = logging.getLogger("lakescore")

MAX_COMMITS = 500  # commits read per question at most; a longer range is "unknown" (the fingerprint decides)

_ALL = "*"  # a commit that may have changed every day (a schema or protocol change, an action without its day)


def log_path(base: str, version: int) -> str:
    return file_path(base, f"_delta_log/{version:020d}.json")


class CommitLog:
    """The commit files of one table, read on demand and kept: many units ask about overlapping ranges."""

    def __init__(self, table_uri: str, storage_options: dict | None = None, max_commits: int = MAX_COMMITS):
        self.uri, self.max_commits = table_uri, max_commits
        self._fs, self._base = filesystem(table_uri, storage_options)
        self._changes: dict[int, frozenset[str] | None] = {}

    def changed_days(self, from_version: int, to_version: int, days: list[str]) -> set[str] | None:
        """The days among `days` whose data changed in the commits after `from_version` up to `to_version`.

        A day counts as changed when any add or remove action of its partition in that range changes data
        (`dataChange` true or absent); every day counts as changed after a metadata or protocol action, or an
        action that does not say its day. None: the log cannot tell (see the module's docstring).
        """
        if to_version < from_version or to_version - from_version > self.max_commits:
            return None
        wanted, changed = set(days), set()
        for v in range(from_version + 1, to_version + 1):
            touched = self._commit(v)
            if touched is None:
                return None
            if _ALL in touched:
                return wanted
            changed |= touched & wanted
        return changed

    def _commit(self, version: int) -> frozenset[str] | None:
        if version not in self._changes:
            self._changes[version] = self._read(version)
        return self._changes[version]

    def _read(self, version: int) -> frozenset[str] | None:
        path = log_path(self._base, version)
        try:
            with self._fs.open_input_stream(path) as f:
                text = f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:  # expired, vacuumed away, not yet visible, unreadable
            log.info("%s: commit %d cannot be read (%s); its days count as unknown", self.uri, version,
                     type(e).__name__)
            return None
        try:
            return frozenset(_days_changed(text))
        except (ValueError, AttributeError, TypeError) as e:
            log.warning("%s: commit %d is not a readable Delta commit (%s); its days count as unknown", self.uri,
                        version, e)
            return None


def _days_changed(text: str) -> set[str]:
    touched: set[str] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        if "metaData" in action or "protocol" in action:
            touched.add(_ALL)
        for kind in ("add", "remove"):
            a = action.get(kind)
            if a is None or a.get("dataChange", True) is False:
                continue
            day = (a.get("partitionValues") or {}).get(PARTITION)
            touched.add(_ALL if day is None else str(day))
    return touched


def changed_days(table_uri: str, from_version: int, to_version: int, days: list[str],
                 storage_options: dict | None = None) -> set[str] | None:
    """`CommitLog.changed_days` for one question (a job asking many keeps one `CommitLog`)."""
    return CommitLog(table_uri, storage_options).changed_days(from_version, to_version, days)
