"""The evaluate job, independent of the engine that runs its tasks.

1. resolve the lake, the models (the champion alias and the challengers → versions) and pin `scores`, `labels` and
   `features` to Delta versions (recorded), all before the executor is first used (its engine starts then:
   jobs.engines), so each fails in a second naming its setting; resolve the as-of time (default: the newest
   `label_ts` pinned);
2. plan one task per day of the window that every model scored (key-hash buckets for a large day); a window day
   that an input holds but some model did not score is a failed coverage gate (engine.evaluation.gates);
3. an executor (engine.executor: Ray, Spark, or this process) runs `engine.evaluation.join.evaluate_chunk_task`
   (`run_chunk_json`) per task: the join and the statistics stay on the workers, the driver merges statistics in
   plan order;
4. metrics per slice with bootstrap intervals, challenger − champion differences, the label maturity curve
   (engine.evaluation.maturity), drift, gates;
5. commit one `eval_metrics` unit per model version (idempotent), write the HTML and JSON report, log to MLflow,
   and, when the gates pass and the config asks, move the champion alias if it still names the version judged
   (compare-and-set, engine.evaluation.publish).

A failed gate is exit 4 after the metrics and the report are written: they are the evidence; so is a promotion
refused because the alias moved meanwhile (the report is rewritten with that reason). A promotion whose report
cannot be rewritten afterwards stands: a warning line, exit 0 (engine.evaluation.publish). Duplicate keys in scores or
features are exit 3 before anything is written (the join would count each copy again).
Columns the features' contract (`features.contract`, read through the caller's `contract_pii`) tags `pii` are
never read (engine.pii): naming one as a slice or drift column is exit 2, and default drift columns leave them out.

The run's identity, deadline and MLflow run id are an engine.run.Run; its summary line is `EvalSummary`. Imports go
down: engine.evaluation's modules, engine.tables, engine.lake, engine.run; only jobs import this module.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar, Iterator

from engine.tables import ledger
from engine.config.jobs import EvaluateConfig
from engine.lake.paths import require_root, table_uri
from engine.errors import GateFailed, UnitFailed
from engine.drift import Histograms, SliceHistograms
from engine.evaluation import drift_section as drift
from engine.evaluation import gates as gating
from engine.evaluation import inputs
from engine.evaluation import history, maturity
from engine.evaluation import preflight, slice_drift
from engine.tables import eval_metrics as evtable
from engine.tables import model_events
from engine.evaluation.inputs import DayPlan
from engine.evaluation.join import EvalPlan, evaluate_chunk_task, schemas_json
from engine.evaluation.metrics import compare, compute_metrics, reliability, roc_pr_curves, score_histogram
from engine.evaluation.spec import MetricsSpec, spec_from_config, spec_to_dict
from engine.evaluation.stats import EvalStats
from engine.executor import Executor, raised, side_run
from engine.pii import PiiReader, pii_columns, refuse_named
from engine.models.registry import ModelRef
from engine.run import Run, RunSummary
from engine.lake.snapshot import Snapshot, check_files_exist, check_files_stayed, open_snapshot
from engine.work import ChunkFailure, ChunkWork, UnitWork

log = logging.getLogger("lakescore")
JOB = "evaluate"


def _task_items(executor: Executor, plan_json: str, chunks_json: list[str], schemas: str, deadline: float
               ) -> Iterator[tuple[str, bytes]]:
    """The plan's tasks on `executor` (engine.executor: one unit, a chunk per task, `evaluate_chunk_task` as data):
    (counts JSON, statistics bytes) as each comes in; a failed task raises its error (its class kept)."""
    unit = UnitWork(unit=JOB, ds="", input_uri="", input_schema=None, task=evaluate_chunk_task,
                    args=(plan_json, schemas), what="evaluation task(s)")
    chunks = [ChunkWork(JOB, (), i, args=c) for i, c in enumerate(chunks_json)]
    for item in executor.run({JOB: unit}, chunks, None, deadline):
        if isinstance(item, ChunkFailure):
            raise raised(item)
        yield item.payload, item.blob


@dataclass
class EvalSummary(RunSummary):
    """The run's one JSON line (its `mlflow_run_id` is the run's)."""

    FROM_RUN: ClassVar[tuple[str, ...]] = (*RunSummary.FROM_RUN, "mlflow_run_id")

    engine: str = ""
    models: list[str] = field(default_factory=list)
    champion: str = ""
    window: str = ""
    days: list[str] = field(default_factory=list)
    as_of: str = ""
    versions: dict = field(default_factory=dict)
    rows_evaluated: int = 0
    rows_without_label: int = 0
    rows_label_after_as_of: int = 0
    scores_without_features: int = 0
    features_without_scores: int = 0
    rows_missing_a_model_score: int = 0  # scored by some of the models only: not evaluated
    missing_scores: dict = field(default_factory=dict)  # ds → models without scores that day (day left out)
    tasks: int = 0
    verdict: str = ""
    gates_failed: list[str] = field(default_factory=list)
    units_committed: list[str] = field(default_factory=list)
    units_already_done: list[str] = field(default_factory=list)
    units_restored: list[str] = field(default_factory=list)  # recorded done, but the table no longer held it
    report: str | None = None
    promoted: str | None = None


def run_evaluate(cfg: EvaluateConfig, executor: Executor, contract_pii: PiiReader | None = None) -> EvalSummary:
    """Evaluate; a GateFailed carries the run's summary (`e.summary`) like every job's error. `contract_pii` reads
    `features.contract`'s PII columns (jobs.evaluate wires contracts.spec.pii_columns)."""
    summary = EvalSummary(Run.start(JOB, cfg), engine=cfg.engine)
    try:
        return _run(cfg, executor, summary, contract_pii)
    except Exception as e:
        if getattr(e, "exit_code", None) is not None:
            e.summary = summary
        raise


