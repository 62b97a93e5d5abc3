"""The evaluate job's checks of its config and inputs: fail fast and closed, with one line naming what to fix.

Before any task: slice columns that are declared, columns that exist in each pinned input, a promotion that names
a registry alias and one challenger of the same model, and (for the gates) the metric names the spec computes.
After the tasks: duplicate keys they counted in scores or features (exit 3: the join would count each copy again).

Imports: engine.config, engine.errors, engine.evaluation.spec, engine.lake.snapshot, engine.models.registry;
engine.evaluation.job imports this module.
"""
from __future__ import annotations

import re

from engine.config.jobs import EvaluateConfig
from engine.errors import ConfigError, ContractViolation, short_list
from engine.evaluation.spec import MetricsSpec
from engine.lake.snapshot import Snapshot
from engine.models.registry import ModelRef


def check_unique_keys(cfg: EvaluateConfig, snaps: dict[str, Snapshot], counts: list[dict]) -> None:
    """Duplicate keys in scores or features (counted by the tasks) break the join: exit 3, nothing written."""
    found: dict[tuple[str, str], int] = {}
    for c in counts:
        for table, n in c.get("duplicate_keys", {}).items():
            found[(table, c["ds"])] = found.get((table, c["ds"]), 0) + n
    if found:
        (table, ds), n = min(found.items())
        name, _, model = table.partition(":")
        others = [f"{t} ds={d}: {k}" for (t, d), k in sorted(found.items())][1:]
        raise ContractViolation(
            f"{snaps[name].where(ds)}{f' model {model}' if model else ''} has {n} duplicate key row(s): key columns "
            f"{list(cfg.key_columns)} must be unique per day, or each copy counts again in the evaluation"
            + (f"; also {short_list(others)}" if others else "")
            + "; fix the table (re-score the day with --force, or deduplicate the features) and re-run")


def metric_names(spec: MetricsSpec) -> list[str]:
    """The metric names the spec computes: what a gate may name."""
    if spec.task == "regression":
        return ["mae", "rmse", "mape", "r2", "bias", "mean_label", "mean_prediction", "support"]
    names = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "base_rate", "mean_score", "support", "positives"]
    for t in spec.thresholds:
        names += [f"precision@{t:g}", f"recall@{t:g}", f"f1@{t:g}"]
    for k in spec.top_k_pct:
        names += [f"precision@top{k:g}%", f"recall@top{k:g}%"]
    return names


def check_slices(cfg: EvaluateConfig) -> None:
    """Every slice uses declared slice columns (exit 2)."""
    unknown = sorted({c for s in cfg.slices for c in s} - set(cfg.features.slice_columns))
    if unknown:
        raise ConfigError(f"slices use column(s) {unknown} that are not in features.slice_columns "
                          f"{cfg.features.slice_columns}; add them there")


def check_columns(cfg: EvaluateConfig, snaps: dict[str, Snapshot]) -> None:
    """Each pinned input has the columns the config names (exit 2)."""
    need = {
        "scores": [*cfg.key_columns, cfg.score_column],
        "labels": [*cfg.key_columns, cfg.labels.label_column, cfg.labels.label_ts_column,
                   *([cfg.maturity.event_ts_column] if cfg.maturity.days else [])],
        "features": [*cfg.key_columns, *cfg.features.slice_columns],
    }
    for name, cols in need.items():
        missing = [c for c in cols if c not in snaps[name].schema.names]
        if missing:
            raise ConfigError(f"{snaps[name].where()} has no column(s) {missing}; fix key_columns, score_column, "
                              f"labels.*, maturity.event_ts_column or features.slice_columns")


def check_promotion(cfg: EvaluateConfig, champ: ModelRef, challengers: list[ModelRef]) -> None:
    """`gates.promote` moves an alias: the champion must be one, with one challenger of the same model (exit 2)."""
    alias = re.fullmatch(r"models:/([^/@]+)@([^/@]+)", cfg.models.champion)
    if alias is None or len(challengers) != 1 or challengers[0].name != champ.name:
        raise ConfigError("gates.promote needs models.champion as models:/<name>@<alias> and exactly one challenger "
                          f"version of the same model name (got champion {cfg.models.champion}, challengers "
                          f"{cfg.models.challengers})")
