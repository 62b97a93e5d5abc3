"""The scoring job's plan-check-score-commit loop, independent of the engine that computes the chunks.

1. resolve the model (registry → version → validated bundle) and the input snapshot (latest → N);
   and record the run's start with that version in the ledger (a running row: `vacuum` keeps it while we run);
2. plan one unit per (ds, model_name, model_version), with its input fingerprint;
3. skip units whose recorded fingerprint matches, or whose input day was only rewritten (compacted) since the
   input version it was scored from (unless forced), but only where the partition's files back that record:
   their fingerprint stamps (engine.score.scoring.FINGERPRINT, read from the log's statistics) equal the recorded
   fingerprint. A unit whose files do not (the table was RESTOREd to an earlier version, which keeps the newest
   transactions; files written before the stamp existed) is redone and listed as `restored`;
4. hand the other units (one `UnitWork` each) and their chunks to an executor (`engine.executor.Executor`: Ray,
   Spark, local), which writes data files;
5. commit each unit once all its chunks are in, atomically, with the unit's application transaction.

A data contract arrives as an enforcer built by the caller (`enforcer_factory`: `jobs.score` passes
`contracts.enforce.Enforcer`); this module never imports contracts.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Callable

from engine.lake import commit as protocol
from engine.tables import ledger
from engine.config.jobs import ScoreConfig
from engine.config.load import config_hash
from engine.lake.paths import table_uri
from engine.errors import ConfigError, ContractViolation, LakescoreError, UnitFailed, short_list
from engine.logs import set_run_id
from engine.models.registry import ModelBundle, fetch_bundle
from engine.lake import scratch as scratch_space
from engine.progress import Progress
from engine.score.scoring import FINGERPRINT, PARTITION_COLUMNS, Stamps, file_schema, plan_chunks, score_chunk, table_schema
from engine.executor import Executor, side_run
from engine.work import ChunkFailure, ChunkResult, ChunkWork, Output, UnitWork
from engine.score.units import JOB, Summary, UnitContext, commit_unit, fail_unit, guarded, retract_unit
from engine.lake.delta_log import CommitLog
from engine.lake.snapshot import check_files_exist, check_files_stayed, open_snapshot, select_partitions

log = logging.getLogger("lakescore")


__all__ = ["ChunkFailure", "Hooks", "run_score"]


def _noop(*_args) -> None:
    return None


@dataclass
class Hooks:
    """Seams for tests of concurrency and crashes: called after the up-to-date check and before each commit."""

    after_check: Callable[[list[protocol.Unit]], None] = _noop
    before_commit: Callable[[protocol.Unit], None] = _noop


def run_score(cfg: ScoreConfig, executor: Executor, force: bool = False, hooks: Hooks | None = None,
              enforcer_factory: Callable | None = None) -> Summary:
    """Score `cfg.input` into `cfg.output`; a LakescoreError carries the run's partial summary (`e.summary`).

    `enforcer_factory(contract_path, snap, key_columns, passthrough, storage_options)` builds the contract's
    enforcer (contracts.enforce.Enforcer) when `input.contract` is set; `jobs.score.run_score` wires it.
    """
    summary = Summary(JOB, uuid.uuid4().hex, config_hash(cfg))
    set_run_id(summary.run_id)
    if cfg.input.contract and enforcer_factory is None:
        raise ConfigError("input.contract is set but no contract enforcer was wired; run the job through jobs.score")
    try:
        return _run(cfg, executor, force, hooks or Hooks(), summary, enforcer_factory)
    except LakescoreError as e:
        e.summary = summary.finish()  # the job's summary line still says what was committed and what failed
        raise


def _run(cfg: ScoreConfig, executor: Executor, force: bool, hooks: Hooks, summary: Summary,
         enforcer_factory: Callable | None) -> Summary:
    started = time.monotonic()
    deadline = started + cfg.run.time_budget_s
    opts = cfg.lake.storage_options
    _require_device(cfg, executor)
    executor.warm_up()

    # Model first: a refused or corrupt artifact fails before any row is read.
    bundle = fetch_bundle(cfg.model.uri, cfg.mlflow.tracking_uri, cfg.mlflow.registry_uri, cfg.model.allow_pickle)
    ref = bundle.ref
    summary.model, summary.model_version = ref.name, ref.version

    in_uri = table_uri(cfg.lake, cfg.input.table)
    snap = open_snapshot(cfg.input.table, in_uri, cfg.input.version, opts)
    summary.input_table, summary.input_version = cfg.input.table, snap.version
    ledger.record_start(cfg.lake, JOB, cfg, summary.run_id, [("input", cfg.input.table, snap.version)])
    days, absent = select_partitions(snap, cfg.input.ds)
    enforcer = None
    if cfg.input.contract:
        enforcer = enforcer_factory(cfg.input.contract, snap, cfg.input.key_columns, cfg.input.passthrough_columns, opts)
    if enforcer is None or not enforcer.schema_violations:
        _check_columns(cfg, snap, bundle)

    mark = _Clock(summary.phases)
    mark("resolve")
    fschema = file_schema(snap.schema, cfg.input.key_columns, cfg.input.passthrough_columns, cfg.output.score_column)
    tschema = table_schema(fschema)
    out_uri = table_uri(cfg.lake, cfg.output.table)
    summary.output_table = cfg.output.table
    out = protocol.open_or_create(out_uri, tschema, PARTITION_COLUMNS, opts, added=(FINGERPRINT.name,))
    backing = protocol.Backing(FINGERPRINT.name)
    committer = protocol.Committer(out_uri, tschema, PARTITION_COLUMNS, summary.run_id, cfg.run.commit_retries, opts,
                                   force, backing)
    qcommitter = q_uri = None
    if enforcer is not None and enforcer.quarantines:
        q_uri = table_uri(cfg.lake, cfg.output.quarantine_table)
        qschema, qcols = enforcer.quarantine_table_schema, enforcer.row_check().quarantine_partition_columns
        protocol.open_or_create(q_uri, qschema, qcols, opts)
        qcommitter = protocol.Committer(q_uri, qschema, qcols, summary.run_id, cfg.run.commit_retries, opts, force)

    digest = enforcer.digest if enforcer else ""

    def unit_of(d: str) -> protocol.Unit:
        pv = {"ds": d, "model_name": ref.name, "model_version": ref.version}
        return protocol.Unit(protocol.app_id(JOB, pv, PARTITION_COLUMNS), pv, snap.fingerprint(d, digest),
                             cfg.input.table, snap.version, digest)

    units = {d: unit_of(d) for d in days}
    # Output days of this model whose input day is gone (retracted upstream): replaced with nothing.
    gone = [d for d in _scored_days(out, ref.name, ref.version) if d not in snap.files and _selected(d, cfg.input.ds)]
    retract = {d: dataclasses.replace(unit_of(d), empty=True) for d in gone}
    summary.units_planned = len(units) + len(set(absent) | set(gone))
    for d in absent:
        if d in retract:
            continue
        # An empty or missing day: a no-op where the contract allows it, else a volume violation.
        if enforcer is not None and not enforcer.verdict(d, 0, None):
            summary.skipped.append(d)
            continue
        fail_unit(summary, d, [{"check": "volume", "rows": 0, "message": f"no rows in {snap.where()} (empty or missing partition)"}])
    inputs = CommitLog(in_uri, opts)
    evidence = protocol.Evidence(out, PARTITION_COLUMNS, backing)
    pending = [d for d in units if not _up_to_date(out, units[d], force, summary, evidence, inputs)]
    retract = {d: u for d, u in retract.items() if not _up_to_date(out, u, force, summary, evidence)}
    log.info("input %s: %d unit(s) planned, %d up to date or superseded, %d to score, %d to retract%s", snap.where(),
             summary.units_planned, len(summary.skipped), len(pending), len(retract), " (forced)" if force else "")
    hooks.after_check([units[d] for d in pending] + list(retract.values()))
    check_files_exist(snap, pending, opts)
    if enforcer is not None and enforcer.schema_violations:
        # The table's shape breaks the contract: every unit fails closed before any work.
        for d in pending:
            fail_unit(summary, d, [asdict(v) for v in enforcer.verdict(d, snap.rows(d) or 0, None)])
        pending = []

    stamps = Stamps(ref.name, ref.version, ref.run_id, cfg.input.table, snap.version, summary.run_id,
                    summary.config_hash, dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    second_stage = side_run(executor)  # the row check's second stage (key-hash buckets)
    ctx = UnitContext(cfg, summary, snap, committer, stamps, hooks, enforcer, qcommitter,
                      lambda stats, work: work.row_check.complete(stats, work, second_stage, deadline))
    for d, unit in retract.items():
        guarded(ctx, d, unit, [], lambda d=d, unit=unit: retract_unit(ctx, d, unit))
    row_check = enforcer.row_check() if enforcer is not None else None
    works: dict[str, UnitWork] = {}
    chunks: list[ChunkWork] = []
    expected = {}
    for d in pending:
        unit = units[d]
        planned = plan_chunks([(f.path, f.num_records) for f in snap.files[d]], cfg.output.target_file_rows)
        expected[unit.app_id] = len(planned)
        output = Output(out_uri, unit.partition_values, tuple(cfg.input.key_columns),
                        tuple(cfg.input.passthrough_columns), cfg.output.score_column, stamps, fschema,
                        cfg.output.target_file_rows, cfg.output.compression, cfg.model.device,
                        cfg.model.micro_batch_rows, None, q_uri or "",
                        {"ds": d, "source_table": cfg.input.table} if q_uri else {}, unit.fingerprint)
        scratch = {} if row_check is None else scratch_space.unit_scratch(cfg.lake.root, summary.run_id, len(works),
                                                                         planned, snap.rows(d))
        works[unit.app_id] = UnitWork(unit.app_id, d, in_uri, snap.schema, score_chunk, cfg.output.read_batch_rows,
                                      dict(opts), row_check, output, **scratch)
        chunks += [ChunkWork(unit.app_id, tuple(c), len(chunks) + i) for i, c in enumerate(planned)]
    by_app = {u.app_id: (d, u) for d, u in units.items()}
    mark("plan")
    results: dict[str, list[ChunkResult]] = {a: [] for a in expected}
    errors: dict[str, ChunkFailure] = {}
    done: set[str] = set()
    committing = 0.0
    bar = Progress(len(expected), "units")
    try:
        for item in executor.run(works, chunks, bundle, deadline) if chunks else ():
            if isinstance(item, ChunkFailure):
                bar.advance(0 if item.unit in errors else 1)
                errors.setdefault(item.unit, item)
            else:
                results[item.unit].append(item)
            if item.unit in errors or len(results[item.unit]) < expected[item.unit]:
                continue  # a failed unit is never committed; a complete one is committed at once
            d, unit = by_app[item.unit]
            done.add(item.unit)
            rs = results[item.unit]
            t = time.monotonic()
            work = works[item.unit]
            guarded(ctx, d, unit, rs, lambda d=d, unit=unit, rs=rs, work=work: commit_unit(ctx, d, unit, rs, work))
            committing += time.monotonic() - t
            bar.advance(rows=sum(r.rows_in for r in rs))
    except UnitFailed as e:  # the executor gave up (time budget): the units not yet complete fail
        for app in expected:
            if app not in done and app not in errors:
                errors[app] = ChunkFailure(app, str(e))
    except OSError:  # an in-process executor raises a chunk's read error as it is: a vanished file is exit 5
        bar.close()
        check_files_stayed(snap, pending, opts)
        raise
    bar.close()
    for app, err in errors.items():
        d, _unit = by_app[app]
        for r in results[app]:
            protocol.discard(out_uri, r.adds, opts)
            if q_uri:
                protocol.discard(q_uri, r.quarantine_adds, opts)
        if err.contract:
            fail_unit(summary, d, [{"check": "schema", "rows": None, "message": err.error}])
        else:
            summary.failed.append(f"ds={d}: {err.error}")
    if row_check is not None:
        scratch_space.remove_scratch(cfg.lake.root, summary.run_id, opts)
    _measures(summary, [r for rs in results.values() for r in rs], committing, time.monotonic() - started)
    summary.finish()
    if enforcer is not None:
        summary.report = enforcer.publish(cfg.lake.root, JOB, summary.run_id, cfg.mlflow,
                                          {"model": f"{ref.name}/{ref.version}"})
    log.info("score run %s finished in %.1fs", summary.run_id, time.monotonic() - started)
    contract_days = {v["ds"] for v in summary.violations}
    if summary.failed and len(contract_days) == len(summary.failed):
        first = summary.violations[0]
        raise ContractViolation(
            f"{len(contract_days)} unit(s) of {snap.where()} violate the data contract, not written: "
            f"ds {short_list(sorted(contract_days))} (first: ds={first['ds']} {first['check']}: {first['message']}); "
            "units that passed were committed; "
            f"report {summary.report or '(no contract file: see the summary line)'}"
        )
    check_files_stayed(snap, [by_app[app][0] for app in errors if not errors[app].contract], opts)
    if summary.failed:
        raise UnitFailed(f"{len(summary.failed)} unit(s) failed: {summary.failed[0]}; units that passed were "
                         "committed; a re-run redoes only the failed ones")
    return summary


class _Clock:
    """Marks the end of each driver phase into `phases` (seconds since the previous mark)."""

    def __init__(self, phases: dict):
        self.phases, self.last = phases, time.monotonic()

    def __call__(self, phase: str) -> None:
        now = time.monotonic()
        self.phases[phase] = round(now - self.last, 3)
        self.last = now


def _measures(summary: Summary, results: list[ChunkResult], committing: float, wall: float) -> None:
    """The workers' phase seconds, per-batch latency percentiles and throughput, for the summary and the ledger."""
    from engine import latency

    worker: dict[str, float] = {}
    hist: dict[str, int] = {}
    for r in results:
        for phase, secs in r.timings.items():
            worker[phase] = worker.get(phase, 0.0) + secs
        latency.merge(hist, r.latency)
    summary.phases.update({p: round(v, 3) for p, v in sorted(worker.items())})
    summary.phases["commit"] = round(committing, 3)
    summary.latency_ms = latency.summary_ms(hist)
    summary.rows_per_s = round(summary.rows_in / wall, 1) if wall > 0 else None
    summary.nodes = sorted({r.node for r in results if r.node})


