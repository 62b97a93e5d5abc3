"""Where a backtest's results go besides `backtest_metrics`: the HTML and JSON report under the lake, and MLflow
(a parent run with the config, the fold plan and the table versions; a nested run per fold with its parameters,
metrics and model, logged without pickle: XGBoost as UBJ, the torch MLP as a state_dict plus its JSON architecture,
each with the recipe's preprocessing spec)."""
from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import tempfile

from engine.config.load import to_json
from engine.lake.reports import report_target, write_report_files

EXPERIMENT = "lakescore-backtest"


def summary_rows(folds: list[dict]) -> list[dict]:
    """Mean, spread, min and max across folds of every (model, slice, metric) with a value."""
    by: dict[tuple, list[float]] = {}
    for f in folds:
        for m in f["metrics"]:
            if m["value"] is not None:
                by.setdefault((m["model"], m["slice"], m["metric"]), []).append(float(m["value"]))
    return [{"model": k[0], "slice": k[1], "metric": k[2], "mean": statistics.fmean(v),
             "std": statistics.stdev(v) if len(v) > 1 else 0.0, "min": min(v), "max": max(v), "folds": len(v)}
            for k, v in sorted(by.items())]


RECIPE_PARAMS = {"xgboost": ("trees", "depth"), "torch_mlp": ("epochs",)}  # each kind's own model parameters
PREPROCESSING = ("features", "categorical", "clip")  # every recipe's preprocessing spec


def recipe_shown(recipe: dict) -> dict:
    """The recipe as the report shows it: its kind, its own model parameters, its preprocessing (never another
    kind's parameters, e.g. `epochs` for XGBoost)."""
    kind = recipe.get("kind")
    return {"kind": kind, "params": {k: recipe[k] for k in RECIPE_PARAMS.get(kind, ()) if k in recipe},
            "preprocessing": {k: recipe[k] for k in PREPROCESSING if k in recipe}}


def public_guard(folds: list[dict], names: dict[str, str]) -> list[dict]:
    """The folds with the guard's internal column names (`__label_ts`) replaced by the configured ones."""
    def clean(text):
        for internal, shown in names.items():
            text = text.replace(internal, shown)
        return text

    return [dict(f, guard=[dict(v, column=clean(str(v["column"])), message=clean(str(v["message"])))
                           for v in f.get("guard") or []]) for f in folds]


def build_report(cfg, summary, folds_plan, folds: list[dict], plan) -> dict:
    folds = public_guard(folds, {"__label_ts": cfg.labels.label_ts_column, "__label": cfg.labels.label_column})
    return {
        "backtest_id": summary.backtest_id, "run_id": summary.run_id, "config_hash": summary.config_hash,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "versions": summary.versions,
        "recipe": recipe_shown(cfg.recipe.model_dump()), "baseline": f"baseline:{plan.baseline}", "refit_every": cfg.refit.every,
        "headline": "roc_auc" if cfg.metrics.task == "binary" else "rmse", "task": cfg.metrics.task,
        "confidence": cfg.metrics.confidence,
        "plan": [{"index": f.index, "cutoff": f.cutoff, "train_start": f.train_start, "train_end": f.train_end,
                  "test_start": f.test_start, "test_end": f.test_end} for f in folds_plan],
        "folds": folds, "summary": summary_rows(folds), "resumed": summary.folds_resumed, "failed": summary.folds_failed,
    }


def publish(cfg, summary, folds_plan, folds: list[dict], fresh: list[dict], plan) -> tuple[str, str | None]:
    """Write the report (every committed fold of this backtest) and log this run to MLflow; (report path, run id)."""
    from backtests.report import render_html
    from engine.evaluation.report import report_json

    report = build_report(cfg, summary, folds_plan, folds, plan)
    fs, base, shown = report_target(cfg.lake.root, f"backtest/{summary.backtest_id}", cfg.lake.storage_options)
    write_report_files(fs, base, {"report.json": report_json(report), "report.html": render_html(report)})
    location = f"{shown}/report.html"
    run_id = _mlflow(cfg, summary, folds_plan, fresh, plan, report) if cfg.mlflow.log_reports else None
    return location, run_id


def _mlflow(cfg, summary, folds_plan, fresh: list[dict], plan, report: dict) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from engine.evaluation.report import report_json
    from engine.models.registry import experiment_id

    client = MlflowClient(cfg.mlflow.tracking_uri)
    exp_id = experiment_id(client, EXPERIMENT, cfg.mlflow.artifact_root)
    parent = client.create_run(exp_id, run_name=f"backtest-{summary.backtest_id}",
                               tags={"lakescore.backtest_id": summary.backtest_id, "lakescore.run_id": summary.run_id})
    pid = parent.info.run_id
    client.log_batch(pid, params=[Param("backtest_id", summary.backtest_id), Param("config_hash", summary.config_hash),
                                  Param("features_version", str(summary.versions["features"])),
                                  Param("labels_version", str(summary.versions["labels"])),
                                  Param("folds", str(len(folds_plan))), Param("refit_every", str(cfg.refit.every)),
                                  Param("recipe", cfg.recipe.kind), Param("baseline", plan.baseline)])
    ts = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    with tempfile.TemporaryDirectory(prefix="lakescore-backtest-") as tmp:
        for name, text in {"config.json": to_json(cfg), "fold_plan.json": json.dumps(report["plan"], indent=1),
                           "report.json": report_json(report)}.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as fh:
                fh.write(text)
            client.log_artifact(pid, os.path.join(tmp, name))
        for r in fresh:
            child = client.create_run(exp_id, run_name=f"fold-{r['fold']}",
                                      tags={"mlflow.parentRunId": pid, "lakescore.fold": str(r["fold"])})
            cid = child.info.run_id
            params = [Param(k, str(r[k])) for k in ("fold", "cutoff", "train_start", "train_end", "test_start",
                                                     "test_end", "trained_on", "seed", "train_rows", "test_rows")]
            metrics = [Metric(f"{m['model'].replace(':', '_')}.{m['metric']}".replace("@", "_at_").replace("%", "pct"),
                              float(m["value"]), ts, 0)
                       for m in r["metrics"] if m["slice"] == "overall" and m["value"] is not None]
            client.log_batch(cid, metrics=metrics, params=params)
            if "model_payload" in r:
                _log_model(client, cid, tmp, r, plan)
            client.set_terminated(cid)
    client.set_terminated(pid, "FAILED" if summary.folds_failed else "FINISHED")
    return pid


def _log_model(client, run_id: str, tmp: str, r: dict, plan) -> None:
    """The fold's trained model as plain files: UBJ (XGBoost) or state_dict + JSON architecture (torch, loaded back
    with weights_only=True), beside the preprocessing spec. No pickle."""
    folder = os.path.join(tmp, f"model-fold-{r['fold']}")
    os.makedirs(folder, exist_ok=True)
    name = "model.ubj" if r["model_kind"] == "xgboost" else "state_dict.pt"
    with open(os.path.join(folder, name), "wb") as fh:
        fh.write(bytes.fromhex(r["model_payload"]))
    files = {"preprocess_spec.json": json.dumps(plan.spec, indent=1, sort_keys=True)}
    if r.get("model_arch"):
        files["lakescore_arch.json"] = json.dumps(r["model_arch"], sort_keys=True)
    for fname, text in files.items():
        with open(os.path.join(folder, fname), "w", encoding="utf-8") as fh:
            fh.write(text)
    client.log_artifacts(run_id, folder, artifact_path="model")
