"""Compaction upstream does not re-score: a day whose input files were only rewritten (Delta `dataChange: false`)
since the version it was scored from is up to date; a real change of that day, even beside a compaction, is not;
and where the log in between has expired the fingerprint decides (DESIGN.md: Snapshots, idempotency, exactly-once).

Real Delta tables (delta-rs compaction, updates, checkpoints), the real score job with the in-process executor.
"""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import DAYS, ROOT, ROWS, score_config
from engine.lake import delta_log
from engine.lake.delta_log import CommitLog, changed_days
from engine.demo.data import make_day
from engine.executor import LocalExecutor
from engine.lake.snapshot import open_snapshot
from jobs.score import run_score

DAY = "2026-01-02"
SMALL = 40  # rows in each of the two small files appended to DAY


def score(cfg):
    return run_score(cfg, LocalExecutor())


def append_two_small_files(lake) -> None:
    for i in range(2):
        extra, _ = make_day(DAYS + 1 + i, DAY, SMALL, 50, seed=20 + i)
        ids = pa.array(range(10_000_000 + 1000 * i, 10_000_000 + 1000 * i + SMALL), pa.int64())  # unique keys
        extra = extra.set_column(extra.schema.get_field_index("entity_id"), "entity_id", ids)
        write_deltalake(str(lake / "features"), extra, partition_by=["ds"], mode="append")


def compact(lake) -> dict:
    """Compact the input table; return its commit's add/remove actions, checked to be rewrites of DAY only."""
    table = DeltaTable(str(lake / "features"))
    metrics = table.optimize.compact()
    assert metrics["numFilesRemoved"] == 3 and metrics["numFilesAdded"] == 1, metrics
    actions = commit_actions(lake / "features", table.version())
    assert {a["partitionValues"]["ds"] for a in actions} == {DAY}
    assert all(a["dataChange"] is False for a in actions)
    return metrics


def commit_actions(table_path, version: int) -> list[dict]:
    lines = (table_path / "_delta_log" / f"{version:020d}.json").read_text().splitlines()
    return [a.get("add") or a.get("remove") for a in map(json.loads, lines) if "add" in a or "remove" in a]


def change_one_row(lake) -> None:
    """Update one feature of one row of DAY (a real data change, dataChange true)."""
    table = DeltaTable(str(lake / "features"))
    one = table.to_pyarrow_table(filters=[("ds", "=", DAY)], columns=["entity_id"]).column("entity_id")[0].as_py()
    table.update({"f00": "f00 + 5.0"}, predicate=f"ds = '{DAY}' AND entity_id = {one}")


def scores_version(lake) -> int:
    return DeltaTable(str(lake / "scores")).version()


def day_run_ids(lake) -> dict[str, set[str]]:
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "run_id"])
    out: dict[str, set[str]] = {}
    for d, r in zip(t.column("ds").to_pylist(), t.column("run_id").to_pylist()):
        out.setdefault(d, set()).add(r)
    return out


def fingerprint(lake, day: str = DAY) -> str:
    return open_snapshot("features", str(lake / "features")).fingerprint(day)


# ------------------------------------------------------------------------------------------ the score job


@pytest.mark.slow
def test_compaction_of_the_input_rescores_nothing(lake, demo_root):
    cfg = score_config(lake, demo_root)
    append_two_small_files(lake)
    first = score(cfg)
    assert sorted(first.committed) == [f"2026-01-0{i + 1}" for i in range(DAYS)]
    before, version = fingerprint(lake), scores_version(lake)
    compact(lake)
    assert fingerprint(lake) != before  # the day's files moved: the fingerprint alone would re-score it
    again = score(cfg)
    assert again.committed == [] and again.units_skipped == DAYS and again.rows_out == 0
    assert len(again.unchanged) == 1 and again.unchanged[0].startswith(f"ds={DAY}:"), again.unchanged
    assert scores_version(lake) == version and day_run_ids(lake)[DAY] == {first.run_id}
    # The recorded fingerprint stays the scored one: the next run reaches the same decision from the log.
    third = score(cfg)
    assert third.committed == [] and third.units_skipped == DAYS and len(third.unchanged) == 1
    assert scores_version(lake) == version

    # Then one row of that day changes: that day alone is re-scored, from the changed data.
    change_one_row(lake)
    fourth = score(cfg)
    assert fourth.committed == [DAY] and fourth.units_skipped == DAYS - 1 and fourth.unchanged == []
    features = DeltaTable(str(lake / "features"))
    got = DeltaTable(str(lake / "scores")).to_pyarrow_table(filters=[("ds", "=", DAY)],
                                                            columns=["entity_id", "run_id", "input_version"])
    assert got.num_rows == ROWS + 2 * SMALL == features.to_pyarrow_table(filters=[("ds", "=", DAY)]).num_rows
    assert set(got.column("run_id").to_pylist()) == {fourth.run_id}
    assert set(got.column("input_version").to_pylist()) == {features.version()}
    runs = day_run_ids(lake)
    assert all(runs[d] == {first.run_id} for d in runs if d != DAY)
    # And after that re-score the day is plainly up to date again.
    fifth = score(cfg)
    assert fifth.committed == [] and fifth.units_skipped == DAYS and fifth.unchanged == []


