"""A window's evaluations over time, read back from `eval_metrics`: for the report's "this window over its
evaluations" chart and for `evaluate --follow` (engine.evaluation.follow), which needs each evaluated window's
newest recorded labels version.

An evaluation is one `evaluation` partition value (engine.tables.eval_metrics.evaluation_key: window @ as_of ~ model
set); the model set is its suffix after the as-of time, so "the same models" is a string comparison on the key.
Reads go through `deltalake` (partition filters on the model names, a few columns); a table that does not exist
yet has no history.
"""
from __future__ import annotations

import datetime as dt

import pyarrow.compute as pc

HISTORY_METRICS = ("support", "roc_auc", "rmse")


def model_set(evaluation: str) -> str:
    """The model-set part of an evaluation key (`~vs-<champion>~<hash>`)."""
    return evaluation[evaluation.index("~vs-"):]


def read(uri: str, storage_options: dict | None, model_names: list[str], columns: list[str]):
    """`eval_metrics` rows of these model names (the columns asked for, plus `evaluation`), or None: no table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(uri, storage_options=storage_options or None)
    except TableNotFoundError:
        return None
    cols = sorted({*columns, "evaluation", "model_name", "model_version"})
    return table.to_pyarrow_table(columns=cols, filters=[("model_name", "in", sorted(set(model_names)))])


def window_history(uri: str, storage_options: dict | None, key: str, models: list[str], current: list[dict],
                   as_of: dt.datetime, labels_version: int) -> list[dict]:
    """The window's evaluations with the same models (earlier as-ofs from the table, this one from `current`, its
    metric rows, at `as_of` with `labels_version`), oldest first: per (as_of, model) the overall HISTORY_METRICS, the labels version, and the as-of's
    age in days after the window's last day."""
    window, suffix = key[:key.index("@")], model_set(key)
    end = window.split("..")[1]
    t = read(uri, storage_options, [m.rsplit("/", 1)[0] for m in models],
             ["kind", "slice", "metric", "value", "as_of", "labels_version"])
    out: dict[tuple[str, str], dict] = {}
    if t is not None:
        t = t.filter(pc.and_(pc.equal(t["kind"], "metric"), pc.equal(t["slice"], "overall")))
        for r in t.to_pylist():
            ev = r["evaluation"]
            if ev == key or not ev.startswith(window + "@") or model_set(ev) != suffix:
                continue
            model = f"{r['model_name']}/{r['model_version']}"
            if model in models and r["metric"] in HISTORY_METRICS:
                row = out.setdefault((r["as_of"].isoformat(), model), _row(r["as_of"], model, r["labels_version"], end))
                row[r["metric"]] = r["value"]
    for r in current:
        if r["slice"] == "overall" and r["metric"] in HISTORY_METRICS:
            row = out.setdefault((as_of.isoformat(), r["model"]), _row(as_of, r["model"], labels_version, end))
            row[r["metric"]] = r["value"]
    return [out[k] for k in sorted(out)]


def _row(as_of: dt.datetime, model: str, labels_version: int, end: str) -> dict:
    after = dt.datetime.fromisoformat(end).replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    return {"as_of": as_of.isoformat(), "model": model, "labels_version": labels_version,
            "age_days": round((as_of - after) / dt.timedelta(days=1), 6)}
