"""The scoring job's plan-check-score-commit loop, independent of the engine that computes the chunks.

1. resolve the model (registry → version → validated bundle) and the input snapshot (latest → N);
2. plan one unit per (ds, model_name, model_version), with its input fingerprint;
3. skip units whose recorded fingerprint matches (unless forced);
4. hand the chunks of the other units to an executor (Ray today), which writes data files;
5. commit each unit once all its chunks are in, atomically, with the unit's application transaction.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Protocol

from engine import commit as protocol
from engine.config import ScoreConfig, config_hash, table_uri
from engine.errors import ContractViolation, LakescoreError, UnitFailed, short_list
from engine.models import ModelBundle, fetch_bundle
from engine.scoring import (PARTITION_COLUMNS, ChunkResult, ChunkWork, Stamps, file_schema, plan_chunks,
                            table_schema)
from engine.snapshot import check_files_exist, open_snapshot, select_partitions

log = logging.getLogger("lakescore")
JOB = "score"


@dataclass
class ChunkFailure:
    unit: str
    error: str
    contract: bool = False  # the chunk hit a data problem (ContractViolation), not a crash


class Executor(Protocol):
    def warm_up(self) -> None:
        """Start workers early (they warm up while the driver resolves the model); may do nothing."""

    def run(self, works: list[ChunkWork], bundle: ModelBundle, deadline: float) -> Iterator[ChunkResult | ChunkFailure]:
        ...


class LocalExecutor:
    """Scores the chunks one after another in this process: no cluster (tests, GPU checks, tiny inputs)."""

    def warm_up(self) -> None:
        return None

    def run(self, works: list[ChunkWork], bundle: ModelBundle, deadline: float) -> Iterator[ChunkResult | ChunkFailure]:
        from engine.scoring import run_chunk

        for w in works:
            if time.monotonic() > deadline:
                raise UnitFailed("time budget exhausted; raise run.time_budget_s")
            yield run_chunk(w, bundle)


def _noop(*_args) -> None:
    return None


@dataclass
class Hooks:
    """Seams for tests of concurrency and crashes: called after the up-to-date check and before each commit."""

    after_check: Callable[[list[protocol.Unit]], None] = _noop
    before_commit: Callable[[protocol.Unit], None] = _noop


@dataclass
class Summary:
    job: str
    run_id: str
    config_hash: str
    input_table: str = ""
    input_version: int | None = None
    model: str = ""
    model_version: int | None = None
    output_table: str = ""
    units_planned: int = 0
    units_skipped: int = 0
    units_committed: int = 0
    units_already_done: int = 0
    units_failed: int = 0
    rows_in: int = 0
    rows_out: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    violations: list[dict] = field(default_factory=list)  # {ds, check, rows, message}: contract failures
    rows_quarantined: int = 0
    report: str | None = None


def run_score(cfg: ScoreConfig, executor: Executor, force: bool = False, hooks: Hooks | None = None) -> Summary:
    """Score `cfg.input` into `cfg.output`; a LakescoreError carries the run's partial summary (`e.summary`)."""
    summary = Summary(JOB, uuid.uuid4().hex, config_hash(cfg))
    try:
        return _run(cfg, executor, force, hooks or Hooks(), summary)
    except LakescoreError as e:
        e.summary = summary  # the job's summary line still says what was committed and what failed
        raise


