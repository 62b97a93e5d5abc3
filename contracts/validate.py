"""The validate job's core: check a table version's partitions against its contract, write nothing but a report.

It uses the same planning, row checks and partition checks as the score job (only the model and the writes are
missing), so `validate` and `score` can never disagree about a partition.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field

from contracts.checks import CheckStats, row_masks
from contracts.enforce import Enforcer
from engine.config import ValidateConfig, config_hash, table_uri
from engine.errors import ContractViolation, UnitFailed
from engine.scoring import ChunkResult, ChunkWork, Stamps, plan_chunks
from engine.snapshot import check_files_exist, file_path, filesystem, iter_file_batches, open_snapshot, select_partitions

log = logging.getLogger("lakescore")


def check_chunk(work: ChunkWork) -> ChunkResult:
    """Read only the checked columns of the chunk's files and accumulate the row checks."""
    rc = work.contract
    fs, base = filesystem(work.input_uri, work.storage_options)
    columns = list(dict.fromkeys([*rc.check_columns(), *rc.contract.key, *filter(None, [rc.contract.event_time]),
                                  *work.drift_edges]))
    stats = CheckStats()
    for path in work.input_files:
        for batch in iter_file_batches(fs, file_path(base, path), columns, work.batch_rows, work.input_schema):
            stats.update(batch, row_masks(batch, rc, work.ds), rc, work.drift_edges)
    return ChunkResult(work.unit, stats.rows, 0, [], stats)


@dataclass
class ValidateSummary:
    job: str
    run_id: str
    config_hash: str
    input_table: str = ""
    input_version: int | None = None
    units_planned: int = 0
    units_passed: int = 0
    units_failed: int = 0
    rows: int = 0
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    violations: list[dict] = field(default_factory=list)
    report: str | None = None


def executor_gather(executor):
    """Gather the row-check statistics of `days` by running check chunks on an executor (Ray, local)."""

    def gather(cfg: ValidateConfig, snap, enforcer: Enforcer, days: list[str]):
        opts = cfg.lake.storage_options
        check_files_exist(snap, days, opts)
        stamps = Stamps("", 0, "", cfg.input.table, snap.version, "", "", None)
        works = []
        for d in days:
            for chunk in plan_chunks([(f.path, f.num_records) for f in snap.files[d]], cfg.target_chunk_rows):
                # One unit name per chunk (`<ds>#<n>`): results arrive in completion order and are merged in
                # plan order (file path order), so which examples a report quotes never depends on timing.
                works.append(ChunkWork(f"{d}#{len(works)}", d, snap.uri, tuple(chunk), "", {}, (), (), "", stamps,
                                       None, cfg.read_batch_rows, storage_options=dict(opts), contract=enforcer.rc,
                                       drift_edges=enforcer.edges, input_schema=snap.schema))
        results: dict[str, CheckStats] = {}
        errors: dict[str, str] = {}
        if works:
            executor.warm_up()
            for item in executor.run(works, None, time.monotonic() + cfg.run.time_budget_s):
                d = item.unit.rsplit("#", 1)[0]
                if isinstance(item, ChunkResult):
                    results[item.unit] = item.checks
                else:
                    errors.setdefault(d, item.error)
        merged: dict[str, CheckStats] = {d: CheckStats() for d in days}
        for w in works:
            if w.unit in results:
                merged[w.ds].merge(results[w.unit])
        return merged, errors

    return gather


def run_validate(cfg: ValidateConfig, gather) -> ValidateSummary:
    """Validate `cfg.input` against its contract; `gather(cfg, snap, enforcer, days)` → (stats by day, errors)."""
    started = time.monotonic()
    s = ValidateSummary("validate", uuid.uuid4().hex, config_hash(cfg))
    opts = cfg.lake.storage_options
    uri = table_uri(cfg.lake, cfg.input.table)
    snap = open_snapshot(cfg.input.table, uri, cfg.input.version, opts)
    s.input_table, s.input_version = cfg.input.table, snap.version
    days, absent = select_partitions(snap, cfg.input.ds)
    enforcer = Enforcer(cfg.input.contract, snap, [], [], opts)
    s.units_planned = len(days) + len(absent)
    verdicts: dict[str, list] = {d: enforcer.verdict(d, 0, None) for d in absent}
    if enforcer.schema_violations:
        verdicts.update({d: enforcer.verdict(d, snap.rows(d) or 0, None) for d in days})
        days = []
    merged, errors = gather(cfg, snap, enforcer, days)
    for d in days:
        if d not in errors:
            verdicts[d] = enforcer.verdict(d, merged[d].rows, merged[d])
            s.rows += merged[d].rows
    for d in sorted(verdicts):
        if verdicts[d]:
            s.failed.append(d)
            s.violations += [{"ds": d, **{k: v for k, v in asdict(x).items() if k in ("check", "column", "rows", "message")}}
                             for x in verdicts[d]]
        else:
            s.passed.append(d)
    s.units_passed, s.units_failed = len(s.passed), len(s.failed) + len(errors)
    s.report = enforcer.publish(cfg.lake.root, "validate", s.run_id, cfg.mlflow)
    log.info("validate %s: %d passed, %d failed in %.1fs; report %s", snap.where(), s.units_passed, s.units_failed,
             time.monotonic() - started, s.report)
    error = None
    if errors:
        d, err = next(iter(errors.items()))
        error = UnitFailed(f"validation of ds={d} crashed: {err}; re-run the job")
    elif s.failed:
        first = s.violations[0]
        error = ContractViolation(f"{len(s.failed)} partition(s) of {snap.where()} violate {cfg.input.contract}: ds "
                                  f"{s.failed[:8]} (first: ds={first['ds']} {first['check']}: {first['message']}); "
                                  f"report {s.report}")
    if error is not None:
        error.summary = s  # the job's summary line still says what passed and what failed
        raise error
    return s
