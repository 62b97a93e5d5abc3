"""The evaluate job on a real Delta lake and a real MLflow registry: the as-of join, metrics against scikit-learn,
engines that agree, `eval_metrics` idempotency, gates that fail closed (exit 4)."""
from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from conftest import MLP, XGB, score_config
from engine.config import EvaluateConfig, load_config, resolve_paths
from engine.errors import ConfigError, ContractViolation, GateFailed, UnitFailed
from engine.evaluation.job import run_evaluate
from engine.executor import LocalExecutor
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
    s = run_evaluate(eval_config(scored, demo_root), LocalExecutor())
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


AS_OF = dt.datetime(2026, 1, 6, 12, tzinfo=dt.timezone.utc)


def plant_late_labels_and_strays(scored: Path, lake: Path, as_of: dt.datetime = AS_OF) -> None:
    """A copy of the scored lake with revised, retracted and late labels, keys scored by the champion only and
    features rows nobody scored, all on 2026-01-03."""
    shutil.copytree(scored, lake)
    labels = DeltaTable(str(lake / "labels")).to_pandas(filters=[("ds", "in", ["2026-01-03"])])
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


def test_labels_after_as_of_are_excluded_and_counted_per_day(scored, demo_root, tmp_path):
    lake, as_of = tmp_path / "lake", AS_OF
    plant_late_labels_and_strays(scored, lake)
    s = run_evaluate(eval_config(lake, demo_root, f"as_of={as_of.isoformat()}", "gates.max_immature_fraction=1"),
                     LocalExecutor())
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


def test_keys_that_share_a_hash_are_joined_exactly(scored, demo_root, tmp_path, monkeypatch):
    """The tasks join on key hashes and check every match on the key values. With a hash that gives different keys
    of two tables the same value (a row's rank within its own table: unique in each table, so only the check can
    catch it), the days whose tables hold different keys must fall back to the exact join and every figure must
    equal the run with the real hash. Broken build this catches: a hash join that trusts the hash (rows of one key
    matched with another's label or slice), or a fallback that counts differently from the hash path."""
    from engine.evaluation import join, keyjoin

    plant_late_labels_and_strays(scored, tmp_path / "a")
    # Labels of keys nobody scored, below every scored key on 2026-01-03: they shift that day's label ranks.
    labels = DeltaTable(str(tmp_path / "a" / "labels"))
    strays = labels.to_pyarrow_table(filters=[("ds", "=", "2026-01-03")]).slice(0, 5)
    strays = strays.set_column(strays.schema.get_field_index("entity_id"), "entity_id", pa.array([-5, -4, -3, -2, -1]))
    write_deltalake(str(tmp_path / "a" / "labels"), strays.cast(pa.schema(labels.schema().to_arrow())), mode="append",
                    partition_by=["ds"])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    overrides = (f"as_of={AS_OF.isoformat()}", "gates.max_immature_fraction=1", "mlflow.log_reports=false")
    real = run_evaluate(eval_config(tmp_path / "a", demo_root, *overrides), LocalExecutor())
    paths = {"exact": 0, "hash": 0}
    exact, by_hash = join._join_exact, join._join_by_hash

    def counted(name, f):
        def run(*a):
            out = f(*a)
            paths[name] += 1
            return out
        return run

    monkeypatch.setattr(join, "_join_exact", counted("exact", exact))
    monkeypatch.setattr(join, "_join_by_hash", counted("hash", by_hash))
    monkeypatch.setattr(keyjoin, "key_hash", lambda t, keys: np.unique(
        t.column("entity_id").to_numpy(), return_inverse=True)[1].astype(np.uint64).reshape(-1))
    ranked = run_evaluate(eval_config(tmp_path / "b", demo_root, *overrides), LocalExecutor())
    assert paths["exact"] >= 1 and paths["hash"] >= 1  # 2026-01-03 falls back; a day with the same keys does not
    for field in ("rows_evaluated", "rows_label_after_as_of", "rows_without_label", "features_without_scores",
                  "scores_without_features", "rows_missing_a_model_score"):
        assert getattr(ranked, field) == getattr(real, field), field
    a, b = report_of(real), report_of(ranked)
    assert a["immature"] == b["immature"]
    for part in ("metrics", "deltas"):  # the same rows; summed in another order (by the other hash): 1e-15 apart
        assert len(a[part]) == len(b[part]) > 0
        for x, y in zip(a[part], b[part], strict=True):
            assert {k: v for k, v in x.items() if not isinstance(v, float)} == \
                {k: v for k, v in y.items() if not isinstance(v, float)}
            for k, v in x.items():
                if isinstance(v, float):
                    assert y[k] == pytest.approx(v, rel=1e-12, abs=1e-15), (part, x, k)


