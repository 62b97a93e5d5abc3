"""The score job on a real local Ray, real Delta tables and a real MLflow registry (DESIGN.md's promises)."""
from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from deltalake import DeltaTable

from conftest import DAYS, ROWS, XGB, run_twice_concurrently, score_config
from engine.errors import ContractViolation, ModelRefused, UnitFailed
from engine.models.registry import fetch_bundle
from engine.models.preprocess import to_matrix
from engine.ray.executor import RayTasksExecutor, executor
from engine.score.run import Hooks
from jobs.score import run_score

pytestmark = pytest.mark.slow
STAMPS = ["model_name", "model_version", "model_run_id", "input_table", "input_version", "run_id", "config_hash", "scored_at"]


def score(cfg, force=False, hooks=None):
    return run_score(cfg, executor(cfg.ray), force=force, hooks=hooks)


def scores_table(lake) -> pa.Table:
    return DeltaTable(str(lake / "scores")).to_pyarrow_table()


def test_every_input_row_is_scored_once_stamped_and_partitioned(ray_local, lake, demo_root):
    cfg = score_config(lake, demo_root)
    s = score(cfg)
    t = scores_table(lake)
    assert s.rows_in == s.rows_out == t.num_rows == DAYS * ROWS
    assert s.units_committed == DAYS and s.units_failed == 0
    for c in STAMPS:
        assert t.column(c).null_count == 0, c
    assert set(t.column("model_name").to_pylist()) == {XGB}
    assert set(t.column("input_version").to_pylist()) == {DAYS - 1}
    assert set(t.column("run_id").to_pylist()) == {s.run_id}
    dt = DeltaTable(str(lake / "scores"))
    assert dt.metadata().partition_columns == ["ds", "model_name", "model_version"]
    paths = pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist()
    assert all(p.startswith("ds=2026-01-0") and f"/model_name={XGB}/model_version=1/" in p for p in paths)
    # one commit per unit, each carrying the stamps in its userMetadata
    import json

    metas = [json.loads(h["userMetadata"]) for h in dt.history() if "userMetadata" in h]
    assert sorted(m["ds"] for m in metas) == [f"2026-01-0{i + 1}" for i in range(DAYS)]
    assert all(m["run_id"] == s.run_id and m["model_version"] == 1 for m in metas)


def test_scores_match_an_independent_xgboost_prediction(ray_local, lake, demo_root):
    cfg = score_config(lake, demo_root, "input.ds=2026-01-02")
    score(cfg)
    got = scores_table(lake).to_pandas().set_index("entity_id")["score"]
    feats = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "=", "2026-01-02")])
    bundle = fetch_bundle(cfg.model.uri, cfg.mlflow.tracking_uri, None, False)
    booster = xgb.Booster()
    booster.load_model(bytearray(bundle.payload))
    want = booster.inplace_predict(to_matrix(feats, bundle.spec))
    ids = feats.column("entity_id").to_numpy()
    assert len(got) == ROWS
    np.testing.assert_allclose(got.loc[ids].to_numpy(), want, rtol=0, atol=1e-6)
    # and against a plain pandas path for the numeric features (no shared preprocessing code)
    df = feats.to_pandas()
    x = df[[f"f{i:02d}" for i in range(50)]].clip(-8, 8).to_numpy(np.float32)
    cats = [df[c].map({v: i for i, v in enumerate(vals)}).to_numpy(np.float32) for c, vals in
            [("region", ["north", "south", "east", "west"]), ("segment", ["consumer", "smb", "enterprise"]),
             ("channel", ["web", "app", "store"])]]
    np.testing.assert_allclose(booster.inplace_predict(np.column_stack([x, *cats])), want, atol=1e-7)


def test_rerun_with_same_snapshot_is_noop(ray_local, lake, demo_root):
    cfg = score_config(lake, demo_root)
    score(cfg)
    v = DeltaTable(str(lake / "scores")).version()
    s = score(cfg)
    assert s.units_skipped == DAYS and s.units_committed == 0 and s.rows_out == 0
    assert DeltaTable(str(lake / "scores")).version() == v


def test_time_travel_reproduces_keys_scores_and_stamps_after_the_input_moved_on(ray_local, lake, demo_root):
    from engine.demo.data import make_day
    from deltalake import write_deltalake

    pinned = score_config(lake, demo_root, "input.version=1")
    cols = ["ds", "entity_id", "event_ts", "score", "model_name", "model_version", "model_run_id", "input_table",
            "input_version", "config_hash"]
    order = [("ds", "ascending"), ("entity_id", "ascending")]
    first = score(pinned)
    a = scores_table(lake).select(cols).sort_by(order)
    f, _ = make_day(DAYS, "2026-01-02", 500, 50, seed=99)  # new rows land in an existing day
    write_deltalake(str(lake / "features"), f, partition_by=["ds"], mode="append")
    again = score(pinned, force=True)
    assert again.run_id != first.run_id and again.units_committed == 2
    b = scores_table(lake).select(cols).sort_by(order)
    assert a.num_rows == 2 * ROWS and a.equals(b)


