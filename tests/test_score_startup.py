"""The score job's start-up (issue 20, item 5): the model is resolved and fetched in a background thread while the
snapshot opens and the engine starts, and warm Ray workers load it while the driver plans.

What must not change: a model error keeps its exit code, its place before any engine start (and before the
snapshot's own error) and writes nothing; the model the warm workers load is the one the chunks look up (no second
load); and the scores are the same as an in-line run's, compared through `deltalake`.
"""
from __future__ import annotations

import shutil
import threading

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from conftest import DAYS, ROWS, XGB, score_config
from engine.errors import InputUnavailable, ModelRefused
from engine.executor import LocalExecutor
from jobs.score import run_score

RUN_STAMPS = ["run_id", "scored_at", "config_hash"]  # differ between two runs (the lake's path is in the config)


class StartRecorder:
    """The in-process executor, recording whether the job started it (warm_up, gpus or run): an engine start."""

    def __init__(self):
        self.inner = LocalExecutor()
        self.started: list[str] = []

    def warm_up(self) -> None:
        self.started.append("warm_up")
        self.inner.warm_up()

    def gpus(self) -> float:
        self.started.append("gpus")
        return self.inner.gpus()

    def run(self, *args):
        self.started.append("run")
        return self.inner.run(*args)


def test_the_model_is_resolved_while_the_snapshot_opens(lake, demo_root, monkeypatch):
    """Forced interleaving: the registry look-up waits until the input snapshot is open. Run in line (model first,
    then the snapshot, as before), it could never go on; in the background it goes on once the snapshot is open."""
    import engine.models.registry as registry
    import engine.score.run as core

    opened = threading.Event()
    real_open, real_resolve = core.open_snapshot, registry.resolve_model

    def open_then_signal(*args, **kwargs):
        snap = real_open(*args, **kwargs)
        opened.set()
        return snap

    def resolve_once_open(*args, **kwargs):
        assert opened.wait(10), "the model was resolved before the snapshot opened: in line, not in the background"
        return real_resolve(*args, **kwargs)

    monkeypatch.setattr(core, "open_snapshot", open_then_signal)
    monkeypatch.setattr(registry, "resolve_model", resolve_once_open)
    monkeypatch.setattr(core, "resolve_model", resolve_once_open, raising=False)  # where it was called in line
    s = run_score(score_config(lake, demo_root), LocalExecutor())
    assert s.units_committed == DAYS and s.rows_out == DAYS * ROWS and s.model == XGB
    assert {"model_ref_background", "bundle_background"} <= set(s.phases)


@pytest.mark.parametrize("overrides", [["model.uri=models:/nope@champion"],
                                       ["model.uri=models:/nope@champion", "input.version=99"]])
def test_a_model_error_in_the_background_is_exit_5_before_any_engine_starts(lake, demo_root, overrides):
    """The background's error is raised as it is (ModelRefused, exit 5), naming the model, before the engine starts
    and before anything is written; where the input version is wrong too, the model's error still comes first (the
    order of the steps in line), never the snapshot's."""
    ex = StartRecorder()
    tables = sorted(p.name for p in lake.iterdir())
    with pytest.raises(ModelRefused, match="model nope alias @champion not found") as e:
        run_score(score_config(lake, demo_root, *overrides), ex)
    assert e.value.exit_code == 5 and not isinstance(e.value, InputUnavailable)
    assert ex.started == []
    assert sorted(p.name for p in lake.iterdir()) == tables  # no scores table, no ledger row


def test_the_snapshot_error_comes_when_the_model_is_fine(lake, demo_root):
    """A wrong input version with a good model: the snapshot's own error (exit 5, naming input.version), no engine."""
    ex = StartRecorder()
    with pytest.raises(InputUnavailable, match="input.version"):
        run_score(score_config(lake, demo_root, "input.version=99"), ex)
    assert ex.started == []


def test_the_preloaded_model_is_the_one_the_chunks_look_up(lake, demo_root):
    """What a warm worker loads (engine.ray.executor._preload_task, with the job's model settings) is the cache entry
    the chunks then find: the job's chunks, run in this same process, load the model no second time."""
    from engine.models import scorers
    from engine.models.registry import fetch_bundle
    from engine.ray.executor import _preload_task

    cfg = score_config(lake, demo_root)
    bundle = fetch_bundle(cfg.model.uri, cfg.mlflow.tracking_uri, None, False)
    scorers._CACHE.clear()  # this process may hold it from an earlier test
    before = scorers.scorer_loads(bundle)
    _preload_task(None, bundle, cfg.model.device, cfg.model.micro_batch_rows)
    assert scorers.scorer_loads(bundle) == before + 1
    s = run_score(cfg, LocalExecutor())
    assert s.units_committed == DAYS
    assert scorers.scorer_loads(bundle) == before + 1, "the chunks loaded the model again: the preload's key differs"


def _content(lake) -> pa.Table:
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table()
    return t.drop_columns(RUN_STAMPS).sort_by([("ds", "ascending"), ("entity_id", "ascending")])


@pytest.mark.slow
def test_the_overlapped_ray_run_writes_what_an_in_line_run_writes(ray_local, lake, demo_root, tmp_path):
    """The Ray run (background model, engine start, warm workers that preloaded it) and an in-process run of the
    same snapshot write the same scores table, every column but the run's own stamps, read back with deltalake."""
    from engine.ray.executor import executor

    other = tmp_path / "lake-in-line"
    shutil.copytree(demo_root / "lake", other)
    cfg = score_config(lake, demo_root)
    s = run_score(cfg, executor(cfg.ray))
    assert "preload" in s.phases  # the warm workers were handed the model
    run_score(score_config(other, demo_root), LocalExecutor())
    ray_t, local_t = _content(lake), _content(other)
    assert ray_t.num_rows == DAYS * ROWS
    assert ray_t.schema == local_t.schema
    assert ray_t.equals(local_t)
