"""`python -m jobs.demo_info --config conf/score.yaml`: say where the demo's results are and how to query them."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow.compute as pc  # noqa: E402

from engine.config import ScoreConfig, load_config, resolve_paths, table_uri  # noqa: E402


def _newest_report(cfg: ScoreConfig, job: str = "evaluate") -> str:
    """The newest `<lake>/_reports/<job>/<id>/report.html`, on the lake's filesystem (a local path or a URL)."""
    import pyarrow.fs as pafs

    from engine.lake.reports import report_target

    fs, folder, shown = report_target(cfg.lake.root, job, cfg.lake.storage_options)
    found = [i for i in fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
             if i.path.endswith("/report.html")]
    if not found:
        return f"(none yet: python -m jobs.{job} --config conf/{job}.yaml)"
    newest = max(found, key=lambda i: (i.mtime.timestamp() if i.mtime else 0, i.path))
    return f"{shown}/{newest.path[len(folder):].lstrip('/')}"


def explain_example(dt, key_column: str) -> str:
    """`lakescore explain …` for a real row of the scores table `dt`: the smallest key of its newest day."""
    days = sorted({p["ds"] for p in dt.partitions()})
    keys = dt.to_pyarrow_table(filters=[("ds", "=", days[-1])], columns=[key_column]).column(0) if days else []
    if not len(keys):
        return "lakescore explain --table scores --where \"<key> = … AND ds = '…'\"  (no scores yet)"
    key = pc.min(keys).as_py()
    value = key if isinstance(key, (int, float)) else "'" + str(key).replace("'", "''") + "'"
    return f"lakescore explain --table scores --where \"{key_column} = {value} AND ds = '{days[-1]}'\""


def main(argv: list[str] | None = None) -> int:
    import argparse

    import pyarrow as pa
    from deltalake import DeltaTable

    p = argparse.ArgumentParser(prog="lakescore demo_info")
    p.add_argument("--config", default="conf/score.yaml")
    args = p.parse_args(argv)
    cfg = resolve_paths(load_config(ScoreConfig, args.config))
    scores, feats = table_uri(cfg.lake, cfg.output.table), table_uri(cfg.lake, cfg.input.table)
    opts = cfg.lake.storage_options or None
    dt = DeltaTable(scores, storage_options=opts)
    counts = pa.table(dt.to_pyarrow_dataset().to_table(columns=["model_name", "model_version"])) \
        .group_by(["model_name", "model_version"]).aggregate([("model_name", "count")]).to_pylist()
    print(f"""
lakescore demo is ready.
  input   {feats}  (Delta, version {DeltaTable(feats, storage_options=opts).version()}, partitioned by ds)
  scores  {scores}  (Delta, version {dt.version()}, partitioned by ds, model_name, model_version)
  MLflow  {cfg.mlflow.tracking_uri}  (browse: mlflow ui --backend-store-uri {cfg.mlflow.tracking_uri})
  reports {cfg.lake.root}/_reports/  (data-contract reports of validate and score: JSON and text)
  evaluation {_newest_report(cfg)}
           (champion vs challenger per slice with intervals, gates, drift; opens offline in a browser)
  eval_metrics {cfg.lake.root}/eval_metrics  (Delta: one row per model version, evaluation, slice and metric)
  drift_metrics {cfg.lake.root}/drift_metrics  (Delta: PSI and Wasserstein per feature and slice of each evaluation;
           the demo plants a drift of f09 in region=east only: flagged there, not overall)
  backtest {_newest_report(cfg, "backtest")}
           (the fold plan, metrics per fold beside the champion, calibration, the leakage guard's verdicts)
  backtest_metrics {cfg.lake.root}/backtest_metrics  (Delta: one row per backtest, fold, model, slice and metric)
  notebooks: notebooks/scores_analyst.ipynb, notebooks/evaluation.ipynb, notebooks/backtest.ipynb
  rows per model: {", ".join(f"{c['model_name']} v{c['model_version']}: {c['model_name_count']}" for c in counts)}

Query the scores:
  python -c "from deltalake import DeltaTable; print(DeltaTable('{scores}').to_pandas().head())"
  history (who wrote what): DeltaTable('{scores}').history()  — each commit's userMetadata holds the stamps
  Spark SQL: SELECT model_name, model_version, count(*) FROM delta.`{scores}` GROUP BY 1, 2
Re-run `make demo`: every partition is up to date, so the score job skips them all (exit 0).

Next steps, in a new shell:
  make shell                                  # the venv active (or: eval "$(make -s shell)")
  lakescore status --table scores             # what is scored per day and model version, what is stale or failed
  {explain_example(dt, cfg.input.key_columns[0])}
  lakescore --help                            # every command, with an example each
  evaluation report: {_newest_report(cfg)}
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
