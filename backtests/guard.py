"""Leakage guard: run per fold before training, on the fold's actual training and test tables; fails closed (exit 3).

Checks (times are compared in UTC; a timestamp column without a time zone is read as UTC, a date or ISO-day
string column as the start of its day; a null time counts as a violation, since it cannot be shown safe):

- `train_event_time`: no training row has an event time at or after cutoff − gap (the start of the day after
  the fold's train_end);
- `train_label_known`: no training label has a `label_ts` after the cutoff (the start of the cutoff day):
  that label was not known when the model would have been trained;
- `test_event_time`: no test row has an event time before the cutoff;
- `features_version`: the features version read holds no day on or after the cutoff (`check_version`);
  `features_version_at` finds the version that was current at the cutoff.

Each check returns a verdict dict (`fold, check, column, rows, passed, message`) for the report; `guard_fold`
collects one fold's verdicts and raises `LeakageDetected` (a ContractViolation, exit 3) with the first failure's
one-line message and all the verdicts attached.
"""
from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.compute as pc

from backtests.plan import Fold
from engine.errors import ConfigError, ContractViolation, InputUnavailable, short_list
from engine.lake.snapshot import PARTITION, file_path, filesystem, open_snapshot

CHECKS = ("train_event_time", "train_label_known", "test_event_time", "features_version")


class LeakageDetected(ContractViolation):
    """A fold failed the leakage guard; `verdicts` holds all of that fold's verdicts (passed ones too)."""

    def __init__(self, message: str, verdicts: list[dict]):
        super().__init__(message)
        self.verdicts = verdicts


def day_start(day: str) -> dt.datetime:
    """The start of an ISO day in UTC."""
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)


