"""The commit protocol under races, failures and moving inputs (DESIGN.md: Snapshots, idempotency, exactly-once).

Rivals are real runs of the score job, started from inside another run's `before_commit` hook, so the order of
commits is fixed without sleeping: the outer run has checked its units, the rival commits, then the outer commits.
"""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from conftest import DAYS, ROWS, score_config
from engine.demo.data import make_day
from engine.errors import UnitFailed
from engine.ray.executor import executor
from engine.score.run import Hooks
from jobs.score import run_score

pytestmark = pytest.mark.slow
D = "2026-01-02"
UNIT = f"lakescore/score/{D}/t-xgb/1"


def score(cfg, force=False, hooks=None):
    return run_score(cfg, executor(cfg.ray), force=force, hooks=hooks)


def day_rows(lake, ds: str = D) -> pa.Table:
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(filters=[("ds", "=", ds)])
    return t.sort_by("entity_id")


def unit_commits(lake, app_id: str = UNIT) -> list[dict]:
    """userMetadata of the commits of one unit, newest first (an independent read of the log)."""
    out = []
    for h in DeltaTable(str(lake / "scores")).history():
        meta = json.loads(h.get("userMetadata") or "{}")
        if meta.get("app_id") == app_id:
            out.append(meta)
    return out


def grow_day(lake, ds: str = D, rows: int = 400, seed: int = 77) -> int:
    """Append rows to an existing day of the input; returns the new input version."""
    extra, _ = make_day(DAYS + seed, ds, rows, 50, seed=seed)
    write_deltalake(str(lake / "features"), extra, partition_by=["ds"], mode="append")
    return DeltaTable(str(lake / "features")).version()


def assert_files_present(lake) -> None:
    dt = DeltaTable(str(lake / "scores"))
    missing = [u for u in dt.file_uris() if not os.path.exists(u)]
    assert not missing, f"the table references deleted files: {missing[:3]}"


# ------------------------------------------------------------------------------ older input never wins


def test_a_run_pinned_to_an_older_input_skips_a_unit_scored_from_a_newer_one(ray_local, lake, demo_root):
    old = DAYS - 1
    new = grow_day(lake)
    daily = score(score_config(lake, demo_root, f"input.ds={D}"))
    assert daily.committed == [D]
    before = day_rows(lake)
    assert set(before.column("input_version").to_pylist()) == {new} and before.num_rows == ROWS + 400

    backfill = score(score_config(lake, demo_root, f"input.ds={D}", f"input.version={old}"))
    assert backfill.committed == [] and backfill.units_skipped == 1 and backfill.units_committed == 0
    assert any(f"input version {new}" in s for s in backfill.superseded), backfill.superseded
    assert day_rows(lake).equals(before)

    forced = score(score_config(lake, demo_root, f"input.ds={D}", f"input.version={old}"), force=True)
    assert forced.committed == [D]
    after = day_rows(lake)
    assert set(after.column("input_version").to_pylist()) == {old} and after.num_rows == ROWS


def test_a_long_backfill_on_an_older_input_loses_to_the_daily_run_that_commits_first(ray_local, lake, demo_root):
    old = DAYS - 1
    new = grow_day(lake)
    daily_cfg = score_config(lake, demo_root, f"input.ds={D}")
    daily = []

    def daily_run_lands_first(unit):
        if unit.partition_values["ds"] == D and not daily:
            daily.append(score(daily_cfg))

    backfill = score(score_config(lake, demo_root, f"input.version={old}"), hooks=Hooks(before_commit=daily_run_lands_first))
    assert daily[0].committed == [D]
    assert D not in backfill.committed and any(D in s for s in backfill.superseded)
    assert sorted(backfill.committed) == sorted({f"2026-01-0{i + 1}" for i in range(DAYS)} - {D})
    rows = day_rows(lake)
    assert set(rows.column("input_version").to_pylist()) == {new} and rows.num_rows == ROWS + 400
    assert set(rows.column("run_id").to_pylist()) == {daily[0].run_id}
    assert [m["run_id"] for m in unit_commits(lake)] == [daily[0].run_id]
    assert_files_present(lake)


def test_a_newer_input_replaces_a_rival_that_committed_an_older_one(ray_local, lake, demo_root):
    old = DAYS - 1
    new = grow_day(lake)
    rival = []

    def old_rival_lands_first(unit):
        if not rival:
            rival.append(score(score_config(lake, demo_root, f"input.ds={D}", f"input.version={old}")))

    s = score(score_config(lake, demo_root, f"input.ds={D}"), hooks=Hooks(before_commit=old_rival_lands_first))
    assert rival[0].committed == [D] and s.committed == [D]
    rows = day_rows(lake)
    assert set(rows.column("input_version").to_pylist()) == {new} and rows.num_rows == ROWS + 400
    assert [m["run_id"] for m in unit_commits(lake)] == [s.run_id, rival[0].run_id]
    assert_files_present(lake)


