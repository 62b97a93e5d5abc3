"""The scoring job's plan-check-score-commit loop, independent of the engine that computes the chunks.

1. resolve the lake, the model (registry → version) and the input snapshot (latest → N) before the engine starts,
   then the model's validated bundle. The model is resolved and fetched in a background thread
   (`engine.models.registry.ModelResolution`) started right after the lake check, so MLflow's import, the
   registry and the download overlap the snapshot and the engine's start; the job waits for the version before it
   starts the engine and for the bundle before it records its start. Errors keep the order of the steps run in
   line (the choice that fails the same way as before): a missing lake first (and MLflow untouched), then the
   model version's error even where the snapshot failed meanwhile, then the snapshot's, then the artifact's; each
   with its own exit code. With the bundle in hand, warm workers load it (`preload`, where the executor has it)
   while the driver plans;
   and record the run's start with that version in the ledger (a running row: `vacuum` keeps it while we run);
2. plan one unit per (ds, model_name, model_version), with its input fingerprint, and skip the units that are up
   to date (engine.score.plan: fingerprints, compaction, RESTORE evidence, retractions);
3. hand the other units (one `UnitWork` each) and their chunks to an executor (`engine.executor.Executor`:
   Ray, Spark, local), which writes
   data files;
4. commit each unit once all its chunks are in, atomically, with the unit's application transaction
   (engine.score.units), and map what failed to the job's error (exit code).

The run's identity, deadline and phase clock are an engine.run.Run; its summary line is engine.score.units.Summary.
A data contract arrives as an enforcer built by the caller (`enforcer_factory`: `jobs.score` passes
`contracts.enforce.Enforcer`); this module never imports contracts. Imports go down: engine.score.plan,
engine.score.units, engine.score.scoring, engine.lake, engine.models, engine.run.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Callable

import pyarrow as pa
from deltalake import DeltaTable

from engine.lake import commit as protocol
from engine.tables import ledger
from engine.tables import model_events
from engine.config.jobs import ScoreConfig
from engine.lake.paths import require_root, table_uri
from engine.errors import ConfigError, ContractViolation, LakescoreError, UnitFailed, short_list
from engine.models.registry import ModelBundle, ModelResolution
from engine.lake import scratch as scratch_space
from engine.run import Run
from engine.score.plan import ScorePlan, plan_units
from engine.score.scoring import FINGERPRINT, PARTITION_COLUMNS, Stamps, file_schema, plan_chunks, score_chunk, table_schema
from engine.executor import Executor, side_run
from engine.work import ChunkFailure, ChunkResult, ChunkWork, Output, RowCheck, UnitWork
from engine.score.units import (JOB, ContractEnforcer, Hooks, Summary, UnitContext, UnitFailure, commit_unit,
                                fail_unit, guarded, retract_unit)
from engine.score.stages import SecondStages, merged_checks, needs_second_stage
from engine.lake.delta_log import CommitLog
from engine.lake.snapshot import Snapshot, check_files_exist, check_files_stayed, open_snapshot, select_partitions

log = logging.getLogger("lakescore")


__all__ = ["ChunkFailure", "Hooks", "run_score"]


def run_score(cfg: ScoreConfig, executor: Executor, force: bool = False, hooks: Hooks | None = None,
              enforcer_factory: Callable | None = None) -> Summary:
    """Score `cfg.input` into `cfg.output`; a LakescoreError carries the run's partial summary (`e.summary`).

    `enforcer_factory(contract_path, snap, key_columns, passthrough, storage_options, run=, deadline=)` builds the contract's
    enforcer (contracts.enforce.Enforcer) when `input.contract` is set; `jobs.score.run_score` wires it.
    """
    summary = Summary(Run.start(JOB, cfg))
    if cfg.input.contract and enforcer_factory is None:
        raise ConfigError("input.contract is set but no contract enforcer was wired; run the job through jobs.score")
    try:
        return _run(cfg, executor, force, hooks or Hooks(), summary, enforcer_factory)
    except LakescoreError as e:
        e.summary = summary.finish()  # the job's summary line still says what was committed and what failed
        raise


@dataclass
class _Job:
    """What the steps of one score run share: the config, the summary (and its run), the resolved inputs."""

    cfg: ScoreConfig
    summary: Summary
    hooks: Hooks
    force: bool
    bundle: ModelBundle
    in_uri: str
    snap: Snapshot
    days: list[str]  # selected days with files
    absent: list[str]  # selected days without (empty or missing)
    enforcer: ContractEnforcer | None

    @property
    def run(self) -> Run:
        return self.summary.run

    @property
    def opts(self) -> dict:
        return self.cfg.lake.storage_options


@dataclass
class _Outputs:
    """The output table (and the quarantine table in quarantine mode), open, with their committers."""

    uri: str
    table: DeltaTable
    fschema: pa.Schema  # of the files written (partition columns live in the log)
    committer: protocol.Committer
    backing: protocol.Backing
    q_uri: str | None = None
    qcommitter: protocol.Committer | None = None


@dataclass
class _Results:
    """What the executor brought back: each unit's chunk results, the failed units, the seconds spent committing."""

    results: dict[str, list[ChunkResult]]
    errors: dict[str, ChunkFailure] = field(default_factory=dict)
    committing: float = 0.0

    def all(self) -> list[ChunkResult]:
        return [r for rs in self.results.values() for r in rs]