def test_eval_metrics_is_idempotent_and_keeps_history(scored, demo_root, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    cfg = eval_config(lake, demo_root)
    first = run_evaluate(cfg, LocalExecutor())
    assert len(first.units_committed) == 2
    table = DeltaTable(str(lake / "eval_metrics"))
    rows = table.to_pandas()
    again = run_evaluate(cfg, LocalExecutor())
    assert again.units_committed == [] and len(again.units_already_done) == 2
    assert DeltaTable(str(lake / "eval_metrics")).version() == table.version()
    later = run_evaluate(eval_config(lake, demo_root, "as_of=2026-01-07T00:00:00Z", "gates.max_immature_fraction=1"),
                         LocalExecutor())
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
    from engine.ray.executor import executor
    from engine.spark.executor import SparkExecutor

    cfg = eval_config(scored, demo_root, "mlflow.log_reports=false", "max_rows_per_task=1500")
    local = report_of(run_evaluate(cfg, LocalExecutor()))
    ray_rep = report_of(run_evaluate(cfg, executor(cfg.ray)))
    spark_rep = report_of(run_evaluate(cfg, SparkExecutor(spark, cfg.spark)))
    assert local["metrics"] == ray_rep["metrics"] == spark_rep["metrics"]
    assert local["deltas"] == ray_rep["deltas"] == spark_rep["deltas"]
    assert local["maturity"] == ray_rep["maturity"] == spark_rep["maturity"]  # the label maturity curve too
    assert len(local["metrics"]) > 0 and len(local["deltas"]) > 0 and local["maturity"]["points"]


def test_key_hash_buckets_give_the_same_metrics_as_whole_days(scored, demo_root):
    """Split into key-hash buckets or not: the same rows, slices and numbers (a run that dropped trailing slices or
    metrics would pass a plain zip, which stops at the shorter list)."""
    cfg = eval_config(scored, demo_root, "mlflow.log_reports=false", "max_rows_per_task=1500")
    split = run_evaluate(cfg, LocalExecutor())
    assert split.tasks == 3 * 2  # 3000 rows a day, 1500 per task
    bucketed = report_of(split)
    whole = report_of(run_evaluate(eval_config(scored, demo_root, "mlflow.log_reports=false"), LocalExecutor()))
    for part in ("metrics", "deltas"):
        assert len(whole[part]) == len(bucketed[part]) > 0, part
        for a, b in zip(whole[part], bucketed[part], strict=True):
            assert (a["model"], a["slice"], a["metric"], a["support"]) == (b["model"], b["slice"], b["metric"],
                                                                           b["support"])
            assert a["value"] == pytest.approx(b["value"], rel=1e-9, abs=1e-12) or a["value"] is b["value"] is None


def test_gates_fail_closed(scored, demo_root, tmp_path):
    from jobs.evaluate import main

    base = [f"lake.root={tmp_path / 'lake'}"]
    shutil.copytree(scored, tmp_path / "lake")
    # A threshold no model meets: exit 4, and the evidence (eval_metrics, report) is still written.
    cfg = eval_config(tmp_path / "lake", demo_root, "gates.thresholds=[{metric: roc_auc, min: 0.999}]")
    with pytest.raises(GateFailed, match="roc_auc"):
        run_evaluate(cfg, LocalExecutor())
    assert DeltaTable(str(tmp_path / "lake" / "eval_metrics")).to_pandas().shape[0] > 0
    # A gated slice under its support fails, even when its value would pass.
    cfg = eval_config(tmp_path / "lake", demo_root, "gates.min_support=100000",
                      "gates.thresholds=[{metric: roc_auc, min: 0.5}]")
    with pytest.raises(GateFailed, match="minimum support"):
        run_evaluate(cfg, LocalExecutor())
    # A slice that does not exist is a missing metric: a failure, not a pass.
    cfg = eval_config(tmp_path / "lake", demo_root, "gates.thresholds=[{metric: roc_auc, slice: 'segment=gold', min: 0.5}]")
    with pytest.raises(GateFailed, match="missing"):
        run_evaluate(cfg, LocalExecutor())
    # A window where the champion has no scores.
    cfg = eval_config(tmp_path / "lake", demo_root, "window=2026-03-01..2026-03-02")
    with pytest.raises(GateFailed, match="no scored days"):
        run_evaluate(cfg, LocalExecutor())
    # An unknown metric in a gate is a config error before any work.
    with pytest.raises(ConfigError, match="unknown metric"):
        run_evaluate(eval_config(tmp_path / "lake", demo_root, "gates.thresholds=[{metric: auc, min: 0.5}]"),
                     LocalExecutor())
    # Through the job's entry point: exit 4 and a JSON line that says why.
    args = ["--config", str(Path(__file__).parent.parent / "conf" / "evaluate.yaml"), *base,
            f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
            f"models.champion=models:/{XGB}@champion", f"models.challengers=[models:/{MLP}/1]", f"window={WINDOW}",
            "drift.reference=null", "engine=ray", "metrics.bootstrap=20",
            f"features.contract={Path(__file__).parent.parent / 'conf' / 'contracts' / 'features.yaml'}",
            "gates.thresholds=[{metric: roc_auc, min: 0.999}]"]
    assert main(args) == 4
    # The failed run is in the ledger, with the versions it pinned.
    from engine.tables import ledger
    from engine.config import LakeConfig

    (entry,) = ledger.read(LakeConfig(root=str(tmp_path / "lake")), job="evaluate").to_pylist()
    assert entry["exit_code"] == 4 and entry["error_class"] == "GateFailed" and "roc_auc" in entry["error"]
    pinned = {i["role"]: i["version"] for i in entry["inputs"]}
    assert pinned == {r: DeltaTable(str(tmp_path / "lake" / t)).version()
                      for r, t in (("scores", "scores"), ("labels", "labels"), ("features", "features"))}
    assert sorted(entry["models"]) == sorted(json.loads(entry["summary"])["models"]) and len(entry["models"]) == 2


def _two_versions_scored(scored, demo_root, tmp_path, name: str):
    """A copy of the scored lake with two versions of a private model `name` registered (the shared test models'
    aliases stay as they are), @champion on version 1, and both versions' scores committed; (lake, MlflowClient)."""
    from mlflow.tracking import MlflowClient

    from backtests import recipes
    from engine.demo import models as demo_models

    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    tracking = f"sqlite:///{demo_root}/mlruns.db"
    client = MlflowClient(tracking)
    spec = demo_models.demo_spec(50)
    ft = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "in", ["2026-01-01"])])
    lt = DeltaTable(str(lake / "labels")).to_pyarrow_table(filters=[("ds", "in", ["2026-01-01"])])
    x, y = demo_models.training_set(ft, lt, spec)
    for seed in (1, 2):
        demo_models.register(tracking, str(demo_root / "mlartifacts"), spec, x, y, name, f"{name}-mlp",
                             trees=10 * seed, depth=3, seed=seed, champion="xgb", train_xgb=recipes.train_xgb,
                             train_mlp=recipes.train_mlp)
    client.set_registered_model_alias(name, "champion", "1")
    for v in (1, 2):
        run_score(score_config(lake, demo_root, f"model.uri=models:/{name}/{v}"), LocalExecutor())
    return lake, client