def test_the_newest_rival_decides_not_the_oldest(ray_local, lake, demo_root):
    """Since this run checked: a rival committed the same input, then a forced run replaced it with an older one."""
    old = DAYS - 1
    grow_day(lake)
    cfg = score_config(lake, demo_root, f"input.ds={D}")
    rivals = []

    def two_rivals(unit):
        if not rivals:
            rivals.append(score(cfg))  # same input as this run
            rivals.append(score(score_config(lake, demo_root, f"input.ds={D}", f"input.version={old}"), force=True))

    s = score(cfg, hooks=Hooks(before_commit=two_rivals))
    assert [r.committed for r in rivals] == [[D], [D]]
    # The table held the older input when this run committed: it must not call that "already done".
    assert s.committed == [D]
    rows = day_rows(lake)
    assert set(rows.column("run_id").to_pylist()) == {s.run_id}
    assert set(rows.column("input_version").to_pylist()) == {s.input_version}
    assert_files_present(lake)


# ------------------------------------------------------------------------------ failures of the commit itself


def test_a_commit_that_landed_but_reported_failure_keeps_its_files(ray_local, lake, demo_root, monkeypatch):
    """Object stores: a retried conditional write whose first try succeeded surfaces as a conflict."""
    real = DeltaTable.create_write_transaction
    calls = []

    def lands_then_fails(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        if not calls:
            calls.append(1)
            raise CommitFailedError("Failed to commit transaction: version already exists (retried put)")
        return result

    monkeypatch.setattr(DeltaTable, "create_write_transaction", lands_then_fails)
    s = score(score_config(lake, demo_root, f"input.ds={D}"))
    assert calls and s.committed == [D] and s.units_committed == 1
    assert_files_present(lake)
    assert day_rows(lake).num_rows == ROWS


def test_a_unit_whose_commit_fails_does_not_stop_the_others_and_the_summary_adds_up(ray_local, lake, demo_root,
                                                                                  monkeypatch):
    real = DeltaTable.create_write_transaction

    def storage_down_for_one_day(self, actions, mode, schema, partition_by=None, partition_filters=None, **kw):
        if partition_filters and ("ds", "=", D) in partition_filters:
            raise OSError("connection reset by peer (injected)")
        return real(self, actions, mode, schema, partition_by, partition_filters, **kw)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", storage_down_for_one_day)
    cfg = score_config(lake, demo_root)
    with pytest.raises(UnitFailed, match=D) as e:
        score(cfg)
    s = e.value.summary
    days = [f"2026-01-0{i + 1}" for i in range(DAYS)]
    assert sorted(s.committed) == [d for d in days if d != D]
    assert s.units_committed == DAYS - 1 and s.units_failed == 1 and len(s.failed) == 1 and D in s.failed[0]
    stored = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds"])
    assert sorted(set(stored.column("ds").to_pylist())) == sorted(s.committed)
    assert s.rows_out == stored.num_rows == (DAYS - 1) * ROWS
    # the failed unit's files were dropped: only committed files remain under the table
    assert not list((lake / "scores").glob(f"ds={D}/**/*.parquet"))

    monkeypatch.setattr(DeltaTable, "create_write_transaction", real)
    again = score(cfg)
    assert again.committed == [D] and again.units_skipped == DAYS - 1


def test_the_time_budget_fails_the_unfinished_units_and_keeps_the_finished_ones(ray_local, lake, demo_root):
    import time

    def slow_commit(unit):
        time.sleep(15)

    cfg = score_config(lake, demo_root, "run.time_budget_s=15", "ray.max_in_flight=1")
    with pytest.raises(UnitFailed, match="time budget") as e:
        score(cfg, hooks=Hooks(before_commit=slow_commit))
    s = e.value.summary
    assert s.units_committed == len(s.committed) >= 1
    assert s.units_failed == len(s.failed) == DAYS - len(s.committed)
    stored = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds"])
    assert sorted(set(stored.column("ds").to_pylist())) == sorted(s.committed)


def rival_during_write(monkeypatch, lake, demo_root, times: int) -> list:
    """A rival run commits unit D from the older input just before each of the first `times` writes of D."""
    from engine.lake.commit import Committer

    real, rivals, outer = Committer._write, [], []

    def write(self, table, actions, filt, props):
        if ("ds", "=", D) in filt and "quarantine" not in self.uri:
            outer[:] = outer or [self]  # the first committer to write D is the run under test
            if self is outer[0] and len(rivals) < times:  # the rival's own writes go straight through
                rivals.append(score(score_config(lake, demo_root, f"input.ds={D}", f"input.version={DAYS - 1}"),
                                    force=True))
        return real(self, table, actions, filt, props)

    monkeypatch.setattr(Committer, "_write", write)
    return rivals


def test_commit_retries_exhausted_fail_that_unit_only(ray_local, lake, demo_root, monkeypatch):
    grow_day(lake)
    rivals = rival_during_write(monkeypatch, lake, demo_root, times=1)
    with pytest.raises(UnitFailed, match="conflict") as e:
        score(score_config(lake, demo_root, "run.commit_retries=0"))
    s = e.value.summary
    assert [r.committed for r in rivals] == [[D]]
    assert D not in s.committed and s.units_committed == DAYS - 1 and s.units_failed == 1
    rows = day_rows(lake)
    assert set(rows.column("run_id").to_pylist()) == {rivals[0].run_id}
    assert_files_present(lake)


def test_a_rival_with_another_input_during_the_commit_is_replaced_on_retry(ray_local, lake, demo_root, monkeypatch):
    new = grow_day(lake)
    rivals = rival_during_write(monkeypatch, lake, demo_root, times=1)
    s = score(score_config(lake, demo_root, f"input.ds={D}", "run.commit_retries=3"))
    assert [r.committed for r in rivals] == [[D]] and s.committed == [D]
    rows = day_rows(lake)
    assert set(rows.column("run_id").to_pylist()) == {s.run_id}
    assert set(rows.column("input_version").to_pylist()) == {new} and rows.num_rows == ROWS + 400
    assert [m["run_id"] for m in unit_commits(lake)] == [s.run_id, rivals[0].run_id]
    assert_files_present(lake)


def test_two_models_backfilling_one_table_at_once_both_commit_every_unit(ray_local, lake, demo_root):
    barrier = threading.Barrier(2, timeout=120)
    results, errors = [], []

    def run(model):
        try:
            cfg = score_config(lake, demo_root, f"model.uri={model}")
            results.append(score(cfg, hooks=Hooks(after_check=lambda units: units and barrier.wait())))
        except Exception as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(m,)) for m in ("models:/t-xgb@champion", "models:/t-mlp/1")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert [r.units_committed for r in results] == [DAYS, DAYS]
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["model_name", "entity_id", "ds"])
    assert t.num_rows == 2 * DAYS * ROWS
    assert not t.to_pandas().duplicated().any()


