"""`lakescore vacuum`: after several overwrites, the current version and every version a recent run pinned stay
readable (read back with deltalake and compared with what they held before), the other old versions lose their
files, a dry run deletes nothing and lists the same files, and the ledger records the run."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import ROOT
from engine.tables import ledger
from engine.config import LakeConfig, ScoreConfig

UTC = dt.timezone.utc


def run_vacuum(lake, *args: str, capsys) -> tuple[int, dict, str]:
    from jobs.vacuum import main

    code = main(["--config", str(ROOT / "conf" / "score.yaml"), f"lake.root={lake}",
                 f"mlflow.tracking_uri=sqlite:///{lake}/mlruns.db", *args])
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    return code, json.loads(lines[-1]), "\n".join(lines[:-1])


def overwritten_table(lake, versions: int = 5) -> tuple[str, dict[int, pa.Table]]:
    """A small day-partitioned table overwritten `versions` times; version → its content."""
    uri = str(lake / "feats")
    held = {}
    for i in range(versions):
        data = pa.table({"entity_id": pa.array(range(i * 10, i * 10 + 10), pa.int64()),
                         "x": pa.array([float(i)] * 10), "ds": ["2026-01-01"] * 5 + ["2026-01-02"] * 5})
        write_deltalake(uri, data, mode="overwrite", partition_by=["ds"])
        held[DeltaTable(uri).version()] = DeltaTable(uri).to_pyarrow_table().sort_by("entity_id")
    return uri, held


def pin(lake, uri: str, version: int, run_id: str, started: dt.datetime) -> None:
    """A run in the ledger that read `uri` at `version` (as a score or evaluate run records its inputs)."""
    cfg = ScoreConfig(lake=LakeConfig(root=str(lake)), model={"uri": "models:/x/1"})
    entry = ledger.row("score", cfg, {"run_id": run_id, "status": "ok", "exit_code": 0, "config_hash": "h"},
                       started, started, "score --config x")
    entry["inputs"] = [{"role": "input", "table": "feats", "uri": uri, "version": version}]
    ledger.append(cfg.lake, entry)


def readable(uri: str, version: int) -> pa.Table | None:
    try:
        return DeltaTable(uri, version=version).to_pyarrow_table().sort_by("entity_id")
    except FileNotFoundError:  # what deltalake raises for a data file the log lists but storage no longer has
        return None


def test_vacuum_keeps_pinned_and_current_versions_and_removes_the_rest(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, held = overwritten_table(lake)
    now = dt.datetime.now(UTC)
    pin(lake, uri, 1, "run-recent-pin", now)
    pin(lake, uri, 2, "run-old-pin", now - dt.timedelta(days=10))  # outside a 3-day window: not protected
    current = DeltaTable(uri).version()
    files_before = {p for p in (lake / "feats").rglob("*.parquet")}

    code, dry, text = run_vacuum(lake, "--table", "feats", "--retain-days", "3", "--dry-run", capsys=capsys)
    assert code == 0, dry.get("error")
    # Every file of the table is younger than 3 days: nothing goes yet.
    assert dry["files_to_remove"] == 0 and {p for p in (lake / "feats").rglob("*.parquet")} == files_before

    code, dry, text = run_vacuum(lake, "--table", "feats", "--retain-days", "0", "--dry-run", capsys=capsys)
    assert code == 0, dry.get("error")
    assert {p for p in (lake / "feats").rglob("*.parquet")} == files_before  # a dry run deletes nothing
    kept = {k["version"]: k for k in dry["kept_versions"]}
    assert set(kept) == {current, 1} and kept[1]["run_ids"] == ["run-recent-pin"] and kept[current]["why"] == "current"
    assert "v1  pinned as input by run(s) run-recent-p" in text and f"v{current}  current version" in text
    # The files that would go are exactly those of the versions neither current nor pinned (from their logs).
    def files_of(v):
        return set(pa.table(DeltaTable(uri, version=v).get_add_actions()).column("path").to_pylist())
    expected = set().union(*(files_of(v) for v in held if v not in (1, current))) - files_of(1) - files_of(current)
    assert set(dry["files"]) == expected and dry["files_to_remove"] == len(expected) > 0
    assert all(f"  {f}" in text for f in expected)
    assert dry["bytes"] == sum(os.path.getsize(lake / "feats" / f) for f in expected)

    code, done, text = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0, done.get("error")
    assert sorted(done["files"]) == sorted(dry["files"]) and done["files_removed"] == len(expected)
    for v, content in held.items():
        got = readable(uri, v)
        if v in (1, current):
            assert got is not None and got.equals(content), v
        else:
            assert got is None, f"version {v} is still readable"
    assert DeltaTable(uri).to_pyarrow_table().sort_by("entity_id").equals(held[current])
    vac = ledger.read(LakeConfig(root=str(lake)), job="vacuum").to_pylist()
    assert [r["run_id"] for r in vac][-2:] == [dry["run_id"], done["run_id"]] and len(vac) == 3
    assert vac[-1]["output_table"] == "feats" and vac[-1]["status"] == "ok"

    code, again, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0 and again["files_removed"] == 0


def test_leftover_files_younger_than_a_week_stay(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, _held = overwritten_table(lake, 2)
    leftover = lake / "feats" / "ds=2026-01-01" / "part-uncommitted.parquet"
    leftover.write_bytes(b"a writer's file before its commit")
    code, done, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0 and done["files_removed"] > 0 and leftover.exists()
    old = dt.datetime.now().timestamp() - 8 * 86400
    os.utime(leftover, (old, old))
    code, done, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0 and done["files"] == ["ds=2026-01-01/part-uncommitted.parquet"] and not leftover.exists()


@pytest.mark.parametrize("args, needle", [(["--table", "nosuch", "--retain-days", "1"], "table 'nosuch' not found"),
                                          (["--table", "feats", "--retain-days", "-1"], "--retain-days -1")])
def test_unknown_table_or_bad_days_is_exit_2_naming_it(tmp_path, capsys, args, needle):
    lake = tmp_path / "lake"
    lake.mkdir()
    overwritten_table(lake, 1)
    code, summary, _ = run_vacuum(lake, *args, capsys=capsys)
    assert code == 2 and needle in summary["error"]


def backdate_tombstones(uri: str, days: int) -> None:
    """Move every remove action of the log `days` back, as if the overwrites had happened then (delta-rs reads a
    tombstone's age from its `deletionTimestamp`, not from the file's mtime)."""
    for p in sorted((Path(uri) / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        for a in actions:
            if "remove" in a:
                a["remove"]["deletionTimestamp"] -= days * 86_400_000
        p.write_text("".join(json.dumps(a) + "\n" for a in actions))


def parquet_files(lake) -> set:
    return {p for p in (lake / "feats").rglob("*.parquet")}


def test_retain_days_keeps_a_pin_inside_the_window_and_drops_an_older_one(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, held = overwritten_table(lake)  # v0..v4
    backdate_tombstones(uri, 5)  # every old version's files were tombstoned 5 days ago
    now = dt.datetime.now(UTC)
    pin(lake, uri, 1, "run-two-days-ago", now - dt.timedelta(days=2))  # inside a 3-day window: kept
    pin(lake, uri, 2, "run-four-days-ago", now - dt.timedelta(days=4))  # before it: no longer protects
    current = DeltaTable(uri).version()

    code, dry, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "6", "--dry-run", capsys=capsys)
    assert code == 0 and dry["files_to_remove"] == 0  # tombstoned 5 days ago: inside a 6-day retention

    code, done, text = run_vacuum(lake, "--table", "feats", "--retain-days", "3", capsys=capsys)
    assert code == 0, done.get("error")
    assert {k["version"] for k in done["kept_versions"]} == {current, 1}
    assert "run-four-days-ago"[:12] not in text
    for v, content in held.items():
        got = readable(uri, v)
        if v in (1, current):
            assert got is not None and got.equals(content), f"version {v} lost files"
        else:
            assert got is None, f"version {v} is still readable"


def test_a_planned_removal_of_a_kept_versions_file_stops_the_vacuum(tmp_path, capsys, monkeypatch):
    """The safety stop: were delta-rs to ignore `keep_versions` (injected here), nothing is removed, exit 1."""
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, held = overwritten_table(lake)
    pin(lake, uri, 1, "run-recent-pin", dt.datetime.now(UTC))
    real_vacuum = DeltaTable.vacuum
    monkeypatch.setattr(DeltaTable, "vacuum",
                        lambda self, *a, **kw: real_vacuum(self, *a, **{**kw, "keep_versions": None}))
    before = parquet_files(lake)
    code, summary, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 1 and "would remove" in summary["error"] and "of kept versions" in summary["error"]
    assert parquet_files(lake) == before
    assert readable(uri, 1).equals(held[1])


def test_a_pinned_version_that_fails_to_load_for_a_transient_reason_stops_the_vacuum(tmp_path, capsys, monkeypatch):
    """Only an expired log drops a pin: a storage error while loading a pinned version is exit 5, nothing removed."""
    import deltalake

    lake = tmp_path / "lake"
    lake.mkdir()
    uri, held = overwritten_table(lake)
    pin(lake, uri, 1, "run-recent-pin", dt.datetime.now(UTC))
    real = deltalake.DeltaTable

    class FlakyStore(real):  # the real opener, with the store timing out on the pinned version only
        def __init__(self, table_uri, version=None, *a, **kw):
            if version == 1 and str(table_uri).rstrip("/") == uri:
                raise OSError("injected: connection reset while reading _delta_log/00000000000000000001.json")
            super().__init__(table_uri, version, *a, **kw)

    monkeypatch.setattr(deltalake, "DeltaTable", FlakyStore)
    before = parquet_files(lake)
    code, summary, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 5, summary
    assert "pinned version 1" in summary["error"] and "nothing removed" in summary["error"]
    assert parquet_files(lake) == before
    monkeypatch.setattr(deltalake, "DeltaTable", real)
    assert readable(uri, 1).equals(held[1])


def test_a_pin_whose_log_expired_no_longer_protects(tmp_path, capsys):
    """The positive control of the test above: a version whose log is gone (cleaned up after a checkpoint) is the
    one case where a pin is dropped; it is reported as unreadable and the vacuum goes on."""
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, held = overwritten_table(lake)
    pin(lake, uri, 1, "run-recent-pin", dt.datetime.now(UTC))
    DeltaTable(uri).create_checkpoint()
    for v in (0, 1):  # what log cleanup does once a checkpoint covers them
        (Path(uri) / "_delta_log" / f"{v:020d}.json").unlink()
    code, done, text = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0, done.get("error")
    assert done["unreadable_pins"] == {"1": ["run-recent-pin"]} and "already unreadable" in text
    assert DeltaTable(uri).to_pyarrow_table().sort_by("entity_id").equals(held[max(held)])
    assert readable(uri, max(held)).equals(held[max(held)])


# ---------------------------------------------------- running runs and backtests (DESIGN: Operator commands)


def rewrite_features(lake) -> int:
    """Rewrite the features table with the same rows under new files (a compaction would do the same): every
    file of the versions before it is tombstoned now. Returns the last version before the rewrite."""
    uri = str(lake / "features")
    old = DeltaTable(uri).version()
    write_deltalake(uri, DeltaTable(uri).to_pyarrow_table(), mode="overwrite", partition_by=["ds"])
    return old


def test_a_running_score_run_keeps_its_pinned_version_through_a_vacuum(ray_local, lake, demo_root, capsys):
    """A backfill pinned to an older input version is held after it pinned (and recorded its start) and before it
    reads; `vacuum --retain-days 0` of its input runs then. The version's files stay and the run scores every row."""
    from conftest import score_config
    from engine.ray.executor import executor
    from engine.score.run import Hooks
    from jobs.score import run_score

    feats = str(lake / "features")
    old = rewrite_features(lake)
    expected = DeltaTable(feats, version=old).to_pyarrow_table()
    vacuumed = {}

    def vacuum_while_running(units):
        vacuumed["result"] = run_vacuum(lake, "--table", "features", "--retain-days", "0", capsys=capsys)

    cfg = score_config(lake, demo_root, f"input.version={old}")
    s = run_score(cfg, executor(cfg.ray), hooks=Hooks(after_check=vacuum_while_running))
    code, vac, text = vacuumed["result"]
    assert code == 0, vac.get("error")
    assert {k["version"] for k in vac["kept_versions"]} == {old, old + 1}
    assert s.run_id in {r for k in vac["kept_versions"] for r in k["run_ids"]} and s.run_id[:12] in text
    assert s.units_failed == 0 and s.input_version == old
    scores = DeltaTable(str(lake / "scores")).to_pyarrow_table()
    assert scores.num_rows == expected.num_rows
    assert sorted(zip(scores.column("ds").to_pylist(), scores.column("entity_id").to_pylist())) == sorted(
        zip(expected.column("ds").to_pylist(), expected.column("entity_id").to_pylist()))
    assert set(scores.column("input_version").to_pylist()) == {old}
    assert DeltaTable(feats, version=old).to_pyarrow_table().num_rows == expected.num_rows  # still readable


