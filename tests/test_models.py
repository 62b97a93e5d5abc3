"""Safe model loading: accepted formats load without pickle; pickle, corrupt and incomplete artifacts are refused."""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import ROOT
from engine.demo.models import demo_spec
from engine.errors import ModelRefused
from engine.models.registry import ARCH_FILE, PREPROCESS_KEY, ModelRef, load_bundle
from engine.models.scorers import build_scorer, mlp_from_arch
from engine.models.preprocess import Feature, PreprocessSpec, to_matrix
from engine.score.scoring import Stamps, file_schema, score_batch

REF = ModelRef("m", 1, "run", "src")
SPEC = PreprocessSpec(tuple(Feature(f"f{i}") for i in range(4)))
META = {PREPROCESS_KEY: SPEC.to_json()}


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.Sigmoid()).eval()


def test_pickle_pytorch_artifact_is_refused_unless_allowed(tmp_path):
    mlflow.pytorch.save_model(mlp(), str(tmp_path / "m"), serialization_format="pickle", metadata=META)
    with pytest.raises(ModelRefused, match="pickle") as e:
        load_bundle(tmp_path / "m", REF)
    assert e.value.exit_code == 5
    bundle = load_bundle(tmp_path / "m", REF, allow_pickle=True)
    x = np.random.default_rng(0).standard_normal((10, 4), dtype=np.float32)
    np.testing.assert_allclose(build_scorer(bundle, "cpu").predict(x), mlp()(torch.from_numpy(x)).detach().numpy()[:, 0], atol=1e-6)


def test_exported_program_loads_without_pickle_and_matches_torch(tmp_path):
    x = np.random.default_rng(1).standard_normal((37, 4), dtype=np.float32)
    mlflow.pytorch.save_model(mlp(), str(tmp_path / "m"), serialization_format="pt2", input_example=x[:8], metadata=META)
    bundle = load_bundle(tmp_path / "m", REF)
    assert bundle.kind == "torch_export"
    np.testing.assert_allclose(build_scorer(bundle, "cpu", micro_batch_rows=16).predict(x),
                               mlp()(torch.from_numpy(x)).detach().numpy()[:, 0], atol=1e-6)


def test_state_dict_loads_weights_only_into_a_json_architecture(tmp_path):
    model = mlp()
    d = tmp_path / "m"
    mlflow.pytorch.save_model(model, str(d), serialization_format="pickle", metadata=META)
    (d / "data" / "model.pth").unlink()
    torch.save(model.state_dict(), d / "data" / "state_dict.pt")
    (d / ARCH_FILE).write_text(json.dumps({"type": "mlp", "inputs": 4, "hidden": [8], "activation": "relu"}))
    bundle = load_bundle(d, REF)
    assert bundle.kind == "torch_state_dict"
    x = np.ones((3, 4), dtype=np.float32)
    np.testing.assert_allclose(build_scorer(bundle, "cpu").predict(x), model(torch.from_numpy(x)).detach().numpy()[:, 0], atol=1e-6)
    with pytest.raises(ModelRefused):
        mlp_from_arch({"type": "transformer"})


def test_missing_spec_corrupt_mlmodel_and_unknown_flavor_are_refused(tmp_path):
    import xgboost as xgb

    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(np.zeros((4, 4)), label=[0, 1, 0, 1]), 2)
    mlflow.xgboost.save_model(booster, str(tmp_path / "nospec"))
    with pytest.raises(ModelRefused, match="preprocessing spec"):
        load_bundle(tmp_path / "nospec", REF)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "MLmodel").write_text("flavors: [unclosed")
    with pytest.raises(ModelRefused, match="corrupt"):
        load_bundle(tmp_path / "bad", REF)
    with pytest.raises(ModelRefused, match="no MLmodel"):
        load_bundle(tmp_path / "nothing", REF)
    mlflow.xgboost.save_model(booster, str(tmp_path / "ok"), metadata=META)
    (tmp_path / "ok" / "model.ubj").unlink()
    with pytest.raises(ModelRefused, match="missing"):
        load_bundle(tmp_path / "ok", REF)


