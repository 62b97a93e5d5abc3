"""The validate job's core: check a table version's partitions against its contract, write nothing but a report.

It uses the same planning, row checks and partition checks as the score job (only the model and the writes are
missing), so `validate` and `score` can never disagree about a partition. Its summary line is a
`ValidateSummary`, built from the run's engine.run.Run like every job's. Imports: engine and contracts only.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field

from contracts.checks import CheckStats, row_masks
from contracts.enforce import Enforcer
from engine.config.jobs import ValidateConfig
from engine.lake.paths import require_root, table_uri
from engine.tables.drift_reference import TABLE as REFERENCE_TABLE
from engine.errors import ContractViolation, UnitFailed
from engine.lake import scratch as scratch_space
from engine.progress import Progress
from engine.run import Run, RunSummary
from engine.score.scoring import plan_chunks
from engine.lake.snapshot import check_files_exist, file_path, filesystem, iter_file_batches, open_snapshot, select_partitions
from engine.executor import side_run
from engine.work import ChunkResult, ChunkWork, UnitWork, timed

log = logging.getLogger("lakescore")


def check_chunk(unit: UnitWork, chunk: ChunkWork, _bundle=None) -> ChunkResult:
    """The validate job's chunk function: read only the checked columns of the chunk's files, fold the row checks."""
    check = unit.row_check
    rc, edges = check.rc, check.edges
    fs, base = filesystem(unit.input_uri, unit.storage_options)
    columns = list(dict.fromkeys([*check.columns(), *edges]))
    stats = CheckStats()
    timings: dict[str, float] = {}
    for path in chunk.files:
        for batch in timed(iter_file_batches(fs, file_path(base, path), columns, unit.batch_rows, unit.input_schema),
                           timings):
            t = time.perf_counter()
            stats.update(batch, row_masks(batch, rc, unit.ds), rc, edges)
            timings["contract"] = timings.get("contract", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    stats = check.seal(stats, unit, chunk)
    timings["contract"] = timings.get("contract", 0.0) + time.perf_counter() - t
    return ChunkResult(unit.unit, stats.rows, 0, [], stats, timings=timings)


@dataclass
class ValidateSummary(RunSummary):
    """The validate run's one JSON line."""

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
    phases: dict = field(default_factory=dict)  # seconds: resolve, plan (driver); read, contract (workers' sum)
    rows_per_s: float | None = None
    outcomes: list[dict] = field(default_factory=list)  # one per day: {unit, outcome (passed | failed), rows_in, …}

    def __post_init__(self) -> None:
        self.phases = self.run.phases  # the run's phase clock marks the driver phases into the line


def executor_gather(executor):
    """Gather the row-check statistics of `days` by running check chunks on an executor (Ray, Spark, local)."""

    def gather(cfg: ValidateConfig, snap, enforcer: Enforcer, days: list[str]):
        opts = cfg.lake.storage_options
        check_files_exist(snap, days, opts)
        row_check = enforcer.row_check()
        units: dict[str, UnitWork] = {}
        chunks: list[ChunkWork] = []
        scratch_id = uuid.uuid4().hex  # this gather's scratch folder (spilled key hashes)
        for i, d in enumerate(days):
            planned = plan_chunks([(f.path, f.num_records) for f in snap.files[d]], cfg.target_chunk_rows)
            units[d] = UnitWork(unit=d, ds=d, input_uri=snap.uri, input_schema=snap.schema, task=check_chunk,
                                batch_rows=cfg.read_batch_rows, storage_options=dict(opts), row_check=row_check,
                                **scratch_space.unit_scratch(cfg.lake.root, scratch_id, i, planned, snap.rows(d)))
            for chunk in planned:
                chunks.append(ChunkWork(d, tuple(chunk), len(chunks)))
        deadline = time.monotonic() + cfg.run.time_budget_s
        results: dict[int, CheckStats] = {}
        errors: dict[str, str] = {}
        timings: dict[str, float] = {}
        if chunks:
            executor.warm_up()
            bar = Progress(len(chunks), "chunks")
            for item in executor.run(units, chunks, None, deadline):
                bar.advance(rows=item.rows_in if isinstance(item, ChunkResult) else 0)
                if isinstance(item, ChunkResult):
                    results[item.chunk] = item.checks
                    for phase, secs in item.timings.items():
                        timings[phase] = timings.get(phase, 0.0) + secs
                else:
                    errors.setdefault(item.unit, item.error)
            bar.close()
        # Results arrive in completion order and are merged in plan order (file path order), so which examples
        # a report quotes never depends on timing or on the engine.
        merged: dict[str, CheckStats] = {d: CheckStats() for d in days}
        for c in chunks:
            if c.index in results:
                merged[c.unit].merge(results[c.index])
        for d in days:  # key uniqueness of the days read in several chunks: one task per key-hash bucket
            try:
                if d not in errors:
                    row_check.complete(merged[d], units[d], side_run(executor), deadline)
            except UnitFailed as e:
                errors[d] = str(e)
        scratch_space.remove_scratch(cfg.lake.root, scratch_id, opts)
        return merged, errors, timings

    # The drift reference window is read by the executor's tasks, not the driver (looked up when used: the engine
    # starts lazily, after the inputs resolve).
    gather.reference_run = lambda *args: side_run(executor)(*args)
    return gather


def run_validate(cfg: ValidateConfig, gather) -> ValidateSummary:
    """Validate `cfg.input` against its contract; `gather(cfg, snap, enforcer, days)` → (stats by day, errors by
    day, worker seconds by phase)."""
    s = ValidateSummary(Run.start("validate", cfg))
    opts = cfg.lake.storage_options
    require_root(cfg.lake)  # a missing lake is exit 2 naming lake.root, not "fix input.table"
    uri = table_uri(cfg.lake, cfg.input.table)
    snap = open_snapshot(cfg.input.table, uri, cfg.input.version, opts)
    s.input_table, s.input_version = cfg.input.table, snap.version
    days, absent = select_partitions(snap, cfg.input.ds)
    enforcer = Enforcer(cfg.input.contract, snap, [], [], opts, reference_table=table_uri(cfg.lake, REFERENCE_TABLE),
                        run=getattr(gather, "reference_run", None), deadline=s.run.deadline)
    s.units_planned = len(days) + len(absent)
    verdicts: dict[str, list] = {d: enforcer.verdict(d, 0, None) for d in absent}
    if enforcer.schema_violations:
        verdicts.update({d: enforcer.verdict(d, snap.rows(d) or 0, None) for d in days})
        days = []
    s.run.mark("resolve")
    merged, errors, timings = gather(cfg, snap, enforcer, days)
    s.phases.update({p: round(v, 3) for p, v in sorted(timings.items())})
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
    s.outcomes = sorted(
        [{"unit": d, "outcome": "passed", "rows_in": merged[d].rows if d in merged else 0} for d in s.passed]
        + [{"unit": d, "outcome": "failed", "message": "; ".join(f"{v['check']}: {v['message']}" for v in s.violations
                                                                  if v["ds"] == d)[:300]} for d in s.failed]
        + [{"unit": d, "outcome": "failed", "message": err[:300]} for d, err in errors.items()],
        key=lambda o: o["unit"])
    s.rows_per_s = round(s.rows / s.run.elapsed(), 1)
    s.report = enforcer.publish(cfg.lake.root, "validate", s.run_id, cfg.mlflow)
    log.info("validate %s: %d passed, %d failed in %.1fs; report %s", snap.where(), s.units_passed, s.units_failed,
             s.run.elapsed(), s.report)
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