@dataclass
class _Eval:
    """What the steps of one evaluation share: the resolved models, the pinned inputs and the plan."""

    cfg: EvaluateConfig
    summary: EvalSummary
    spec: MetricsSpec
    champ: ModelRef
    challengers: list[ModelRef]
    snaps: dict[str, Snapshot]  # scores, labels, features
    pii: frozenset[str]
    as_of: dt.datetime | None = None
    files: dict = field(default_factory=dict)  # ds → model → its scores files
    plan_days: DayPlan | None = None

    @property
    def models(self) -> list[str]:
        return self.summary.models

    @property
    def opts(self) -> dict:
        return self.cfg.lake.storage_options


@dataclass
class _Merged:
    """The tasks' results merged in plan order: the statistics, the drift histograms, the per-day counts."""

    stats: EvalStats
    current: Histograms | None
    per_day: dict[str, dict]
    maturity: EvalStats | None = None  # by label delay (engine.evaluation.maturity)
    slices: SliceHistograms | None = None  # the features' drift histograms per slice (engine.evaluation.slice_drift)


def _run(cfg: EvaluateConfig, executor: Executor, summary: EvalSummary, contract_pii: PiiReader | None) -> EvalSummary:
    ev = _resolve(cfg, summary, contract_pii)
    _plan(ev)
    ref = drift.reference(cfg, ev.snaps, ev.files, ev.models, summary.run_id, ev.pii, run=side_run(executor),
                          deadline=summary.run.deadline) if cfg.drift.reference else None
    page = drift.EvidentlyPage(cfg, ev.snaps["features"], ref, ev.plan_days.days, ev.models) if ref else None
    results = _run_tasks(ev, executor, ref)
    merged = _merge(ev, results)
    _judge_and_publish(ev, merged, ref, page)
    log.info("evaluate run %s finished in %.1fs: %s", summary.run_id, summary.run.elapsed(), summary.verdict)
    return summary


