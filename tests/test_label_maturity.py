"""Label maturity on a real Delta lake, real MLflow and real local Ray: the fraction labelled and the headline metrics
of a window as of event + k days, from `label_ts` (no re-scoring), against scikit-learn on a pandas frame filtered
straight from deltalake; the same numbers on any partitioning; the `eval_metrics` rows analysts query; the report's
curves; the `gates.min_maturity` gate failing closed (exit 4)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from sklearn.metrics import log_loss, roc_auc_score

from conftest import MLP, XGB
from engine.evaluation.job import run_evaluate
from engine.executor import LocalExecutor
from test_evaluate import eval_config, report_of, scored  # noqa: F401  (scored: the module's scored lake)

DAYS = ["2026-01-02", "2026-01-03", "2026-01-04"]
K = 7
KEYS = ["entity_id", "event_ts"]


def joined(lake: Path, as_of: pd.Timestamp) -> pd.DataFrame:
    """Rows scored by both models with features, and each row's newest label known by as_of (NaN if none), read by
    pandas straight from deltalake: the independent reference."""
    def scores(model: str) -> pd.DataFrame:
        s = DeltaTable(str(lake / "scores")).to_pandas(filters=[("model_name", "=", model), ("ds", "in", DAYS)])
        return s[KEYS + ["score"]].rename(columns={"score": model})

    f = DeltaTable(str(lake / "features")).to_pandas(columns=KEYS, filters=[("ds", "in", DAYS)])
    lab = DeltaTable(str(lake / "labels")).to_pandas(filters=[("ds", "in", DAYS)])
    lab = lab[(lab.label_ts <= as_of) & lab.label.notna()].sort_values("label_ts").drop_duplicates(KEYS, keep="last")
    rows = scores(XGB).merge(scores(MLP), on=KEYS).merge(f, on=KEYS)
    return rows.merge(lab[KEYS + ["label", "label_ts"]], on=KEYS, how="left")


def maturity_rows(lake: Path) -> pd.DataFrame:
    t = DeltaTable(str(lake / "eval_metrics")).to_pandas()
    return t[t.kind == "maturity"]


def point(rows: pd.DataFrame, model: str, k: int, metric: str) -> pd.Series:
    name, version = model.rsplit("/", 1)
    sel = rows[(rows.model_name == name) & (rows.model_version == int(version)) & (rows.maturity_days == k)
               & (rows.metric == metric)]
    assert len(sel) == 1, (model, k, metric, len(sel))
    return sel.iloc[0]


def test_maturity_curve_equals_sklearn_on_labels_known_by_event_plus_k(scored, demo_root, tmp_path, ray_local):  # noqa: F811
    from engine.ray.executor import executor

    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    # Ray, each day split into key-hash buckets: the per-delay statistics must merge to the whole-day numbers.
    cfg = eval_config(lake, demo_root, f"maturity.days={K}", "max_rows_per_task=1000", "mlflow.log_reports=false")
    s = run_evaluate(cfg, executor(cfg.ray))
    assert s.tasks == 3 * 3
    as_of = pd.Timestamp(s.as_of)
    ref = joined(lake, as_of)
    rows = maturity_rows(lake)
    assert sorted(rows.maturity_days.unique()) == list(range(1, K + 1))
    fractions = []
    for model in (f"{XGB}/1", f"{MLP}/1"):
        score_col = model.rsplit("/", 1)[0]
        for k in range(1, K + 1):
            known = ref[ref.label.notna() & (ref.label_ts <= ref.event_ts + pd.Timedelta(days=k))]
            frac = point(rows, model, k, "labelled_fraction")
            assert frac.value == pytest.approx(len(known) / len(ref), abs=1e-12) and frac.support == len(known)
            if model.startswith(XGB):
                fractions.append(frac.value)
            if known.label.nunique() < 2:
                assert pd.isna(point(rows, model, k, "roc_auc").value)
                continue
            auc = point(rows, model, k, "roc_auc")
            assert auc.value == pytest.approx(roc_auc_score(known.label, known[score_col]), abs=1e-4), (model, k)
            assert auc.support == len(known)
            ll = point(rows, model, k, "log_loss").value
            assert ll == pytest.approx(log_loss(known.label, known[score_col], labels=[0, 1]), abs=1e-6)
    # The demo's labels arrive 1 to 6 days after the event: a curve that rises, not a constant.
    assert fractions[0] < 0.05 and 0.1 < fractions[2] < 0.9 and fractions[-1] == pytest.approx(1.0)
    assert fractions == sorted(fractions)
    # Every maturity row carries the evaluation's identity like its metric rows (queryable by window and as_of).
    assert set(rows.window_start) == {DAYS[0]} and set(rows.window_end) == {DAYS[-1]}
    assert rows.labels_version.nunique() == 1 and rows.kind.eq("maturity").all()
    # Whole days in this process: the same rows, the same numbers.
    whole = tmp_path / "whole"
    shutil.copytree(scored, whole)
    run_evaluate(eval_config(whole, demo_root, f"maturity.days={K}", "mlflow.log_reports=false"), LocalExecutor())
    cols = ["model_name", "model_version", "maturity_days", "metric", "value", "support"]
    a = rows[cols].sort_values(cols[:4]).reset_index(drop=True)
    b = maturity_rows(whole)[cols].sort_values(cols[:4]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)


def test_report_draws_the_curves_side_by_side_and_zero_days_disables(scored, demo_root, tmp_path):  # noqa: F811
    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    s = run_evaluate(eval_config(lake, demo_root, "maturity.days=5", "mlflow.log_reports=false"), LocalExecutor())
    rep = report_of(s)
    assert [p["days"] for p in rep["maturity"]["points"][f"{XGB}/1"]] == [1, 2, 3, 4, 5]
    assert set(rep["maturity"]["points"]) == {f"{XGB}/1", f"{MLP}/1"}
    page = Path(s.report).read_text()
    section = page[page.index('id="maturity"'):]
    section = section[:section.index("<h2", 10)] if "<h2" in section[10:] else section
    # One chart per headline metric, each with a polyline for the champion and one for the challenger.
    assert section.count("<svg") >= 2 and section.count("<polyline") >= 4
    assert XGB in section and MLP in section and "http" not in section
    off = tmp_path / "off"
    shutil.copytree(scored, off)
    s0 = run_evaluate(eval_config(off, demo_root, "maturity.days=0", "mlflow.log_reports=false"), LocalExecutor())
    assert report_of(s0)["maturity"]["points"] == {} and 'id="maturity"' not in Path(s0.report).read_text()
    assert maturity_rows(off).empty


def test_an_eval_metrics_table_from_before_maturity_stays_writable(scored, demo_root, tmp_path):  # noqa: F811
    import pyarrow as pa

    from engine.tables import eval_metrics as evtable

    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    old = pa.schema([f for f in evtable.TABLE_SCHEMA if f.name != "maturity_days"])
    DeltaTable.create(str(lake / "eval_metrics"), old, partition_by=evtable.PARTITION_COLUMNS)
    run_evaluate(eval_config(lake, demo_root, "maturity.days=3", "mlflow.log_reports=false"), LocalExecutor())
    t = DeltaTable(str(lake / "eval_metrics")).to_pandas()
    assert t[t.kind == "maturity"].maturity_days.notna().all() and t[t.kind == "metric"].maturity_days.isna().all()


def _main_args(lake: Path, demo_root: Path, *extra: str) -> list[str]:
    root = Path(__file__).parent.parent
    return ["--config", str(root / "conf" / "evaluate.yaml"), f"lake.root={lake}",
            f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
            f"models.champion=models:/{XGB}@champion", f"models.challengers=[models:/{MLP}/1]",
            f"window={DAYS[0]}..{DAYS[-1]}", "drift.reference=null", "engine=ray", "metrics.bootstrap=20",
            "min_support=50", "gates.min_support=50", "gates.thresholds=[]", "gates.max_regression=[]",
            "gates.max_immature_fraction=1", "mlflow.log_reports=false",
            f"features.contract={root / 'conf' / 'contracts' / 'features.yaml'}", *extra]


def test_min_maturity_gate_fails_closed_when_labels_are_too_young(scored, demo_root, tmp_path, capsys):  # noqa: F811
    from jobs.evaluate import main

    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    gate = "gates.min_maturity=[{metric: roc_auc, days: 3, min_labelled_fraction: 0.9}]"
    # As of 2026-01-06: the window's last day (01-04) is 1 day old, under the 3 days the gate asks for roc_auc.
    assert main(_main_args(lake, demo_root, gate, "as_of=2026-01-06T00:00:00Z")) == 4
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    failed = [g for g in summary["gates_failed"] if g.startswith("min_maturity roc_auc")]
    assert failed and "2026-01-04" in failed[0] and "3 day" in failed[0], summary["gates_failed"]
    assert "min_maturity roc_auc" in out.err
    # Old enough (01-04 + 3 days <= 01-08) but under the labelled fraction: still closed, with the fraction.
    ref = joined(lake, pd.Timestamp("2026-01-08T00:00:00Z"))
    frac = ref.label.notna().mean()
    assert frac < 0.9
    assert main(_main_args(lake, demo_root, gate, "as_of=2026-01-08T00:00:00Z")) == 4
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (failed,) = [g for g in summary["gates_failed"] if g.startswith("min_maturity roc_auc")]
    assert f"{frac:.1%}" in failed
    # Mature: every label is in by the newest label_ts, and the window is 6 days old: the gate passes.
    assert main(_main_args(lake, demo_root, gate)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["verdict"] == "pass"
    # A gate on a metric the evaluation cannot produce is a config error before any work.
    assert main(_main_args(lake, demo_root, "gates.min_maturity=[{metric: auc, days: 3}]")) == 2
