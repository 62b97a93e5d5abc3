"""Pinned snapshots: version resolution, per-day fingerprints, refusal of unreadable versions."""
from __future__ import annotations

import os

import pytest
from deltalake import DeltaTable, write_deltalake

from engine.demo.data import make_day
from engine.errors import ConfigError, InputUnavailable
from engine.lake.snapshot import check_files_exist, open_snapshot, select_partitions


@pytest.fixture
def table(tmp_path):
    uri = str(tmp_path / "features")
    for i, ds in enumerate(["2026-01-01", "2026-01-02", "2026-01-03"]):
        write_deltalake(uri, make_day(i, ds, 200, 8, seed=1)[0], partition_by=["ds"], mode="append")
    return uri


def test_latest_resolves_to_a_concrete_version_and_pins_read_that_version(table):
    latest = open_snapshot("features", table)
    assert latest.version == 2 and latest.partitions == ["2026-01-01", "2026-01-02", "2026-01-03"]
    v0 = open_snapshot("features", table, 0)
    assert v0.version == 0 and v0.partitions == ["2026-01-01"]
    assert v0.rows("2026-01-01") == DeltaTable(table, version=0).to_pyarrow_table().num_rows == 200
    with pytest.raises(InputUnavailable, match="no version 9"):
        open_snapshot("features", table, 9)
    with pytest.raises(InputUnavailable, match="not found"):
        open_snapshot("features", table + "-missing")


def test_fingerprint_moves_only_for_the_day_that_changed(table):
    before = open_snapshot("features", table)
    write_deltalake(table, make_day(7, "2026-01-02", 50, 8, seed=2)[0], partition_by=["ds"], mode="append")
    write_deltalake(table, make_day(8, "2026-01-04", 50, 8, seed=2)[0], partition_by=["ds"], mode="append")
    after = open_snapshot("features", table)
    assert after.fingerprint("2026-01-01") == before.fingerprint("2026-01-01")
    assert after.fingerprint("2026-01-02") != before.fingerprint("2026-01-02")
    assert after.fingerprint("2026-01-01", extra="contract-v2") != before.fingerprint("2026-01-01")


def test_selecting_days_reports_the_absent_ones(table):
    snap = open_snapshot("features", table)
    assert select_partitions(snap, "2026-01-02..2026-01-05") == (["2026-01-02", "2026-01-03"], ["2026-01-04", "2026-01-05"])
    assert select_partitions(snap, "all") == (snap.partitions, [])
    with pytest.raises(ConfigError):
        select_partitions(snap, "2026-01-05..2026-01-01")


def test_a_version_whose_files_were_vacuumed_is_refused_before_work(table):
    snap = open_snapshot("features", table, 0)
    victim = snap.files["2026-01-01"][0].path
    os.remove(os.path.join(table, victim))
    with pytest.raises(InputUnavailable, match="vacuumed") as e:
        check_files_exist(snap, ["2026-01-01"])
    assert e.value.exit_code == 5


class DeletesAFileAsWorkStarts:
    """The real Ray executor, with one input file deleted after the run checked its files and before any chunk
    reads it (what a concurrent `vacuum` or a manual delete does to a running job)."""

    def __init__(self, inner, path: str):
        self.inner, self.path = inner, path

    def warm_up(self):
        self.inner.warm_up()

    def gpus(self):
        return self.inner.gpus()

    def run(self, units, chunks, bundle, deadline):
        os.remove(self.path)
        yield from self.inner.run(units, chunks, bundle, deadline)


def test_a_data_file_that_vanishes_mid_run_is_input_unavailable_naming_it(ray_local, lake, demo_root):
    from conftest import score_config
    from engine.ray.executor import executor
    from jobs.score import run_score

    feats = str(lake / "features")
    version = DeltaTable(feats).version()
    victim = sorted(p for p in DeltaTable(feats).file_uris() if "ds=2026-01-02" in p)[0]
    inp = DeltaTable(feats).to_pyarrow_table()  # the reference, read while every file is there
    cfg = score_config(lake, demo_root)
    with pytest.raises(InputUnavailable) as e:
        run_score(cfg, DeletesAFileAsWorkStarts(executor(cfg.ray), victim))
    msg = str(e.value)
    assert e.value.exit_code == 5 and "\n" not in msg
    assert f"features@v{version}" in msg and os.path.basename(victim) in msg and "ds=2026-01-02" in msg
    assert "input.version" in msg and "restore" in msg
    # The other days were read and committed: their rows match the input.
    scores = DeltaTable(str(lake / "scores")).to_pyarrow_table()
    for d in ("2026-01-01", "2026-01-03", "2026-01-04"):
        got = sorted(e for e, ds in zip(scores["entity_id"].to_pylist(), scores["ds"].to_pylist()) if ds == d)
        want = sorted(e for e, ds in zip(inp["entity_id"].to_pylist(), inp["ds"].to_pylist()) if ds == d)
        assert got == want and got, d
    assert "2026-01-02" not in set(scores.column("ds").to_pylist())


class DeletesALabelsFileAsTasksStart:
    """The in-process evaluation executor, with one labels file deleted after the job checked its files and before
    any task reads it."""

    def __init__(self, path: str):
        from engine.executor import LocalExecutor

        self.inner, self.path = LocalExecutor(), path

    def run(self, units, chunks, bundle, deadline):
        os.remove(self.path)
        yield from self.inner.run(units, chunks, bundle, deadline)


def test_a_labels_file_that_vanishes_mid_evaluation_is_input_unavailable_naming_it(lake, demo_root):
    from conftest import MLP, XGB, score_config
    from engine.config import EvaluateConfig, load_config, resolve_paths
    from engine.evaluation.job import run_evaluate
    from engine.executor import LocalExecutor
    from jobs.score import run_score

    run_score(score_config(lake, demo_root), LocalExecutor())
    run_score(score_config(lake, demo_root, f"model.uri=models:/{MLP}/1"), LocalExecutor())
    labels = str(lake / "labels")
    version = DeltaTable(labels).version()
    victim = sorted(p for p in DeltaTable(labels).file_uris() if "ds=2026-01-03" in p)[0]
    cfg = resolve_paths(load_config(EvaluateConfig, None, [
        f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
        f"mlflow.artifact_root={demo_root}/mlartifacts", f"models.champion=models:/{XGB}@champion",
        f"models.challengers=[models:/{MLP}/1]", "window=2026-01-02..2026-01-04", "min_support=50",
        "gates.min_support=50", "metrics.bootstrap=20", "drift.reference=null"]))
    with pytest.raises(InputUnavailable) as e:
        run_evaluate(cfg, DeletesALabelsFileAsTasksStart(victim))
    msg = str(e.value)
    assert e.value.exit_code == 5 and "\n" not in msg
    assert f"labels@v{version}" in msg and os.path.basename(victim) in msg and "ds=2026-01-03" in msg
    assert "labels.version" in msg and "restore" in msg
