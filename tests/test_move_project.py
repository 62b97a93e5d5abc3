"""Moving or copying a project folder: a demo-like project (its own lake made with engine.demo, its own MLflow sqlite
store and artifacts) is copied with shutil.copytree and the original deleted; the copy must keep what earlier runs
pinned (vacuum, read back with deltalake directly) and its jobs must still log to MLflow."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import ROOT, make_demo_project
from engine.config import LakeConfig, ScoreConfig
from engine.tables import ledger

N_DAYS, ROWS, XGB, MLP = 4, 300, "mv-xgb", "mv-mlp"
CONTRACT = str(ROOT / "conf" / "contracts" / "features.yaml")


@pytest.fixture
def project(tmp_path) -> Path:
    """A project folder like `make demo` leaves: lake/{features,labels} (one Delta version per day), mlruns.db and
    mlartifacts/ with both demo models registered (XGBoost as champion)."""
    return make_demo_project(tmp_path / "orig", N_DAYS, ROWS, 5, XGB, MLP, trees=5, depth=3)


def settings(root: Path) -> list[str]:
    """The overrides that make a job use the project at `root`, as its conf/*.yaml do from inside the folder."""
    return [f"lake.root={root / 'lake'}", f"mlflow.tracking_uri=sqlite:///{root}/mlruns.db",
            f"mlflow.artifact_root={root / 'mlartifacts'}"]


def run(main, argv: list[str], capsys) -> tuple[int, dict, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, json.loads(out.out.strip().splitlines()[-1]), out.err


def move(src: Path, dst: Path) -> Path:
    """Copy the project folder and delete the original (what `mv` to another disk does)."""
    shutil.copytree(src, dst, symlinks=True)
    shutil.rmtree(src)
    return dst


def legacy_pin(root: Path, version: int, run_id: str, with_root: bool = True) -> None:
    """A ledger row as runs recorded them before pins followed the lake: the input's absolute URI (and, unless
    `with_root` is False, the config that names the lake root the run used)."""
    cfg = ScoreConfig(lake=LakeConfig(root=str(root / "lake")), model={"uri": "models:/x/1"})
    now = dt.datetime.now(dt.timezone.utc)
    entry = ledger.row("score", cfg, {"run_id": run_id, "status": "ok", "exit_code": 0, "config_hash": "h"}, now, now,
                       "score --config x")
    entry["inputs"] = [{"role": "input", "table": "features", "uri": str(root / "lake" / "features"),
                        "version": version}]
    if not with_root:
        entry["config"] = None
    ledger.append(cfg.lake, entry)


def content(uri: str, version: int) -> pa.Table | None:
    try:
        return DeltaTable(uri, version=version).to_pyarrow_table().sort_by([("ds", "ascending"),
                                                                            ("entity_id", "ascending")])
    except FileNotFoundError:  # deltalake's error for a data file the log lists but storage no longer holds
        return None


def test_vacuum_after_moving_the_project_keeps_the_versions_earlier_runs_pinned(ray_local, project, tmp_path, capsys):
    from jobs.score import main as score
    from jobs.vacuum import main as vacuum

    features = str(project / "lake" / "features")
    code, summary, err = run(score, ["--config", str(ROOT / "conf" / "score.yaml"), *settings(project),
                                     f"model.uri=models:/{XGB}@champion", "input.version=1", f"input.contract={CONTRACT}",
                                     "output.target_file_rows=2000"], capsys)
    assert code == 0, err
    (scored,) = ledger.read(LakeConfig(root=str(project / "lake")), job="score").to_pylist()
    assert scored["inputs"][0]["version"] == 1
    legacy_pin(project, 0, "legacy-run")  # written by a lakescore from before, with the absolute URI of the time
    legacy_pin(project, 2, "legacy-rootless", with_root=False)
    held = {v: content(features, v) for v in range(N_DAYS)}
    restated = DeltaTable(features).to_pyarrow_table()  # upstream restates the table: every earlier file tombstoned
    write_deltalake(features, restated, mode="overwrite", partition_by=["ds"])
    current = DeltaTable(features).version()
    held[current] = content(features, current)

    new = move(project, tmp_path / "moved")
    uri = str(new / "lake" / "features")
    code, done, err = run(vacuum, ["--config", str(ROOT / "conf" / "score.yaml"), *settings(new), "--table",
                                   "features", "--retain-days", "0"], capsys)
    assert code == 0, err
    assert done["files_removed"] > 0  # version 3, pinned by nobody, lost its files: the vacuum did run
    kept = {k["version"]: k["run_ids"] for k in done["kept_versions"]}
    assert kept == {current: [], 0: ["legacy-run"], 1: [summary["run_id"]], 2: ["legacy-rootless"]}
    for v in (0, 1, 2, current):
        got = content(uri, v)
        assert got is not None and got.equals(held[v]), f"version {v} of the moved features table"
    assert content(uri, N_DAYS - 1) is None
    assert scored["inputs"][0]["uri"] == "features"  # recorded relative to lake.root: it moves with the lake


def test_a_moved_project_fails_fast_on_its_stale_mlflow_locations_and_logs_there_after_relocate(
        ray_local, project, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from contracts.enforce import REPORT_EXPERIMENT
    from jobs.score import main as score
    from jobs.validate import main as validate

    validate_argv = ["--config", str(ROOT / "conf" / "validate.yaml"), f"input.contract={CONTRACT}", "input.ds=2026-01-04"]
    score_argv = ["--config", str(ROOT / "conf" / "score.yaml"), f"model.uri=models:/{XGB}@champion",
                  f"input.contract={CONTRACT}", "input.ds=2026-01-04"]
    code, _, err = run(validate, [*validate_argv, *settings(project)], capsys)  # as `make demo` does: its reports
    assert code == 0, err                                                       # experiment is at orig/mlartifacts
    old_root = project / "mlartifacts"
    new = move(project, tmp_path / "moved")

    code, summary, err = run(validate, [*validate_argv, *settings(new)], capsys)
    assert not project.exists(), "the job wrote MLflow artifacts into the folder the project was moved from"
    assert code == 2 and summary["exit_code"] == 2
    (line,) = [ln for ln in err.splitlines() if "error:" in ln]
    assert (f"MLflow experiment '{REPORT_EXPERIMENT}' keeps its artifacts at file://{old_root}, which no longer exists"
            in line and "lakescore relocate" in line and str(new / "mlartifacts") in line), line
    code, summary, err = run(score, [*score_argv, *settings(new)], capsys)
    assert code == 5 and f"its artifacts at {old_root}/models/" in summary["error"]
    assert "lakescore relocate" in summary["error"] and not project.exists()

    from jobs.relocate import main as relocate

    code, moved, err = run(relocate, ["--config", str(ROOT / "conf" / "score.yaml"), *settings(new)], capsys)
    assert code == 0, err
    assert moved["from"] == str(old_root) and moved["to"] == str(new / "mlartifacts")
    assert moved["changed"]["experiments.artifact_location"] == 2  # lakescore-demo and the contract reports
    assert moved["changed"]["model_versions.storage_location"] == 2  # both demo models

    code, summary, err = run(validate, [*validate_argv, *settings(new)], capsys)
    assert code == 0, err
    client = MlflowClient(f"sqlite:///{new}/mlruns.db")
    exp = client.get_experiment_by_name(REPORT_EXPERIMENT)
    (latest, *_) = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    assert latest.info.artifact_uri.startswith(f"file://{new}/mlartifacts/")
    logged = {a.path for a in client.list_artifacts(latest.info.run_id)}
    assert logged and all((Path(latest.info.artifact_uri.removeprefix("file://")) / p).is_file() for p in logged)
    code, summary, err = run(score, [*score_argv, *settings(new)], capsys)
    assert code == 0 and summary["units_committed"] == 1, err  # the champion loads from the moved artifacts
    assert not project.exists()


def locations(db: Path) -> list[tuple]:
    """Every artifact location MLflow's sqlite store holds, read with sqlite3 (not through lakescore)."""
    import sqlite3

    with sqlite3.connect(db) as c:
        return sorted(c.execute("SELECT 'e', artifact_location FROM experiments UNION ALL SELECT 'r', artifact_uri "
                                "FROM runs UNION ALL SELECT 'l', artifact_location FROM logged_models UNION ALL "
                                "SELECT 'v', storage_location FROM model_versions").fetchall())


def test_relocate_of_a_copy_changes_nothing_until_its_artifacts_are_there(project, tmp_path, capsys):
    """A copy whose original still exists runs fine against the original's artifacts; relocate points it at its own,
    but only once they are under its mlflow.artifact_root: before that it refuses and changes nothing."""
    from jobs.relocate import main as relocate

    copy = tmp_path / "copy"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("mlartifacts"))  # the copy left its artifacts behind
    original, before = locations(project / "mlruns.db"), locations(copy / "mlruns.db")
    argv = ["--config", str(ROOT / "conf" / "score.yaml"), *settings(copy)]
    code, summary, _ = run(relocate, argv, capsys)
    assert code == 2 and "nothing changed" in summary["error"] and str(copy / "mlartifacts") in summary["error"]
    assert locations(copy / "mlruns.db") == before

    shutil.copytree(project / "mlartifacts", copy / "mlartifacts")
    code, summary, err = run(relocate, [*argv, "--dry-run"], capsys)
    assert code == 0 and summary["from"] == str(project / "mlartifacts") and summary["changed"], err
    assert locations(copy / "mlruns.db") == before
    code, summary, err = run(relocate, argv, capsys)
    assert code == 0, err
    after = locations(copy / "mlruns.db")
    old, new = f"{project}/mlartifacts", f"{copy}/mlartifacts"
    assert after == sorted((k, v.replace(old, new) if v and v.startswith(("file://" + old, old)) else v)
                           for k, v in before)
    assert sum(str(v).startswith(f"file://{new}") for _, v in after) == sum(summary["changed"].values()) >= 5
    assert locations(project / "mlruns.db") == original  # the original project's store is untouched
