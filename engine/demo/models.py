"""Train the demo models on early days and register them in MLflow without pickle (UBJ and pt2).

The training recipes themselves live in backtests/recipes.py (real backtests train with them; engine never
imports backtests): the demo job (jobs/demo.py) hands them to `register` as callables, so the demo models train
with exactly the recipe a backtest uses. Imports: engine.demo.data, engine.models, engine.models.preprocess only.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa

from engine.demo.data import CHANNELS, REGIONS, SEGMENTS, feature_names
from engine.models.registry import PREPROCESS_KEY, experiment_id
from engine.models.preprocess import Feature, PreprocessSpec, to_matrix

EXPERIMENT = "lakescore-demo"


def demo_spec(n_features: int) -> PreprocessSpec:
    feats = [Feature(n, fill=0.0, clip=(-8.0, 8.0)) for n in feature_names(n_features)]
    feats += [
        Feature("region", categories=tuple(REGIONS)),
        Feature("segment", categories=tuple(SEGMENTS)),
        Feature("channel", categories=tuple(CHANNELS)),
    ]
    return PreprocessSpec(tuple(feats))


def training_set(features: pa.Table, labels: pa.Table, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Join on entity and event time; only labels known by the end of the training window are used."""
    joined = features.join(labels.select(["entity_id", "event_ts", "label"]), ["entity_id", "event_ts"], join_type="inner")
    joined = joined.sort_by([("event_ts", "ascending"), ("entity_id", "ascending")])
    return to_matrix(joined, spec, "training set"), joined.column("label").to_numpy().astype(np.float32)


def register(tracking_uri: str, artifact_root: str, spec: PreprocessSpec, x: np.ndarray, y: np.ndarray,
             xgb_name: str, torch_name: str, trees: int, depth: int, seed: int, champion: str, *,
             train_xgb: Callable, train_mlp: Callable) -> dict:
    """Train (with the recipes handed in: backtests.recipes.train_xgb / train_mlp), log and register both models;
    alias `champion` on the chosen one. Returns {kind: version}."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp_id = experiment_id(client, EXPERIMENT, artifact_root)
    meta = {PREPROCESS_KEY: spec.to_json()}
    versions = {}
    with mlflow.start_run(experiment_id=exp_id, run_name="demo-xgb"):
        booster = train_xgb(x, y, trees, depth, seed)
        mlflow.log_params({"trees": trees, "depth": depth, "seed": seed, "rows": len(y)})
        sig = infer_signature(x[:5], booster.inplace_predict(x[:5]))
        info = mlflow.xgboost.log_model(booster, name="model", signature=sig, metadata=meta, model_format="ubj",
                                        registered_model_name=xgb_name)
        versions["xgb"] = int(info.registered_model_version)
    with mlflow.start_run(experiment_id=exp_id, run_name="demo-mlp"):
        model = train_mlp(x, y, seed)
        mlflow.log_params({"hidden": "32,16", "seed": seed, "rows": len(y)})
        info = mlflow.pytorch.log_model(model, name="model", input_example=x[:16], metadata=meta,
                                        serialization_format="pt2", registered_model_name=torch_name)
        versions["torch"] = int(info.registered_model_version)
    names = {"xgb": xgb_name, "torch": torch_name}
    client.set_registered_model_alias(names[champion], "champion", str(versions[champion]))
    return versions
