"""Shared fixtures: one local Ray and one small demo lake + MLflow registry per session (they take seconds)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from engine.config import ScoreConfig, load_config, resolve_paths  # noqa: E402

DAYS = 4
ROWS = 3000
XGB = "t-xgb"
MLP = "t-mlp"


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray for the session; stopped at the end (only what we started)."""
    import ray

    started = not ray.is_initialized()
    if started:
        # Workers import the project from the repo root.
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A small demo lake (DAYS days × ROWS rows, one Delta version per day) and both demo models registered."""
    from deltalake import DeltaTable

    from engine.demo import data, models

    root = tmp_path_factory.mktemp("demo")
    lake = root / "lake"
    data.write_lake(str(lake / "features"), str(lake / "labels"), "2026-01-01", DAYS, ROWS, 50, seed=11)
    spec = models.demo_spec(50)
    train = data.days("2026-01-01", 2)
    ft = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "in", train)])
    lt = DeltaTable(str(lake / "labels")).to_pyarrow_table(filters=[("ds", "in", train)])
    x, y = models.training_set(ft, lt, spec)
    tracking = f"sqlite:///{root}/mlruns.db"
    models.register(tracking, str(root / "mlartifacts"), spec, x, y, XGB, MLP, trees=30, depth=4, seed=3, champion="xgb")
    return root


@pytest.fixture
def lake(demo_root, tmp_path):
    """A private copy of the demo lake (tests append to it and write scores); the registry is shared."""
    dst = tmp_path / "lake"
    shutil.copytree(demo_root / "lake", dst)
    return dst


def score_config(lake: Path, demo_root: Path, *overrides: str) -> ScoreConfig:
    base = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", f"model.uri=models:/{XGB}@champion",
            "input.passthrough_columns=[event_ts]", "output.target_file_rows=2000"]
    return resolve_paths(load_config(ScoreConfig, None, [*base, *overrides]))