def test_new_day_rescores_only_that_day_and_new_rows_replace_their_day(ray_local, lake, demo_root):
    from deltalake import write_deltalake

    from engine.demo.data import make_day

    cfg = score_config(lake, demo_root)
    score(cfg)
    new_day, _ = make_day(DAYS, "2026-01-09", 700, 50, seed=5)
    write_deltalake(str(lake / "features"), new_day, partition_by=["ds"], mode="append")
    s = score(cfg)
    assert s.committed == ["2026-01-09"] and s.units_skipped == DAYS
    extra, _ = make_day(DAYS + 1, "2026-01-02", 300, 50, seed=6)
    write_deltalake(str(lake / "features"), extra, partition_by=["ds"], mode="append")
    s = score(cfg)
    assert s.committed == ["2026-01-02"] and s.units_skipped == DAYS
    t = scores_table(lake)
    by_day = dict(zip(*np.unique(t.column("ds").to_numpy(zero_copy_only=False), return_counts=True)))
    assert by_day["2026-01-02"] == ROWS + 300 and by_day["2026-01-09"] == 700 and by_day["2026-01-01"] == ROWS
    assert t.num_rows == DeltaTable(str(lake / "features")).to_pyarrow_table(columns=["entity_id"]).num_rows


def test_force_replaces_exactly_the_requested_partition(ray_local, lake, demo_root):
    first = score(score_config(lake, demo_root))
    before = scores_table(lake)
    s = score(score_config(lake, demo_root, "input.ds=2026-01-03"), force=True)
    after = scores_table(lake)
    assert s.committed == ["2026-01-03"] and after.num_rows == before.num_rows == DAYS * ROWS
    runs = {r["ds"]: sorted(r["run_id_distinct"]) for r in after.group_by("ds").aggregate([("run_id", "distinct")]).to_pylist()}
    assert runs == {f"2026-01-0{i + 1}": [s.run_id if i == 2 else first.run_id] for i in range(DAYS)}
    # the other days are byte-for-byte the rows they were
    keep = pa.compute.not_equal(before.column("ds"), "2026-01-03")
    cols = ["ds", "entity_id", "score", "run_id"]
    assert before.filter(keep).select(cols).sort_by("entity_id").equals(
        after.filter(pa.compute.not_equal(after.column("ds"), "2026-01-03")).select(cols).sort_by("entity_id"))


def test_crash_between_write_and_commit_then_rerun_leaves_exactly_one_copy(ray_local, lake, demo_root):
    cfg = score_config(lake, demo_root)

    def crash(unit):
        if "2026-01-03" in unit.app_id:
            raise RuntimeError("injected crash before commit")

    with pytest.raises(RuntimeError, match="injected"):
        score(cfg, hooks=Hooks(before_commit=crash))
    partial = scores_table(lake)
    assert "2026-01-03" not in set(partial.column("ds").to_pylist())
    s = score(cfg)
    assert "2026-01-03" in s.committed and s.units_skipped == len(set(partial.column("ds").to_pylist()))
    t = scores_table(lake)
    feats = DeltaTable(str(lake / "features")).to_pyarrow_table(columns=["ds", "entity_id"])
    # exactly the input's keys, once each: nothing lost, nothing duplicated by the crash and the re-run
    assert t.select(["ds", "entity_id"]).sort_by([("ds", "ascending"), ("entity_id", "ascending")]).equals(
        feats.sort_by([("ds", "ascending"), ("entity_id", "ascending")]))


def test_two_concurrent_runs_of_one_unit_leave_one_copy_and_both_succeed(ray_local, lake, demo_root):
    import json

    cfg = score_config(lake, demo_root, "input.ds=2026-01-04")
    barrier = threading.Barrier(2, timeout=120)
    results = run_twice_concurrently(lambda: score(cfg, hooks=Hooks(after_check=lambda units: (units and barrier.wait()))))
    # both passed the "already done?" check; exactly one committed, the other found it done
    assert sorted((r.committed, r.already_done) for r in results) == [([], ["2026-01-04"]), (["2026-01-04"], [])]
    winner = next(r for r in results if r.committed)
    commits = [json.loads(h["userMetadata"]) for h in DeltaTable(str(lake / "scores")).history() if h.get("userMetadata")]
    assert [m["run_id"] for m in commits if m.get("app_id") == "lakescore/score/2026-01-04/t-xgb/1"] == [winner.run_id]
    t = scores_table(lake)
    assert t.num_rows == ROWS and not t.select(["entity_id"]).to_pandas().duplicated().any()
    assert set(t.column("run_id").to_pylist()) == {winner.run_id}
    # the loser's files were dropped: every Parquet file under the table is referenced by it
    on_disk = {p.name for p in (lake / "scores").rglob("*.parquet")}
    assert on_disk == {u.rsplit("/", 1)[-1] for u in DeltaTable(str(lake / "scores")).file_uris()}


