"""Leakage guard: planted leaks of each kind fire with the fold, column and row count; a clean fold passes."""
from __future__ import annotations

import datetime as dt
import os

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from backtests.guard import (
    LeakageDetected,
    check_test_events,
    check_train_events,
    check_train_labels,
    check_version,
    features_version_at,
    features_versions_at,
    guard_fold,
)
from backtests.plan import FoldSpec, plan_folds
from engine.demo.data import days, make_day
from engine.errors import ContractViolation, InputUnavailable

UTC = dt.timezone.utc
START = "2024-01-01"
# One fold: train 01-01..01-09, gap 01-10..01-11, test 01-12..01-14 (cutoff 2024-01-12).
FOLD = plan_folds(FoldSpec(window="expanding", train_days=5, horizon_days=3, gap_days=2, start=START,
                           end="2024-01-20", cutoffs=("2024-01-12",)))[0]
SECOND = plan_folds(FoldSpec(window="rolling", train_days=3, horizon_days=1, gap_days=0, start=START,
                             end="2024-01-20", cutoffs=("2024-01-04", "2024-01-06")))[1]


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def tables(extra_train: list[tuple[str, str]] = (), extra_test: list[str] = ()) -> tuple[pa.Table, pa.Table]:
    """Clean train/test rows of FOLD plus planted (event_ts, label_ts) training rows and test event times."""
    train = [(f"2024-01-0{d}T{h:02d}:00", f"2024-01-0{d + 1}T{h:02d}:00") for d in range(1, 9) for h in (0, 12)]
    train += [("2024-01-09T23:59:59.999999", "2024-01-12T00:00")]  # last instant of train_end, label known at cutoff
    train += list(extra_train)
    test = [f"2024-01-{d}T{h:02d}:00" for d in (12, 13, 14) for h in (0, 23)] + list(extra_test)
    t = pa.table({"event_ts": pa.array([ts(e) for e, _ in train], pa.timestamp("us", tz="UTC")),
                  "label_ts": pa.array([ts(lab) for _, lab in train], pa.timestamp("us", tz="UTC")),
                  "label": pa.array([1] * len(train))})
    s = pa.table({"event_ts": pa.array([ts(e) for e in test], pa.timestamp("us", tz="UTC"))})
    return t, s


def test_a_clean_fold_passes_every_check():
    train, test = tables()
    verdicts = guard_fold(FOLD, train, test)
    assert [(v["fold"], v["check"], v["column"], v["rows"], v["passed"]) for v in verdicts] == [
        (0, "train_event_time", "event_ts", 0, True),
        (0, "train_label_known", "label_ts", 0, True),
        (0, "test_event_time", "event_ts", 0, True),
    ]


def test_training_rows_at_or_after_cutoff_minus_gap_fire():
    train, test = tables(extra_train=[("2024-01-10T00:00", "2024-01-10T00:00"), ("2024-01-11T13:00", "2024-01-11T13:00")])
    expected = int((train.to_pandas()["event_ts"] >= pd.Timestamp("2024-01-10", tz="UTC")).sum())
    with pytest.raises(LeakageDetected) as e:
        guard_fold(FOLD, train, test)
    assert e.value.exit_code == 3 and isinstance(e.value, ContractViolation) and expected == 2
    msg = str(e.value)
    assert msg.startswith("leakage guard: fold 0 (cutoff 2024-01-12): 2 training row(s) have event_ts at or after "
                          "2024-01-10T00:00Z") and "\n" not in msg
    bad = [v for v in e.value.verdicts if not v["passed"]]
    assert [(v["check"], v["column"], v["rows"]) for v in bad] == [("train_event_time", "event_ts", 2)]


def test_training_labels_not_known_at_the_cutoff_fire():
    late = [("2024-01-05T00:00", "2024-01-12T00:00:01"), ("2024-01-02T00:00", "2024-01-20T00:00"),
            ("2024-01-09T00:00", "2024-01-13T00:00")]
    train, test = tables(extra_train=late)
    expected = int((train.to_pandas()["label_ts"] > pd.Timestamp("2024-01-12", tz="UTC")).sum())
    with pytest.raises(LeakageDetected, match=r"fold 0 \(cutoff 2024-01-12\): 3 training label\(s\) have label_ts "
                                              r"after the cutoff 2024-01-12T00:00Z") as e:
        guard_fold(FOLD, train, test)
    assert expected == 3
    assert [(v["check"], v["rows"]) for v in e.value.verdicts if not v["passed"]] == [("train_label_known", 3)]