def _selected(ds: str, spec: str) -> bool:
    """Whether `ds` is inside the run's `input.ds` selection ("all" | day | "a..b"; ISO dates sort as strings)."""
    if spec == "all":
        return True
    lo, _, hi = spec.partition("..")
    return lo <= ds <= (hi or lo)


def _scored_days(out, model_name: str, model_version: int) -> list[str]:
    """Days holding output of this model version, from the log's partition values (no data read)."""
    parts = out.partitions(file_pruning_predicate=[("model_name", "=", model_name), ("model_version", "=", str(model_version))])
    return sorted({p["ds"] for p in parts})


def _up_to_date(out, unit: protocol.Unit, force: bool, summary: Summary, evidence: protocol.Evidence,
                inputs: CommitLog | None = None) -> bool:
    """Skip a unit whose recorded input fingerprint is this one, that was committed from a newer input version, or
    (given the input's `inputs` log) whose input day was only rewritten since the version it was scored from; each
    only where the partition's files back the record (`evidence`), else the unit is redone and listed restored."""
    d = unit.partition_values["ds"]
    if force:
        return False
    recorded = protocol.recorded_version(out, unit)
    newer = None if recorded == unit.txn_version else protocol.superseded(out, unit)
    since = None
    if recorded is not None and recorded != unit.txn_version and newer is None and inputs is not None:
        since = _rewritten_since(out, unit, inputs)
    if recorded != unit.txn_version and newer is None and since is None:
        return False
    if not evidence.backs(unit):
        summary.restored.append(d)
        log.warning("unit %s: its transaction records input fingerprint %s but the partition's files do not carry it "
                    "(%s: the table was restored to an earlier version, or written before the stamp); redoing it",
                    unit.app_id, recorded, sorted(map(str, evidence.held(unit))) or "no files")
        return False
    summary.skipped.append(d)
    if newer is not None:
        summary.superseded.append(f"ds={d}: committed from {unit.input_table} input version {newer}, newer than this "
                                  f"run's {unit.input_version}; not replaced (--force replaces it)")
    elif since is not None:
        summary.unchanged.append(f"ds={d}: {unit.input_table} versions {since + 1}..{unit.input_version} only "
                                 f"rewrote its files without a data change (compaction); scores of input version "
                                 f"{since} kept")
        log.info("unit %s: input files rewritten without a data change since %s version %d; up to date",
                 unit.app_id, unit.input_table, since)
    return True


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


def _rewritten_since(out, unit: protocol.Unit, inputs: CommitLog) -> int | None:
    """The input version the unit was scored from, if every commit since then that touched its day is free of data
    changes (Delta's `dataChange: false`: compaction) and the contract is the same; else None (re-score it).

    The recorded fingerprint stays that of the scored version, so later runs ask the log again from there: a real
    change of the day after the rewrite is seen, and a log that expired meanwhile falls back to the fingerprint.
    """
    d = unit.partition_values["ds"]
    since = protocol.recorded_input_version(out, unit)
    if since is None or unit.input_version is None or not protocol.same_context(out, unit):
        return None
    changed = inputs.changed_days(since, unit.input_version, [d])
    if changed is None:
        log.info("unit %s: the log of %s between versions %d and %d cannot say whether ds=%s changed (expired or "
                 "too long); its new fingerprint re-scores it", unit.app_id, unit.input_table, since,
                 unit.input_version, d)
        return None
    return None if changed else since


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
