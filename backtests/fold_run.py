"""What one backtest task does, on any worker: train the recipe on a fold's past, score its test window with the
score job's batch function, and evaluate it beside a baseline with the evaluation's statistics.

A task handles one refit group: the folds that share a model (every fold with `refit.every: 1`; k folds with
`every: k`; all of them with `every: 0`). It trains once, on the group's first fold, and scores each fold of the
group. Before training, each fold's training and test rows go through the leakage guard (exit 3 on a violation).

Training rows are the features of the training days joined with the labels known at the cutoff (`label_ts` at or
before the start of the cutoff day): a label that arrived later was not known when the model would have been
trained. Test rows are the features of the test days with the labels known at the backtest's as-of time.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backtests import guard
from backtests.plan import Fold
from engine.evaluation import EvalStats, MetricsSpec, compare, compute_metrics, reliability, row_key_hash
from engine.evaluation.join import newest_per_key
from engine.models.registry import ModelBundle, ModelRef
from engine.models.scorers import build_scorer
from engine.models.preprocess import PreprocessSpec, to_matrix
from engine.score.scoring import predict_batch
from engine.work import ChunkResult, ChunkWork, UnitWork

RECIPE = "recipe"


@dataclass(frozen=True)
class FoldPlan:
    """What every task of one backtest shares (JSON-able)."""

    backtest_id: str
    features_uri: str
    labels_uri: str
    features_version: int
    labels_version: int
    keys: tuple[str, ...]
    event_time: str
    label_column: str
    label_ts_column: str
    slice_columns: tuple[str, ...]
    recipe: dict  # RecipeConfig
    spec: dict  # the recipe's PreprocessSpec JSON
    metrics: dict  # MetricsSpec fields
    seed: int
    as_of_us: int
    baseline: str  # "base_rate" or the champion's "name/version"
    train_versions: dict = field(default_factory=dict)  # fold index (str) → features version at its cutoff
    storage_options: dict = field(default_factory=dict)


def fold_seed(seed: int, fold: int) -> int:
    """The training seed of a fold: derived from the backtest's seed and the fold index, stable across runs."""
    return int(hashlib.sha256(f"lakescore-backtest:{seed}:{fold}".encode()).hexdigest()[:8], 16)


def _day_start_us(day: str) -> int:
    d = dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)
    return int(d.timestamp() * 1_000_000)


def _read(uri: str, version: int, days: list[str], columns: list[str], opts: dict) -> pa.Table:
    from deltalake import DeltaTable

    t = DeltaTable(uri, version=version, storage_options=opts or None)
    return t.to_pyarrow_table(columns=columns, filters=[("ds", "in", days)])


def _labelled(plan: FoldPlan, feats: pa.Table, days: list[str], known_by_us: int) -> tuple[pa.Table, int]:
    """Features joined with the labels known by `known_by_us` (the newest known per key); (rows, rows left out)."""
    keys = list(plan.keys)
    lab = _read(plan.labels_uri, plan.labels_version, days, [*keys, plan.label_column, plan.label_ts_column],
                plan.storage_options)
    lab = lab.rename_columns([*keys, "__label", "__label_ts"])
    ts = lab.column("__label_ts").cast(pa.int64())
    known = pc.and_(pc.fill_null(pc.less_equal(ts, pa.scalar(known_by_us, pa.int64())), False),
                    pc.is_valid(lab.column("__label")))  # a null label is no label, as in evaluate
    lab = newest_per_key(lab.filter(known), keys)
    rows = feats.join(lab, keys=keys, join_type="inner")
    rows = rows.sort_by([(plan.event_time, "ascending"), *((k, "ascending") for k in keys if k != plan.event_time)])
    return rows, feats.num_rows - rows.num_rows


def _train(plan: FoldPlan, rows: pa.Table, seed: int) -> ModelBundle:
    from backtests.recipes import train_mlp, train_xgb

    spec = PreprocessSpec.from_json(plan.spec, "backtest recipe")
    x = to_matrix(rows, spec, "backtest training set")
    y = rows.column("__label").to_numpy(zero_copy_only=False).astype(np.float32)
    ref = ModelRef(f"backtest-{plan.backtest_id}", 0, "", "")
    r = plan.recipe
    if r["kind"] == "xgboost":
        booster = train_xgb(x, y, r["trees"], r["depth"], seed)
        return ModelBundle(ref, "xgboost", bytes(booster.save_raw("ubj")), spec)
    import torch

    model = train_mlp(x, y, seed, epochs=r["epochs"])
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    arch = {"type": "mlp", "inputs": int(x.shape[1]), "hidden": [32, 16], "activation": "relu", "sigmoid": True}
    return ModelBundle(ref, "torch_state_dict", buf.getvalue(), spec, arch)