def test_test_rows_before_the_cutoff_fire():
    train, test = tables(extra_test=["2024-01-11T23:00", "2024-01-11T23:59:59", "2024-01-01T00:00", "2023-12-31T00:00"])
    with pytest.raises(LeakageDetected, match=r"fold 0 \(cutoff 2024-01-12\): 4 test row\(s\) have event_ts before"):
        guard_fold(FOLD, train, test)
    assert check_test_events(FOLD, test)["rows"] == int(
        (test.to_pandas()["event_ts"] < pd.Timestamp("2024-01-12", tz="UTC")).sum()) == 4


def test_every_failure_is_collected_before_the_fold_is_stopped():
    train, test = tables(extra_train=[("2024-01-11T00:00", "2024-01-11T00:00"), ("2024-01-03T00:00", "2024-02-01T00:00")],
                         extra_test=["2024-01-10T00:00"])
    with pytest.raises(LeakageDetected) as e:
        guard_fold(FOLD, train, test)
    assert str(e.value).endswith("(+2 more failed: train_label_known, test_event_time)")
    assert [(v["check"], v["rows"], v["passed"]) for v in e.value.verdicts] == [
        ("train_event_time", 1, False), ("train_label_known", 1, False), ("test_event_time", 1, False)]


def test_null_times_fail_closed():
    train = pa.table({"event_ts": pa.array([ts("2024-01-02T00:00"), None], pa.timestamp("us", tz="UTC")),
                      "label_ts": pa.array([None, ts("2024-01-03T00:00")], pa.timestamp("us", tz="UTC"))})
    assert check_train_events(FOLD, train)["rows"] == 1
    v = check_train_labels(FOLD, train)
    assert (v["rows"], v["passed"]) == (1, False) and "of which 1 null" in v["message"]


def test_other_time_types_compare_in_utc():
    # 20:00 in New York on train_end is 01:00 UTC the next day (the gap): a leak, whatever the column's zone.
    ny = pa.array([pd.Timestamp("2024-01-09T20:00", tz="America/New_York"),
                   pd.Timestamp("2024-01-09T18:00", tz="America/New_York")], pa.timestamp("ns", tz="America/New_York"))
    assert check_train_events(FOLD, pa.table({"t": ny}), "t")["rows"] == 1
    naive = pa.array([dt.datetime(2024, 1, 10), dt.datetime(2024, 1, 9, 23)], pa.timestamp("ms"))  # read as UTC
    assert check_train_events(FOLD, pa.table({"t": naive}), "t")["rows"] == 1
    ds = pa.array(["2024-01-09", "2024-01-10", "2024-01-11", "2024-01-12"])
    assert check_train_events(FOLD, pa.table({"ds": ds}), "ds")["rows"] == 3
    assert check_test_events(FOLD, pa.table({"ds": ds.cast(pa.date32())}), "ds")["rows"] == 3
    assert check_train_labels(FOLD, pa.table({"ds": ds}), "ds")["rows"] == 0  # a day's start is not after the cutoff


def test_missing_or_unusable_columns_are_config_errors():
    with pytest.raises(Exception, match="has no column 'evt'") as e:
        check_train_events(FOLD, pa.table({"event_ts": pa.array([1])}), "evt")
    assert e.value.exit_code == 2
    with pytest.raises(Exception, match="has type int64") as e:
        check_train_events(FOLD, pa.table({"event_ts": pa.array([1])}))
    assert e.value.exit_code == 2


# ----------------------------------------------------------------------------------------- features versions

N_DAYS = 8
DAYS = days(START, N_DAYS)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """A real Delta table, one version per day like engine.demo.data.write_lake: version k holds days 0..k."""
    uri = str(tmp_path_factory.mktemp("lake") / "features")
    for i, ds in enumerate(DAYS):
        f, _ = make_day(i, ds, rows=7 + i, n_features=8, seed=3)
        write_deltalake(uri, f.drop(["email", "phone"]), partition_by=["ds"], mode="append")
    return uri