def _next_day(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%MZ")


def _where(fold: Fold) -> str:
    return f"leakage guard: fold {fold.index} (cutoff {fold.cutoff})"


def _times(table: pa.Table, column: str, role: str) -> pa.ChunkedArray:
    """The column as timestamps or dates; ISO-day strings are cast to dates."""
    if column not in table.column_names:
        raise ConfigError(f"leakage guard: the {role} table has no column {column!r} (columns: "
                          f"{short_list(table.column_names)}); name the time column in the backtest config")
    arr = table.column(column)
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        return arr
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:
            return pc.cast(arr, pa.date32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ConfigError(f"leakage guard: {role} column {column!r} holds strings that are not days (YYYY-MM-DD); "
                              "use a timestamp column") from e
    raise ConfigError(f"leakage guard: {role} column {column!r} has type {arr.type}; the guard needs a timestamp, "
                      "a date or an ISO-day string")


def _count(arr: pa.ChunkedArray, op, moment: dt.datetime) -> int:
    """Rows where `op(value, moment)` holds, plus nulls (fail closed)."""
    if pa.types.is_timestamp(arr.type):
        # Arrow stores timestamps as UTC instants; a zone-less column is read as UTC wall time.
        bound = pa.scalar(moment if arr.type.tz else moment.replace(tzinfo=None), type=arr.type)
    else:  # dates compare as their day's start: the same order as comparing the days
        bound = pa.scalar(moment.date(), type=arr.type)
    hits = pc.sum(op(arr, bound)).as_py() or 0
    return int(hits) + arr.null_count


def _verdict(fold: Fold, check: str, column: str, rows: int, failed: str, passed: str, ok: bool | None = None) -> dict:
    ok = rows == 0 if ok is None else ok
    return {"fold": fold.index, "check": check, "column": column, "rows": rows, "passed": ok,
            "message": f"{_where(fold)}: {passed if ok else failed}"}


def _nulls(arr: pa.ChunkedArray) -> str:
    return f" (of which {arr.null_count} null)" if arr.null_count else ""


def check_train_events(fold: Fold, train: pa.Table, column: str = "event_ts") -> dict:
    """No training row at or after cutoff − gap (the start of the day after train_end)."""
    arr = _times(train, column, "training")
    limit = day_start(_next_day(fold.train_end))
    rows = _count(arr, pc.greater_equal, limit)
    return _verdict(
        fold, "train_event_time", column, rows,
        f"{rows} training row(s) have {column} at or after {_stamp(limit)} (cutoff − gap; training ends on "
        f"{fold.train_end}){_nulls(arr)}; read training rows with {column} < {_stamp(limit)} only",
        f"all {train.num_rows} training row(s) have {column} before {_stamp(limit)}",
    )


def check_train_labels(fold: Fold, train: pa.Table, column: str = "label_ts") -> dict:
    """No training label that became known after the cutoff (the start of the cutoff day)."""
    arr = _times(train, column, "training")
    cutoff = day_start(fold.cutoff)
    rows = _count(arr, pc.greater, cutoff)
    return _verdict(
        fold, "train_label_known", column, rows,
        f"{rows} training label(s) have {column} after the cutoff {_stamp(cutoff)}{_nulls(arr)}: they were not known "
        f"then; join labels as of the cutoff ({column} <= {_stamp(cutoff)}) before training",
        f"all {train.num_rows} training label(s) were known by {_stamp(cutoff)}",
    )


def check_test_events(fold: Fold, test: pa.Table, column: str = "event_ts") -> dict:
    """No test row before the cutoff."""
    arr = _times(test, column, "test")
    cutoff = day_start(fold.cutoff)
    rows = _count(arr, pc.less, cutoff)
    return _verdict(
        fold, "test_event_time", column, rows,
        f"{rows} test row(s) have {column} before the cutoff {_stamp(cutoff)}{_nulls(arr)}; read the test window "
        f"from {fold.test_start} on only",
        f"all {test.num_rows} test row(s) have {column} at or after {_stamp(cutoff)}",
    )


# ----------------------------------------------------------------------------------------- features versions


def _commit_days(fs, base: str, uri: str, version: int, partition: str) -> list[str | None]:
    """The `partition` values of the files that commit `version` added (None for a null partition value).

    Read from the commit's own `_delta_log/<version>.json` add actions: that is exactly what the commit
    wrote, one small file per version, whereas diffing `load_as_version(v)` snapshots replays the log once per
    version, and `history()` carries operation metrics but no partition values.
    """
    path = file_path(base, f"_delta_log/{version:020d}.json")
    try:
        with fs.open_input_stream(path) as f:
            text = f.read().decode()
    except (FileNotFoundError, OSError) as e:
        raise InputUnavailable(
            f"leakage guard: commit {version} of the features table {uri} is gone from _delta_log (log cleaned up "
            "after a checkpoint), so the version current at a cutoff cannot be found; keep the log longer "
            "(delta.logRetentionDuration) or pin the features version per fold"
        ) from e
    days = []
    for line in filter(None, (s.strip() for s in text.splitlines())):
        add = json.loads(line).get("add")
        if add is None:
            continue
        values = add.get("partitionValues") or {}
        if partition not in values:
            raise InputUnavailable(f"leakage guard: the features table {uri} is not partitioned by {partition!r} "
                                   f"(commit {version} adds {add.get('path')!r} without it)")
        days.append(values[partition])
    return days


def features_versions_at(uri: str, cutoffs: list[str], storage_options: dict | None = None,
                         partition: str = PARTITION) -> dict[str, int]:
    """For each cutoff, the Delta version that was current then: the newest version v such that no commit
    0..v added a day on or after the cutoff.

    For a table appended one day per commit this is "the newest version whose commit holds only days before the
    cutoff". Requiring the whole prefix (not only commit v) keeps a late backfill of an old day, committed after
    later days already landed, out of the as-of version: it was written after the cutoff. A null or non-day
    partition value counts as on-or-after every cutoff (fail closed). Commits are read in order and only until
    every cutoff is resolved.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    try:
        latest = DeltaTable(uri, storage_options=storage_options or None).version()
    except (TableNotFoundError, DeltaError) as e:
        raise InputUnavailable(f"leakage guard: the features table at {uri} cannot be opened ({type(e).__name__}); "
                               "check input.features and its storage options") from e
    fs, base = filesystem(uri, storage_options)
    pending = sorted(set(cutoffs))
    found: dict[str, int] = {}
    newest_day, shown = "", ""  # the newest day any commit so far added ("" sorts before every ISO day)
    for version in range(latest + 1):
        for day in _commit_days(fs, base, uri, version, partition):
            valid = isinstance(day, str) and len(day) == 10 and day[4] == "-" and day[7] == "-"
            if (day if valid else "9999-12-31") > newest_day:
                newest_day, shown = (day, day) if valid else ("9999-12-31", f"{day!r} (not a day)")
        while pending and newest_day >= pending[0]:
            cutoff = pending.pop(0)
            if version == 0:
                raise ContractViolation(
                    f"leakage guard: no version of the features table {uri} was current at cutoff {cutoff}: its "
                    f"first commit already holds day {shown}; use cutoffs after the table's first days"
                )
            found[cutoff] = version - 1
        if not pending:
            break
    found.update({c: latest for c in pending})
    return {c: found[c] for c in cutoffs}


def features_version_at(uri: str, cutoff: str, storage_options: dict | None = None, partition: str = PARTITION) -> int:
    """The Delta version current at `cutoff` (see `features_versions_at`)."""
    return features_versions_at(uri, [cutoff], storage_options, partition)[cutoff]


def check_version(fold: Fold, uri: str, version: int, storage_options: dict | None = None) -> dict:
    """The features `version` about to be read must hold no day on or after the fold's cutoff."""
    snap = open_snapshot("features", uri, version, storage_options)
    late = [d for d in snap.partitions if d >= fold.cutoff]
    counts = [snap.rows(d) for d in late]
    known = all(c is not None for c in counts)
    rows = sum(counts) if known else sum(len(snap.files[d]) for d in late)
    unit = "row(s)" if known else "data file(s) (no row counts in the log)"
    span = f"{late[0]}..{late[-1]}" if late else ""
    # A late day fails the check even when its files hold no rows: the version was not current at the cutoff.
    return _verdict(
        fold, "features_version", PARTITION, rows,
        f"features version {snap.version} of {uri} holds {len(late)} day(s) on or after the cutoff ({span}; {rows} "
        f"{unit}); read the version current at the cutoff (features_version_at) instead",
        f"features version {snap.version} holds only days before the cutoff",
        ok=not late,
    )


def guard_fold(fold: Fold, train: pa.Table, test: pa.Table, *, event_col: str = "event_ts",
               label_ts_col: str = "label_ts", test_event_col: str | None = None, features_uri: str | None = None,
               features_version: int | None = None, storage_options: dict | None = None) -> list[dict]:
    """All checks of one fold; raises LeakageDetected (exit 3) naming the first failure, with every verdict."""
    if (features_uri is None) != (features_version is None):
        raise ConfigError("leakage guard: features_uri and features_version go together; pass both or neither")
    verdicts = [
        check_train_events(fold, train, event_col),
        check_train_labels(fold, train, label_ts_col),
        check_test_events(fold, test, test_event_col or event_col),
    ]
    if features_uri is not None:
        verdicts.append(check_version(fold, features_uri, features_version, storage_options))
    failed = [v for v in verdicts if not v["passed"]]
    if failed:
        more = f" (+{len(failed) - 1} more failed: {', '.join(v['check'] for v in failed[1:])})" if failed[1:] else ""
        raise LeakageDetected(failed[0]["message"] + more, verdicts)
    return verdicts