def _run(cfg: ScoreConfig, executor: Executor, force: bool, hooks: Hooks, summary: Summary,
         enforcer_factory: Callable | None) -> Summary:
    job = _resolve(cfg, executor, summary, hooks, force, enforcer_factory)
    job.run.mark("resolve")
    outs = _open_outputs(job)
    job.run.step("outputs")
    plan = _plan(job, outs)
    ctx = _unit_context(job, outs, executor)
    for d, unit in plan.retract.items():
        guarded(ctx, d, unit, [], lambda d=d, unit=unit: retract_unit(ctx, d, unit))
    row_check = job.enforcer.row_check() if job.enforcer is not None else None
    works, chunks = _works(job, outs, plan, ctx.stamps, row_check)
    job.run.mark("plan")
    res = _execute(job, executor, ctx, plan, works, chunks)
    job.run.mark("execute")
    _discard_failed(job, outs, plan, res)
    if row_check is not None:
        scratch_space.remove_scratch(cfg.lake.root, summary.run_id, job.opts)
    summary.measure(res.all(), res.committing, job.run.elapsed())
    summary.finish()
    try:
        return _conclude(job, plan, res)
    finally:
        job.run.mark("conclude")


def _resolve(cfg: ScoreConfig, executor: Executor, summary: Summary, hooks: Hooks, force: bool,
             enforcer_factory: Callable | None) -> _Job:
    """The lake, the model version and the input snapshot (before the engine starts), the model artifact, the run's
    start in the ledger, its days, the contract's enforcer."""
    opts = cfg.lake.storage_options
    # Resolution before the engine starts (the executor is lazy: jobs.engines): a missing lake, model version or
    # alias, or input version fails in a second, naming the setting, not after the engine's start-up.
    run = summary.run
    require_root(cfg.lake)  # before MLflow is touched: a missing lake opens no tracking store
    # The model (MLflow's import, the registry, the artifact) resolves in the background from here on, overlapping
    # the snapshot and the engine's start; its errors are raised where the steps stood in line (see the docstring).
    model = ModelResolution(cfg.model.uri, cfg.mlflow.tracking_uri, cfg.mlflow.registry_uri, cfg.model.allow_pickle)
    in_uri = table_uri(cfg.lake, cfg.input.table)
    try:
        snap = open_snapshot(cfg.input.table, in_uri, cfg.input.version, opts)
    except Exception:
        first = model.error()  # the model version is resolved before the input: its error comes first
        if first is not None:
            raise first from None
        raise
    run.step("snapshot")
    ref = model.ref()  # no engine starts before the model version is known to exist
    run.step("model_ref")
    summary.model, summary.model_version = ref.name, ref.version
    _require_device(cfg, executor)
    executor.warm_up()
    run.step("engine_start")

    # The model's artifact next (fetched meanwhile): a refused or corrupt artifact fails before any row is read.
    bundle = model.bundle()
    run.step("bundle")
    run.phases.update({f"{k}_background": v for k, v in model.seconds.items()})
    preload = getattr(executor, "preload", None)  # warm workers load the model while the driver plans
    if preload is not None:
        preload(bundle, cfg.model.device, cfg.model.micro_batch_rows)
        run.step("preload")
    summary.input_table, summary.input_version = cfg.input.table, snap.version
    ledger.record_start(cfg.lake, JOB, cfg, summary.run_id, [("input", cfg.input.table, snap.version)])
    run.step("ledger")
    model_events.observe_quietly(cfg.lake, ref, summary.run_id)  # an alias moved outside lakescore (never fails)
    run.step("model_events")
    days, absent = select_partitions(snap, cfg.input.ds)
    enforcer = None
    if cfg.input.contract:
        # The drift reference window, when not stored yet, is read by the executor's side tasks, never here.
        enforcer = enforcer_factory(cfg.input.contract, snap, cfg.input.key_columns, cfg.input.passthrough_columns, opts,
                                    run=side_run(executor), deadline=summary.run.deadline)
        run.step("contract_setup")
    if enforcer is None or not enforcer.schema_violations:
        _check_columns(cfg, snap, bundle)
    return _Job(cfg=cfg, summary=summary, hooks=hooks, force=force, bundle=bundle, in_uri=in_uri, snap=snap,
                days=days, absent=absent, enforcer=enforcer)