def _run(cfg: ScoreConfig, executor: Executor, force: bool, hooks: Hooks, summary: Summary) -> Summary:
    started = time.monotonic()
    deadline = started + cfg.run.time_budget_s
    opts = cfg.lake.storage_options
    executor.warm_up()

    # Model first: a refused or corrupt artifact fails before any row is read.
    bundle = fetch_bundle(cfg.model.uri, cfg.mlflow.tracking_uri, cfg.mlflow.registry_uri, cfg.model.allow_pickle)
    ref = bundle.ref
    summary.model, summary.model_version = ref.name, ref.version

    in_uri = table_uri(cfg.lake, cfg.input.table)
    snap = open_snapshot(cfg.input.table, in_uri, cfg.input.version, opts)
    summary.input_table, summary.input_version = cfg.input.table, snap.version
    days, absent = select_partitions(snap, cfg.input.ds)
    enforcer = None
    if cfg.input.contract:
        from contracts.enforce import Enforcer

        enforcer = Enforcer(cfg.input.contract, snap, cfg.input.key_columns, cfg.input.passthrough_columns, opts)
    if enforcer is None or not enforcer.schema_violations:
        _check_columns(cfg, snap, bundle)

    fschema = file_schema(snap.schema, cfg.input.key_columns, cfg.input.passthrough_columns, cfg.output.score_column)
    tschema = table_schema(fschema)
    out_uri = table_uri(cfg.lake, cfg.output.table)
    summary.output_table = cfg.output.table
    out = protocol.open_or_create(out_uri, tschema, PARTITION_COLUMNS, opts)
    committer = protocol.Committer(out_uri, out.version(), tschema, PARTITION_COLUMNS, summary.run_id,
                                   cfg.run.commit_retries, opts)
    qcommitter = q_uri = None
    if enforcer is not None and enforcer.quarantines:
        from contracts import quarantine

        q_uri = table_uri(cfg.lake, cfg.output.quarantine_table)
        qt = protocol.open_or_create(q_uri, quarantine.TABLE_SCHEMA, quarantine.PARTITION_COLUMNS, opts)
        qcommitter = protocol.Committer(q_uri, qt.version(), quarantine.TABLE_SCHEMA, quarantine.PARTITION_COLUMNS,
                                        summary.run_id, cfg.run.commit_retries, opts)

    units = {
        d: protocol.Unit(
            protocol.app_id(JOB, pv := {"ds": d, "model_name": ref.name, "model_version": ref.version}, PARTITION_COLUMNS),
            pv,
            snap.fingerprint(d, enforcer.digest if enforcer else ""),
        )
        for d in days
    }
    summary.units_planned = len(units) + len(absent)
    for d in absent:
        # An empty or missing day: a no-op where the contract allows it, else a volume violation.
        if enforcer is not None and not enforcer.verdict(d, 0, None):
            summary.skipped.append(d)
            continue
        _fail(summary, d, [{"check": "volume", "rows": 0, "message": f"no rows in {snap.where()} (empty or missing partition)"}])
    pending = []
    for d, unit in units.items():
        if not force and protocol.recorded_version(out, unit) == unit.txn_version:
            summary.skipped.append(d)
        else:
            pending.append(d)
    summary.units_skipped = len(summary.skipped)
    log.info("input %s: %d unit(s) planned, %d up to date, %d to score%s", snap.where(), len(units),
             len(summary.skipped), len(pending), " (forced)" if force else "")
    hooks.after_check([units[d] for d in pending])
    check_files_exist(snap, pending, opts)
    if enforcer is not None and enforcer.schema_violations:
        # The table's shape breaks the contract: every unit fails closed before any work.
        for d in pending:
            _fail(summary, d, [asdict(v) for v in enforcer.verdict(d, snap.rows(d) or 0, None)])
        pending = []

    stamps = Stamps(ref.name, ref.version, ref.run_id, cfg.input.table, snap.version, summary.run_id,
                    summary.config_hash, dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    works, expected = [], {}
    for d in pending:
        unit = units[d]
        chunks = plan_chunks([(f.path, f.num_records) for f in snap.files[d]], cfg.output.target_file_rows)
        expected[unit.app_id] = len(chunks)
        works += [
            ChunkWork(unit.app_id, d, in_uri, tuple(c), out_uri, unit.partition_values, tuple(cfg.input.key_columns),
                      tuple(cfg.input.passthrough_columns), cfg.output.score_column, stamps, fschema,
                      cfg.output.read_batch_rows, cfg.output.target_file_rows, cfg.output.compression,
                      cfg.model.device, cfg.model.micro_batch_rows, None, dict(opts),
                      enforcer.rc if enforcer else None, enforcer.edges if enforcer else {},
                      q_uri or "", {"ds": d, "source_table": cfg.input.table} if q_uri else {}, snap.schema)
            for c in chunks
        ]
    by_app = {u.app_id: (d, u) for d, u in units.items()}
    results: dict[str, list[ChunkResult]] = {a: [] for a in expected}
    errors: dict[str, ChunkFailure] = {}
    for item in executor.run(works, bundle, deadline) if works else ():
        if isinstance(item, ChunkFailure):
            errors.setdefault(item.unit, item)
        else:
            results[item.unit].append(item)
        if item.unit in errors or len(results[item.unit]) < expected[item.unit]:
            continue  # a failed unit is never committed; a complete one is committed at once
        d, unit = by_app[item.unit]
        _commit(cfg, summary, snap, d, unit, results[item.unit], committer, stamps, hooks, enforcer, qcommitter)
    for app, err in errors.items():
        d, _unit = by_app[app]
        for r in results[app]:
            protocol.discard(out_uri, r.adds, opts)
            if q_uri:
                protocol.discard(q_uri, r.quarantine_adds, opts)
        if err.contract:
            _fail(summary, d, [{"check": "schema", "rows": None, "message": err.error}])
        else:
            summary.failed.append(f"ds={d}: {err.error}")
    summary.units_failed = len(summary.failed)
    summary.units_committed = len(summary.committed)
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
    if summary.failed:
        raise UnitFailed(f"{len(summary.failed)} unit(s) failed: {summary.failed[0]}; re-run redoes only those units")
    return summary


def _fail(summary: Summary, ds: str, violations: list[dict]) -> None:
    """A unit failed its contract: recorded for the summary line; nothing of it is written."""
    summary.failed.append(f"ds={ds}: " + "; ".join(f"{v['check']}: {v['message']}" for v in violations[:3]))
    summary.violations += [{"ds": ds, "check": v["check"], "rows": v.get("rows"), "message": v["message"]}
                           for v in violations]


def _commit(cfg, summary, snap, d, unit, results, committer, stamps, hooks, enforcer, qcommitter=None) -> None:
    rows_in = sum(r.rows_in for r in results)
    rows_out = sum(r.rows_out for r in results)
    rows_q = sum(r.rows_quarantined for r in results)
    adds = [a for r in results for a in r.adds]
    qadds = [a for r in results for a in r.quarantine_adds]
    expected = snap.rows(d)
    opts = cfg.lake.storage_options

    def drop(*which: str) -> None:
        if "scores" in which:
            protocol.discard(committer.uri, adds, opts)
        if "quarantine" in which and qcommitter is not None:
            protocol.discard(qcommitter.uri, qadds, opts)

    if rows_out + rows_q != rows_in or (expected is not None and rows_in != expected):
        drop("scores", "quarantine")
        summary.failed.append(f"ds={d}: rows do not reconcile (log {expected}, read {rows_in}, scored {rows_out}, "
                              f"quarantined {rows_q})")
        return
    violations = []
    if enforcer is not None:
        stats = None
        for r in results:
            stats = r.checks if stats is None else stats.merge(r.checks)
        violations = [asdict(v) for v in enforcer.verdict(d, rows_in, stats)]
    bad_scores = sum(r.bad_scores for r in results)
    if bad_scores:  # the output's own contract: one finite score in [0, 1] per input row
        violations.append({"check": "output_score", "rows": bad_scores,
                           "message": f"{bad_scores} score(s) are not finite or outside [0, 1]"})
    if qcommitter is not None:
        # Quarantine mode: rejected rows are the evidence, committed whatever happens to the scores.
        qunit = protocol.Unit(protocol.app_id("quarantine", qv := {"ds": d, "source_table": cfg.input.table},
                                              ["ds", "source_table"]), qv, unit.fingerprint)
        qmeta = {"app_id": qunit.app_id, "ds": d, "input_fingerprint": unit.fingerprint, "rows": rows_q,
                 "source_version": snap.version, "job": JOB}
        qcommitter.commit(qunit, qadds, qmeta)
        summary.rows_quarantined += rows_q
        budget = enforcer.contract.bad_row_budget
        over = rows_in and rows_q / rows_in > budget
        violations = [v for v in violations if not v.get("row_level")]
        if over:
            violations.append({"check": "bad_row_budget", "rows": rows_q,
                               "message": f"{rows_q} of {rows_in} rows quarantined ({rows_q / rows_in:.2%}) "
                                          f"exceeds the bad-row budget {budget:.2%}; quarantine kept, scores not written"})
    if enforcer is not None:
        enforcer.units[d].update(status="fail" if violations else "quarantined" if rows_q else "pass",
                                 rows_quarantined=rows_q)
    if violations:
        drop("scores")
        _fail(summary, d, violations)
        return
    hooks.before_commit(unit)
    meta = {**stamps.as_json(), "ds": d, "app_id": unit.app_id, "input_fingerprint": unit.fingerprint,
            "rows": rows_out, "job": JOB}
    outcome = committer.commit(unit, adds, meta)
    summary.rows_in += rows_in
    if outcome == "committed":
        summary.rows_out += rows_out
        summary.committed.append(d)
    else:
        summary.units_already_done += 1
    log.info("unit %s: %s, %d rows", unit.app_id, outcome, rows_out)


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