def test_a_challenger_that_passes_is_promoted_and_the_move_recorded(scored, demo_root, tmp_path, caplog):


    lake, client = _two_versions_scored(scored, demo_root, tmp_path, "t-promo")
    cfg = eval_config(lake, demo_root, "models.champion=models:/t-promo@champion", "models.challengers=[models:/t-promo/2]",
                      "gates.promote=true", "gates.thresholds=[{metric: roc_auc, min: 0.6}]",
                      "gates.max_regression=[{metric: roc_auc, slices: [overall], max_drop: 0.2}]")
    with caplog.at_level(logging.INFO, logger="lakescore"):
        s = run_evaluate(cfg, LocalExecutor())
    assert s.verdict == "pass" and s.promoted
    assert int(client.get_model_version_by_alias("t-promo", "champion").version) == 2
    # a promotion the config asked for is news, not a warning (issue 21: it was logged at WARNING)
    (moved,) = [r for r in caplog.records if r.getMessage().startswith("promoted t-promo version 2 to @champion")]
    assert moved.levelno == logging.INFO
    record = json.loads(client.get_model_version("t-promo", "2").tags["lakescore.promotion"])
    assert record["from_version"] == 1 and record["to_version"] == 2 and s.run_id in record["why"]
    assert record["by"]
    # the report says so too (issue 21): report.json and the HTML banner, with the from/to versions, also in MLflow
    rep = report_of(s)
    assert {k: rep["promotion"][k] for k in ("outcome", "model", "alias", "from_version", "to_version")} == {
        "outcome": "promoted", "model": "t-promo", "alias": "champion", "from_version": 1, "to_version": 2}
    page = Path(s.report).read_text()
    line = "Promoted: t-promo@champion moved from version 1 to version 2."
    assert page.index(line) < page.index('id="changed"')  # right under the verdict banner
    logged = Path(client.download_artifacts(s.mlflow_run_id, "report.html", str(tmp_path))).read_text()
    assert line in logged
    # model_events (issue 22): the alias's first sight at the job's start, then the promotion with its evidence
    events = DeltaTable(str(lake / "model_events")).to_pyarrow_table(filters=[("model_name", "=", "t-promo")])
    first, moved = sorted(events.to_pylist(), key=lambda e: e["at"])
    assert (first["kind"], first["from_version"], first["to_version"]) == ("external", None, 1)
    assert (moved["kind"], moved["from_version"], moved["to_version"], moved["run_id"]) == ("promotion", 1, 2, s.run_id)
    evidence = json.loads(moved["evidence"])
    assert evidence["evaluate_run_id"] == s.run_id and evidence["mlflow_run_id"] == s.mlflow_run_id
    assert evidence["report"] == s.report and evidence["gates"] and all(g["passed"] for g in evidence["gates"])
    assert {g["gate"] for g in evidence["gates"]} == {g["gate"] for g in rep["gates"]}


# ------------------------------------------------------------------ promotion, coverage, keys, duplicates, budget
GATE_MODEL = "t-gate"  # a private model name: 1 the champion, 2 a much weaker version, 3 a good challenger


def inputs_copy(src: Path, dst: Path) -> Path:
    """A private copy of a lake's inputs and scores, without the evaluations other tests wrote into it."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval_metrics", "_reports", "runs"))
    return dst


def register_xgb_version(demo_root: Path, lake: Path, name: str, trees: int, depth: int, seed: int) -> int:
    """One more XGBoost version of `name` in the shared registry, trained on day 1 with the demo spec."""
    import mlflow

    from backtests import recipes
    from engine.demo import models as demo_models
    from engine.models.registry import PREPROCESS_KEY, experiment_id

    spec = demo_models.demo_spec(50)
    ft = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "in", ["2026-01-01"])])
    lt = DeltaTable(str(lake / "labels")).to_pyarrow_table(filters=[("ds", "in", ["2026-01-01"])])
    x, y = demo_models.training_set(ft, lt, spec)
    tracking = f"sqlite:///{demo_root}/mlruns.db"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    try:
        from mlflow.tracking import MlflowClient

        exp = experiment_id(MlflowClient(tracking), "lakescore-tests-gates", str(demo_root / "mlartifacts"))
        with mlflow.start_run(experiment_id=exp):
            info = mlflow.xgboost.log_model(recipes.train_xgb(x, y, trees, depth, seed), name="model",
                                            metadata={PREPROCESS_KEY: spec.to_json()}, model_format="ubj",
                                            registered_model_name=name)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return int(info.registered_model_version)


@pytest.fixture(scope="module")
def gated(scored, demo_root, tmp_path_factory) -> Path:
    """`scored` plus three versions of GATE_MODEL, every day scored: 1 (the champion), 2 (one stump: much weaker),
    3 (as strong as 1, another seed)."""
    lake = inputs_copy(scored, tmp_path_factory.mktemp("gatelake") / "lake")
    for trees, depth, seed in ((30, 4, 3), (1, 1, 5), (30, 4, 7)):
        version = register_xgb_version(demo_root, lake, GATE_MODEL, trees, depth, seed)
        run_score(score_config(lake, demo_root, f"model.uri=models:/{GATE_MODEL}/{version}"), LocalExecutor())
    assert version == 3
    return lake


def champion_alias(demo_root: Path, version: int | None = None) -> int:
    """Set GATE_MODEL@champion to `version` (if given) with a client of its own; the version it names."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{demo_root}/mlruns.db")
    if version is not None:
        client.set_registered_model_alias(GATE_MODEL, "champion", str(version))
    return int(client.get_model_version_by_alias(GATE_MODEL, "champion").version)