def running(lake, uri: str, version: int, run_id: str, started: dt.datetime, budget_s: int) -> ScoreConfig:
    """A run that recorded its start (and pinned `uri` at `version`) and has not ended."""
    cfg = ScoreConfig(lake=LakeConfig(root=str(lake)), model={"uri": "models:/x/1"},
                      input={"table": "feats"}, run={"time_budget_s": budget_s})
    assert ledger.record_start(cfg.lake, "score", cfg, run_id, [("input", "feats", version)], started)
    return cfg


def test_vacuum_refuses_a_retention_shorter_than_a_running_runs_age_unless_forced(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, held = overwritten_table(lake)
    now = dt.datetime.now(UTC)
    running(lake, uri, 1, "run-still-going", now - dt.timedelta(days=2), budget_s=3 * 86400)
    before = parquet_files(lake)
    code, summary, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "1", capsys=capsys)
    assert code == 2 and "run-still-going" in summary["error"] and "--force" in summary["error"]
    assert "--retain-days 2" in summary["error"] and parquet_files(lake) == before

    code, done, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", "--force", capsys=capsys)
    assert code == 0, done.get("error")
    kept = {k["version"]: k["run_ids"] for k in done["kept_versions"]}
    assert kept[1] == ["run-still-going"]  # forced: the running run's pin still stays
    assert readable(uri, 1).equals(held[1]) and readable(uri, 2) is None


