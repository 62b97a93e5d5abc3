"""The backtest job on a real Delta lake, real XGBoost and a real MLflow registry: folds trained and scored as an
independent re-implementation with scikit-learn says, deterministic, resumable, and stopped by the leakage guard."""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from sklearn.metrics import roc_auc_score

from backtests.fold_run import fold_seed
from backtests.runner import run_backtest
from conftest import DAYS, ROWS, XGB
from engine.config import BacktestConfig, load_config, resolve_paths
from engine.errors import ContractViolation
from engine.executor import LocalExecutor


CONTRACT = Path(__file__).resolve().parent.parent / "conf" / "contracts" / "features.yaml"


def bt_config(lake: Path, demo_root: Path, *overrides: str) -> BacktestConfig:
    base = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", f"baseline.model=models:/{XGB}@champion",
            "folds.train_days=2", "folds.n_folds=2", "recipe.trees=20", "recipe.depth=3", "metrics.bootstrap=30",
            "min_support=50", f"features.contract={CONTRACT}"]
    return resolve_paths(load_config(BacktestConfig, None, [*base, *overrides]))


def overall(fold: dict, model: str, metric: str = "roc_auc") -> float:
    return next(m["value"] for m in fold["metrics"] if m["model"] == model and m["slice"] == "overall"
                and m["metric"] == metric)


def report_of(summary) -> dict:
    return json.loads(Path(summary.report).with_name("report.json").read_text())


NUMERIC = [f"f{i:02d}" for i in range(50)]  # the demo lake's float features: what recipe.features ["f*"] names
CATEGORICAL = ["region", "segment", "channel"]  # recipe.categorical's default


def reference_matrix(df: pd.DataFrame, categories: dict[str, list[str]], clip: float) -> np.ndarray:
    """The recipe's preprocessing written out with pandas: numeric columns in order, NaN → 0, clipped to ±clip;
    each categorical column as the index of its value in `categories` (−1 for a value outside it)."""
    cols = [df[c].astype("float64").fillna(0.0).clip(-clip, clip).astype(np.float32) for c in NUMERIC]
    cols += [df[c].map({v: float(i) for i, v in enumerate(cats)}).fillna(-1.0).astype(np.float32)
             for c, cats in categories.items()]
    return np.ascontiguousarray(np.column_stack(cols), dtype=np.float32)