def test_torch_scores_do_not_depend_on_batch_size(tmp_path):
    x = np.random.default_rng(2).standard_normal((1000, 4), dtype=np.float32)
    mlflow.pytorch.save_model(mlp(), str(tmp_path / "m"), serialization_format="pt2", input_example=x[:8], metadata=META)
    scorer = build_scorer(load_bundle(tmp_path / "m", REF), "cpu", micro_batch_rows=64)
    whole = scorer.predict(x)
    for step in (1, 7, 100, 333):
        parts = np.concatenate([scorer.predict(x[i : i + step]) for i in range(0, len(x), step)])
        assert np.array_equal(parts, whole), step


def test_score_batch_keeps_rows_and_stamps_every_row(tmp_path):
    import datetime as dt
    import xgboost as xgb

    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 4), dtype=np.float32)
    booster = xgb.train({"max_depth": 2, "objective": "binary:logistic"}, xgb.DMatrix(x, label=rng.integers(0, 2, 50)), 5)
    mlflow.xgboost.save_model(booster, str(tmp_path / "m"), metadata=META)
    scorer = build_scorer(load_bundle(tmp_path / "m", REF), "cpu")
    batch = pa.record_batch({"id": pa.array(range(50), pa.int64()), **{f"f{i}": pa.array(x[:, i]) for i in range(4)}})
    schema = file_schema(batch.schema, ["id"], [], "score")
    stamps = Stamps("m", 1, "run", "features", 3, "r1", "h", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    out = score_batch(batch, scorer, schema, ["id"], [], stamps)
    assert out.num_rows == 50 and out.column("id").to_pylist() == list(range(50))
    np.testing.assert_allclose(out.column("score").to_numpy(), booster.inplace_predict(x), atol=1e-7)
    assert set(out.column("input_version").to_pylist()) == {3} and out.column("run_id").dictionary.to_pylist() == ["r1"]


def test_preprocessing_fills_clips_and_encodes_categories():
    spec = demo_spec(4)
    t = pa.table({"f00": [1.0, None, 100.0], "f01": [float("nan"), 2.0, -100.0], "f02": [0, 0, 0], "f03": [1, 1, 1],
                  "region": ["south", "mars", None], "segment": ["smb"] * 3, "channel": ["app"] * 3})
    m = to_matrix(t, spec)
    assert m.dtype == np.float32 and m.shape == (3, 7)
    assert m[:, 0].tolist() == [1.0, 0.0, 8.0] and m[:, 1].tolist() == [0.0, 2.0, -8.0]
    assert m[:, 4].tolist() == [1.0, -1.0, 0.0]  # known, unknown → -1, null → fill
    with pytest.raises(Exception, match="expected a number"):
        to_matrix(t.set_column(0, "f00", pa.array(["1", "2", "3"])), spec)


def xgb_booster(n: int = 4, names: list[str] | None = None, seed: int = 0):
    import pandas as pd
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, n), dtype=np.float32)
    data = pd.DataFrame(x, columns=names) if names else x
    return xgb.train({"max_depth": 2, "objective": "binary:logistic"}, xgb.DMatrix(data, label=rng.integers(0, 2, 64)), 3)