def test_a_running_row_stops_protecting_once_its_run_ended_or_its_lease_expired(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, held = overwritten_table(lake)
    now = dt.datetime.now(UTC)
    ended = running(lake, uri, 1, "run-ended", now - dt.timedelta(days=2), budget_s=3 * 86400)
    final = ledger.row("score", ended, {"run_id": "run-ended", "status": "ok", "exit_code": 0},
                       now - dt.timedelta(days=2), now - dt.timedelta(days=1), "score")
    final["inputs"] = [{"role": "input", "table": "feats", "uri": uri, "version": 1}]
    assert ledger.append(ended.lake, final)
    running(lake, uri, 2, "run-killed", now - dt.timedelta(days=2), budget_s=3600)  # lease long expired
    code, done, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0, done.get("error")
    assert [k["version"] for k in done["kept_versions"]] == [DeltaTable(uri).version() - 2]  # current only
    assert readable(uri, 1) is None and readable(uri, 2) is None


def test_every_features_version_a_backtest_read_is_a_pin(ray_local, lake, demo_root, capsys):
    """With `features_at_cutoff`, each fold trains on the features version current at its cutoff: those versions
    are in the backtest's ledger row (and its running row) and a vacuum keeps them readable."""
    from conftest import XGB
    from jobs.backtest import main

    feats = str(lake / "features")
    rewrite_features(lake)
    code = main(["--config", str(ROOT / "conf" / "backtest.yaml"), f"lake.root={lake}",
                 f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
                 f"mlflow.artifact_root={demo_root}/mlartifacts", f"baseline.model=models:/{XGB}@champion",
                 "folds.train_days=2", "folds.n_folds=2", "recipe.trees=5",
                 "recipe.depth=2", "metrics.bootstrap=10", "min_support=50", "features_at_cutoff=true",
                 f"features.contract={ROOT / 'conf' / 'contracts' / 'features.yaml'}"])
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and s["folds_committed"] == [0, 1], s.get("error")
    # The demo lake commits one day per version (version i holds days 0..i), so the version current at a fold's
    # cutoff is the one before the cutoff day's; the two folds' cutoffs are the third and fourth days.
    days = sorted(set(DeltaTable(feats).to_pyarrow_table(columns=["ds"]).column("ds").to_pylist()))
    fold_versions = {days.index(c) - 1 for c in days[2:4]}
    assert fold_versions == {1, 2} and DeltaTable(feats).version() == len(days)
    lk = LakeConfig(root=str(lake))
    (final,) = ledger.read(lk, job="backtest").to_pylist()
    assert fold_versions <= {i["version"] for i in final["inputs"] if i["table"] == "features"}, final["inputs"]
    (start,) = [r for r in ledger.read(lk, job="backtest", running=True).to_pylist() if r["status"] == "running"]
    assert start["run_id"] == final["run_id"] == s["run_id"]
    assert fold_versions <= {i["version"] for i in start["inputs"] if i["table"] == "features"}, start["inputs"]

    code, done, _ = run_vacuum(lake, "--table", "features", "--retain-days", "0", capsys=capsys)
    assert code == 0, done.get("error")
    assert fold_versions <= {k["version"] for k in done["kept_versions"]}
    for v in fold_versions:
        assert DeltaTable(feats, version=v).to_pyarrow_table().num_rows > 0  # its files are all there


# ------------------------------------------------------------------ dead runs' scratch, unused drift references


def scratch_folder(lake, run_id: str, age_days: float = 0) -> Path:
    f = lake / "_scratch" / run_id / "keys" / "000000" / "bucket-0000.arrow"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"key hashes")
    if age_days:
        t = dt.datetime.now().timestamp() - age_days * 86400
        os.utime(f, (t, t))
    return lake / "_scratch" / run_id