def _resolve(cfg: EvaluateConfig, summary: EvalSummary, contract_pii: PiiReader | None) -> _Eval:
    """The models (champion alias and challengers → versions), the three inputs pinned to versions (recorded in
    the ledger), the features' PII columns (never named, never read)."""
    opts = cfg.lake.storage_options
    require_root(cfg.lake)  # a missing lake is exit 2 naming lake.root, not "fix scores.table"
    spec = spec_from_config(cfg)
    preflight.check_slices(cfg)
    champ, challengers = inputs.resolve_models(cfg.models.champion, cfg.models.challengers, cfg.mlflow.tracking_uri,
                                               cfg.mlflow.registry_uri)
    models = [inputs.model_key(champ), *map(inputs.model_key, challengers)]
    summary.models, summary.champion = models, models[0]
    gating.check_config(cfg.gates, set(preflight.metric_names(spec)))
    if cfg.gates.promote:
        preflight.check_promotion(cfg, champ, challengers)

    snaps = {name: open_snapshot(getattr(cfg, name).table, table_uri(cfg.lake, getattr(cfg, name).table),
                                 getattr(cfg, name).version, opts, setting=name)
             for name in ("scores", "labels", "features")}
    summary.versions = {k: s.version for k, s in snaps.items()}
    pii = frozenset(pii_columns(cfg.features.contract, snaps["features"].schema, contract_pii, JOB))
    refuse_named(pii, {"features.slice_columns": cfg.features.slice_columns, "drift.columns": cfg.drift.columns},
                 cfg.features.contract, snaps["features"].where())
    ledger.record_start(cfg.lake, JOB, cfg, summary.run_id,
                        [(k, getattr(cfg, k).table, s.version) for k, s in snaps.items()])
    for ref in (champ, *challengers):  # an alias moved outside lakescore is recorded (never fails the job)
        model_events.observe_quietly(cfg.lake, ref, summary.run_id)
    preflight.check_columns(cfg, snaps)
    return _Eval(cfg=cfg, summary=summary, spec=spec, champ=champ, challengers=challengers, snaps=snaps, pii=pii)


def _plan(ev: _Eval) -> None:
    """The as-of time and one task per window day that every model scored; a window without such a day fails
    closed (exit 4) before any task runs."""
    cfg, summary, snaps, models = ev.cfg, ev.summary, ev.snaps, ev.models
    ev.as_of = inputs.resolve_as_of(cfg.as_of, snaps["labels"], cfg.labels.label_ts_column, ev.opts)
    summary.as_of = ev.as_of.isoformat()
    window_days = inputs.window_days(snaps, cfg.window)
    ev.files = inputs.scores_files(snaps["scores"], [ev.champ, *ev.challengers], ev.opts)
    plan_days = ev.plan_days = inputs.plan_days(window_days, ev.files, snaps["labels"], snaps["features"], models,
                                                cfg.max_rows_per_task)
    summary.days, summary.tasks, summary.missing_scores = plan_days.days, len(plan_days.chunks), plan_days.missing
    summary.window = f"{plan_days.days[0]}..{plan_days.days[-1]}" if plan_days.days else cfg.window
    if not window_days:
        raise GateFailed(f"window {cfg.window} has no days in {snaps['scores'].where()}, {snaps['features'].where()} "
                         f"or {snaps['labels'].where()} (no scored days); the evaluation fails closed: score the "
                         "window first or fix window")
    if not plan_days.days:
        raise GateFailed(f"no day of window {cfg.window} in {snaps['scores'].where()} has scores from every model "
                         f"({models}); first day lacking: {next(iter(plan_days.missing.items()))}; score them first")
    for name in ("labels", "features"):
        check_files_exist(snaps[name], [d for d in plan_days.days if d in snaps[name].files], ev.opts)
    log.info("evaluate %s on %s (%d day(s), %d task(s)), as of %s; pinned %s", models, summary.window,
             len(plan_days.days), len(plan_days.chunks), summary.as_of,
             ", ".join(s.where() for s in snaps.values()))