def promotion_tags(demo_root: Path) -> tuple[dict, dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{demo_root}/mlruns.db")
    return (client.get_registered_model(GATE_MODEL).tags,
            {v: client.get_model_version(GATE_MODEL, str(v)).tags for v in (1, 2, 3)})


@pytest.mark.parametrize("use_interval", [False, True], ids=["point", "interval"])
def test_a_weaker_challenger_fails_max_regression_and_is_not_promoted(gated, demo_root, tmp_path, use_interval):
    """max_drop 0 with promote: true: the stump (version 2) is worse than the champion, so exit 4 and the alias
    unchanged. Catches a regression gate that always passes, a flipped sign, and a promotion before the verdict."""
    lake = inputs_copy(gated, tmp_path / "lake")
    champion_alias(demo_root, 1)
    tags_before = promotion_tags(demo_root)
    # The premise, from the tables alone: the challenger ranks worse than the champion on the window.
    champ, weak = reference_frame(lake, GATE_MODEL, 1), reference_frame(lake, GATE_MODEL, 2)
    assert roc_auc_score(weak.label, weak.score) < roc_auc_score(champ.label, champ.score) - 0.05
    gate = f"{{metric: roc_auc, slices: [overall], max_drop: 0, use_interval: {str(use_interval).lower()}}}"
    cfg = eval_config(lake, demo_root, f"models.champion=models:/{GATE_MODEL}@champion",
                      f"models.challengers=[models:/{GATE_MODEL}/2]", "gates.promote=true",
                      f"gates.max_regression=[{gate}]", "mlflow.log_reports=false")
    with pytest.raises(GateFailed, match="max_regression roc_auc") as e:
        run_evaluate(cfg, LocalExecutor())
    assert e.value.exit_code == 4 and e.value.summary.verdict == "fail" and e.value.summary.promoted is None
    assert champion_alias(demo_root) == 1 and promotion_tags(demo_root) == tags_before
    (row,) = [g for g in report_of(e.value.summary)["gates"] if g["gate"].startswith("max_regression")]
    assert not row["passed"] and row["model"] == f"{GATE_MODEL}/2" and row["value"] < 0


@pytest.mark.parametrize("moved_at", ["after the report", "just before the move"])
def test_promotion_refuses_an_alias_moved_during_the_evaluation(gated, demo_root, tmp_path, monkeypatch, moved_at):
    """Compare-and-set: the challenger (3) was judged against version 1; a second registry client moves the alias to
    version 2 meanwhile (another promotion, a rollback). Exit 4, the alias stays on 2, nothing recorded as moved,
    and the reason is in the summary and report.json."""
    from mlflow.tracking import MlflowClient

    from engine.evaluation import publish

    lake = inputs_copy(gated, tmp_path / "lake")
    champion_alias(demo_root, 1)
    tags_before = promotion_tags(demo_root)
    other = MlflowClient(f"sqlite:///{demo_root}/mlruns.db")  # the concurrent operator's own client
    moves = []

    def move():
        other.set_registered_model_alias(GATE_MODEL, "champion", "2")
        moves.append(moved_at)

    if moved_at == "after the report":
        logged = publish.log_to_mlflow

        def log_then_move(*args):
            out = logged(*args)
            move()
            return out

        monkeypatch.setattr(publish, "log_to_mlflow", log_then_move)
    else:
        monkeypatch.setattr(publish, "before_alias_check", move, raising=False)
    cfg = eval_config(lake, demo_root, f"models.champion=models:/{GATE_MODEL}@champion",
                      f"models.challengers=[models:/{GATE_MODEL}/3]", "gates.promote=true",
                      "gates.thresholds=[{metric: roc_auc, min: 0.6}]")
    with pytest.raises(GateFailed, match="now names version 2") as e:
        run_evaluate(cfg, LocalExecutor())
    assert moves == [moved_at]
    assert e.value.exit_code == 4 and champion_alias(demo_root) == 2 and promotion_tags(demo_root) == tags_before
    s = e.value.summary
    assert s.verdict == "fail" and s.promoted is None and any("now names version 2" in g for g in s.gates_failed)
    rep = report_of(s)
    assert rep["verdict"] == "fail"
    assert [g["gate"] for g in rep["gates"] if not g["passed"]] == ["promotion"]
    assert other.get_run(s.mlflow_run_id).data.tags["lakescore.verdict"] == "fail"


def test_window_days_that_no_model_scored_fail_coverage(scored, demo_root, tmp_path):
    """The score job failed on the window's last two days for every model: those days are in features and labels,
    so each is a failed coverage gate, listed per day, with gates or without."""
    lake = inputs_copy(scored, tmp_path / "lake")
    DeltaTable(str(lake / "scores")).delete("ds >= '2026-01-03'")
    cfg = eval_config(lake, demo_root, "gates.thresholds=[{metric: roc_auc, min: 0.5}]")
    with pytest.raises(GateFailed) as e:
        run_evaluate(cfg, LocalExecutor())
    both = [f"{XGB}/1", f"{MLP}/1"]
    s = e.value.summary
    assert s.missing_scores == {"2026-01-03": both, "2026-01-04": both} and s.verdict == "fail"
    assert s.days == ["2026-01-02"]
    assert [g for g in s.gates_failed if "coverage" in g] == [
        f"coverage [{','.join(both)} overall]: no evaluated model has scores for ds={d}, a day of the window that "
        "the inputs hold; score it first (jobs.score) or narrow the window" for d in ("2026-01-03", "2026-01-04")]
    rep = report_of(s)
    assert rep["missing_scores"] == {"2026-01-03": both, "2026-01-04": both}
    assert sorted(g["reason"].split("ds=")[1][:10] for g in rep["gates"] if g["gate"] == "coverage") == [
        "2026-01-03", "2026-01-04"]
    # Without gates the report would cover a third of what it says: still a failure.
    with pytest.raises(GateFailed, match="coverage"):
        run_evaluate(eval_config(lake, demo_root, "mlflow.log_reports=false"), LocalExecutor())


def test_eval_metrics_keys_keep_evaluations_apart(gated, demo_root, tmp_path):
    """Two evaluations a moment apart, and one challenger against two champions: four evaluations, all kept, none
    reported already done; re-runs of each are already done. The key stays readable and one path segment."""
    lake = inputs_copy(gated, tmp_path / "lake")
    more = ["gates.max_immature_fraction=1", "mlflow.log_reports=false"]
    t1, t2 = "2026-01-07T00:00:00.100000+00:00", "2026-01-07T00:00:00.900000+00:00"
    runs = {
        "xgb@t1": eval_config(lake, demo_root, f"as_of={t1}", *more),
        "xgb@t2": eval_config(lake, demo_root, f"as_of={t2}", *more),
        "gate@t1": eval_config(lake, demo_root, f"as_of={t1}", f"models.champion=models:/{GATE_MODEL}/1", *more),
    }
    for name, cfg in runs.items():
        s = run_evaluate(cfg, LocalExecutor())
        assert len(s.units_committed) == 2 and s.units_already_done == [], name
    em = DeltaTable(str(lake / "eval_metrics")).to_pandas()
    evals = em.groupby(["model_name", "model_version", "evaluation"]).as_of.first()
    mlp = em[em.model_name == MLP]
    assert mlp.evaluation.nunique() == 3 and len(evals) == 6
    assert sorted(mlp[mlp.kind == "delta"].groupby("evaluation").baseline.first()) == [f"{GATE_MODEL}/1", f"{XGB}/1",
                                                                                       f"{XGB}/1"]
    assert sorted(str(t) for t in mlp.as_of.unique()) == ["2026-01-07 00:00:00.100000+00:00",
                                                          "2026-01-07 00:00:00.900000+00:00"]
    for key in em.evaluation.unique():
        assert key.startswith("2026-01-02..2026-01-04@2026-01-07T00:00:00.") and "/" not in key and " " not in key
    assert (lake / "eval_metrics" / f"model_name={MLP}" / "model_version=1").is_dir()
    for name, cfg in runs.items():
        again = run_evaluate(cfg, LocalExecutor())
        assert again.units_committed == [] and len(again.units_already_done) == 2, name


def plant_duplicates(lake: Path, table: str, ds: str, n: int, **filters) -> None:
    """Append `n` rows of `table`'s day `ds` again (same keys): duplicates the evaluation must refuse."""
    t = DeltaTable(str(lake / table))
    rows = t.to_pyarrow_table(filters=[("ds", "=", ds), *((k, "=", v) for k, v in filters.items())]).slice(100, n)
    parts = ["ds", "model_name", "model_version"] if table == "scores" else ["ds"]
    write_deltalake(str(lake / table), rows.cast(pa.schema(t.schema().to_arrow())), mode="append", partition_by=parts)


def executor_for(engine: str, cfg: EvaluateConfig, request):
    """The engine's evaluate executor on the session's local cluster."""
    if engine == "ray":
        from engine.ray.executor import executor

        request.getfixturevalue("ray_local")
        return executor(cfg.ray)
    from engine.spark.executor import SparkExecutor

    return SparkExecutor(request.getfixturevalue("spark"), cfg.spark)


@pytest.mark.parametrize("table,engine", [("scores", "ray"), ("features", "ray"), ("features", "spark")])
def test_duplicate_keys_in_scores_or_features_are_a_contract_violation(scored, demo_root, tmp_path, request,
                                                                       table, engine):
    """The check runs in the shared task function (engine.evaluation.join) and on the driver: every engine."""
    lake = inputs_copy(scored, tmp_path / "lake")
    filters = {"model_name": XGB} if table == "scores" else {}
    plant_duplicates(lake, table, "2026-01-03", 7, **filters)
    # The reference: deltalake says the day now holds 7 keys twice.
    day = DeltaTable(str(lake / table)).to_pandas(filters=[("ds", "=", "2026-01-03"),
                                                           *((k, "=", v) for k, v in filters.items())])
    assert day.duplicated(["entity_id", "event_ts"]).sum() == 7
    version = DeltaTable(str(lake / table)).version()
    cfg = eval_config(lake, demo_root, "max_rows_per_task=1000")  # buckets: every copy of a key meets in one task
    what = f"{table}@v{version} ds=2026-01-03" + (f" model {XGB}/1" if table == "scores" else "")
    with pytest.raises(ContractViolation, match=f"^{what} has 7 duplicate key row") as e:
        run_evaluate(cfg, executor_for(engine, cfg, request))
    assert e.value.exit_code == 3
    assert not (lake / "eval_metrics").exists() and not (lake / "_reports").exists()  # nothing written


def test_time_budget_binds_the_same_on_ray_and_spark(scored, demo_root, ray_local, spark):
    """A budget that runs out while the tasks run: both engines stop and fail the same way (UnitFailed, exit 1),
    Spark cancelling its job rather than finishing it."""
    import time

    from engine.ray.executor import executor as ray_executor
    from engine.spark.executor import SparkExecutor

    class ShortBudget:
        """The real executor, handed a deadline 50 ms ahead when its tasks start (the job's budget would also count
        the planning, which varies on a shared machine); nine tasks that each read and join a third of a day take
        longer on either engine."""

        def __init__(self, inner):
            self.inner = inner

        def run(self, units, chunks, bundle, deadline):
            self.started = time.monotonic()
            yield from self.inner.run(units, chunks, bundle, self.started + 0.05)

    cfg = eval_config(scored, demo_root, "max_rows_per_task=1000", "mlflow.log_reports=false")  # 9 tasks
    outcomes = {}
    for name, inner in (("ray", ray_executor(cfg.ray)), ("spark", SparkExecutor(spark, cfg.spark))):
        executor = ShortBudget(inner)
        with pytest.raises(UnitFailed) as e:
            run_evaluate(cfg, executor)
        outcomes[name] = (type(e.value), e.value.exit_code, str(e.value).split(" with ")[0])
        assert time.monotonic() - executor.started < 30, name  # stopped at the deadline, not after every task
    assert outcomes["ray"] == outcomes["spark"] == (UnitFailed, 1, "time budget exhausted")


# ------------------------------------------------------------------ the report a reader sees (issue 21)
def _ok(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def independent_reading(row: dict) -> str:
    """The delta's reading from its interval alone (not the report's code): worse/better when 0 is outside it."""
    lower = row["metric"] in {"log_loss", "brier", "ece"}
    higher = row["metric"] in {"roc_auc", "pr_auc"} or row["metric"].split("@")[0] in {"precision", "recall", "f1"}
    if not _ok(row["value"]) or not (_ok(row["ci_low"]) and _ok(row["ci_high"])) or row["ci_low"] <= 0 <= row["ci_high"]:
        return "unclear"
    if not (lower or higher):
        return "unclear"
    return "worse" if (row["ci_low"] > 0) == lower else "better"


def page_text(html_text: str) -> str:
    """The page's text as a browser shows it (tags out, entities decoded), style left out."""
    import html as html_mod

    body = html_text[html_text.index("<body>"):] if "<body>" in html_text else html_text
    return html_mod.unescape(re.sub(r"<[^>]+>", " ", body))


@pytest.fixture(scope="module")
def demo_report(scored, demo_root, tmp_path_factory):
    """One evaluation with drift on, roc_auc the only gated metric: (summary, report.json, report.html, folder)."""
    lake = tmp_path_factory.mktemp("reportlake") / "lake"
    shutil.copytree(scored, lake)
    cfg = eval_config(lake, demo_root, "drift.reference=2026-01-01..2026-01-01", 'drift.columns=["f0?"]',
                      "drift.sample_rows=1500", "gates.thresholds=[{metric: roc_auc, min: 0.5}]",
                      "gates.max_regression=[{metric: roc_auc, slices: [overall], max_drop: 0.5}]",
                      "metrics.thresholds=[0.3, 0.5]")
    s = run_evaluate(cfg, LocalExecutor())
    folder = Path(s.report).parent
    return s, report_of(s), (folder / "report.html").read_text(), folder


def test_the_report_opens_with_the_verdict_and_what_changed_per_metric(demo_report):
    s, rep, page, _ = demo_report
    body = page[page.index("<body>"):]
    # top-down: verdict, what changed, gates; nothing drawn before the answer
    first = [body.index(k) for k in ('class="verdict', 'id="changed"', 'id="gates"')]
    assert first == sorted(first) and "<svg" not in body[:first[2]]
    changed = body[first[1]:first[2]]
    rows = re.findall(r"<tr[^>]*><td>([^<]+)</td><td>(.*?)</td><td class=\"n\">(?:<span[^>]*>)?(\d+)(?:</span>)?</td>"
                      r"<td class=\"n\">(?:<span[^>]*>)?(\d+)(?:</span>)?</td><td class=\"n\">(\d+)</td>"
                      r"<td class=\"n\">(\d+)</td><td class=\"n\">(\d+)</td><td>([^<]*)</td></tr>", changed)
    got = {m.split(" ")[0]: (gate, int(b), int(w), int(u) + int(c), int(n), worst)
           for m, gate, b, w, u, c, n, worst in rows}
    metrics = {d["metric"] for d in rep["deltas"]}
    assert set(got) == metrics and len(metrics) >= 10
    ungated_worse = []
    for metric in metrics:
        mine = [d for d in rep["deltas"] if d["metric"] == metric]
        reads = [independent_reading(d) for d in mine]
        gate, better, worse, other, n, worst = got[metric]
        assert (better, worse, other, n) == (reads.count("better"), reads.count("worse"), reads.count("unclear"),
                                             len(mine)), metric
        bad = sorted((d for d, r in zip(mine, reads) if r == "worse"),
                     key=lambda d: -abs(d["value"]))  # the worst regression by size, named first
        if bad:
            assert html.unescape(worst).startswith(bad[0]["slice"] + " "), (metric, worst)
        assert ("not gated" in gate) == (metric != "roc_auc")
        if bad and metric != "roc_auc":
            ungated_worse.append(metric)
    callout = re.search(r'<div class="callout">(.*?)</div>', changed)
    if ungated_worse:
        assert callout and all(m in callout.group(1) for m in ungated_worse)
        assert changed.index(ungated_worse[0]) < changed.index("<table")  # called out above the table
    else:
        assert callout is None


def test_delta_tables_are_worst_first_and_ungated_metrics_folded(demo_report):
    _, rep, page, _ = demo_report
    part = page[page.index('id="deltas"'):page.index('id="slices"')]
    blocks = re.split(r'(?=<h4 id="delta-|<details>)', part)[1:]
    seen = set()
    for block in blocks:
        metric = html.unescape(re.match(r'(?:<h4 id="delta-[^"]+">|<details><summary>)([^ :<]+)', block).group(1))
        seen.add(metric)
        assert block.startswith("<details>") == (metric != "roc_auc")  # gated open, the rest folded
        slices = [html.unescape(x) for x in re.findall(r'<tr[^>]*><td>([^<]+)</td><td class="n">', block)]
        mine = {d["slice"]: d for d in rep["deltas"] if d["metric"] == metric}
        assert sorted(slices) == sorted(mine)
        rank = {"worse": 0, "unclear": 1, "better": 2}
        keys = [rank[independent_reading(mine[sl])] for sl in slices]
        assert keys == sorted(keys), metric  # regressions first, improvements last
        worse = [mine[sl]["value"] for sl in slices if independent_reading(mine[sl]) == "worse"]
        assert [abs(v) for v in worse] == sorted((abs(v) for v in worse), reverse=True), metric
    assert seen == {d["metric"] for d in rep["deltas"]}


def test_numbers_are_fixed_notation_and_forest_plots_use_the_page(demo_report):
    _, rep, page, _ = demo_report
    text = page_text(page)
    intervals = re.findall(r"\[[^\]\[]*?, [^\]\[]*?\]", text)
    assert len(intervals) > 100 and not [i for i in intervals if re.search(r"\de[-+]\d", i)]
    figures = re.findall(r"<figure><figcaption>([^<]+)</figcaption>(<svg .*?</svg>)", page[page.index('id="metrics"'):
                                                                                        page.index('id="curves"')])
    assert len(figures) >= 10
    for caption, svg_text in figures:
        width = int(re.match(r'<svg width="(\d+)"', svg_text).group(1))
        ticks = re.findall(r'<text [^>]*text-anchor="middle" fill="#555">([^<]+)</text>', svg_text)
        assert width >= 1000 and len(ticks) >= 4, (caption, width, ticks)


def test_roc_pr_curves_and_confusion_matrices_are_drawn_from_the_kept_histograms(demo_report, scored):
    from sklearn.metrics import roc_curve

    _, rep, page, _ = demo_report
    ref = reference_frame(scored, XGB, 1)
    cur = rep["curves"][f"{XGB}/1"]
    fpr, tpr, _ = roc_curve(ref.label, ref.score)
    for p in cur["points"]:
        pred = ref.score >= p["threshold"]
        assert abs(p["tp"] - int((pred & (ref.label == 1)).sum())) <= 1
        assert abs(p["fp"] - int((pred & (ref.label == 0)).sum())) <= 1
        j = np.searchsorted(fpr, p["fpr"], side="left")
        i = np.searchsorted(fpr, p["fpr"], side="right") - 1
        assert tpr[max(j - 1, 0)] - 1e-3 <= p["tpr"] <= tpr[min(i + 1, len(tpr) - 1)] + 1e-3
    conf = {c["threshold"]: c for c in cur["confusion"]}
    assert sorted(conf) == [0.3, 0.5]
    for t, c in conf.items():
        pred = ref.score >= t
        want = (int((pred & (ref.label == 1)).sum()), int((pred & (ref.label == 0)).sum()),
                int((~pred & (ref.label == 1)).sum()), int((~pred & (ref.label == 0)).sum()))
        assert (c["tp"], c["fp"], c["fn"], c["tn"]) == want
        assert f'<td class="n">{want[0]:,}</td><td class="n">{want[1]:,}</td>' in page
    section = page[page.index('id="curves"'):page.index('id="reliability"')]
    assert section.count("<svg") == 2 and section.count("<polyline") == 2 * len(rep["models"])


def test_every_reported_interval_contains_its_estimate(demo_report):
    _, rep, page, _ = demo_report
    rows = [r for r in rep["metrics"] + rep["deltas"] if _ok(r["ci_low"]) and _ok(r["value"])]
    assert len(rows) > 300
    assert [(r["model"], r["slice"], r["metric"], r["value"], r["ci_low"], r["ci_high"]) for r in rows
            if not r["ci_low"] <= r["value"] <= r["ci_high"]] == []
    assert "bias-corrected" in page_text(page[page.index('id="notes"'):])  # the method is explained


def test_drift_has_one_verdict_per_column_and_the_evidently_page_the_same_columns(demo_report):
    _, rep, page, folder = demo_report
    drift = rep["drift"]
    features = [p for p in drift["psi"] if p["kind"] == "feature"]
    assert [p["column"] for p in features] == [f"f{i:02d}" for i in range(10)]
    assert all(p["threshold"] == 0.25 and p["status"] == ("drift" if p["psi"] > 0.25 else "ok") for p in features)
    section = page_text(page[page.index('id="drift"'):page.index('id="notes"')])
    for p in features:
        shown = re.search(rf"{p['column']}\s+([0-9.]+)\s+0\.2500\s+{p['status']}\s", section)
        assert shown and abs(float(shown.group(1)) - p["psi"]) <= max(5e-5, 0.01 * p["psi"]), p
    assert "measures how far a column's distribution moved" in section
    evidently = (folder / "drift.html").read_text()
    assert evidently.index("back to the evaluation report") < 2000 + evidently.lower().index("<body")
    assert '<a href="report.html">' in evidently
    head = page_text("<body>" + evidently[evidently.lower().index("<body"):][:3000])
    assert "2026-01-01..2026-01-01" in head and "2026-01-02..2026-01-04" in head and f"{XGB}/1" in head
    assert drift["evidently_columns"] == [p["column"] for p in features]
    for c in ("segment", "region", "channel"):  # slice columns were on the page, never in the PSI table
        assert f'"{c}"' not in evidently


def test_mlflow_run_has_headline_metrics_the_full_table_and_the_drift_page(demo_report, demo_root):
    from mlflow.tracking import MlflowClient

    s, rep, _, _ = demo_report
    client = MlflowClient(f"sqlite:///{demo_root}/mlruns.db")
    logged = client.get_run(s.mlflow_run_id).data.metrics
    overall = [m for m in rep["metrics"] if m["slice"] == "overall" and m["value"] is not None]
    assert len(logged) <= len(overall) + len([d for d in rep["deltas"] if d["slice"] == "overall"]) < 100
    assert logged[f"{XGB}/1/overall/roc_auc"] == next(m["value"] for m in overall
                                                       if m["model"] == f"{XGB}/1" and m["metric"] == "roc_auc")
    names = {a.path for a in client.list_artifacts(s.mlflow_run_id)}
    assert {"report.html", "report.json", "drift.html", "metrics_table.json", "config.json"} <= names
    path = client.download_artifacts(s.mlflow_run_id, "metrics_table.json", str(Path(s.report).parent.parent))
    table = json.loads(Path(path).read_text())
    assert len(table["data"]) == len(rep["metrics"]) + len(rep["deltas"])


def unwritable(path: Path, on: bool = True) -> None:
    """Make a file unwritable even for root (the immutable attribute; `chmod` binds only other users), or writable
    again."""
    import os
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)
    else:
        path.chmod(0o444 if on else 0o644)


def test_a_report_rewrite_failing_after_the_alias_moved_leaves_a_truthful_promotion(scored, demo_root, tmp_path,
                                                                                  ray_local, monkeypatch, capsys):
    """The alias moved, then the report's rewrite failed (its files made unwritable between the move and the rewrite,
    through `publish.after_alias_move`). The promotion stands and the job says so: exit 0 (done: DESIGN.md's table;
    engine.evaluation.publish says why), a summary line with the promotion, and one warning line saying what failed,
    which move happened, what the report on disk still says, and what to do; no traceback, no "this is a bug".
    On main the job exited 1 ("unexpected PermissionError … this is a bug") although the alias had moved."""

    from engine.evaluation import publish
    from jobs.evaluate import main

    lake, client = _two_versions_scored(scored, demo_root, tmp_path, "t-stale")
    frozen: list[Path] = []
    reports = lake / "_reports" / "evaluate"
    earlier = set(reports.iterdir()) if reports.exists() else set()  # other tests' evaluations of `scored`

    def freeze_report():  # between the move and the rewrite: the first report's files can no longer be written
        (folder,) = set(reports.iterdir()) - earlier
        for name in ("report.json", "report.html"):
            unwritable(folder / name)
            frozen.append(folder / name)

    monkeypatch.setattr(publish, "after_alias_move", freeze_report)
    args = ["--config", str(Path(__file__).parent.parent / "conf" / "evaluate.yaml"), f"lake.root={lake}",
            f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
            "models.champion=models:/t-stale@champion", "models.challengers=[models:/t-stale/2]", f"window={WINDOW}",
            "min_support=50", "gates.min_support=50", "metrics.bootstrap=20", "drift.reference=null", "engine=ray",
            f"features.contract={Path(__file__).parent.parent / 'conf' / 'contracts' / 'features.yaml'}",
            "gates.promote=true", "gates.thresholds=[{metric: roc_auc, min: 0.6}]",
            "gates.max_regression=[{metric: roc_auc, slices: [overall], max_drop: 0.2}]"]
    try:
        code = main(args)
    finally:
        for path in frozen:
            unwritable(path, on=False)
    out = capsys.readouterr()
    assert frozen, f"the hook never ran: no promotion (exit {code}): {out.err[-3000:]}"
    # The registry, read directly: the alias moved and the move is recorded.
    assert int(client.get_model_version_by_alias("t-stale", "champion").version) == 2
    assert json.loads(client.get_model_version("t-stale", "2").tags["lakescore.promotion"])["from_version"] == 1
    assert code == 0, out.err[-3000:]
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["exit_code"] == 0 and summary["promoted"].startswith("models:/t-stale/2")
    assert "this is a bug" not in out.err and "Traceback" not in out.err and "error:" not in out.err, out.err[-3000:]
    (line,) = [ln for ln in out.err.splitlines() if "report rewrite failed" in ln]
    assert " WARNING " in line and "t-stale@champion moved from version 1 to version 2" in line, line
    # What the report on disk still says, read directly, is what the line says it says.
    on_disk = json.loads((frozen[0].parent / "report.json").read_text())["promotion"]["outcome"]
    assert on_disk == "pending" and "'pending'" in line and str(frozen[0].parent) in line, line
    assert "lakescore rollback --model t-stale" in line, line


def test_the_evidently_page_is_built_while_the_tasks_run(scored, demo_root, tmp_path, monkeypatch):
    """The page (Evidently's import and report: seconds of driver CPU) starts once the reference is known and is
    built beside the tasks, not after them: the first task waits (bounded) for the page's build to have begun.
    Breaks if the page goes back to being built in line after the tasks (the task's wait times out, and the page's
    build then finds the tasks long done)."""
    import threading

    from engine.evaluation import drift_section, job

    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    page_started, seen_by_task = threading.Event(), []
    real_page, real_task = drift_section._page, job.evaluate_chunk_task

    def page(*args):
        page_started.set()
        return real_page(*args)

    def task(unit, chunk, bundle):
        seen_by_task.append(page_started.wait(timeout=60))
        return real_task(unit, chunk, bundle)

    monkeypatch.setattr(drift_section, "_page", page)
    monkeypatch.setattr(job, "evaluate_chunk_task", task)
    cfg = eval_config(lake, demo_root, "drift.reference=2026-01-01..2026-01-01", 'drift.columns=["f0?"]',
                      "drift.sample_rows=500")
    s = run_evaluate(cfg, LocalExecutor())
    assert seen_by_task and all(seen_by_task), seen_by_task
    page_html = (Path(s.report).parent / "drift.html").read_text()
    assert "back to the evaluation report" in page_html and report_of(s)["drift"]["evidently_html"] == "drift.html"
