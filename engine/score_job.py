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
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

from engine import commit as protocol
from engine.config import ScoreConfig, config_hash, table_uri
from engine.errors import ContractViolation, LakescoreError, UnitFailed
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
        from engine.scoring import score_chunk

        for w in works:
            if time.monotonic() > deadline:
                raise UnitFailed("time budget exhausted; raise run.time_budget_s")
            yield score_chunk(w, bundle)


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


def run_score(cfg: ScoreConfig, executor: Executor, force: bool = False, hooks: Hooks | None = None,
              summary: Summary | None = None) -> Summary:
    hooks = hooks or Hooks()
    started = time.monotonic()
    deadline = started + cfg.run.time_budget_s
    summary = summary or Summary(JOB, uuid.uuid4().hex, config_hash(cfg))
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
    _check_columns(cfg, snap, bundle)

    fschema = file_schema(snap.schema, cfg.input.key_columns, cfg.input.passthrough_columns, cfg.output.score_column)
    tschema = table_schema(fschema)
    out_uri = table_uri(cfg.lake, cfg.output.table)
    summary.output_table = cfg.output.table
    out = protocol.open_or_create(out_uri, tschema, PARTITION_COLUMNS, opts)
    committer = protocol.Committer(out_uri, out.version(), tschema, PARTITION_COLUMNS, summary.run_id,
                                   cfg.run.commit_retries, opts)

    units = {
        d: protocol.Unit(
            protocol.app_id(JOB, pv := {"ds": d, "model_name": ref.name, "model_version": ref.version}, PARTITION_COLUMNS),
            pv,
            snap.fingerprint(d),
        )
        for d in days
    }
    summary.units_planned = len(units) + len(absent)
    for d in absent:
        # Without a contract that allows empty days, a requested day with no rows fails closed.
        summary.failed.append(f"ds={d}: no rows in {snap.where()} (empty or missing partition)")
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
                      cfg.model.device, cfg.model.micro_batch_rows, None, dict(opts))
            for c in chunks
        ]
    by_app = {u.app_id: (d, u) for d, u in units.items()}
    results: dict[str, list[ChunkResult]] = {a: [] for a in expected}
    errors: dict[str, str] = {}
    for item in executor.run(works, bundle, deadline) if works else ():
        if isinstance(item, ChunkFailure):
            errors.setdefault(item.unit, item.error)
        else:
            results[item.unit].append(item)
        done = len(results[item.unit]) + (item.unit in errors)
        if done < expected[item.unit] and item.unit not in errors:
            continue
        if item.unit in errors:
            continue
        d, unit = by_app[item.unit]
        _commit(cfg, summary, snap, d, unit, results[item.unit], committer, stamps, hooks)
    for app, err in errors.items():
        d, _unit = by_app[app]
        for r in results[app]:
            protocol.discard(out_uri, r.adds, opts)
        summary.failed.append(f"ds={d}: {err}")
    summary.units_failed = len(summary.failed)
    summary.units_committed = len(summary.committed)
    log.info("score run %s finished in %.1fs", summary.run_id, time.monotonic() - started)
    if absent and len(summary.failed) == len(absent):
        raise ContractViolation(
            f"{len(absent)} requested day(s) have no rows in {snap.where()}: {absent[:5]}; "
            "other units were committed; re-run once the data has landed"
        )
    if summary.failed:
        raise UnitFailed(f"{len(summary.failed)} unit(s) failed: {summary.failed[0]}; re-run redoes only those units")
    return summary


def _commit(cfg, summary, snap, d, unit, results, committer, stamps, hooks) -> None:
    rows_in = sum(r.rows_in for r in results)
    rows_out = sum(r.rows_out for r in results)
    adds = [a for r in results for a in r.adds]
    expected = snap.rows(d)
    if rows_out != rows_in or (expected is not None and rows_in != expected):
        protocol.discard(committer.uri, adds, cfg.lake.storage_options)
        summary.failed.append(f"ds={d}: rows do not reconcile (log {expected}, read {rows_in}, scored {rows_out})")
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


__all__ = ["run_score", "Hooks", "Summary", "ChunkFailure", "Executor", "LakescoreError"]
