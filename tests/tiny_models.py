"""Tiny XGBoost models logged to a private MLflow registry (sqlite under a test's temp dir), with their spec."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.models.registry import PREPROCESS_KEY
from engine.models.preprocess import PreprocessSpec


def register_xgb(root: Path, name: str, spec: PreprocessSpec, x: np.ndarray, y: np.ndarray,
                 objective: str = "binary:logistic") -> list[str]:
    """Train a few trees on (x, y), log them as UBJ with `spec` and register version 1 of `name` under `root`.

    Returns the score-config overrides that point a job at this registry and model.
    """
    import mlflow
    import xgboost as xgb
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{root}/mlruns.db"
    client = MlflowClient(tracking)
    exp_id = client.create_experiment(f"tiny-{name}", artifact_location=f"file://{root}/mlartifacts")
    booster = xgb.train({"objective": objective, "max_depth": 2, "eta": 0.3, "seed": 0, "nthread": 1},
                        xgb.DMatrix(x, label=y), num_boost_round=5)
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    try:
        with mlflow.start_run(experiment_id=exp_id):
            mlflow.xgboost.log_model(booster, name="model", metadata={PREPROCESS_KEY: spec.to_json()},
                                     model_format="ubj", registered_model_name=name)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return [f"mlflow.tracking_uri={tracking}", f"mlflow.artifact_root={root}/mlartifacts", f"model.uri=models:/{name}/1"]
