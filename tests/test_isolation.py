"""Tests write under their temp dirs only: the session's cwd and default stores are private, and the guard in
conftest.py fails the run when the repository tree changes."""
from __future__ import annotations

import os
from pathlib import Path

from conftest import ROOT, repo_changes, repo_files
from engine.config import ScoreConfig, load_config, resolve_paths


def test_guard_reports_new_changed_and_removed_files_and_dirs(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("a")
    (tmp_path / "old.txt").write_text("x")
    (tmp_path / "__pycache__").mkdir()
    before = repo_files(tmp_path)
    (tmp_path / "mlruns.db").write_bytes(b"sqlite")
    (tmp_path / "spark-warehouse" / "t").mkdir(parents=True)
    (tmp_path / "src" / "a.py").write_text("changed, and longer")
    (tmp_path / "old.txt").unlink()
    (tmp_path / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"")  # a tool cache, not a test output
    changes = repo_changes(before, repo_files(tmp_path))
    assert sorted(changes) == ["changed src/a.py", "new mlruns.db", "new spark-warehouse", "removed old.txt"]


def test_relative_defaults_resolve_outside_the_repository():
    assert not Path(os.getcwd()).resolve().is_relative_to(ROOT)
    cfg = resolve_paths(load_config(ScoreConfig, None, ["model.uri=models:/m@champion"]))
    for where in (cfg.lake.root, cfg.mlflow.tracking_uri.removeprefix("sqlite:///"), cfg.mlflow.artifact_root):
        assert not Path(where).is_relative_to(ROOT), where
    assert not os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///").startswith(str(ROOT))
