"""The analyst notebooks run top to bottom against a freshly scored lake (their asserts reconcile row counts)."""
from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, score_config
from engine.ray.score import executor
from engine.score_job import run_score

pytestmark = pytest.mark.slow


def test_scores_analyst_notebook_runs(ray_local, lake, demo_root, monkeypatch):
    cfg = score_config(lake, demo_root)
    run_score(cfg, executor(cfg.ray))
    monkeypatch.setenv("LAKESCORE_LAKE", str(lake))
    nb = nbformat.read(ROOT / "notebooks" / "scores_analyst.ipynb", as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "partitions reconcile with their input snapshots" in out
    assert os.environ["LAKESCORE_LAKE"] == str(lake)