def group_task(unit: UnitWork, chunk: ChunkWork, baseline: ModelBundle | None) -> ChunkResult:
    """`run_group` as an executor's chunk function (engine.work.UnitWork.task), handed to the executor as data: the
    plan in the unit's `args`, the group's folds (a JSON list of fold JSON) in the chunk's; the fold rows come back
    as the result's JSON payload, so every engine hands the runner the same rows."""
    return ChunkResult(unit.unit, 0, 0, [], payload=json.dumps(run_group(unit.args[0], json.loads(chunk.args),
                                                                          baseline)))


def run_group(plan_json: str, folds_json: list[str], baseline: ModelBundle | None) -> list[dict]:
    """Train once on the group's first fold, then score and evaluate every fold of the group."""
    d = json.loads(plan_json)
    plan = FoldPlan(**{**d, "keys": tuple(d["keys"]), "slice_columns": tuple(d["slice_columns"])})
    folds = [Fold(**json.loads(f)) for f in folds_json]  # backtests.runner sends dataclasses.asdict(fold)
    first = folds[0]
    keys = list(plan.keys)
    feat_cols = list(dict.fromkeys([*keys, plan.event_time, *plan.slice_columns,
                                    *(f["name"] for f in plan.spec["features"]), "ds"]))
    train_version = int(plan.train_versions.get(str(first.index), plan.features_version))
    train_feats = _read(plan.features_uri, train_version, first.train_days(), feat_cols, plan.storage_options)
    cutoff_us = _day_start_us(first.cutoff)
    train_rows, train_unknown = _labelled(plan, train_feats, first.train_days(), cutoff_us)
    seed = fold_seed(plan.seed, first.index)
    out = []
    model = None
    for fold in folds:
        test_feats = _read(plan.features_uri, plan.features_version, fold.test_days(), feat_cols, plan.storage_options)
        test_rows, unlabelled = _labelled(plan, test_feats, fold.test_days(), plan.as_of_us)
        # The model for every fold of the group is trained on the first fold's past: check it against each cutoff.
        verdicts = guard.guard_fold(fold, train_rows, test_feats, event_col=plan.event_time, label_ts_col="__label_ts")
        if model is None:
            model = _train(plan, train_rows, seed)
        out.append(_evaluate(plan, fold, first, model, baseline, train_rows, train_unknown, test_rows, unlabelled,
                             verdicts, seed))
    out[0]["model_payload"] = model.payload.hex()
    out[0]["model_kind"] = model.kind
    out[0]["model_arch"] = model.arch
    return out


def _evaluate(plan, fold, trained_on, model, baseline, train_rows, train_unknown, test_rows, unlabelled, verdicts,
              seed) -> dict:
    spec = MetricsSpec(**plan.metrics)
    base_key = f"baseline:{plan.baseline}"
    stats = EvalStats(spec, [RECIPE, base_key])
    y = train_rows.column("__label").to_numpy(zero_copy_only=False)
    base_rate = float(np.mean(y)) if len(y) else 0.0
    if test_rows.num_rows:
        scores = {RECIPE: predict_batch(test_rows, build_scorer(model, "cpu", nthread=1))}
        if baseline is not None:
            scores[base_key] = predict_batch(test_rows, build_scorer(baseline, "cpu", nthread=1))
        else:
            scores[base_key] = np.full(test_rows.num_rows, base_rate)
        label = test_rows.column("__label").to_numpy(zero_copy_only=False)
        slices = {c: test_rows.column(c).combine_chunks() for c in plan.slice_columns}
        stats.update(row_key_hash(test_rows, list(plan.keys), spec.seed), label, scores, slices)
    metrics = compute_metrics(stats)
    return {
        "fold": fold.index, "trained_on": trained_on.index, "seed": seed,
        "cutoff": fold.cutoff, "train_start": trained_on.train_start, "train_end": trained_on.train_end,
        "test_start": fold.test_start, "test_end": fold.test_end,
        "train_rows": train_rows.num_rows, "train_rows_label_unknown_at_cutoff": train_unknown,
        "train_base_rate": base_rate, "test_rows": test_rows.num_rows, "test_rows_unlabelled": unlabelled,
        "metrics": metrics, "deltas": compare(stats, base_key, RECIPE) if test_rows.num_rows else [],
        "reliability": reliability(stats, RECIPE) if spec.task == "binary" else [],
        "guard": verdicts,
    }


def plan_json(plan: FoldPlan) -> str:
    return json.dumps(asdict(plan), sort_keys=True)
