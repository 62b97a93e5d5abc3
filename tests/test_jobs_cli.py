"""Jobs as a scheduler runs them: a process, an exit code, one error line, one JSON summary line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import DAYS, ROOT, ROWS, XGB

pytestmark = pytest.mark.slow


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_unknown_key_exits_2_with_one_line_and_a_summary():
    out = run("jobs.score", "--config", "conf/score.yaml", "input.tabel=x")
    assert out.returncode == 2
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "input.tabel" in errors[0] and "conf/score.yaml" in errors[0]
    assert last_json(out.stdout) == {**last_json(out.stdout), "status": "error", "exit_code": 2}


def test_console_script_dispatches_and_rejects_unknown_commands():
    assert run("jobs.cli", "nope").returncode == 2
    assert "score" in run("jobs.cli", "--help").stdout


def test_score_job_process_end_to_end_then_noop(lake, demo_root):
    common = ["jobs.score", "--config", "conf/score.yaml", f"lake.root={lake}",
              f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
              f"model.uri=models:/{XGB}@champion"]  # run from the repo root as users do: every store pinned outside it
    first = run(*common)
    assert first.returncode == 0, first.stderr[-2000:]
    s = last_json(first.stdout)
    assert s["rows_in"] == s["rows_out"] == DAYS * ROWS and s["input_version"] == DAYS - 1
    again = run(*common)
    s2 = last_json(again.stdout)
    assert again.returncode == 0 and s2["units_skipped"] == DAYS and s2["rows_out"] == 0
    missing = run(*common, "input.table=nope")
    assert missing.returncode == 5 and "nope" in missing.stderr


def test_submit_pins_every_relative_mlflow_location(tmp_path):
    import shlex

    from engine.config import ScoreConfig, load_config, relative_paths
    from jobs.submit import build_entrypoint

    conf = tmp_path / "score.yaml"
    conf.write_text("model:\n  uri: models:/m@champion\n")
    overrides = ["lake.root=lake", "mlflow.tracking_uri=sqlite:///track.db", "mlflow.registry_uri=sqlite:///reg.db"]
    entry, _ = build_entrypoint("score", str(conf), overrides, [], str(tmp_path))
    args = shlex.split(entry)
    keys = [a for a in args[args.index("--config") + 2:] if "=" in a]
    # What the job sees in Ray's uploaded copy (another directory): the last value of each key wins.
    cfg = load_config(ScoreConfig, str(conf), keys)
    assert relative_paths(cfg) == []
    assert cfg.mlflow.registry_uri == f"sqlite:///{tmp_path}/reg.db"
    assert cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path}/track.db" and cfg.lake.root == str(tmp_path / "lake")
    assert "mlflow.registry_uri" in relative_paths(load_config(ScoreConfig, str(conf), overrides))
