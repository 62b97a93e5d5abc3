"""The evaluate job on a real Delta lake and a real MLflow registry: the as-of join, metrics against scikit-learn,
engines that agree, `eval_metrics` idempotency, gates that fail closed (exit 4)."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from conftest import MLP, XGB, score_config
from engine.config import EvaluateConfig, load_config, resolve_paths
from engine.errors import ConfigError, GateFailed
from engine.evaluate_job import LocalEvalExecutor, run_evaluate
from engine.score_job import LocalExecutor
from jobs.score import run_score

WINDOW = "2026-01-02..2026-01-04"


@pytest.fixture(scope="module")
def scored(demo_root, tmp_path_factory) -> Path:
    """The demo lake with both test models scored on every day (a module's worth of evaluations reads it)."""
    lake = tmp_path_factory.mktemp("evallake") / "lake"
    shutil.copytree(demo_root / "lake", lake)
    run_score(score_config(lake, demo_root), LocalExecutor())
    run_score(score_config(lake, demo_root, f"model.uri=models:/{MLP}/1"), LocalExecutor())
    return lake


def eval_config(lake: Path, demo_root: Path, *overrides: str) -> EvaluateConfig:
    base = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", f"models.champion=models:/{XGB}@champion",
            f"models.challengers=[models:/{MLP}/1]", f"window={WINDOW}", "min_support=50", "gates.min_support=50",
            "metrics.bootstrap=50", "drift.reference=null"]
    return resolve_paths(load_config(EvaluateConfig, None, [*base, *overrides]))


def reference_frame(lake: Path, model: str, version: int, as_of: dt.datetime | None = None) -> pd.DataFrame:
    """scores ⋈ features ⋈ labels for the window, by pandas straight from deltalake: the independent reference."""
    days = ["2026-01-02", "2026-01-03", "2026-01-04"]
    s = DeltaTable(str(lake / "scores")).to_pandas(filters=[("model_name", "=", model), ("model_version", "=", version),
                                                            ("ds", "in", days)])
    f = DeltaTable(str(lake / "features")).to_pandas(columns=["entity_id", "event_ts", "segment", "ds"],
                                                     filters=[("ds", "in", days)])
    lab = DeltaTable(str(lake / "labels")).to_pandas(filters=[("ds", "in", days)])
    if as_of is not None:
        lab = lab[lab.label_ts <= pd.Timestamp(as_of)]
    lab = lab[lab.label.notna()].sort_values("label_ts").drop_duplicates(["entity_id", "event_ts"], keep="last")
    m = s[["entity_id", "event_ts", "score"]].merge(f[["entity_id", "event_ts", "segment"]], on=["entity_id", "event_ts"])
    return m.merge(lab[["entity_id", "event_ts", "label"]], on=["entity_id", "event_ts"])


def metric(summary_metrics: list[dict], model: str, slice_: str, name: str) -> dict:
    return next(m for m in summary_metrics if m["model"] == model and m["slice"] == slice_ and m["metric"] == name)


def report_of(summary) -> dict:
    return json.loads(Path(summary.report).with_name("report.json").read_text())


def test_metrics_equal_sklearn_on_the_joined_rows(scored, demo_root):
    s = run_evaluate(eval_config(scored, demo_root), LocalEvalExecutor())
    rep = report_of(s)
    ref = reference_frame(scored, XGB, 1)
    assert s.rows_evaluated == len(ref) == 3 * 3000
    champ = f"{XGB}/1"
    assert abs(metric(rep["metrics"], champ, "overall", "roc_auc")["value"] - roc_auc_score(ref.label, ref.score)) < 1e-4
    assert abs(metric(rep["metrics"], champ, "overall", "log_loss")["value"] - log_loss(ref.label, ref.score)) < 1e-6
    ap = metric(rep["metrics"], champ, "overall", "pr_auc")["value"]
    assert abs(ap - average_precision_score(ref.label, ref.score)) < 2e-3
    ent = ref[ref.segment == "enterprise"]
    row = metric(rep["metrics"], champ, "segment=enterprise", "roc_auc")
    assert row["support"] == len(ent)
    assert abs(row["value"] - roc_auc_score(ent.label, ent.score)) < 1e-4
    assert row["ci_low"] < row["value"] < row["ci_high"]
    delta = next(d for d in rep["deltas"] if d["slice"] == "overall" and d["metric"] == "roc_auc")
    mlp = reference_frame(scored, MLP, 1)
    both = ref.merge(mlp[["entity_id", "event_ts", "score"]], on=["entity_id", "event_ts"], suffixes=("", "_mlp"))
    want = roc_auc_score(both.label, both.score_mlp) - roc_auc_score(both.label, both.score)
    assert abs(delta["value"] - want) < 2e-4
    # MLflow: every metric, the report and the config are in the evaluation's run.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{demo_root}/mlruns.db")
    logged = client.get_run(s.mlflow_run_id).data
    assert logged.metrics[f"{XGB}/1/overall/roc_auc"] == metric(rep["metrics"], champ, "overall", "roc_auc")["value"]
    assert logged.params["window"] == WINDOW and logged.params["labels_version"] == str(s.versions["labels"])
    assert {a.path for a in client.list_artifacts(s.mlflow_run_id)} >= {"report.html", "report.json", "config.json"}
    assert s.versions == {"scores": DeltaTable(str(scored / "scores")).version(),
                          "labels": DeltaTable(str(scored / "labels")).version(),
                          "features": DeltaTable(str(scored / "features")).version()}


