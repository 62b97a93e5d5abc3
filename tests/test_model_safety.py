"""Safe loading through the score job: artifacts that would unpickle, or that are not UBJ/JSON, are refused (exit 5)
before anything is written, and a pickled side effect never runs. Each test registers its models in its own MLflow
sqlite under tmp_path; each hostile payload is shown live (it fires when unpickled the unsafe way)."""
from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import xgboost as xgb
from deltalake import DeltaTable
from mlflow.tracking import MlflowClient

from conftest import ROWS, score_config
from engine.demo.models import demo_spec
from engine.errors import ModelRefused
from engine.models.registry import ARCH_FILE, PREPROCESS_KEY
from engine.executor import LocalExecutor
from jobs.score import run_score

SPEC = demo_spec(50)
WIDTH = len(SPEC.features)
META = {PREPROCESS_KEY: SPEC.to_json()}
DAY = "2026-01-01"


class SideEffect:
    """Unpickling this creates the directory `path`: the marker that a pickle payload ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def register(tmp_path: Path, model_dir: Path, name: str) -> str:
    """Log `model_dir` as a run's artifact in this test's own registry and register it as version 1."""
    client = MlflowClient(tracking_uri(tmp_path), registry_uri=tracking_uri(tmp_path))
    exp = client.create_experiment(name, artifact_location=(tmp_path / "mlartifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    client.create_model_version(name, f"{client.get_run(run.info.run_id).info.artifact_uri}/model", run.info.run_id)
    return f"models:/{name}/1"


def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlruns.db"


def run_job(lake, demo_root, tmp_path, uri: str):
    cfg = score_config(lake, demo_root, f"mlflow.tracking_uri={tracking_uri(tmp_path)}",
                       f"mlflow.artifact_root={tmp_path}/mlartifacts", f"model.uri={uri}", f"input.ds={DAY}")
    return run_score(cfg, LocalExecutor())


def assert_refused(lake, demo_root, tmp_path, uri: str, match: str, marker: Path | None = None) -> None:
    with pytest.raises(ModelRefused, match=match) as e:
        run_job(lake, demo_root, tmp_path, uri)
    assert e.value.exit_code == 5 and "\n" not in str(e.value)
    assert not (lake / "scores").exists(), "a refused model wrote scores"
    if marker is not None:
        assert not marker.exists(), "the pickled side effect ran"


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(WIDTH, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.Sigmoid()).eval()


def booster():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, WIDTH), dtype=np.float32)
    return xgb.train({"max_depth": 2, "objective": "binary:logistic"}, xgb.DMatrix(x, label=rng.integers(0, 2, 200)), 3)


def test_a_safe_model_in_the_same_setup_writes_scores(lake, demo_root, tmp_path):
    """The positive control: the harness below writes scores when the model is acceptable."""
    d = tmp_path / "m"
    mlflow.xgboost.save_model(booster(), str(d), metadata=META, model_format="ubj")
    s = run_job(lake, demo_root, tmp_path, register(tmp_path, d, "t-safe"))
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "model_name"])
    assert s.units_committed == 1 and t.num_rows == ROWS
    assert set(t.column("ds").to_pylist()) == {DAY} and set(t.column("model_name").to_pylist()) == {"t-safe"}


def with_payload(src: Path, dst: Path, obj) -> None:
    """A copy of a .pt2 archive whose example inputs (a torch.save record that torch.export.load unpickles) hold `obj`."""
    payload = io.BytesIO()
    torch.save((obj,), payload)
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            zo.writestr(info, payload.getvalue() if info.filename.endswith("sample_inputs/model.pt") else zi.read(info))


def test_pickle_inside_a_pt2_archive_is_refused_and_never_runs(lake, demo_root, tmp_path):
    d = tmp_path / "m"
    x = np.zeros((8, WIDTH), dtype=np.float32)
    mlflow.pytorch.save_model(mlp(), str(d), serialization_format="pt2", input_example=x, metadata=META)
    pt2 = d / "data" / "model.pt2"
    clean = tmp_path / "clean.pt2"
    pt2.rename(clean)
    marker = tmp_path / "pt2-payload-ran"
    with_payload(clean, pt2, SideEffect(marker))
    live = tmp_path / "live.pt2"
    with_payload(clean, live, SideEffect(tmp_path / "pt2-live"))
    try:
        torch.export.load(str(live))
    except Exception:  # the payload has run by the time the loader notices the inputs are not tensors
        pass
    assert (tmp_path / "pt2-live").is_dir(), "positive control: torch.export.load runs the payload"
    assert_refused(lake, demo_root, tmp_path, register(tmp_path, d, "t-pt2-pickle"), "pickle", marker)


def test_pickled_object_inside_a_state_dict_is_refused_and_never_runs(lake, demo_root, tmp_path):
    d = tmp_path / "m"
    mlflow.pytorch.save_model(mlp(), str(d), serialization_format="pickle", metadata=META)
    (d / "data" / "model.pth").unlink()
    marker = tmp_path / "state-dict-payload-ran"
    state = mlp().state_dict()
    state["extra"] = SideEffect(marker)
    torch.save(state, d / "data" / "state_dict.pt")
    (d / ARCH_FILE).write_text(json.dumps({"type": "mlp", "inputs": WIDTH, "hidden": [8], "activation": "relu"}))
    live = tmp_path / "live.pt"
    state["extra"] = SideEffect(tmp_path / "state-dict-live")
    torch.save(state, live)
    torch.load(live, weights_only=False)
    assert (tmp_path / "state-dict-live").is_dir(), "positive control: an unrestricted torch.load runs the payload"
    assert_refused(lake, demo_root, tmp_path, register(tmp_path, d, "t-state-dict-pickle"), "cannot be loaded", marker)


def test_xgboost_formats_other_than_ubj_or_json_are_refused(lake, demo_root, tmp_path):
    declared = tmp_path / "declared"
    mlflow.xgboost.save_model(booster(), str(declared), metadata=META, model_format="xgb")
    assert_refused(lake, demo_root, tmp_path, register(tmp_path, declared, "t-xgb-format"), "format 'xgb'")
    # A pickled booster (joblib's habit) under the UBJ name: the MLmodel says ubj, the bytes are a pickle.
    disguised = tmp_path / "disguised"
    mlflow.xgboost.save_model(booster(), str(disguised), metadata=META, model_format="ubj")
    marker = tmp_path / "xgb-payload-ran"
    (disguised / "model.ubj").write_bytes(pickle.dumps((SideEffect(marker), booster())))
    pickle.loads(pickle.dumps(SideEffect(tmp_path / "xgb-live")))
    assert (tmp_path / "xgb-live").is_dir()
    assert_refused(lake, demo_root, tmp_path, register(tmp_path, disguised, "t-xgb-pickle"), "not a UBJ/JSON", marker)


class Benign(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_pickle_pyfunc_model_is_refused_and_its_side_effect_never_runs(lake, demo_root, tmp_path, allow_pickle):
    d = tmp_path / "m"
    mlflow.pyfunc.save_model(str(d), python_model=Benign(), metadata=META)
    (pkl,) = [p for p in d.rglob("*.pkl")]
    marker = tmp_path / "pyfunc-payload-ran"
    pkl.write_bytes(pickle.dumps(SideEffect(marker)))
    pickle.loads(pickle.dumps(SideEffect(tmp_path / "pyfunc-live")))
    assert (tmp_path / "pyfunc-live").is_dir()
    uri = register(tmp_path, d, "t-pyfunc")
    with pytest.raises(ModelRefused, match="not supported") as e:
        cfg = score_config(lake, demo_root, f"mlflow.tracking_uri={tracking_uri(tmp_path)}",
                           f"mlflow.artifact_root={tmp_path}/mlartifacts", f"model.uri={uri}", f"input.ds={DAY}",
                           f"model.allow_pickle={str(allow_pickle).lower()}")
        run_score(cfg, LocalExecutor())
    assert e.value.exit_code == 5 and not (lake / "scores").exists() and not marker.exists()