def _eval_plan(ev: _Eval, ref: dict | None) -> EvalPlan:
    """What every task shares (shipped once)."""
    cfg, snaps = ev.cfg, ev.snaps
    return EvalPlan(scores_uri=snaps["scores"].uri, labels_uri=snaps["labels"].uri,
                    features_uri=snaps["features"].uri, keys=tuple(cfg.key_columns), score_column=cfg.score_column,
                    label_column=cfg.labels.label_column, label_ts_column=cfg.labels.label_ts_column,
                    slice_columns=tuple(cfg.features.slice_columns), models=tuple(ev.models),
                    as_of_us=int(ev.as_of.timestamp() * 1_000_000), spec=spec_to_dict(ev.spec),
                    storage_options=dict(ev.opts),
                    drift_edges={c: e.tolist() for c, e in ref["edges"].items()} if ref else {},
                    maturity_days=cfg.maturity.days, event_ts_column=cfg.maturity.event_ts_column,
                    drift_slices=[list(g) for g in ref["slices"].groups] if ref else [])


def _run_tasks(ev: _Eval, executor: Executor, ref: dict | None) -> dict[int, tuple[dict, bytes]]:
    """Run the tasks on the executor; their (counts, statistics bytes) by task index. A task's read error of a
    file that vanished meanwhile is exit 5 naming it; duplicate keys are exit 3 before anything is written."""
    snaps, plan_days, opts, deadline = ev.snaps, ev.plan_days, ev.opts, ev.summary.run.deadline
    plan = _eval_plan(ev, ref)
    schemas = schemas_json({k: s.schema for k, s in snaps.items()})
    results: dict[int, tuple[dict, bytes]] = {}
    t_tasks = time.monotonic()
    bar = ev.summary.run.progress(len(plan_days.chunks), "tasks")
    try:
        for counts_json, stats_bytes in _task_items(executor, plan.to_json(), [c.to_json() for c in plan_days.chunks],
                                                     schemas, deadline):
            counts = json.loads(counts_json)
            results[counts["index"]] = (counts, stats_bytes)
            bar.advance(rows=counts["rows_evaluated"])
    except Exception:  # a task's read error: a file that vanished meanwhile is exit 5 naming it; else as it is
        bar.close()
        for name, snap in snaps.items():
            check_files_stayed(snap, [d for d in plan_days.days if d in snap.files], opts, f"{name}.version")
        raise
    bar.close()
    log.info("evaluate: %d task(s) done in %.1fs", len(results), time.monotonic() - t_tasks)
    if len(results) != len(plan_days.chunks):
        raise UnitFailed(f"{len(plan_days.chunks) - len(results)} evaluation task(s) returned nothing; re-run")
    preflight.check_unique_keys(ev.cfg, snaps, [counts for counts, _ in results.values()])
    return results


def _merge(ev: _Eval, results: dict[int, tuple[dict, bytes]]) -> _Merged:
    """Merge the tasks' statistics in plan order (they do not depend on which task finished first) and add their
    counts to the summary and to each day's."""
    summary = ev.summary
    stats = EvalStats(ev.spec, ev.models)
    current = mat = slices = None
    per_day: dict[str, dict] = {}
    for i in sorted(results):
        counts, data = results[i]
        stats, mat = stats.merge(EvalStats.from_bytes(data)), maturity.merge(mat, counts)
        if "drift" in counts:
            part = Histograms.from_bytes(counts["drift"].encode())
            current = part if current is None else current.merge(part)
        slices = SliceHistograms.merged(slices, counts.get("slice_drift"))
        day = per_day.setdefault(counts["ds"], {"ds": counts["ds"], "rows_evaluated": 0, "rows_without_label": 0,
                                                "rows_label_after_as_of": 0})
        for k in ("rows_evaluated", "rows_without_label", "rows_label_after_as_of"):
            day[k] += counts[k]
        for k in ("scores_without_features", "features_without_scores", "rows_evaluated", "rows_without_label",
                  "rows_label_after_as_of", "rows_missing_a_model_score"):
            setattr(summary, k, getattr(summary, k) + counts[k])
    return _Merged(stats=stats, current=current, per_day=per_day, maturity=mat, slices=slices)