@pytest.mark.slow
@pytest.mark.parametrize("order", ["compact-then-change", "change-then-compact"])
def test_a_real_change_beside_a_compaction_rescores_the_day(lake, demo_root, order):
    cfg = score_config(lake, demo_root)
    append_two_small_files(lake)
    first = score(cfg)
    if order == "compact-then-change":
        compact(lake)
        change_one_row(lake)
    else:
        change_one_row(lake)
        DeltaTable(str(lake / "features")).optimize.compact()
    again = score(cfg)
    assert again.committed == [DAY] and again.units_skipped == DAYS - 1 and again.unchanged == []
    assert day_run_ids(lake)[DAY] == {again.run_id} and day_run_ids(lake)["2026-01-01"] == {first.run_id}


@pytest.mark.slow
def test_an_expired_log_between_the_versions_falls_back_to_the_fingerprint(lake, demo_root):
    cfg = score_config(lake, demo_root)
    append_two_small_files(lake)
    first = score(cfg)
    scored_at = first.input_version
    compact(lake)
    features = DeltaTable(str(lake / "features"))
    features.create_checkpoint()
    # Log cleanup removed the commits the checkpoint covers: only the checkpoint says what version N holds.
    os.remove(lake / "features" / "_delta_log" / f"{features.version():020d}.json")
    assert DeltaTable(str(lake / "features")).version() == scored_at + 1  # the table still opens, at the checkpoint
    again = score(cfg)
    assert again.committed == [DAY] and again.units_skipped == DAYS - 1 and again.unchanged == []
    assert day_run_ids(lake)[DAY] == {again.run_id}


@pytest.mark.slow
def test_a_contract_change_still_rescores_a_compacted_day(lake, demo_root, tmp_path):
    """The contract's hash is part of what a unit depends on: a compaction does not hide a new contract."""
    contract = ROOT / "conf" / "contracts" / "features.yaml"
    append_two_small_files(lake)
    first = score(score_config(lake, demo_root, f"input.contract={contract}"))
    assert len(first.committed) == DAYS
    compact(lake)
    same = score(score_config(lake, demo_root, f"input.contract={contract}"))
    assert same.committed == [] and len(same.unchanged) == 1
    changed = tmp_path / "changed.yaml"
    changed.write_text(contract.read_text().replace("psi_max: 0.25", "psi_max: 0.3"))
    assert changed.read_text() != contract.read_text()
    second = score(score_config(lake, demo_root, f"input.contract={changed}"))
    assert second.units_committed == DAYS and second.unchanged == []


# ------------------------------------------------------------------------------------------ changed_days


@pytest.fixture
def tiny(tmp_path):
    """A two-day table, two files per day (versions 0 and 1)."""
    uri = str(tmp_path / "t")
    t = pa.table({"ds": ["a", "a", "b"], "x": [1, 2, 3]})
    write_deltalake(uri, t, partition_by=["ds"])
    write_deltalake(uri, t, partition_by=["ds"], mode="append")
    return uri


def test_changed_days_tells_rewrites_from_changes(tiny):
    dt = DeltaTable(tiny)
    dt.optimize.compact(partition_filters=[("ds", "=", "a")])  # v2: a rewritten
    assert changed_days(tiny, 1, 2, ["a", "b"]) == set()
    assert changed_days(tiny, 0, 2, ["a", "b"]) == {"a", "b"}  # v1 appended to both
    assert changed_days(tiny, 2, 2, ["a"]) == set()
    dt.delete("x = 3")  # v3: b changed
    assert changed_days(tiny, 1, 3, ["a", "b"]) == {"b"}
    assert changed_days(tiny, 1, 3, ["a"]) == set()
    dt.update({"x": "x + 1"}, predicate="ds = 'a'")  # v4: a changed
    assert DeltaTable(tiny).version() == 4
    assert changed_days(tiny, 1, 4, ["a", "b"]) == {"a", "b"} and changed_days(tiny, 3, 4, ["a", "b"]) == {"a"}
    assert CommitLog(tiny, max_commits=2).changed_days(1, 4, ["a"]) is None  # longer than the bound: unknown
    assert changed_days(tiny, 3, 1, ["a"]) is None


def test_changed_days_is_unknown_without_the_commit_files(tiny):
    DeltaTable(tiny).optimize.compact()  # v2
    DeltaTable(tiny).create_checkpoint()
    os.remove(os.path.join(tiny, "_delta_log", f"{2:020d}.json"))
    assert changed_days(tiny, 1, 2, ["a"]) is None
    assert changed_days(tiny, 0, 1, ["a"]) == {"a"}  # the commits still there still answer


def test_a_schema_change_counts_as_a_change_of_every_day(tiny):
    from deltalake import Field, schema

    DeltaTable(tiny).alter.add_columns([Field("y", schema.PrimitiveType("long"), nullable=True)])
    assert changed_days(tiny, 1, 2, ["a", "b"]) == {"a", "b"}


def test_changed_days_reads_the_log_through_an_object_store_handler(tiny, monkeypatch):
    """The same handler delta-rs uses for s3:// and gs://, with paths relative to the table root."""
    from deltalake.fs import DeltaStorageHandler

    DeltaTable(tiny).optimize.compact(partition_filters=[("ds", "=", "a")])
    DeltaTable(tiny).delete("x = 3")
    store = pafs.PyFileSystem(DeltaStorageHandler(f"file://{tiny}"))
    monkeypatch.setattr(delta_log, "filesystem", lambda uri, opts=None: (store, ""))
    log = CommitLog("s3://bucket/t")
    assert log.changed_days(1, 3, ["a", "b"]) == {"b"} and log.changed_days(1, 2, ["a", "b"]) == set()
    assert log.changed_days(1, 4, ["a"]) is None  # no commit 4 in the store
