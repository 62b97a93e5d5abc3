"""The backtest job's driver: plan, guard, run the folds in parallel, commit each fold, resume, publish.

1. check the lake, resolve the champion baseline's version and pin `features` and `labels` to Delta versions,
   before the executor is first used (its engine starts then: jobs.engines), so each fails in a second naming its
   setting; the backtest id is a hash of the config and those versions, so a re-run of the same backtest finds its
   completed folds;
2. plan the folds (printed before any work), and, with `features_at_cutoff`, find each fold's features version
   current at its cutoff and check it holds no day at or after the cutoff;
3. run one task per refit group (an engine.executor.Executor: Ray, Spark, or this process), each training once and
   scoring its folds with the score job's batch function, evaluated with the evaluation's statistics beside the
   baseline;
4. commit each fold to `backtest_metrics` as its own unit (idempotent): a re-run skips the completed folds and
   says so; a failed fold fails the backtest with its error, after the folds that finished are committed;
5. MLflow: a parent run (config, plan, versions) and a nested run per fold (metrics, the model without pickle);
   a self-contained HTML report.

Columns that `features.contract` tags `pii` are never read (engine.pii): a `recipe.categorical` or slice column
that is one is exit 2 before any data is read (its values would land in the model spec logged to MLflow), and
`recipe.features` patterns leave them out (a tree's split values would carry them into the model).

The run's identity, deadline and MLflow run id are an engine.run.Run; its summary line is `BacktestSummary`.
Imports: backtests' own modules and engine (never the reverse); only jobs import this module.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Iterator

import pyarrow as pa

from backtests import plan as fold_plan
from backtests import guard
from backtests.fold_run import FoldPlan, fold_seed, group_task, plan_json
from engine.tables import backtest_metrics as bt_results
from engine.tables import ledger
from engine.tables import model_events
from engine.config.jobs import BacktestConfig
from engine.lake.paths import require_root, table_uri
from engine.errors import ConfigError, LakescoreError, UnitFailed
from engine.evaluation.inputs import resolve_as_of
from engine.evaluation.spec import spec_from_config, spec_to_dict
from engine.executor import Executor, raised
from engine.models.registry import ModelBundle, ModelRef, fetch_bundle, resolve_model
from engine.pii import pii_columns, refuse_named, without_pii
from engine.models.preprocess import Feature, PreprocessSpec
from engine.run import Run, RunSummary
from engine.lake.snapshot import Snapshot, open_snapshot
from engine.work import ChunkFailure, ChunkStarted, ChunkWork, UnitWork

log = logging.getLogger("lakescore")
JOB = "backtest"


STARTED = "started"  # what `_group_items` yields for a group when it starts on a worker


def _group_items(executor: Executor, plan: str, groups: list[list[str]], baseline: ModelBundle | None,
                deadline: float) -> Iterator[tuple[int, list[dict] | BaseException | str]]:
    """The refit groups on `executor` (engine.executor; `fold_run.group_task` handed in as data), one unit each so a
    group's folds commit when it ends on every engine: (group index, STARTED) when a group starts on a worker (Spark:
    when its job is submitted), then (group index, its fold results or its error, class kept) as each ends."""
    units = {f"group-{i}": UnitWork(unit=f"group-{i}", ds="", input_uri="", input_schema=None, task=group_task,
                                    args=(plan,), notify_start=True, what="fold group(s)") for i in range(len(groups))}
    chunks = [ChunkWork(f"group-{i}", (), i, args=json.dumps(g)) for i, g in enumerate(groups)]
    for item in executor.run(units, chunks, baseline, deadline):
        if isinstance(item, ChunkStarted):
            yield item.chunk, STARTED
        elif isinstance(item, ChunkFailure):
            yield item.chunk, raised(item)
        else:
            yield item.chunk, json.loads(item.payload)


@dataclass
class BacktestSummary(RunSummary):
    """The run's one JSON line (its `mlflow_run_id`, the parent MLflow run, is the run's)."""

    FROM_RUN: ClassVar[tuple[str, ...]] = (*RunSummary.FROM_RUN, "mlflow_run_id")

    backtest_id: str = ""
    versions: dict = field(default_factory=dict)
    pins: list[dict] = field(default_factory=list)  # further versions read (features_at_cutoff), for the ledger
    folds: int = 0
    folds_committed: list[int] = field(default_factory=list)
    folds_resumed: list[int] = field(default_factory=list)  # completed by an earlier run of the same backtest
    folds_restored: list[int] = field(default_factory=list)  # redone: committed earlier, rows gone (a RESTORE)
    folds_failed: list[str] = field(default_factory=list)
    report: str | None = None


def recipe_spec(cfg: BacktestConfig, schema: pa.Schema, train_sample: pa.Table | None = None,
                pii: frozenset[str] = frozenset()) -> PreprocessSpec:
    """The recipe's preprocessing: numeric features matching `recipe.features` (clipped, nulls → 0; never a PII
    column), and the categorical columns with their categories from the table's first training days (sorted:
    deterministic)."""
    r = cfg.recipe
    nums = without_pii([f.name for f in schema if (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))
                        and f.name not in cfg.key_columns and any(fnmatch.fnmatchcase(f.name, p) for p in r.features)],
                       set(pii))
    if not nums:
        raise ConfigError(f"recipe.features {r.features} match no numeric column of the features table")
    feats = [Feature(n, fill=0.0, clip=(-r.clip, r.clip)) for n in nums]
    for c in r.categorical:
        if c not in schema.names:
            raise ConfigError(f"recipe.categorical column {c!r} is not in the features table")
        cats = sorted(v for v in set(train_sample.column(c).to_pylist()) if v is not None) if train_sample is not None else []
        feats.append(Feature(c, categories=tuple(cats)))
    return PreprocessSpec(tuple(feats))


def run_backtest(cfg: BacktestConfig, executor: Executor) -> BacktestSummary:
    summary = BacktestSummary(Run.start(JOB, cfg))
    try:
        return _run(cfg, executor, summary)
    except LakescoreError as e:
        e.summary = summary
        raise


@dataclass
class _Backtest:
    """What the steps of one backtest share: the pinned inputs, the folds, and what the run computed so far."""

    cfg: BacktestConfig
    summary: BacktestSummary
    feats: Snapshot
    labels: Snapshot
    folds: list[fold_plan.Fold]
    train_versions: dict[str, int]  # fold index (str) → features version at its cutoff (features_at_cutoff)
    pii: frozenset[str]
    baseline: ModelRef | None  # the champion baseline's version (baseline.kind champion), resolved first
    done: set[int] = field(default_factory=set)  # folds an earlier run of the same backtest completed
    results: list[dict] = field(default_factory=list)  # this run's fresh fold results (logged to MLflow)
    errors: list[str] = field(default_factory=list)
    first_error: LakescoreError | None = None

    @property
    def opts(self) -> dict:
        return self.cfg.lake.storage_options


def _run(cfg: BacktestConfig, executor: Executor, summary: BacktestSummary) -> BacktestSummary:
    bt = _pin_and_plan(cfg, summary)
    plan, baseline = _fold_plan(bt)
    store = bt_results.Store(table_uri(cfg.lake, cfg.output_table), summary, bt.opts, cfg.run.commit_retries)
    _resume(bt, store)
    _run_groups(bt, executor, plan, baseline, store)
    all_results = store.read_all(bt.folds)
    from backtests.publish import publish

    summary.report, summary.mlflow_run_id = publish(cfg, summary, bt.folds, all_results, bt.results, plan)
    if bt.first_error is not None:
        first_error_msg = (f"{len(summary.folds_failed)} fold(s) failed: {bt.errors[0]}; the folds that completed are "
                           "committed, and a re-run resumes from them once the cause is fixed")
        from engine import errors as err

        kinds = (err.ContractViolation, err.InputUnavailable, err.ModelRefused, err.ConfigError)
        raise next((k for k in kinds if isinstance(bt.first_error, k)), UnitFailed)(first_error_msg)
    log.info("backtest %s finished in %.1fs", summary.backtest_id, summary.run.elapsed())
    return summary


def _pin_and_plan(cfg: BacktestConfig, summary: BacktestSummary) -> _Backtest:
    """Pin `features` and `labels` (the backtest id hashes the config and those versions), plan and print the folds,
    check each fold's features version at its cutoff (`features_at_cutoff`), record the pins in the ledger."""
    opts = cfg.lake.storage_options
    require_root(cfg.lake)  # a missing lake is exit 2 naming lake.root, not "fix features.table"
    baseline = (resolve_model(cfg.baseline.model, cfg.mlflow.tracking_uri, cfg.mlflow.registry_uri, "baseline.model")
                if cfg.baseline.kind == "champion" else None)
    feats = open_snapshot(cfg.features.table, table_uri(cfg.lake, cfg.features.table), cfg.features.version, opts,
                          setting="features")
    labels = open_snapshot(cfg.labels.table, table_uri(cfg.lake, cfg.labels.table), cfg.labels.version, opts,
                           setting="labels")
    summary.versions = {"features": feats.version, "labels": labels.version}
    summary.backtest_id = hashlib.sha256(f"{summary.config_hash}|{feats.version}|{labels.version}".encode()).hexdigest()[:16]
    pii = _pii(cfg, feats)
    days = feats.partitions
    f = cfg.folds
    spec_f = fold_plan.FoldSpec(window=f.window, train_days=f.train_days, gap_days=f.gap_days,
                                horizon_days=f.horizon_days, step_days=f.step_days, n_folds=f.n_folds,
                                cutoffs=tuple(f.cutoffs) if f.cutoffs else None, start=days[0], end=days[-1])
    folds = fold_plan.plan_folds(spec_f)
    summary.folds = len(folds)
    log.info("backtest %s: %d fold(s) on %s and %s\n%s", summary.backtest_id, len(folds), feats.where(),
             labels.where(), fold_plan.describe(folds, spec_f))
    train_versions = {}
    if cfg.features_at_cutoff:
        for fold in folds:
            v = guard.features_version_at(feats.uri, fold.cutoff, opts)
            guard.check_version(fold, feats.uri, v, opts)
            train_versions[str(fold.index)] = v
    summary.pins = [{"role": "features_at_cutoff", "table": cfg.features.table, "version": v}
                    for v in sorted(set(train_versions.values()))]  # read too: pins in the ledger (vacuum keeps them)
    ledger.record_start(cfg.lake, JOB, cfg, summary.run_id,
                        [("features", cfg.features.table, feats.version), ("labels", cfg.labels.table, labels.version),
                         *((p["role"], p["table"], p["version"]) for p in summary.pins)])
    if baseline is not None:  # a champion alias moved outside lakescore is recorded (never fails the job)
        model_events.observe_quietly(cfg.lake, baseline, summary.run_id)
    return _Backtest(cfg=cfg, summary=summary, feats=feats, labels=labels, folds=folds,
                     train_versions=train_versions, pii=pii, baseline=baseline)


