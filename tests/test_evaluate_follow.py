"""`lakescore evaluate --follow` on a real Delta lake and real MLflow: planted late labels re-evaluate exactly the
windows whose days they touch (a new as-of appended to `eval_metrics` history), the others are skipped; a follow
run without new labels writes nothing; a window whose recorded labels version left the log is re-evaluated, and
says so."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import MLP, XGB
from engine.evaluation.job import run_evaluate
from engine.executor import LocalExecutor
from test_evaluate import eval_config, scored  # noqa: F401  (scored: the module's scored lake)

A, B = "2026-01-01..2026-01-02", "2026-01-03..2026-01-04"


@pytest.fixture
def followed(scored, demo_root, tmp_path):  # noqa: F811
    """A private scored lake with windows A and B evaluated once each (as of the newest label)."""
    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    for window in (A, B):
        run_evaluate(eval_config(lake, demo_root, f"window={window}", "mlflow.log_reports=false"), LocalExecutor())
    return lake


def follow(lake: Path, demo_root: Path, capsys, *extra: str) -> tuple[int, dict]:
    """`lakescore evaluate --follow` through the job's entry point: its exit code and its JSON summary line."""
    from jobs.evaluate import main

    root = Path(__file__).parent.parent
    code = main(["--config", str(root / "conf" / "evaluate.yaml"), "--follow", f"lake.root={lake}",
                 f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
                 f"models.champion=models:/{XGB}@champion", f"models.challengers=[models:/{MLP}/1]", f"window={A}",
                 "drift.reference=null", "engine=ray", "metrics.bootstrap=20", "min_support=50",
                 "gates.min_support=50", "gates.thresholds=[]", "gates.max_regression=[]", "mlflow.log_reports=false",
                 f"features.contract={root / 'conf' / 'contracts' / 'features.yaml'}", *extra])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def evaluations(lake: Path) -> pd.DataFrame:
    t = DeltaTable(str(lake / "eval_metrics")).to_pandas(columns=["model_name", "evaluation", "window_start",
                                                                  "window_end", "as_of", "labels_version"])
    return t.drop_duplicates().sort_values(["model_name", "window_start", "as_of"]).reset_index(drop=True)


def plant_late_labels(lake: Path, ds: str, n: int = 300) -> None:
    """Revisions of `n` labels of day `ds` (flipped), known two days after the newest label: late labels."""
    labels = DeltaTable(str(lake / "labels"))
    day = labels.to_pandas(filters=[("ds", "=", ds)]).head(n).copy()
    day["label"] = 1 - day["label"]
    day["label_ts"] = labels.to_pandas(columns=["label_ts"]).label_ts.max() + pd.Timedelta(days=2)
    rows = pa.Table.from_pandas(day, preserve_index=False).cast(pa.schema(labels.schema().to_arrow()))
    write_deltalake(str(lake / "labels"), rows, mode="append", partition_by=["ds"])


def test_follow_without_new_labels_writes_nothing(followed, demo_root, capsys):
    before = DeltaTable(str(followed / "eval_metrics")).version()
    code, summary = follow(followed, demo_root, capsys)
    assert code == 0 and summary["status"] == "ok"
    assert summary["evaluated"] == [] and sorted(w["window"] for w in summary["skipped"]) == [A, B]
    assert all("no labels changed" in w["reason"] for w in summary["skipped"])
    assert DeltaTable(str(followed / "eval_metrics")).version() == before


def test_planted_late_labels_move_exactly_the_windows_they_touch(followed, demo_root, capsys):
    before = evaluations(followed)
    plant_late_labels(followed, "2026-01-03")
    labels_now = DeltaTable(str(followed / "labels")).version()
    code, summary = follow(followed, demo_root, capsys)
    assert code == 0
    assert [w["window"] for w in summary["evaluated"]] == [B] and [w["window"] for w in summary["skipped"]] == [A]
    assert "2026-01-03" in summary["evaluated"][0]["reason"]
    after = evaluations(followed)
    # B gained a new as-of (history kept: the old evaluation is still there); A is untouched.
    for model in (XGB, MLP):
        b_old = before[(before.model_name == model) & (before.window_start == "2026-01-03")]
        b_new = after[(after.model_name == model) & (after.window_start == "2026-01-03")]
        assert len(b_old) == 1 and len(b_new) == 2 and b_old.evaluation.iloc[0] in set(b_new.evaluation)
        assert b_new.labels_version.max() == labels_now and b_new.as_of.max() > b_old.as_of.max()
        a_old = before[(before.model_name == model) & (before.window_start == "2026-01-01")]
        a_new = after[(after.model_name == model) & (after.window_start == "2026-01-01")]
        pd.testing.assert_frame_equal(a_old.reset_index(drop=True), a_new.reset_index(drop=True))
    # The re-evaluation saw the planted labels: B's newest roc_auc moved, A's did not exist twice.
    t = DeltaTable(str(followed / "eval_metrics")).to_pandas()
    auc = t[(t.kind == "metric") & (t.metric == "roc_auc") & (t.slice == "overall") & (t.model_name == XGB)
            & (t.window_start == "2026-01-03")].sort_values("as_of").value.tolist()
    assert len(auc) == 2 and auc[0] != auc[1]
    # Followed again with nothing new: both skipped, nothing written.
    version = DeltaTable(str(followed / "eval_metrics")).version()
    code, summary = follow(followed, demo_root, capsys)
    assert code == 0 and summary["evaluated"] == [] and DeltaTable(str(followed / "eval_metrics")).version() == version


def test_a_recorded_labels_version_gone_from_the_log_is_reevaluated_and_said(followed, demo_root, capsys):
    plant_late_labels(followed, "2026-01-01")
    labels = DeltaTable(str(followed / "labels"))
    labels.create_checkpoint()
    # The commits after the recorded version are gone (a log cleanup after the checkpoint): the log cannot say which
    # days changed, so both windows are re-evaluated, never skipped.
    (followed / "labels" / "_delta_log" / f"{labels.version():020d}.json").unlink()
    code, summary = follow(followed, demo_root, capsys)
    assert code == 0
    assert sorted(w["window"] for w in summary["evaluated"]) == [A, B] and summary["skipped"] == []
    assert all("not in the labels table's log" in w["reason"] for w in summary["evaluated"])


def test_follow_evaluates_the_configured_window_never_evaluated(followed, demo_root, capsys):
    code, summary = follow(followed, demo_root, capsys, "window=2026-01-02..2026-01-03")
    assert code == 0
    assert [w["window"] for w in summary["evaluated"]] == ["2026-01-02..2026-01-03"]
    assert "not evaluated yet" in summary["evaluated"][0]["reason"]
    assert sorted(w["window"] for w in summary["skipped"]) == [A, B]


def test_windows_that_fail_their_gates_under_follow_exit_4_with_their_evidence(followed, demo_root, capsys):
    plant_late_labels(followed, "2026-01-02")
    plant_late_labels(followed, "2026-01-04")
    before = evaluations(followed)
    code, summary = follow(followed, demo_root, capsys, "gates.thresholds=[{metric: roc_auc, min: 0.999}]")
    # Both windows changed: both are evaluated (the first failure does not stop the second), then exit 4.
    assert code == 4 and summary["status"] == "error" and "failed their gates" in summary["error"]
    assert sorted(w["window"] for w in summary["evaluated"]) == [A, B]
    assert all(w["verdict"] == "fail" for w in summary["evaluated"])
    # The evidence is written: a new as-of for each window and model.
    assert len(evaluations(followed)) == len(before) + 4