def test_labels_after_as_of_are_excluded_and_counted_per_day(scored, demo_root, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    labels = DeltaTable(str(lake / "labels")).to_pandas(filters=[("ds", "in", ["2026-01-03"])])
    as_of = dt.datetime(2026, 1, 6, 12, tzinfo=dt.timezone.utc)
    # Planted: revisions of 200 known labels, flipped, that arrive after as_of: they must not count.
    known = labels[labels.label_ts <= pd.Timestamp(as_of)].head(200).copy()
    known["label"] = 1 - known["label"]
    known["label_ts"] = pd.Timestamp(as_of) + pd.Timedelta(hours=1)
    # Planted: newer revisions of 30 other known labels that say "unknown" (null): no label, the older one counts.
    nulls = labels[labels.label_ts <= pd.Timestamp(as_of) - pd.Timedelta(hours=2)].iloc[300:330].copy()
    nulls["label_ts"] = pd.Timestamp(as_of) - pd.Timedelta(hours=1)
    null_rows = pa.Table.from_pandas(nulls, preserve_index=False)
    null_rows = null_rows.set_column(null_rows.schema.get_field_index("label"), "label", pa.nulls(len(nulls), pa.int32()))
    write_deltalake(str(lake / "labels"), null_rows.cast(pa.schema(DeltaTable(str(lake / "labels")).schema().to_arrow())),
                    mode="append", partition_by=["ds"])
    write_deltalake(str(lake / "labels"), pa.Table.from_pandas(known, preserve_index=False).cast(
        pa.schema(DeltaTable(str(lake / "labels")).schema().to_arrow())), mode="append", partition_by=["ds"])
    # Planted: 20 rows only the champion scored (new keys): counted, not evaluated.
    scores = DeltaTable(str(lake / "scores"))
    one = scores.to_pyarrow_table(filters=[("ds", "=", "2026-01-03"), ("model_name", "=", XGB)]).slice(0, 20)
    one = one.set_column(one.schema.get_field_index("entity_id"), "entity_id",
                         pa.array([2 * 10**12 + i for i in range(20)], pa.int64()))
    write_deltalake(str(lake / "scores"), one.cast(pa.schema(scores.schema().to_arrow())), mode="append",
                    partition_by=["ds", "model_name", "model_version"])
    # Planted: 50 features rows nobody scored (new keys): counted, not evaluated.
    extra = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "=", "2026-01-03")]).slice(0, 50)
    extra = extra.set_column(0, "entity_id", pa.array([10**12 + i for i in range(50)], pa.int64()))
    write_deltalake(str(lake / "features"), extra, mode="append", partition_by=["ds"])
    s = run_evaluate(eval_config(lake, demo_root, f"as_of={as_of.isoformat()}", "gates.max_immature_fraction=1"),
                     LocalEvalExecutor())
    assert (s.features_without_scores, s.scores_without_features, s.rows_missing_a_model_score) == (50, 0, 20)
    ref = reference_frame(lake, XGB, 1, as_of)
    all_labels = DeltaTable(str(lake / "labels")).to_pandas(filters=[("ds", "in", ["2026-01-02", "2026-01-03", "2026-01-04"])])
    late_only = all_labels.groupby(["entity_id", "event_ts"]).label_ts.min() > pd.Timestamp(as_of)
    assert s.rows_evaluated == len(ref)
    assert s.rows_label_after_as_of == int(late_only.sum()) > 0
    rep = report_of(s)
    assert abs(metric(rep["metrics"], f"{XGB}/1", "overall", "roc_auc")["value"] - roc_auc_score(ref.label, ref.score)) < 1e-4
    assert abs(metric(rep["metrics"], f"{XGB}/1", "overall", "base_rate")["value"] - ref.label.mean()) < 1e-12
    per_day = {d["ds"]: d for d in rep["immature"]}
    assert sum(d["rows_label_after_as_of"] for d in per_day.values()) == s.rows_label_after_as_of
    assert "2026-01-04" in per_day  # labels of the newest day arrive 1-6 days late: many are not known yet