def _fold_plan(bt: _Backtest) -> tuple[FoldPlan, ModelBundle | None]:
    """What every group's task shares (the recipe's preprocessing, the metrics, the as-of time), and the champion
    baseline's bundle where the baseline is one."""
    cfg, summary, feats, labels = bt.cfg, bt.summary, bt.feats, bt.labels
    sample = _first_training_day(cfg, feats, bt.folds[0])
    spec = recipe_spec(cfg, feats.schema, sample, bt.pii)
    baseline = None
    if bt.baseline is not None:
        baseline = fetch_bundle(cfg.baseline.model, cfg.mlflow.tracking_uri, cfg.mlflow.registry_uri, False,
                                ref=bt.baseline, setting="baseline.model")
        base_name = f"{baseline.ref.name}/{baseline.ref.version}"
    else:
        base_name = "base_rate"
    as_of = resolve_as_of("latest", labels, cfg.labels.label_ts_column, bt.opts)
    metrics_spec = spec_to_dict(spec_from_config(cfg))
    slice_cols = sorted({c for s in cfg.slices for c in s})
    plan = FoldPlan(backtest_id=summary.backtest_id, features_uri=feats.uri, labels_uri=labels.uri,
                    features_version=feats.version, labels_version=labels.version, keys=tuple(cfg.key_columns),
                    event_time=cfg.event_time_column, label_column=cfg.labels.label_column,
                    label_ts_column=cfg.labels.label_ts_column, slice_columns=tuple(slice_cols),
                    recipe=cfg.recipe.model_dump(), spec=spec.to_json(), metrics=metrics_spec, seed=cfg.seed,
                    as_of_us=int(as_of.timestamp() * 1_000_000), baseline=base_name,
                    train_versions=bt.train_versions, storage_options=dict(bt.opts))
    return plan, baseline