def _judge_and_publish(ev: _Eval, merged: _Merged, ref: dict | None, page: drift.EvidentlyPage | None) -> None:
    """Metrics, differences and gates; commit the metrics, write the report, log to MLflow; a failed gate is exit 4
    after them (they are the evidence); promote the challenger where the gates pass and the config asks."""
    cfg, summary, models, plan_days = ev.cfg, ev.summary, ev.models, ev.plan_days
    excluded = summary.rows_without_label + summary.rows_label_after_as_of
    metrics = compute_metrics(merged.stats)
    deltas = [d for ch in models[1:] for d in compare(merged.stats, models[0], ch)]
    window = {"rows_evaluated": summary.rows_evaluated, "rows_excluded": excluded, "missing": plan_days.missing,
              "end": plan_days.days[-1], "as_of": ev.as_of}
    gate_rows = gating.judge(cfg.gates, metrics, deltas, models[0], models[1:], window)
    summary.verdict = gating.verdict(gate_rows, cfg.gates)
    summary.gates_failed = [f"{g['gate']} [{g['model'] or 'window'} {g['slice']}]: {g['reason']}"
                            for g in gate_rows if not g["passed"]]
    report = _report(ev, metrics=metrics, deltas=deltas, stats=merged.stats, gate_rows=gate_rows,
                     per_day=merged.per_day)
    report["maturity"] = maturity.section(merged.maturity, cfg.maturity.days, summary.rows_evaluated + excluded,
                                          plan_days.days[-1], ev.as_of)
    report["history"] = history.window_history(table_uri(cfg.lake, cfg.output.table), ev.opts, evtable.evaluation_key(
        plan_days.days[0], plan_days.days[-1], ev.as_of, models), models, metrics, ev.as_of, summary.versions["labels"])
    extra_files: dict[str, str] = {}
    if ref is not None:
        t_drift = time.monotonic()
        report["drift"] = drift.section(cfg, ref, merged.current, plan_days.days, models, extra_files, page)
        report["drift"]["slices"] = slice_drift.section(cfg, ref, merged.slices)
        log.info("evaluate: drift section (PSI, Evidently page) in %.1fs", time.monotonic() - t_drift)
    if summary.rows_evaluated:
        _commit(ev, metrics, deltas, report["maturity"])
        slice_drift.commit(cfg, summary, ev.as_of, plan_days.days, ev.snaps["features"], report["drift"].get("slices"))
    from engine.evaluation.publish import (AliasMoved, log_to_mlflow, promote, record_refused_promotion,
                                           rewrite_after_promotion, write_report)

    summary.report = write_report(cfg, report, summary.run_id, extra_files)
    summary.mlflow_run_id = log_to_mlflow(cfg, report, metrics, summary, extra_files)
    if summary.verdict == "fail":
        raise GateFailed(f"evaluation of {', '.join(models)} on {summary.window} failed {len(summary.gates_failed)} "
                         f"gate(s): {summary.gates_failed[0]}; report {summary.report}")
    if cfg.gates.promote and summary.verdict == "pass":
        try:
            summary.promoted = promote(cfg, ev.champ, ev.challengers[0], summary, report["gates"])
        except AliasMoved as e:
            record_refused_promotion(cfg, summary, report, extra_files, str(e))
            raise
        report["promotion"]["outcome"] = "promoted"  # the report says so too, with from/to versions
        summary.report = rewrite_after_promotion(cfg, report, summary, extra_files)  # a failure: a warning, exit 0