def test_vacuum_removes_the_scratch_of_runs_no_longer_running_and_keeps_the_rest(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, _held = overwritten_table(lake, 2)
    now = dt.datetime.now(UTC)
    pin(lake, uri, 0, "run-ended", now)  # a final row: the run is over
    running(lake, uri, 0, "run-killed", now - dt.timedelta(hours=3), budget_s=60)  # lease over, no final row
    running(lake, uri, 0, "run-live", now, budget_s=3600)
    folders = {r: scratch_folder(lake, r) for r in ("run-ended", "run-killed", "run-live", "run-unknown")}
    folders["run-unknown-old"] = scratch_folder(lake, "run-unknown-old", age_days=8)  # no ledger row, a week old

    code, dry, text = run_vacuum(lake, "--table", "feats", "--retain-days", "0", "--dry-run", capsys=capsys)
    assert code == 0, dry.get("error")
    assert dry["scratch_to_remove"] == ["run-ended", "run-killed", "run-unknown-old"]
    assert all(f.exists() for f in folders.values())  # a dry run removes nothing

    code, done, text = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0, done.get("error")
    assert done["scratch_removed"] == ["run-ended", "run-killed", "run-unknown-old"] and "_scratch" in text
    assert {r for r, f in folders.items() if f.exists()} == {"run-live", "run-unknown"}
    assert (folders["run-live"] / "keys" / "000000" / "bucket-0000.arrow").read_bytes() == b"key hashes"


def test_vacuum_of_drift_reference_removes_only_references_no_run_can_reuse(tmp_path, capsys):
    import numpy as np

    from engine.tables.drift_reference import reference_key, store
    from engine.lake.snapshot import open_snapshot

    lake = tmp_path / "lake"
    lake.mkdir()
    uri = str(lake / "feats")
    for ds in ("2026-01-01", "2026-01-02"):
        write_deltalake(uri, pa.table({"entity_id": [1, 2], "x": [0.1, 0.9], "ds": [ds, ds]}), mode="append",
                        partition_by=["ds"])
    gone_uri = str(lake / "gone")
    write_deltalake(gone_uri, pa.table({"entity_id": [1], "x": [0.5], "ds": ["2026-01-01"]}), partition_by=["ds"])
    ref_uri = str(lake / "drift_reference")
    edges, hist = {"x": np.array([0.5])}, {"x": np.array([1, 1])}

    def reference(table_uri: str, name: str, days: list[str]) -> str:
        snap = open_snapshot(name, table_uri)
        key = reference_key(snap, f"{days[0]}..{days[-1]}", days, ["x"], 2)
        store(ref_uri, key, snap.version, edges, hist, None, "run-builder")
        return f"{name}/{key.reference_id}"

    day1 = reference(uri, "feats", ["2026-01-01"])
    day2 = reference(uri, "feats", ["2026-01-02"])
    unsure = reference(gone_uri, "gone", ["2026-01-01"])
    built_at = DeltaTable(uri).version()
    # Day 1 is rewritten upstream: a run reading the current version builds another reference for it.
    write_deltalake(uri, pa.table({"entity_id": [1, 2, 3], "x": [0.2, 0.3, 0.4], "ds": ["2026-01-01"] * 3}),
                    mode="overwrite", predicate="ds = '2026-01-01'", partition_by=["ds"])
    shutil.rmtree(gone_uri)  # a table that cannot be opened: its references stay (fail closed)
    now = dt.datetime.now(UTC)
    pin(lake, uri, built_at, "run-two-days-ago", now - dt.timedelta(days=2))  # read the version day1 was built at

    def stored() -> set[str]:
        t = DeltaTable(ref_uri).to_pyarrow_table(columns=["table", "reference_id"])
        return {f"{a}/{b}" for a, b in zip(t.column("table").to_pylist(), t.column("reference_id").to_pylist())}

    assert stored() == {day1, day2, unsure}
    code, done, text = run_vacuum(lake, "--table", "drift_reference", "--retain-days", "3", capsys=capsys)
    assert code == 0, done.get("error")
    assert done["references_removed"] == [] and stored() == {day1, day2, unsure}  # the pinned version reuses day1
    assert list(done["references_kept_unsure"]) == [gone_uri] and "gone" in text

    code, dry, _ = run_vacuum(lake, "--table", "drift_reference", "--retain-days", "1", "--dry-run", capsys=capsys)
    assert code == 0 and dry["references_to_remove"] == [day1] and stored() == {day1, day2, unsure}
    code, done, text = run_vacuum(lake, "--table", "drift_reference", "--retain-days", "1", capsys=capsys)
    assert code == 0, done.get("error")
    assert done["references_removed"] == [day1] and stored() == {day2, unsure}