def _open_outputs(job: _Job) -> _Outputs:
    """Open (or create) the output table, and the quarantine table where the contract quarantines rows."""
    cfg, summary, enforcer, opts = job.cfg, job.summary, job.enforcer, job.opts
    fschema = file_schema(job.snap.schema, cfg.input.key_columns, cfg.input.passthrough_columns,
                          cfg.output.score_column)
    tschema = table_schema(fschema)
    out_uri = table_uri(cfg.lake, cfg.output.table)
    summary.output_table = cfg.output.table
    out = protocol.open_or_create(out_uri, tschema, PARTITION_COLUMNS, opts, added=(FINGERPRINT.name,))
    backing = protocol.Backing(FINGERPRINT.name)
    committer = protocol.Committer(out_uri, tschema, PARTITION_COLUMNS, summary.run_id, retries=cfg.run.commit_retries,
                                   storage_options=opts, force=job.force, backing=backing)
    outs = _Outputs(uri=out_uri, table=out, fschema=fschema, committer=committer, backing=backing)
    if enforcer is not None and enforcer.quarantines:
        outs.q_uri = table_uri(cfg.lake, cfg.output.quarantine_table)
        qschema, qcols = enforcer.quarantine_table_schema, enforcer.row_check().quarantine_partition_columns
        protocol.open_or_create(outs.q_uri, qschema, qcols, opts)
        outs.qcommitter = protocol.Committer(outs.q_uri, qschema, qcols, summary.run_id,
                                             retries=cfg.run.commit_retries, storage_options=opts, force=job.force)
    return outs


def _plan(job: _Job, outs: _Outputs) -> ScorePlan:
    """Plan the units (engine.score.plan), let the test hook look, check the files to read are there; a table whose
    shape breaks the contract fails every unit before any work."""
    snap, enforcer = job.snap, job.enforcer
    evidence = protocol.Evidence(outs.table, PARTITION_COLUMNS, outs.backing)
    plan = plan_units(job.cfg, snap, job.bundle.ref, job.days, job.absent, out=outs.table, enforcer=enforcer,
                      summary=job.summary, force=job.force, evidence=evidence, inputs=CommitLog(job.in_uri, job.opts))
    job.hooks.after_check([plan.units[d] for d in plan.pending] + list(plan.retract.values()))
    check_files_exist(snap, plan.pending, job.opts)
    if enforcer is not None and enforcer.schema_violations:
        # The table's shape breaks the contract: every unit fails closed before any work.
        for d in plan.pending:
            fail_unit(job.summary, d, [asdict(v) for v in enforcer.verdict(d, snap.rows(d) or 0, None)])
        plan.pending = []
    return plan