def _commit(ev: _Eval, metrics: list[dict], deltas: list[dict], curve: dict) -> None:
    """One `eval_metrics` unit per model version (idempotent: a unit recorded and backed is already done)."""
    from engine.lake import commit as protocol

    cfg, summary, as_of, snaps, files, models = ev.cfg, ev.summary, ev.as_of, ev.snaps, ev.files, ev.models
    days, opts = ev.plan_days.days, ev.opts
    uri = table_uri(cfg.lake, cfg.output.table)
    evtable.open_table(uri, opts)
    committer = protocol.Committer(uri, evtable.TABLE_SCHEMA, evtable.PARTITION_COLUMNS, summary.run_id,
                                   retries=cfg.run.commit_retries, storage_options=opts, backing=evtable.BACKING)
    key = evtable.evaluation_key(days[0], days[-1], as_of, models)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    common = {"window_start": days[0], "window_end": days[-1], "as_of": as_of, "confidence": cfg.metrics.confidence,
              "scores_version": snaps["scores"].version, "labels_version": snaps["labels"].version,
              "features_version": snaps["features"].version, "run_id": summary.run_id,
              "config_hash": summary.config_hash, "evaluated_at": now}
    for model in models:
        name, version = model.rsplit("/", 1)
        pv = {"model_name": name, "model_version": int(version), "evaluation": key}
        rows = [m for m in metrics if m["model"] == model] + [d for d in deltas if d["model"] == model] + \
            maturity.rows(curve, model)
        fp = inputs.inputs_fingerprint(days, files, snaps["labels"], snaps["features"], model,
                                       f"{as_of.isoformat()}|{summary.config_hash}|{','.join(models)}")
        unit = evtable.unit(pv, fp, cfg.scores.table, snaps["scores"].version)
        table = committer.latest()
        if protocol.recorded_version(table, unit) == unit.txn_version:
            if committer.backed(table, unit):
                summary.units_already_done.append(unit.app_id)
                continue
            summary.units_restored.append(unit.app_id)  # its rows are not in the table (restored away): redone
        adds = evtable.write_unit(uri, evtable.rows_batch(rows, {**common, "input_fingerprint": fp}), pv,
                                  summary.run_id, opts)
        meta = {"app_id": unit.app_id, "job": JOB, "model": model, "window": f"{days[0]}..{days[-1]}",
                "as_of": as_of.isoformat(), "config_hash": summary.config_hash, "versions": summary.versions,
                "rows": len(rows)}
        outcome = committer.commit(unit, adds, meta)
        (summary.units_committed if outcome == "committed" else summary.units_already_done).append(unit.app_id)


def _report(ev: _Eval, *, metrics: list[dict], deltas: list[dict], stats: EvalStats, gate_rows: list[dict],
            per_day: dict[str, dict]) -> dict:
    """The report's document (engine.evaluation.publish writes it as HTML and JSON)."""
    cfg, summary, as_of, models, missing = ev.cfg, ev.summary, ev.as_of, ev.models, ev.plan_days.missing
    binary = cfg.metrics.task == "binary"
    return {
        "run_id": summary.run_id, "config_hash": summary.config_hash,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "window": {"start": summary.days[0], "end": summary.days[-1], "days": summary.days},
        "as_of": as_of.isoformat(), "versions": summary.versions, "task": cfg.metrics.task, "models": models,
        "champion": models[0], "challenger": models[1] if len(models) > 1 else None,
        "metrics": metrics, "deltas": deltas,
        "reliability": {m: reliability(stats, m) for m in models} if binary else {},
        "score_hist": {m: score_histogram(stats, m) for m in models} if binary else {},
        "curves": {m: roc_pr_curves(stats, m) for m in models} if binary else {},
        "promotion": {"requested": cfg.gates.promote, "alias": cfg.models.champion.partition("@")[2],
                      "model": models[0].rsplit("/", 1)[0], "from_version": int(models[0].rsplit("/", 1)[1]),
                      "to_version": int(models[1].rsplit("/", 1)[1]) if len(models) > 1 else None,
                      "outcome": "not requested" if not cfg.gates.promote else
                      "pending" if summary.verdict == "pass" else "not attempted"},
        "gates": gate_rows, "verdict": summary.verdict,
        "immature": [{"ds": d["ds"], "rows_without_label": d["rows_without_label"],
                      "rows_label_after_as_of": d["rows_label_after_as_of"]}
                     for d in sorted(per_day.values(), key=lambda r: r["ds"])
                     if d["rows_without_label"] or d["rows_label_after_as_of"]],
        "missing_scores": {d: ms for d, ms in sorted(missing.items())},
        "unmatched": {"scores_without_features": summary.scores_without_features,
                      "features_without_scores": summary.features_without_scores},
        "drift": {"psi": [], "evidently_html": None},
        "min_support": cfg.min_support, "confidence": cfg.metrics.confidence, "bootstrap": cfg.metrics.bootstrap,
    }


__all__ = ["EvalSummary", "run_evaluate"]