def test_eval_metrics_is_idempotent_and_keeps_history(scored, demo_root, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    cfg = eval_config(lake, demo_root)
    first = run_evaluate(cfg, LocalEvalExecutor())
    assert len(first.units_committed) == 2
    table = DeltaTable(str(lake / "eval_metrics"))
    rows = table.to_pandas()
    again = run_evaluate(cfg, LocalEvalExecutor())
    assert again.units_committed == [] and len(again.units_already_done) == 2
    assert DeltaTable(str(lake / "eval_metrics")).version() == table.version()
    later = run_evaluate(eval_config(lake, demo_root, "as_of=2026-01-07T00:00:00Z", "gates.max_immature_fraction=1"),
                         LocalEvalExecutor())
    assert len(later.units_committed) == 2
    hist = DeltaTable(str(lake / "eval_metrics")).to_pandas()
    assert hist.evaluation.nunique() == 2 and len(hist) > len(rows)
    mine = hist[(hist.model_name == XGB) & (hist.evaluation == rows.evaluation.iloc[0])]
    assert len(mine) == len(rows[rows.model_name == XGB])
    auc = mine[(mine.metric == "roc_auc") & (mine.slice == "overall") & (mine.kind == "metric")].value.item()
    assert auc == metric(report_of(first)["metrics"], f"{XGB}/1", "overall", "roc_auc")["value"]
    meta = json.loads(DeltaTable(str(lake / "eval_metrics")).history(1)[0]["userMetadata"])
    assert meta["job"] == "evaluate" and meta["versions"]["labels"] == first.versions["labels"]


def test_engines_give_identical_metrics(scored, demo_root, ray_local, spark):
    from engine.ray.evaluate import RayEvalExecutor
    from engine.spark.evaluate import SparkEvalExecutor

    cfg = eval_config(scored, demo_root, "mlflow.log_reports=false", "max_rows_per_task=1500")
    local = report_of(run_evaluate(cfg, LocalEvalExecutor()))
    ray_rep = report_of(run_evaluate(cfg, RayEvalExecutor(cfg.ray)))
    spark_rep = report_of(run_evaluate(cfg, SparkEvalExecutor(spark)))
    assert local["metrics"] == ray_rep["metrics"] == spark_rep["metrics"]
    assert local["deltas"] == ray_rep["deltas"] == spark_rep["deltas"]
    whole = report_of(run_evaluate(eval_config(scored, demo_root, "mlflow.log_reports=false"), LocalEvalExecutor()))
    for a, b in zip(whole["metrics"], local["metrics"]):  # split into key-hash buckets or not: the same numbers
        assert a["metric"] == b["metric"] and a["support"] == b["support"]
        assert a["value"] == pytest.approx(b["value"], rel=1e-9, abs=1e-12) or a["value"] is b["value"] is None


def test_gates_fail_closed(scored, demo_root, tmp_path):
    from jobs.evaluate import main

    base = [f"lake.root={tmp_path / 'lake'}"]
    shutil.copytree(scored, tmp_path / "lake")
    # A threshold no model meets: exit 4, and the evidence (eval_metrics, report) is still written.
    cfg = eval_config(tmp_path / "lake", demo_root, "gates.thresholds=[{metric: roc_auc, min: 0.999}]")
    with pytest.raises(GateFailed, match="roc_auc"):
        run_evaluate(cfg, LocalEvalExecutor())
    assert DeltaTable(str(tmp_path / "lake" / "eval_metrics")).to_pandas().shape[0] > 0
    # A gated slice under its support fails, even when its value would pass.
    cfg = eval_config(tmp_path / "lake", demo_root, "gates.min_support=100000",
                      "gates.thresholds=[{metric: roc_auc, min: 0.5}]")
    with pytest.raises(GateFailed, match="minimum support"):
        run_evaluate(cfg, LocalEvalExecutor())
    # A slice that does not exist is a missing metric: a failure, not a pass.
    cfg = eval_config(tmp_path / "lake", demo_root, "gates.thresholds=[{metric: roc_auc, slice: 'segment=gold', min: 0.5}]")
    with pytest.raises(GateFailed, match="missing"):
        run_evaluate(cfg, LocalEvalExecutor())
    # A window where the champion has no scores.
    cfg = eval_config(tmp_path / "lake", demo_root, "window=2026-03-01..2026-03-02")
    with pytest.raises(GateFailed, match="no scored days"):
        run_evaluate(cfg, LocalEvalExecutor())
    # An unknown metric in a gate is a config error before any work.
    with pytest.raises(ConfigError, match="unknown metric"):
        run_evaluate(eval_config(tmp_path / "lake", demo_root, "gates.thresholds=[{metric: auc, min: 0.5}]"),
                     LocalEvalExecutor())
    # Through the job's entry point: exit 4 and a JSON line that says why.
    args = ["--config", str(Path(__file__).parent.parent / "conf" / "evaluate.yaml"), *base,
            f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
            f"models.champion=models:/{XGB}@champion", f"models.challengers=[models:/{MLP}/1]", f"window={WINDOW}",
            "drift.reference=null", "engine=ray", "metrics.bootstrap=20",
            f"features.contract={Path(__file__).parent.parent / 'conf' / 'contracts' / 'features.yaml'}",
            "gates.thresholds=[{metric: roc_auc, min: 0.999}]"]
    assert main(args) == 4
    # The failed run is in the ledger, with the versions it pinned.
    from engine import ledger
    from engine.config import LakeConfig

    (entry,) = ledger.read(LakeConfig(root=str(tmp_path / "lake")), job="evaluate").to_pylist()
    assert entry["exit_code"] == 4 and entry["error_class"] == "GateFailed" and "roc_auc" in entry["error"]
    pinned = {i["role"]: i["version"] for i in entry["inputs"]}
    assert pinned == {r: DeltaTable(str(tmp_path / "lake" / t)).version()
                      for r, t in (("scores", "scores"), ("labels", "labels"), ("features", "features"))}
    assert sorted(entry["models"]) == sorted(json.loads(entry["summary"])["models"]) and len(entry["models"]) == 2


def test_a_challenger_that_passes_is_promoted_and_the_move_recorded(scored, demo_root, tmp_path):
    from mlflow.tracking import MlflowClient

    from engine.demo import models as demo_models

    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    tracking = f"sqlite:///{demo_root}/mlruns.db"
    client = MlflowClient(tracking)
    # Two versions of a private model name (the shared test models' aliases stay as they are).
    spec = demo_models.demo_spec(50)
    ft = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "in", ["2026-01-01"])])
    lt = DeltaTable(str(lake / "labels")).to_pyarrow_table(filters=[("ds", "in", ["2026-01-01"])])
    x, y = demo_models.training_set(ft, lt, spec)
    for seed in (1, 2):
        demo_models.register(tracking, str(demo_root / "mlartifacts"), spec, x, y, "t-promo", "t-promo-mlp",
                             trees=10 * seed, depth=3, seed=seed, champion="xgb")
    client.set_registered_model_alias("t-promo", "champion", "1")
    for v in (1, 2):
        run_score(score_config(lake, demo_root, f"model.uri=models:/t-promo/{v}"), LocalExecutor())
    cfg = eval_config(lake, demo_root, "models.champion=models:/t-promo@champion", "models.challengers=[models:/t-promo/2]",
                      "gates.promote=true", "gates.thresholds=[{metric: roc_auc, min: 0.6}]",
                      "gates.max_regression=[{metric: roc_auc, slices: [overall], max_drop: 0.2}]")
    s = run_evaluate(cfg, LocalEvalExecutor())
    assert s.verdict == "pass" and s.promoted
    assert int(client.get_model_version_by_alias("t-promo", "champion").version) == 2
    record = json.loads(client.get_model_version("t-promo", "2").tags["lakescore.promotion"])
    assert record["from_version"] == 1 and record["to_version"] == 2 and s.run_id in record["why"]
    assert record["by"]