def reference_days(uri: str, version: int) -> list[str]:
    """Days a version holds, read with deltalake directly."""
    return sorted(set(DeltaTable(uri, version=version).to_pyarrow_table(columns=["ds"]).column("ds").to_pylist()))


def test_features_version_at_is_the_newest_version_holding_only_earlier_days(features):
    for k, cutoff in enumerate(DAYS[1:], start=1):
        v = features_version_at(features, cutoff)
        assert v == k - 1
        assert max(reference_days(features, v)) < cutoff <= max(reference_days(features, v + 1))
    assert features_version_at(features, "2024-03-01") == DeltaTable(features).version()
    assert features_versions_at(features, [DAYS[5], DAYS[2]]) == {DAYS[5]: 4, DAYS[2]: 1}
    with pytest.raises(ContractViolation, match="no version .* was current at cutoff 2024-01-01"):
        features_version_at(features, DAYS[0])


def test_a_features_version_holding_days_after_the_cutoff_fires(features):
    fold = SECOND  # cutoff 2024-01-06
    current = features_version_at(features, fold.cutoff)
    assert check_version(fold, features, current)["passed"]
    too_new = current + 2  # holds 2024-01-06 and 2024-01-07
    table = DeltaTable(features, version=too_new).to_pyarrow_table(columns=["ds"]).to_pandas()
    late_rows = int((table["ds"] >= fold.cutoff).sum())
    # Row-clean tables for this fold (train 01-03..01-05, test 01-06): only the features version leaks.
    train = pa.table({"event_ts": pa.array([ts("2024-01-03T10:00"), ts("2024-01-05T23:00")], pa.timestamp("us", tz="UTC")),
                      "label_ts": pa.array([ts("2024-01-04T10:00"), ts("2024-01-06T00:00")], pa.timestamp("us", tz="UTC"))})
    test = pa.table({"event_ts": pa.array([ts("2024-01-06T05:00")], pa.timestamp("us", tz="UTC"))})
    with pytest.raises(LeakageDetected) as e:
        guard_fold(fold, train, test, features_uri=features, features_version=too_new)
    assert str(e.value).startswith(f"leakage guard: fold 1 (cutoff 2024-01-06): features version {too_new} of "
                                   f"{features} holds 2 day(s) on or after the cutoff (2024-01-06..2024-01-07; "
                                   f"{late_rows} row(s))")
    assert [(v["check"], v["column"], v["rows"], v["passed"]) for v in e.value.verdicts][-1] == (
        "features_version", "ds", late_rows, False)
    assert all(v["passed"] for v in e.value.verdicts[:-1])
    assert all(v["passed"] for v in guard_fold(fold, train, test, features_uri=features, features_version=current))


def test_a_late_backfill_of_an_old_day_is_not_the_version_current_at_the_cutoff(tmp_path):
    uri = str(tmp_path / "features")
    for i, ds in enumerate(DAYS[:6]):
        write_deltalake(uri, make_day(i, ds, 5, 8, 1)[0].drop(["email", "phone"]), partition_by=["ds"], mode="append")
    # Version 6 only adds 2024-01-02 again, but it was committed after days up to 2024-01-06 had landed.
    write_deltalake(uri, make_day(1, DAYS[1], 5, 8, 9)[0].drop(["email", "phone"]), partition_by=["ds"], mode="append")
    v = features_version_at(uri, "2024-01-04")
    assert v == 2 and max(reference_days(uri, v)) < "2024-01-04"
    assert max(reference_days(uri, 6)) >= "2024-01-04"  # its own commit holds only 2024-01-02, its snapshot does not
    assert features_version_at(uri, "2024-01-07") == 6


def test_a_cleaned_up_commit_log_is_input_unavailable(tmp_path):
    uri = str(tmp_path / "features")
    for i, ds in enumerate(DAYS[:3]):
        write_deltalake(uri, make_day(i, ds, 5, 8, 1)[0].drop(["email", "phone"]), partition_by=["ds"], mode="append")
    DeltaTable(uri).create_checkpoint()
    os.remove(os.path.join(uri, "_delta_log", f"{0:020d}.json"))
    with pytest.raises(InputUnavailable, match="commit 0 of the features table .* is gone from _delta_log") as e:
        features_version_at(uri, DAYS[2])
    assert e.value.exit_code == 5