def _resume(bt: _Backtest, store: bt_results.Store) -> None:
    """The folds an earlier run of the same backtest completed (skipped), and those it committed whose rows are
    gone (redone)."""
    summary = bt.summary
    bt.done, summary.folds_restored = store.completed(bt.folds)
    summary.folds_resumed = sorted(bt.done)
    if summary.folds_restored:
        log.warning("backtest %s: fold(s) %s were committed earlier but %s no longer holds their rows (restored to an "
                    "earlier version?); redoing them", summary.backtest_id, summary.folds_restored, bt.cfg.output_table)
    if bt.done:
        log.info("backtest %s: resuming: fold(s) %s are already complete (an earlier run of the same backtest)",
                 summary.backtest_id, sorted(bt.done))


def _run_groups(bt: _Backtest, executor: Executor, plan: FoldPlan, baseline: ModelBundle | None,
                store: bt_results.Store) -> None:
    """Run one task per refit group that has a fold to do; commit each fold as its group's results come in; a
    failed group is recorded (the backtest fails after the others are committed)."""
    cfg, summary, done = bt.cfg, bt.summary, bt.done
    todo = [g for g in _groups(bt.folds, cfg.refit.every) if any(fo.index not in done for fo in g)]
    deadline = summary.run.deadline
    bar = summary.run.progress(sum(fo.index not in done for g in todo for fo in g), "folds")
    groups_json = [[json.dumps(asdict(fo)) for fo in g] for g in todo]
    for gi, out in _group_items(executor, plan_json(plan), groups_json, baseline, deadline):
        if isinstance(out, str) and out == STARTED:  # printed when the group starts on a worker, not at submission
            g = todo[gi]
            log.info("backtest %s: fold(s) %s start (training on fold %d's past, seed %d)", summary.backtest_id,
                     [fo.index for fo in g], g[0].index, fold_seed(cfg.seed, g[0].index))
            continue
        bar.advance(sum(fo.index not in done for fo in todo[gi]))
        if isinstance(out, BaseException):
            bt.errors.append(f"fold(s) {[fo.index for fo in todo[gi]]}: {out}")
            summary.folds_failed += [str(fo.index) for fo in todo[gi]]
            bt.first_error = bt.first_error or (out if isinstance(out, LakescoreError) else UnitFailed(str(out)))
            log.error("backtest %s: fold(s) %s failed: %s", summary.backtest_id, [fo.index for fo in todo[gi]], out)
            continue
        for r in out:
            if r["fold"] not in done:
                _commit_fold(bt, store, r)
        bt.results += _fresh(out, done)
    bar.close()
    summary.folds_committed.sort()