def _unit_context(job: _Job, outs: _Outputs, executor: Executor) -> UnitContext:
    """What every unit's commit step shares: the stamps every scored row carries, the committers, the hooks."""
    cfg, summary, ref = job.cfg, job.summary, job.bundle.ref
    stamps = Stamps(model_name=ref.name, model_version=ref.version, model_run_id=ref.run_id,
                    input_table=cfg.input.table, input_version=job.snap.version, run_id=summary.run_id,
                    config_hash=summary.config_hash,
                    scored_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    second_stage = side_run(executor)  # the row check's second stage (key-hash buckets)
    deadline = job.run.deadline
    return UnitContext(cfg=cfg, summary=summary, snap=job.snap, committer=outs.committer, stamps=stamps,
                       hooks=job.hooks, enforcer=job.enforcer, qcommitter=outs.qcommitter,
                       complete=lambda stats, work: work.row_check.complete(stats, work, second_stage, deadline))


def _works(job: _Job, outs: _Outputs, plan: ScorePlan, stamps: Stamps,
           row_check: RowCheck | None) -> tuple[dict[str, UnitWork], list[ChunkWork]]:
    """One `UnitWork` per unit to score (by app id) and its chunks of input files, numbered in plan order."""
    cfg, snap, summary = job.cfg, job.snap, job.summary
    works: dict[str, UnitWork] = {}
    chunks: list[ChunkWork] = []
    for d in plan.pending:
        unit = plan.units[d]
        planned = plan_chunks([(f.path, f.num_records) for f in snap.files[d]], cfg.output.target_file_rows)
        output = Output(uri=outs.uri, partition_values=unit.partition_values, keys=tuple(cfg.input.key_columns),
                        passthrough=tuple(cfg.input.passthrough_columns), score_column=cfg.output.score_column,
                        stamps=stamps, schema=outs.fschema, target_file_rows=cfg.output.target_file_rows,
                        compression=cfg.output.compression, device=cfg.model.device,
                        micro_batch_rows=cfg.model.micro_batch_rows, nthread=None, quarantine_uri=outs.q_uri or "",
                        quarantine_values={"ds": d, "source_table": cfg.input.table} if outs.q_uri else {},
                        fingerprint=unit.fingerprint)
        scratch = {} if row_check is None else scratch_space.unit_scratch(cfg.lake.root, summary.run_id, len(works),
                                                                         planned, snap.rows(d))
        works[unit.app_id] = UnitWork(unit=unit.app_id, ds=d, input_uri=job.in_uri, input_schema=snap.schema,
                                      task=score_chunk, batch_rows=cfg.output.read_batch_rows,
                                      storage_options=dict(job.opts), row_check=row_check, output=output, **scratch)
        chunks += [ChunkWork(unit.app_id, tuple(c), len(chunks) + i) for i, c in enumerate(planned)]
    return works, chunks


def _execute(job: _Job, executor: Executor, ctx: UnitContext, plan: ScorePlan, works: dict[str, UnitWork],
             chunks: list[ChunkWork]) -> _Results:
    """Run the chunks; commit each unit as soon as all its chunks are in; a failed unit is never committed.

    A unit whose row check has a second stage (key uniqueness across its chunks) has it run beside the result loop
    (`SecondStages`), never inside it: the loop goes on committing the other units, and collects each finished second
    stage (then commits its unit) at every item and, once the chunks are all in, until the deadline."""
    expected = {app: 0 for app in works}
    for c in chunks:
        expected[c.unit] += 1
    by_app, bundle, deadline = plan.by_app(), job.bundle, job.run.deadline
    res = _Results({a: [] for a in expected})
    results, errors = res.results, res.errors
    done: set[str] = set()  # committed (or failed at commit)
    bar = job.run.progress(len(expected), "units")

    def commit(app: str, stats, stage: Future | None = None) -> None:
        done.add(app)
        res.committing += _commit(ctx, by_app[app], results[app], stats, stage)
        bar.advance(rows=sum(r.rows_in for r in results[app]))

    stages = SecondStages(ctx, lambda app: by_app[app][0])
    try:
        for item in executor.run(works, chunks, bundle, deadline) if chunks else ():
            for app, stats, stage in stages.finished():
                commit(app, stats, stage)
            if isinstance(item, ChunkFailure):
                bar.advance(0 if item.unit in errors else 1)
                errors.setdefault(item.unit, item)
            else:
                results[item.unit].append(item)
            if item.unit in errors or len(results[item.unit]) < expected[item.unit]:
                continue  # a failed unit is never committed; a complete one is committed at once
            stats = merged_checks(results[item.unit])
            if needs_second_stage(works[item.unit], stats):
                stages.submit(item.unit, stats, works[item.unit])
            else:
                commit(item.unit, stats)
        for app, stats, stage in stages.rest(deadline):
            commit(app, stats, stage)
    except UnitFailed as e:  # the executor gave up (time budget): the units not yet complete fail
        for app in expected:
            if app not in done and app not in errors:
                errors[app] = ChunkFailure(app, str(e))
    except OSError:  # an in-process executor raises a chunk's read error as it is: a vanished file is exit 5
        bar.close()
        check_files_stayed(job.snap, plan.pending, job.opts)
        raise
    finally:
        stages.close()
    bar.close()
    return res


def _commit(ctx: UnitContext, d_unit: tuple, rs: list[ChunkResult], stats, stage: Future | None) -> float:
    """Commit one unit whose chunks (and second stage, `stage`) are done; returns the seconds it took. An error of its
    second stage (a failed bucket task) fails the unit, as a commit error would (`guarded`)."""
    d, unit = d_unit
    t = time.monotonic()

    def step() -> None:
        if stage is not None:
            stage.result()
        commit_unit(ctx, d, unit, rs, stats)

    guarded(ctx, d, unit, rs, step)
    return time.monotonic() - t


def _discard_failed(job: _Job, outs: _Outputs, plan: ScorePlan, res: _Results) -> None:
    """Remove the files the failed units' chunks wrote, and record each failed unit."""
    by_app = plan.by_app()
    for app, err in res.errors.items():
        d, _unit = by_app[app]
        for r in res.results[app]:
            protocol.discard(outs.uri, r.adds, job.opts)
            if outs.q_uri:
                protocol.discard(outs.q_uri, r.quarantine_adds, job.opts)
        if err.contract:
            fail_unit(job.summary, d, [{"check": "schema", "rows": None, "message": err.error}])
        else:
            job.summary.fail(UnitFailure(d, err.error))


def _conclude(job: _Job, plan: ScorePlan, res: _Results) -> Summary:
    """Publish the contract report; map what failed to the job's error: all failures contract ones → exit 3; a
    vanished input file → exit 5; else any failed unit → exit 4 (units that passed stay committed)."""
    cfg, summary, snap, enforcer, ref = job.cfg, job.summary, job.snap, job.enforcer, job.bundle.ref
    if enforcer is not None:
        summary.report = enforcer.publish(cfg.lake.root, JOB, summary.run_id, cfg.mlflow,
                                          {"model": f"{ref.name}/{ref.version}"})
    log.info("score run %s finished in %.1fs", summary.run_id, job.run.elapsed())
    contract_days = {v["ds"] for v in summary.violations}
    if summary.failed and len(contract_days) == len(summary.failed):
        first = summary.violations[0]
        raise ContractViolation(
            f"{len(contract_days)} unit(s) of {snap.where()} violate the data contract, not written: "
            f"ds {short_list(sorted(contract_days))} (first: ds={first['ds']} {first['check']}: {first['message']}); "
            "units that passed were committed; "
            f"report {summary.report or '(no contract file: see the summary line)'}"
        )
    by_app = plan.by_app()
    check_files_stayed(snap, [by_app[app][0] for app in res.errors if not res.errors[app].contract], job.opts)
    if summary.failed:
        raise UnitFailed(f"{len(summary.failed)} unit(s) failed: {summary.failed[0]}; units that passed were "
                         "committed; a re-run redoes only the failed ones")
    return summary


def _require_device(cfg: ScoreConfig, executor: Executor) -> None:
    """`model.device: cuda` where the engine has no GPU is a config error at once, never a silent CPU run or tasks
    left waiting for a GPU that will not come."""
    if cfg.model.device != "cuda":
        return
    gpus = executor.gpus() if hasattr(executor, "gpus") else 0.0
    if not gpus:
        raise ConfigError(f"model.device=cuda but the {cfg.engine} engine sees no GPU ({type(executor).__name__}: "
                          "0 GPUs); run on a cluster with GPUs (Spark: spark.executor.resource.gpu.amount) or set "
                          "model.device=cpu")


def _check_columns(cfg: ScoreConfig, snap, bundle: ModelBundle) -> None:
    names = set(snap.schema.names)
    need = [*cfg.input.key_columns, *cfg.input.passthrough_columns]
    missing = [c for c in need if c not in names]
    if missing:
        raise ContractViolation(f"input {snap.where()}: key/passthrough columns missing: {missing}; fix input.key_columns")
    feats = [f for f in bundle.spec.feature_names if f not in names]
    if feats:
        raise ContractViolation(
            f"input {snap.where()}: model {bundle.ref.uri} needs feature columns that are missing: {feats[:8]}"
        )