def set_mlmodel(d, flavor: str, key: str, value: str) -> None:
    import yaml

    m = yaml.safe_load((d / "MLmodel").read_text())
    m["flavors"][flavor][key] = value
    (d / "MLmodel").write_text(yaml.safe_dump(m))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_xgboost_data_path_outside_the_model_directory_is_refused(tmp_path, how):
    outside = tmp_path / "elsewhere"
    mlflow.xgboost.save_model(xgb_booster(), str(outside), metadata=META)  # a valid model, outside the artifact
    d = tmp_path / "m"
    mlflow.xgboost.save_model(xgb_booster(seed=1), str(d), metadata=META)
    if how == "symlink":
        (d / "model.ubj").unlink()
        (d / "model.ubj").symlink_to(outside / "model.ubj")
    else:
        target = "../elsewhere/model.ubj" if how == "dotdot" else str(outside / "model.ubj")
        set_mlmodel(d, "xgboost", "data", target)
    with pytest.raises(ModelRefused, match="outside the model directory") as e:
        load_bundle(d, REF)
    assert e.value.exit_code == 5 and "\n" not in str(e.value)


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_pytorch_model_data_outside_the_model_directory_is_refused(tmp_path, how):
    x = np.ones((8, 4), dtype=np.float32)
    mlflow.pytorch.save_model(mlp(), str(tmp_path / "elsewhere"), serialization_format="pt2", input_example=x, metadata=META)
    d = tmp_path / "m"
    mlflow.pytorch.save_model(mlp(), str(d), serialization_format="pt2", input_example=x, metadata=META)
    set_mlmodel(d, "pytorch", "model_data", "../elsewhere/data" if how == "dotdot" else str(tmp_path / "elsewhere" / "data"))
    with pytest.raises(ModelRefused, match="outside the model directory") as e:
        load_bundle(d, REF)
    assert e.value.exit_code == 5


def test_booster_feature_names_must_follow_the_spec_order(tmp_path):
    names = ["f0", "f1", "f2", "f3"]
    booster = xgb_booster(names=names)
    mlflow.xgboost.save_model(booster, str(tmp_path / "ok"), metadata=META)
    assert load_bundle(tmp_path / "ok", REF).spec.feature_names == names
    swapped = PreprocessSpec(tuple(Feature(n) for n in ["f1", "f0", "f2", "f3"]))
    mlflow.xgboost.save_model(booster, str(tmp_path / "swapped"), metadata={PREPROCESS_KEY: swapped.to_json()})
    with pytest.raises(ModelRefused, match=r"position 0.*'f1'.*'f0'") as e:
        load_bundle(tmp_path / "swapped", REF)
    assert e.value.exit_code == 5 and "\n" not in str(e.value)


def test_model_width_must_equal_the_spec_width(tmp_path):
    wide = PreprocessSpec(tuple(Feature(f"f{i}") for i in range(5)))
    meta = {PREPROCESS_KEY: wide.to_json()}
    mlflow.xgboost.save_model(xgb_booster(), str(tmp_path / "xgb"), metadata=meta)  # no names: width only
    with pytest.raises(ModelRefused, match="4 features.*5"):
        load_bundle(tmp_path / "xgb", REF)
    d = tmp_path / "sd"
    mlflow.pytorch.save_model(mlp(), str(d), serialization_format="pickle", metadata=meta)
    (d / "data" / "model.pth").unlink()
    torch.save(mlp().state_dict(), d / "data" / "state_dict.pt")
    (d / ARCH_FILE).write_text(json.dumps({"type": "mlp", "inputs": 4, "hidden": [8], "activation": "relu"}))
    with pytest.raises(ModelRefused, match="4 features.*5"):
        load_bundle(d, REF)
    x = np.ones((8, 4), dtype=np.float32)
    mlflow.pytorch.save_model(mlp(), str(tmp_path / "pt2"), serialization_format="pt2", input_example=x, metadata=meta)
    with pytest.raises(ModelRefused, match="4 features.*5"):
        load_bundle(tmp_path / "pt2", REF)


def test_xgboost_is_imported_for_scoring_without_scikit_learn_and_sklearn_still_imports_after():
    """xgboost.compat's sklearn import is most of xgboost's import time; scoring never needs it (a fresh process)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from engine.models.scorers import import_xgboost\n"
        "xgb = import_xgboost()\n"
        "assert 'sklearn' not in sys.modules and not xgb.compat.SKLEARN_INSTALLED\n"
        "import numpy as np\n"
        "b = xgb.train({'objective': 'binary:logistic'}, xgb.DMatrix(np.eye(4, 3), label=[0, 1, 0, 1]), 2)\n"
        "assert b.inplace_predict(np.eye(4, 3)).shape == (4,)\n"
        "import sklearn.metrics\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    # A process that imported sklearn first gets xgboost as usual (its sklearn wrappers work).
    code = "import sklearn\nfrom engine.models.scorers import import_xgboost\nassert import_xgboost().compat.SKLEARN_INSTALLED\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