def _commit_fold(bt: _Backtest, store: bt_results.Store, r: dict) -> None:
    store.commit(r)
    bt.summary.folds_committed.append(r["fold"])
    headline = _headline(bt.cfg)
    overall = next((x["value"] for x in r["metrics"] if x["model"] == "recipe" and x["slice"] == "overall"
                    and x["metric"] == headline), None)
    log.info("backtest %s: fold %d done: %d train rows, %d test rows, %s %s", bt.summary.backtest_id, r["fold"],
             r["train_rows"], r["test_rows"], headline, "—" if overall is None else f"{overall:.4f}")


def _fresh(out: list[dict], done: set[int]) -> list[dict]:
    """A group's folds that this run committed, the ones it logs to MLflow (an earlier run of the same backtest
    committed the others and logged them, unless it died first). The group's model rides on its first fold; if an
    earlier run committed that fold, it moves to the first fresh one, so the model that scored them is logged."""
    fresh = [r for r in out if r["fold"] not in done]
    model = {k: out[0][k] for k in ("model_payload", "model_kind", "model_arch") if k in out[0]}
    if fresh and model and out[0]["fold"] in done:
        fresh[0] = {**fresh[0], **model}
    return fresh


def _headline(cfg: BacktestConfig) -> str:
    return "roc_auc" if cfg.metrics.task == "binary" else "rmse"


def _groups(folds: list, every: int) -> list[list]:
    """Refit groups: a new model every `every` folds (1: each fold; 0: one model for all)."""
    if every == 0:
        return [list(folds)]
    return [list(folds[i:i + every]) for i in range(0, len(folds), every)]


def _pii(cfg: BacktestConfig, feats) -> frozenset[str]:
    """The features' PII columns under `features.contract`; naming one as a categorical or slice column is exit 2."""
    from contracts.spec import pii_columns as contract_pii

    pii = frozenset(pii_columns(cfg.features.contract, feats.schema, contract_pii, JOB))
    refuse_named(pii, {"recipe.categorical": cfg.recipe.categorical, "slices": [c for s in cfg.slices for c in s],
                       "recipe.features": cfg.recipe.features}, cfg.features.contract, feats.where())
    return pii


def _first_training_day(cfg: BacktestConfig, feats, fold) -> pa.Table:
    from deltalake import DeltaTable

    t = DeltaTable(feats.uri, version=feats.version, storage_options=cfg.lake.storage_options or None)
    return t.to_pyarrow_table(columns=list(cfg.recipe.categorical), filters=[("ds", "in", fold.train_days())])


__all__ = ["BacktestSummary", "run_backtest"]