def test_new_model_version_writes_beside_the_old_partitions(ray_local, lake, demo_root):
    score(score_config(lake, demo_root, "input.ds=2026-01-01"))
    old = scores_table(lake)
    s = score(score_config(lake, demo_root, "input.ds=2026-01-01", "model.uri=models:/t-mlp/1"))
    t = scores_table(lake)
    assert s.committed == ["2026-01-01"] and t.num_rows == 2 * ROWS
    kept = t.filter(pa.compute.equal(t.column("model_name"), XGB)).sort_by("entity_id")
    assert kept.column("score").equals(old.sort_by("entity_id").column("score"))
    assert kept.column("run_id").equals(old.sort_by("entity_id").column("run_id"))


def test_partition_filter_is_never_empty():
    from engine.lake.commit import Unit, partition_filter

    u = Unit("lakescore/score/2026-01-01/m/1", {"ds": "2026-01-01", "model_name": "m", "model_version": 1}, "ab" * 32)
    assert partition_filter(u, ["ds", "model_name", "model_version"]) == [
        ("ds", "=", "2026-01-01"), ("model_name", "=", "m"), ("model_version", "=", "1")]
    for bad in ({"ds": "", "model_name": "m", "model_version": 1}, {"ds": None, "model_name": "m", "model_version": 1}):
        with pytest.raises(UnitFailed):
            partition_filter(Unit("x", bad, "ab" * 32), ["ds", "model_name", "model_version"])
    with pytest.raises(UnitFailed):
        partition_filter(u, [])


def test_corrupt_model_is_refused_before_anything_is_written(ray_local, lake, demo_root, tmp_path):
    import mlflow

    from engine.models.registry import PREPROCESS_KEY
    from engine.demo.models import demo_spec

    mlflow.set_tracking_uri(f"sqlite:///{demo_root}/mlruns.db")
    d = tmp_path / "m"
    mlflow.xgboost.save_model(xgb.train({"max_depth": 2}, xgb.DMatrix(np.zeros((4, 53)), label=[0, 1, 0, 1]), 2),
                              str(d), metadata={PREPROCESS_KEY: demo_spec(50).to_json()})
    (d / "model.ubj").write_bytes(b"this is not a model")
    from engine.demo.models import EXPERIMENT

    exp = mlflow.get_experiment_by_name(EXPERIMENT)  # its artifact root lies under demo_root, not the cwd
    with mlflow.start_run(experiment_id=exp.experiment_id):
        mlflow.log_artifacts(str(d), "model")
        run = mlflow.active_run().info.run_id
    mlflow.register_model(f"runs:/{run}/model", "t-corrupt")
    with pytest.raises(ModelRefused, match="corrupt") as e:
        score(score_config(lake, demo_root, "model.uri=models:/t-corrupt/1"))
    assert e.value.exit_code == 5
    assert not (lake / "scores").exists()


def test_missing_day_fails_closed_while_present_days_commit(ray_local, lake, demo_root):
    with pytest.raises(ContractViolation, match="2026-01-07"):
        score(score_config(lake, demo_root, f"input.ds=2026-01-0{DAYS}..2026-01-07"))
    assert set(scores_table(lake).column("ds").to_pylist()) == {f"2026-01-0{DAYS}"}


def test_actor_pool_pipeline_gives_the_same_scores(ray_local, lake, demo_root):
    score(score_config(lake, demo_root, "input.ds=2026-01-01", "output.table=s_tasks"))
    score(score_config(lake, demo_root, "input.ds=2026-01-01", "output.table=s_actors", "ray.pipeline=actors",
                       "ray.actors=1", "ray.num_cpus=0.25"))
    a = DeltaTable(str(lake / "s_tasks")).to_pyarrow_table(columns=["entity_id", "score"]).sort_by("entity_id")
    b = DeltaTable(str(lake / "s_actors")).to_pyarrow_table(columns=["entity_id", "score"]).sort_by("entity_id")
    assert a.num_rows == ROWS and a.equals(b)


def test_tasks_executor_is_the_cpu_default(ray_local, lake, demo_root):
    assert isinstance(executor(score_config(lake, demo_root).ray), RayTasksExecutor)


@pytest.mark.parametrize("pipeline", ["tasks", "actors", "local"])
def test_cuda_without_a_gpu_is_a_config_error_not_a_cpu_run(ray_local, lake, demo_root, pipeline):
    from engine.errors import ConfigError
    from engine.executor import LocalExecutor

    cfg = score_config(lake, demo_root, "model.device=cuda", f"ray.pipeline={'tasks' if pipeline == 'local' else pipeline}")
    assert ray_local.cluster_resources().get("GPU", 0) == 0  # this test is about machines without one
    ex = LocalExecutor() if pipeline == "local" else executor(cfg.ray)
    if pipeline == "local":
        pytest.importorskip("torch")
        if LocalExecutor.gpus():
            pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="model.device=cuda but the ray engine sees no GPU") as e:
        run_score(cfg, ex)
    assert e.value.exit_code == 2 and not (lake / "scores").exists()
