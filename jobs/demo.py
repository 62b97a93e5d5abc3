"""`python -m jobs.demo --config conf/demo.yaml`: build the demo lake and register the demo models (idempotent)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import DemoConfig  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = "Build the demo lake (features, labels) and train and register the demo models."
log = logging.getLogger("lakescore")
EXAMPLES = (
    "lakescore demo --config conf/demo.yaml",
    "lakescore demo --config conf/demo.yaml data.days=4 data.rows_per_day=5000",
)


def body(cfg: DemoConfig, args) -> dict:
    from deltalake import DeltaTable
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from backtests import recipes
    from engine.config import table_uri
    from engine.demo import data, models

    d = cfg.data
    feats, labels = table_uri(cfg.lake, "features"), table_uri(cfg.lake, "labels")
    out = {"features": feats, "labels": labels}
    if DeltaTable.is_deltatable(feats, cfg.lake.storage_options or None):
        log.info("demo lake already at %s; leaving it as it is", feats)
    else:
        days = data.write_lake(feats, labels, d.start_date, d.days, d.rows_per_day, d.n_features, d.seed,
                               cfg.lake.storage_options, slice_drift=d.slice_drift)
        log.info("demo lake: %d days × %d rows written to %s (one Delta version per day)", len(days), d.rows_per_day, feats)
    out["features_version"] = DeltaTable(feats).version()

    client = MlflowClient(cfg.mlflow.tracking_uri)
    try:
        mv = client.get_model_version_by_alias(cfg.models.xgb_name if cfg.models.champion == "xgb" else cfg.models.torch_name, "champion")
        log.info("demo models already registered (champion is version %s); leaving them", mv.version)
        out["models"] = "already registered"
        out["candidate"] = _candidate(client, cfg.models.xgb_name)
        return out
    except MlflowException:
        pass
    train_days = data.days(d.start_date, d.train_days)
    ft = DeltaTable(feats, version=d.train_days - 1).to_pyarrow_table(filters=[("ds", "in", train_days)])
    lt = DeltaTable(labels, version=d.train_days - 1).to_pyarrow_table(filters=[("ds", "in", train_days)])
    spec = models.demo_spec(d.n_features)
    x, y = models.training_set(ft, lt, spec)
    m = cfg.models
    versions = models.register(cfg.mlflow.tracking_uri, cfg.mlflow.artifact_root, spec, x, y, m.xgb_name, m.torch_name,
                               m.xgb_trees, m.xgb_depth, d.seed, m.champion, train_xgb=recipes.train_xgb,
                               train_mlp=recipes.train_mlp)
    out["models"] = {m.xgb_name: versions["xgb"], m.torch_name: versions["torch"], "champion": m.champion}
    out["train_rows"] = int(len(y))
    out["candidate"] = _candidate(client, m.xgb_name)
    return out


def _candidate(client, name: str) -> int:
    """Version 2 of the demo's xgb model, for `make demo`'s `lakescore promote` and `lakescore rollback` (recorded in
    model_events): the same artifact as version 1, so the demo's scores stay what they are whichever version holds
    @champion. Registered once (a second `make demo` finds it)."""
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    if len(versions) > 1:
        return versions[1]
    v1 = client.get_model_version(name, str(versions[0]))
    mv = client.create_model_version(name, source=v1.source, run_id=v1.run_id,
                                     description="demo candidate: version 1's artifact, for the promote/rollback demo")
    log.info("demo: registered %s version %s (version 1's artifact) for the promote and rollback demo", name, mv.version)
    return int(mv.version)


def main(argv: list[str] | None = None) -> int:
    return run_job("demo", DOC, DemoConfig, body, argv, examples=EXAMPLES)


if __name__ == "__main__":
    exit_now(main())