def independent_fold(lake: Path, cfg: BacktestConfig, cutoff: str, train_days: list[str], test_days: list[str],
                     seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Train one fold's model and score a test window with pandas, xgboost and sklearn only: the training rows are
    the train days' features with the labels known at the cutoff, in event order; categories come from the first
    training day (sorted), as the recipe declares. (test AUC, test matrix, test predictions)."""
    import xgboost as xgb

    feats = DeltaTable(str(lake / "features")).to_pandas()
    labels = DeltaTable(str(lake / "labels")).to_pandas()
    cut = pd.Timestamp(cutoff, tz="UTC")
    known = labels[labels.label_ts <= cut]
    train = feats[feats.ds.isin(train_days)].merge(known[["entity_id", "event_ts", "label"]], on=["entity_id", "event_ts"])
    train = train.sort_values(["event_ts", "entity_id"], kind="stable")
    first = feats[feats.ds == train_days[0]]
    categories = {c: sorted(first[c].dropna().unique()) for c in CATEGORICAL}
    params = {"objective": "binary:logistic", "max_depth": cfg.recipe.depth, "eta": 0.1, "seed": seed, "nthread": 2,
              "eval_metric": "auc", "tree_method": "hist"}
    booster = xgb.train(params, xgb.DMatrix(reference_matrix(train, categories, cfg.recipe.clip),
                                            label=train.label.to_numpy(np.float32)), num_boost_round=cfg.recipe.trees)
    test = feats[feats.ds.isin(test_days)].merge(labels[["entity_id", "event_ts", "label"]], on=["entity_id", "event_ts"])
    x = reference_matrix(test, categories, cfg.recipe.clip)
    p = booster.predict(xgb.DMatrix(x))
    return roc_auc_score(test.label, p), x, p


def independent_fold_auc(*args) -> float:
    return independent_fold(*args)[0]


def test_folds_match_an_independent_implementation_and_rerun_identically(lake, demo_root, tmp_path):
    cfg = bt_config(lake, demo_root)
    s = run_backtest(cfg, LocalExecutor())
    rep = report_of(s)
    assert [f["cutoff"] for f in rep["folds"]] == ["2026-01-03", "2026-01-04"] and s.folds_committed == [0, 1]
    f0 = rep["folds"][0]
    assert (f0["train_start"], f0["train_end"]) == ("2026-01-01", "2026-01-02")
    want, x, p = independent_fold(lake, cfg, "2026-01-03", ["2026-01-01", "2026-01-02"], ["2026-01-03"],
                                  fold_seed(cfg.seed, 0))
    assert abs(overall(f0, "recipe") - want) < 1e-4  # the AUC from the job's histograms: within their resolution
    # The fold's model as logged: the same booster as the reference (its predictions on the reference matrix), which
    # a preprocessing bug shared by training and scoring would change however little it moves the AUC.
    import xgboost as xgb
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.mlflow.tracking_uri)
    (child,) = client.search_runs([client.get_run(s.mlflow_run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{s.mlflow_run_id}' and tags.`lakescore.fold` = '0'")
    logged = xgb.Booster(model_file=client.download_artifacts(child.info.run_id, "model/model.ubj", str(tmp_path / "m")))
    assert np.abs(logged.predict(xgb.DMatrix(x)) - p).max() < 1e-6
    assert f0["train_rows_label_unknown_at_cutoff"] > 0  # labels arrive 1-6 days late: some were not known yet
    assert all(v["passed"] for f in rep["folds"] for v in f["guard"])
    assert any(m["model"].startswith(f"baseline:{XGB}/") for m in f0["metrics"])
    # backtest_metrics holds every fold's rows; the same config and versions elsewhere give identical metrics
    table = DeltaTable(str(lake / "backtest_metrics")).to_pandas()
    assert set(table.fold) == {0, 1} and set(table.backtest_id) == {s.backtest_id}
    lake2 = tmp_path / "lake2"
    shutil.copytree(lake, lake2, ignore=shutil.ignore_patterns("backtest_metrics", "_reports"))
    s2 = run_backtest(bt_config(lake2, demo_root), LocalExecutor())
    assert s2.folds_committed == [0, 1]  # another lake root: another backtest id, computed afresh
    assert report_of(s2)["folds"][0]["metrics"] == f0["metrics"]
    # Re-run in place: every fold is complete, nothing is recomputed.
    s3 = run_backtest(cfg, LocalExecutor())
    assert s3.folds_resumed == [0, 1] and s3.folds_committed == []


class FailOnce(LocalExecutor):
    """Our own executor seam: the second group fails the first time (a worker lost mid-backtest)."""

    def __init__(self):
        self.failed = False

    def run(self, units, chunks, bundle, deadline):
        from engine.errors import UnitFailed
        from engine.executor import failure
        from engine.work import ChunkResult

        for item in super().run(units, chunks, bundle, deadline):
            if item.chunk == 1 and not self.failed and isinstance(item, ChunkResult):  # a result, not the start
                self.failed = True
                yield failure(item.unit, item.chunk, UnitFailed("worker lost"))
            else:
                yield item


def test_a_failed_fold_fails_the_backtest_and_a_rerun_resumes(lake, demo_root):
    from engine.errors import UnitFailed

    cfg = bt_config(lake, demo_root, "baseline.kind=base_rate", "mlflow.log_reports=false")
    with pytest.raises(UnitFailed, match="worker lost"):
        run_backtest(cfg, FailOnce())
    assert set(DeltaTable(str(lake / "backtest_metrics")).to_pandas().fold) == {0}
    s = run_backtest(cfg, LocalExecutor())
    assert s.folds_resumed == [0] and s.folds_committed == [1]
    rep = report_of(s)
    assert [f["fold"] for f in rep["folds"]] == [0, 1]
    base = next(m for m in rep["folds"][0]["metrics"] if m["model"] == "baseline:base_rate" and m["metric"] == "roc_auc"
                and m["slice"] == "overall")
    assert base["value"] == pytest.approx(0.5)  # a constant score ranks nothing


def add_fifth_day(lake: Path) -> None:
    """2026-01-05 appended to the features and labels (the demo generator's next day): room for 3 folds after 2
    training days."""
    from engine.demo.data import make_day

    feats, labels = make_day(DAYS, "2026-01-05", ROWS, 50, seed=11)
    write_deltalake(str(lake / "features"), feats, partition_by=["ds"], mode="append")
    write_deltalake(str(lake / "labels"), labels, partition_by=["ds"], mode="append")


def test_refit_every_k_reuses_the_model_and_says_which(lake, demo_root):
    # every=2 over 3 folds: folds 0 and 1 share the model trained on fold 0's past; fold 2 gets its own.
    add_fifth_day(lake)
    cfg = bt_config(lake, demo_root, "refit.every=2", "folds.n_folds=3", "baseline.kind=base_rate",
                    "mlflow.log_reports=false")
    rep = report_of(run_backtest(cfg, LocalExecutor()))
    f0, f1, f2 = rep["folds"]
    assert [f["cutoff"] for f in rep["folds"]] == ["2026-01-03", "2026-01-04", "2026-01-05"]
    assert [f["trained_on"] for f in rep["folds"]] == [0, 0, 2]
    assert (f1["train_start"], f1["train_end"]) == (f0["train_start"], f0["train_end"]) == ("2026-01-01", "2026-01-02")
    # Fold 1 is scored by fold 0's model: the AUC of a model trained independently on fold 0's past, on fold 1's
    # test day. A model retrained for fold 1 (on 2026-01-01..03, labels known by 01-04) scores differently.
    want = independent_fold_auc(lake, cfg, "2026-01-03", ["2026-01-01", "2026-01-02"], ["2026-01-04"],
                                fold_seed(cfg.seed, 0))
    assert abs(overall(f1, "recipe") - want) < 1e-4
    assert (f2["train_start"], f2["train_end"]) == ("2026-01-01", "2026-01-04")  # expanding: its own, longer past
    own = independent_fold_auc(lake, cfg, "2026-01-05", ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"],
                               ["2026-01-05"], fold_seed(cfg.seed, 2))
    assert abs(overall(f2, "recipe") - own) < 1e-4


class LogLines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        ours = logging.getLogger("lakescore")
        self.level = ours.level
        ours.setLevel(logging.INFO)
        ours.addHandler(self)
        return self

    def __exit__(self, *_exc):
        ours = logging.getLogger("lakescore")
        ours.removeHandler(self)
        ours.setLevel(self.level)


def start_done_order(lines: list[str]) -> list[str]:
    """The backtest's start and done lines, shortened to "start [0]" and "done 0"."""
    out = []
    for line in lines:
        if m := re.search(r"fold\(s\) (\[[\d, ]+\]) start", line):
            out.append(f"start {m.group(1)}")
        elif m := re.search(r"fold (\d+) done", line):
            out.append(f"done {m.group(1)}")
    return out


def test_a_resumed_backtest_logs_only_the_folds_it_ran_and_says_when_each_starts(lake, demo_root, tmp_path,
                                                                                monkeypatch):
    """every=2 over 3 folds: groups [0, 1] and [2]. The first run dies between committing fold 0 and fold 1 (a
    process killed between two commits, forced at the store); the resumed run recomputes the group [0, 1] but
    commits and logs only folds 1 and 2, with the group's model on fold 1. Start lines come as each group starts."""
    from mlflow.tracking import MlflowClient

    from engine.tables import backtest_metrics as results

    add_fifth_day(lake)
    tracking = f"sqlite:///{tmp_path}/mlruns.db"
    cfg = bt_config(lake, demo_root, "refit.every=2", "folds.n_folds=3", "baseline.kind=base_rate",
                    f"mlflow.tracking_uri={tracking}", f"mlflow.artifact_root={tmp_path}/mlart")
    real_commit = results.Store.commit

    def killed_before_fold_1(self, r):
        if r["fold"] == 1:
            raise RuntimeError("killed between two commits")
        return real_commit(self, r)

    monkeypatch.setattr(results.Store, "commit", killed_before_fold_1)
    with pytest.raises(RuntimeError, match="killed"):
        run_backtest(cfg, LocalExecutor())
    monkeypatch.setattr(results.Store, "commit", real_commit)
    assert set(DeltaTable(str(lake / "backtest_metrics")).to_pandas().fold) == {0}
    with LogLines() as logs:
        s = run_backtest(cfg, LocalExecutor())
    assert s.folds_resumed == [0] and s.folds_committed == [1, 2]
    # Each group's start line comes when it starts (the local executor runs them one after the other), not all
    # at submission.
    assert start_done_order(logs.lines) == ["start [0, 1]", "done 1", "start [2]", "done 2"]
    client = MlflowClient(tracking)
    children = client.search_runs([client.get_run(s.mlflow_run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{s.mlflow_run_id}'")
    assert sorted(r.data.tags["lakescore.fold"] for r in children) == ["1", "2"]
    logged = {r.data.tags["lakescore.fold"]: {a.path for a in client.list_artifacts(r.info.run_id, "model")}
              for r in children}
    assert "model/model.ubj" in logged["1"] and "model/model.ubj" in logged["2"]
    assert {r.data.tags["lakescore.fold"]: r.data.params["trained_on"] for r in children} == {"1": "0", "2": "2"}


def test_the_leakage_guard_stops_a_training_row_from_the_future(lake, demo_root):
    # Planted: a row stored in a training day's partition whose event time is on the test day.
    day = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "=", "2026-01-02")]).slice(0, 3)
    late = pa.array([dt.datetime(2026, 1, 3, 12, tzinfo=dt.timezone.utc)] * 3, day.schema.field("event_ts").type)
    day = day.set_column(day.schema.get_field_index("event_ts"), "event_ts", late)
    day = day.set_column(0, "entity_id", pa.array([10**12 + i for i in range(3)], pa.int64()))
    write_deltalake(str(lake / "features"), day, mode="append", partition_by=["ds"])
    labels = pa.table({"entity_id": day.column("entity_id"), "event_ts": day.column("event_ts"),
                       "label": pa.array([1, 0, 1], pa.int32()),
                       "label_ts": pa.array([dt.datetime(2026, 1, 2, 23, tzinfo=dt.timezone.utc)] * 3,
                                            pa.timestamp("us", tz="UTC")),
                       "ds": pa.array(["2026-01-02"] * 3)})
    write_deltalake(str(lake / "labels"), labels, mode="append", partition_by=["ds"])
    with pytest.raises(ContractViolation, match="event_ts") as e:
        run_backtest(bt_config(lake, demo_root, "baseline.kind=base_rate", "mlflow.log_reports=false",
                               "features_at_cutoff=false"), LocalExecutor())
    assert "fold 0" in str(e.value) and "3 training row" in str(e.value) and e.value.exit_code == 3


def test_the_job_runs_its_folds_as_ray_tasks(ray_local, lake, demo_root, capsys):
    from jobs.backtest import main

    args = ["--config", str(Path(__file__).parent.parent / "conf" / "backtest.yaml"), f"lake.root={lake}",
            f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
            f"baseline.model=models:/{XGB}@champion", "folds.train_days=2", "folds.n_folds=2", "recipe.trees=20",
            "metrics.bootstrap=30", "min_support=50", "ray.num_cpus=2", f"features.contract={CONTRACT}"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    s = json.loads(out.strip().splitlines()[-1])
    # Each task takes both CPUs of the session's Ray, so the groups run one after the other: a group's start line
    # comes when it starts on a worker, after the other group's done line (at submission, both would lead).
    order = start_done_order(err.splitlines())
    assert sorted(order) == ["done 0", "done 1", "start [0]", "start [1]"], order
    first = order[0].split()[1].strip("[]")
    assert order[:2] == [f"start [{first}]", f"done {first}"], order
    assert s["folds_committed"] == [0, 1] and s["status"] == "ok"
    from engine.tables import ledger
    from engine.config import LakeConfig

    (entry,) = ledger.read(LakeConfig(root=str(lake)), job="backtest").to_pylist()
    assert entry["run_id"] == s["run_id"] and entry["status"] == "ok" and entry["units_committed"] == 2
    assert {i["role"]: i["version"] for i in entry["inputs"] if i["role"] != "features_at_cutoff"} == {
        "features": DeltaTable(str(lake / "features")).version(), "labels": DeltaTable(str(lake / "labels")).version()}
    local = run_backtest(bt_config(lake, demo_root, "features_at_cutoff=true", "recipe.depth=5"),
                         LocalExecutor())
    assert local.backtest_id == s["backtest_id"] and local.folds_resumed == [0, 1]  # same backtest: found complete
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{demo_root}/mlruns.db")
    children = client.search_runs([client.get_run(s["mlflow_run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{s['mlflow_run_id']}'")
    assert sorted(r.data.tags["lakescore.fold"] for r in children) == ["0", "1"]
    assert all("recipe.roc_auc" in r.data.metrics for r in children)
    arts = {a.path for a in client.list_artifacts(children[0].info.run_id, "model")}
    assert {"model/model.ubj", "model/preprocess_spec.json"} <= arts


def test_the_torch_mlp_recipe_trains_and_scores_without_pickle(lake, demo_root, tmp_path):
    import torch
    import torch.nn as nn
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{tmp_path}/mlruns.db"
    cfg = bt_config(lake, demo_root, "recipe.kind=torch_mlp", "folds.n_folds=1", "baseline.kind=base_rate",
                    f"mlflow.tracking_uri={tracking}", f"mlflow.artifact_root={tmp_path}/mlart")
    s = run_backtest(cfg, LocalExecutor())
    (fold,) = report_of(s)["folds"]
    auc = overall(fold, "recipe")
    assert 0.58 < auc < 1.0  # a small MLP on ~4k training rows: weak, but it ranks
    assert overall(fold, "baseline:base_rate") == pytest.approx(0.5)  # a constant score ranks nothing
    delta = next(d for d in fold["deltas"] if d["slice"] == "overall" and d["metric"] == "roc_auc")
    assert delta["ci_low"] > 0  # the recipe beats a constant score, and the interval says so
    # The fold's model was logged without pickle: a state_dict that loads with weights_only=True into the declared
    # architecture, and scores the test day as the backtest did.
    client = MlflowClient(tracking)
    (child,) = client.search_runs([client.get_run(s.mlflow_run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{s.mlflow_run_id}'")
    folder = Path(client.download_artifacts(child.info.run_id, "model", str(tmp_path / "dl")))
    assert sorted(p.name for p in folder.iterdir()) == ["lakescore_arch.json", "preprocess_spec.json", "state_dict.pt"]
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    arch = json.loads((folder / "lakescore_arch.json").read_text())
    assert arch == {"type": "mlp", "inputs": len(NUMERIC) + len(CATEGORICAL), "hidden": [32, 16], "activation": "relu",
                    "sigmoid": True}
    net = nn.Sequential(nn.Linear(arch["inputs"], 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1),
                        nn.Sigmoid())
    net.load_state_dict(state)
    feats = DeltaTable(str(lake / "features")).to_pandas()
    labels = DeltaTable(str(lake / "labels")).to_pandas()
    test = feats[feats.ds == fold["test_start"]].merge(labels[["entity_id", "event_ts", "label"]],
                                                      on=["entity_id", "event_ts"])
    first = feats[feats.ds == fold["train_start"]]
    x = reference_matrix(test, {c: sorted(first[c].dropna().unique()) for c in CATEGORICAL}, cfg.recipe.clip)
    with torch.no_grad():
        p = net.eval()(torch.from_numpy(x)).numpy().ravel()
    assert abs(roc_auc_score(test.label, p) - auc) < 1e-4


# ------------------------------------------------------------------ the report a reader sees (issue 21)
def test_the_report_answers_first_and_shows_the_guards_cost(lake, demo_root):
    import html as html_mod
    import statistics

    from scipy.stats import t

    s = run_backtest(bt_config(lake, demo_root, "recipe.epochs=9"), LocalExecutor())
    rep, page = report_of(s), Path(s.report).read_text()
    body = page[page.index("<body>"):]
    text = html_mod.unescape(re.sub(r"<[^>]+>", " ", body))
    # answer first: the headline comparison, before the run facts and before any chart
    answer = body[body.index('id="answer"'):body.index('id="run"')]
    assert body.index('id="answer"') < body.index("<svg") and body.index('id="answer"') < body.index("<dl")
    base = rep["baseline"]
    deltas = [next(d for d in f["deltas"] if d["slice"] == "overall" and d["metric"] == "roc_auc")["value"]
              for f in rep["folds"]]
    mean, sd = statistics.fmean(deltas), statistics.stdev(deltas)
    half = t.ppf(0.975, len(deltas) - 1) * sd / len(deltas) ** 0.5
    lead = html_mod.unescape(re.sub(r"<[^>]+>", "", answer.split(">", 1)[1].split("</p>")[0]))
    assert lead.startswith(f"Recipe vs {base} on roc_auc, over 2 fold(s): Δ {mean:+.4f} "
                           f"[{mean - half:+.4f}, {mean + half:+.4f}]"), lead
    # the other metrics side by side with a Δ column: one row per metric, recipe and baseline means in it
    rows = re.findall(r"<tr[^>]*><td>(?:<strong>)?([a-z_]+)(?:</strong>)?</td><td>[a-z—]+</td><td class=\"n\">"
                      r"([^<]+)</td><td class=\"n\">([^<]+)</td><td class=\"n\">([^<]+)</td>", answer)
    assert [r[0] for r in rows] == ["roc_auc", "pr_auc", "log_loss", "brier", "ece"]
    for metric, recipe_cell, base_cell, delta_cell in rows:
        rv = [next(m["value"] for m in f["metrics"] if m["slice"] == "overall" and m["metric"] == metric
                   and m["model"] == "recipe") for f in rep["folds"]]
        assert recipe_cell.startswith(f"{statistics.fmean(rv):.4f} ± {statistics.stdev(rv):.4f}"), metric
        dv = [next(d["value"] for d in f["deltas"] if d["slice"] == "overall" and d["metric"] == metric)
              for f in rep["folds"]]
        assert delta_cell == f"{statistics.fmean(dv):+.4f}", metric
    # the guard's cost, up top: rows left out per fold
    dropped = body[body.index('id="dropped"'):body.index('id="run"')]
    for f in rep["folds"]:
        gone, kept = f["train_rows_label_unknown_at_cutoff"], f["train_rows"]
        assert gone > 0 and (f"<td>{f['fold']}</td><td>{f['cutoff']}</td><td class=\"n\">{gone:,}</td>"
                             f"<td class=\"n\">{gone + kept:,}</td>") in dropped
    # the recipe's own parameters only, no internal column names, the long delta table folded
    assert "xgboost (trees=20, depth=3)" in text and "epochs" not in text
    assert "__label" not in page and "__label" not in Path(s.report).with_name("report.json").read_text()
    assert "label_ts" in text  # the guard's check is named with the configured column
    deltas_section = body[body.index('id="deltas"'):body.index('id="calibration"')]
    assert re.search(r"<details><summary>\d+ rows: every fold", deltas_section)
    assert deltas_section.index("<details>") < deltas_section.index("<table")
    # axes: round ticks (at most 3 decimals here), a y label, 3+ ticks, the last date inside the svg
    headline = body[body.index('id="headline"'):body.index('id="summary"')]
    for svg_text in re.findall(r"<svg .*?</svg>", headline):
        width = float(re.match(r'<svg width="(\d+)"', svg_text).group(1))
        yticks = re.findall(r'text-anchor="end" fill="#555">([^<]+)</text>', svg_text)
        assert len(yticks) >= 3 and all(len(v.split(".")[-1]) <= 3 for v in yticks), yticks
        assert "rotate(-90)" in svg_text and ">roc_auc</text>" in svg_text
        dates = re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="middle" fill="#555">'
                           r"(\d{4}-\d\d-\d\d)</text>", svg_text)
        assert dates[-1][1] == rep["folds"][-1]["cutoff"]  # the last fold's date is labelled
        for x, label in dates:
            assert float(x) + 3.3 * len(label) <= width, (label, x, width)  # ~6.6 px a character at 11 px