# ------------------------------------------------------------------------------ inputs that disappear


def test_a_day_deleted_upstream_has_its_scores_removed(ray_local, lake, demo_root):
    cfg = score_config(lake, demo_root)
    score(cfg)
    DeltaTable(str(lake / "features")).delete(f"ds = '{D}'")
    s = score(cfg)
    assert s.retracted == [D] and s.units_committed == 0 and s.units_skipped == DAYS - 1
    stored = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds"])
    assert D not in set(stored.column("ds").to_pylist()) and stored.num_rows == (DAYS - 1) * ROWS
    latest = unit_commits(lake)[0]
    assert latest["run_id"] == s.run_id and latest["rows"] == 0
    version = DeltaTable(str(lake / "scores")).version()
    again = score(cfg)
    assert again.retracted == [] and again.units_skipped == DAYS - 1
    assert DeltaTable(str(lake / "scores")).version() == version
    # a run pinned to a version that still had the day does not bring its scores back
    old = score(score_config(lake, demo_root, f"input.ds={D}", f"input.version={DAYS - 1}"))
    assert old.committed == [] and any(D in x for x in old.superseded)
    assert D not in set(DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds"]).column("ds").to_pylist())


def test_the_fingerprint_sees_a_day_rewritten_under_the_same_file_names(tmp_path):
    """Same paths, other bytes: size and modification time from the log move the fingerprint."""
    import time

    from deltalake import CommitProperties  # noqa: F401
    from deltalake.transaction import AddAction
    import pyarrow.parquet as pq

    from engine.lake.snapshot import open_snapshot

    uri = str(tmp_path / "t")
    schema = pa.schema([("entity_id", pa.int64()), ("x", pa.float32())])
    DeltaTable.create(uri, pa.schema([*schema, pa.field("ds", pa.string())]), partition_by=["ds"])

    def put(n: int):
        rel = f"ds={D}/part-0.parquet"
        os.makedirs(f"{uri}/ds={D}", exist_ok=True)
        pq.write_table(pa.table({"entity_id": np.arange(n), "x": np.ones(n, np.float32)}), f"{uri}/{rel}")
        add = AddAction(rel, os.path.getsize(f"{uri}/{rel}"), {"ds": D}, int(time.time() * 1000), True,
                        json.dumps({"numRecords": n}))
        DeltaTable(uri).create_write_transaction([add], "overwrite", pa.schema([*schema, pa.field("ds", pa.string())]),
                                                 ["ds"], [("ds", "=", D)])

    put(10)
    a = open_snapshot("t", uri)
    time.sleep(0.01)
    put(20)
    b = open_snapshot("t", uri)
    assert [f.path for f in a.files[D]] == [f.path for f in b.files[D]]
    assert a.fingerprint(D) != b.fingerprint(D)
    assert pc.sum(pa.array([f.num_records for f in b.files[D]])).as_py() == 20
