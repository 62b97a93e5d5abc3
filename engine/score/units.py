"""One unit's end of the score job: reconcile its rows, judge its contract, commit it, record the outcome.

`Summary` is the run's one JSON line (an engine.run.RunSummary); each unit lands in exactly one of its lists
(committed, skipped, already done, retracted, failed) and `finish()` counts them, so the counters cannot disagree
with the lists. A failed unit is a `UnitFailure` (its day and why), written as "ds=<day>: <why>" only on the line.
A commit error fails its unit only (`guarded`); the job goes on with the others. `UnitContext` is what every
unit's commit step shares; `ContractEnforcer` is what the step asks of a data contract (contracts.enforce.Enforcer
implements it; this package never imports contracts).

Imports go down: engine.run, engine.lake, engine.score.scoring, engine.work; engine.score.plan and
engine.score.run import this module.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

import pyarrow as pa

from engine.lake import commit as protocol
from engine.config.jobs import ScoreConfig
from engine import latency
from engine.errors import LakescoreError
from engine.lake.snapshot import Snapshot
from engine.run import OFF_LINE, RunSummary
from engine.score.scoring import Stamps
from engine.work import ChunkResult, MergeableStats, RowCheck, UnitWork

log = logging.getLogger("lakescore")
JOB = "score"


@dataclass(frozen=True)
class UnitFailure:
    """One unit that failed, and why; on the summary line it reads "ds=<ds>: <message>" (`Summary.finish`)."""

    ds: str
    message: str

    def line(self) -> str:
        return f"ds={self.ds}: {self.message}"


@dataclass
class Summary(RunSummary):
    """The run's one JSON line. The lists say which units went where; `finish()` sets every counter from them."""

    input_table: str = ""
    input_version: int | None = None
    model: str = ""
    model_version: int | None = None
    output_table: str = ""
    units_planned: int = 0
    units_skipped: int = 0
    units_committed: int = 0
    units_already_done: int = 0
    units_retracted: int = 0
    units_failed: int = 0
    rows_in: int = 0
    rows_out: int = 0
    failed: list[str] = field(default_factory=list)  # the `failures`' lines, set by finish()
    skipped: list[str] = field(default_factory=list)  # up to date, unchanged, superseded, or empty where allowed
    committed: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)  # a concurrent run committed the same input
    superseded: list[str] = field(default_factory=list)  # why: committed from a newer input version
    unchanged: list[str] = field(default_factory=list)  # why: input files only rewritten (compacted) since scored
    retracted: list[str] = field(default_factory=list)  # input day gone: its output replaced with nothing
    restored: list[str] = field(default_factory=list)  # why redone: its files did not back its transaction (RESTORE)
    violations: list[dict] = field(default_factory=list)  # {ds, check, rows, message}: contract failures
    rows_quarantined: int = 0
    report: str | None = None
    phases: dict = field(default_factory=dict)  # seconds: resolve, plan, commit (driver); read, contract, score,
    #                                             write (summed over the workers' chunks)
    latency_ms: dict = field(default_factory=dict)  # per-batch scoring latency p50 / p95 / p99
    rows_per_s: float | None = None  # rows read per second of the run's wall time
    nodes: list[str] = field(default_factory=list)  # where chunks ran (Ray node ids), when the executor says
    outcomes: list[dict] = field(default_factory=list)  # one per unit: {unit, outcome, rows_in, rows_out, …}
    # CPU seconds (user + system) of the driver process so far, all its threads (getrusage RUSAGE_SELF), set by
    # finish(): what the driver's own work costs, which must not grow with the rows (the bench compares sizes).
    driver_cpu_s: float | None = None
    failures: list[UnitFailure] = field(default_factory=list, metadata=OFF_LINE)
    unit_rows: dict[str, tuple[int, int]] = field(default_factory=dict, metadata=OFF_LINE)  # ds → (in, out)

    def __post_init__(self) -> None:
        self.phases = self.run.phases  # the run's phase clock marks the driver phases into the line

    def fail(self, failure: UnitFailure) -> None:
        self.failures.append(failure)

    def count(self, ds: str, rows_in: int, rows_out: int) -> None:
        """Remember one unit's rows for its outcome."""
        self.unit_rows[ds] = (rows_in, rows_out)

    def measure(self, results: list[ChunkResult], committing: float, wall: float) -> None:
        """The workers' phase seconds, per-batch latency percentiles and throughput, for the line and the ledger."""
        worker: dict[str, float] = {}
        hist: dict[str, int] = {}
        for r in results:
            for phase, secs in r.timings.items():
                worker[phase] = worker.get(phase, 0.0) + secs
            latency.merge(hist, r.latency)
        self.phases.update({p: round(v, 3) for p, v in sorted(worker.items())})
        self.phases["commit"] = round(committing, 3)
        self.latency_ms = latency.summary_ms(hist)
        self.rows_per_s = round(self.rows_in / wall, 1) if wall > 0 else None
        self.nodes = sorted({r.node for r in results if r.node})

    def finish(self) -> "Summary":
        self.driver_cpu_s = driver_cpu_seconds()
        self.units_skipped, self.units_committed = len(self.skipped), len(self.committed)
        self.units_already_done, self.units_retracted = len(self.already_done), len(self.retracted)
        self.failed = [f.line() for f in self.failures]
        self.units_failed = len(self.failed)
        outcomes = []
        for outcome, days in (("committed", self.committed), ("skipped", self.skipped),
                              ("already_done", self.already_done), ("retracted", self.retracted)):
            for d in days:
                r_in, r_out = self.unit_rows.get(d, (None, None))
                redone = d in self.restored and outcome in ("committed", "retracted")
                outcomes.append({"unit": d, "outcome": outcome, "rows_in": r_in, "rows_out": r_out,
                                 "input_version": self.input_version if outcome == "committed" else None,
                                 "restored": redone,
                                 "message": "redone: the partition's files did not hold the input its transaction "
                                            "records (restored to an earlier version)" if redone else None})
        for f in self.failures:
            outcomes.append({"unit": f.ds, "outcome": "failed", "rows_in": None, "rows_out": None,
                             "input_version": None, "message": f.message})
        self.outcomes = sorted(outcomes, key=lambda o: (o["unit"], o["outcome"]))
        return self


def driver_cpu_seconds() -> float:
    """User + system CPU seconds of this process (every thread) since it started."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return round(ru.ru_utime + ru.ru_stime, 3)


# Errors that fail one unit's commit, not the run: the other units go on (the run still exits non-zero).
def _unit_errors() -> tuple[type[BaseException], ...]:
    from deltalake.exceptions import DeltaError

    return (LakescoreError, OSError, DeltaError)


def _noop(*_args) -> None:
    return None


@dataclass
class Hooks:
    """Seams for tests of concurrency and crashes: called after the up-to-date check and before each commit."""

    after_check: Callable[[list[protocol.Unit]], None] = _noop
    before_commit: Callable[[protocol.Unit], None] = _noop
    # With the unit's ds, just before its row check's second stage runs (on the thread that runs it).
    before_second_stage: Callable[[str], None] = _noop


class ContractEnforcer(Protocol):
    """What the score job asks of the input's data contract (contracts.enforce.Enforcer)."""

    schema_violations: list  # the table's shape breaks the contract: every unit fails
    units: dict[str, dict]  # ds → the unit's line of the contract report

    @property
    def quarantines(self) -> bool: ...

    @property
    def digest(self) -> str: ...

    @property
    def bad_row_budget(self) -> float: ...

    @property
    def quarantine_table_schema(self) -> pa.Schema: ...

    def row_check(self) -> RowCheck: ...

    def verdict(self, ds: str, rows: int, stats: MergeableStats | None) -> list[Any]:
        """The unit's violations (dataclasses with check, rows, message); empty: it passes."""

    def publish(self, root: str, job: str, run_id: str, mlflow_cfg=None, extra: dict | None = None) -> str:
        """Write the contract report; returns where it is."""


@dataclass
class UnitContext:
    """What the commit step of every unit shares."""

    cfg: ScoreConfig
    summary: Summary
    snap: Snapshot
    committer: protocol.Committer
    stamps: Stamps
    hooks: Hooks
    enforcer: ContractEnforcer | None = None
    qcommitter: protocol.Committer | None = None
    # (merged stats, UnitWork): the row check's second stage, before the verdict
    complete: Callable[[MergeableStats, UnitWork], None] | None = None


def guarded(ctx: UnitContext, d: str, unit: protocol.Unit, results: list[ChunkResult], step: Callable[[], None]) -> None:
    """Run one unit's commit step; a storage or commit error fails that unit only (recorded), the run goes on."""
    try:
        step()
    except _unit_errors() as e:
        for r in results:
            ctx.committer.discard_unless_landed(unit, r.adds)
            if ctx.qcommitter is not None:
                ctx.qcommitter.discard_unless_landed(_quarantine_unit(ctx, d, unit), r.quarantine_adds)
        msg = " ".join(str(e).split())[:300]
        ctx.summary.fail(UnitFailure(d, f"commit failed: {type(e).__name__}: {msg}"))
        log.error("unit %s: commit failed (%s: %s); the other units go on", unit.app_id, type(e).__name__, msg)


def fail_unit(summary: Summary, ds: str, violations: list[dict]) -> None:
    """A unit failed its contract: recorded for the summary line; nothing of it is written."""
    summary.fail(UnitFailure(ds, "; ".join(f"{v['check']}: {v['message']}" for v in violations[:3])))
    summary.violations += [{"ds": ds, "check": v["check"], "rows": v.get("rows"), "message": v["message"]}
                           for v in violations]


def _unit_meta(ctx: UnitContext, d: str, unit: protocol.Unit, rows: int) -> dict:
    return {**ctx.stamps.as_json(), "ds": d, "app_id": unit.app_id, "input_fingerprint": unit.fingerprint,
            "rows": rows, "job": JOB}


def _record(ctx: UnitContext, d: str, unit: protocol.Unit, outcome: str, rows_in: int, rows_out: int) -> None:
    s = ctx.summary
    s.rows_in += rows_in
    s.count(d, rows_in, rows_out)
    if outcome == "committed":
        s.rows_out += rows_out
        s.committed.append(d)
    elif outcome == "already-done":
        s.already_done.append(d)
    else:
        s.skipped.append(d)
        s.superseded.append(f"ds={d}: a concurrent run committed it from a newer {unit.input_table} input version "
                            f"than this run's {unit.input_version}; not replaced (--force replaces it)")
    log.info("unit %s: %s, %d rows", unit.app_id, outcome, rows_out)


def retract_unit(ctx: UnitContext, d: str, unit: protocol.Unit) -> None:
    """The input day is gone: replace the unit's output (and its quarantine) with nothing, recorded like any commit."""
    ctx.hooks.before_commit(unit)
    if ctx.qcommitter is not None:
        qunit = _quarantine_unit(ctx, d, unit)
        ctx.qcommitter.commit(qunit, [], {"app_id": qunit.app_id, "ds": d, "input_fingerprint": unit.fingerprint,
                                          "rows": 0, "source_version": ctx.snap.version, "job": JOB})
    outcome = ctx.committer.commit(unit, [], _unit_meta(ctx, d, unit, 0))
    if outcome == "committed":
        ctx.summary.retracted.append(d)
        log.warning("unit %s: input day ds=%s is gone from %s; its output was removed", unit.app_id, d,
                    ctx.snap.where())
    else:
        _record(ctx, d, unit, outcome, 0, 0)


def _quarantine_unit(ctx: UnitContext, d: str, unit: protocol.Unit) -> protocol.Unit:
    qv = {"ds": d, "source_table": ctx.cfg.input.table}
    return protocol.Unit(protocol.app_id("quarantine", qv, ["ds", "source_table"]), qv, unit.fingerprint,
                         unit.input_table, unit.input_version)


def commit_unit(ctx: UnitContext, d: str, unit: protocol.Unit, results: list[ChunkResult],
                stats: MergeableStats | None = None) -> None:
    """Commit one unit whose chunks are all in (`stats`: their merged row-check statistics, the second stage done),
    unless its rows do not reconcile or it breaks its contract."""
    summary, qcommitter = ctx.summary, ctx.qcommitter
    rows_in = sum(r.rows_in for r in results)
    rows_out = sum(r.rows_out for r in results)
    rows_q = sum(r.rows_quarantined for r in results)
    adds = [a for r in results for a in r.adds]
    qadds = [a for r in results for a in r.quarantine_adds]
    opts = ctx.cfg.lake.storage_options

    def drop(*which: str) -> None:
        if "scores" in which:
            protocol.discard(ctx.committer.uri, adds, opts)
        if "quarantine" in which and qcommitter is not None:
            protocol.discard(qcommitter.uri, qadds, opts)

    failure = _unreconciled(ctx.snap, d, rows_in, rows_out, rows_q)
    if failure is not None:
        drop("scores", "quarantine")
        summary.fail(failure)
        return
    violations = _violations(ctx, d, results, rows_in, stats)
    if qcommitter is not None:
        violations = _commit_quarantine(ctx, d, unit, qadds, rows_in, rows_q, violations)
    if ctx.enforcer is not None:
        ctx.enforcer.units[d].update(status="fail" if violations else "quarantined" if rows_q else "pass",
                                     rows_quarantined=rows_q)
    if violations:
        drop("scores")
        fail_unit(summary, d, violations)
        return
    ctx.hooks.before_commit(unit)
    outcome = ctx.committer.commit(unit, adds, _unit_meta(ctx, d, unit, rows_out))
    _record(ctx, d, unit, outcome, rows_in, rows_out)


def _unreconciled(snap: Snapshot, d: str, rows_in: int, rows_out: int, rows_q: int) -> UnitFailure | None:
    """A unit whose rows do not add up (the log's count vs the rows read; read vs scored + quarantined) fails."""
    expected = snap.rows(d)
    if expected is not None and rows_in != expected:
        return UnitFailure(d, f"rows do not reconcile (log {expected}, read {rows_in}): the Delta log of "
                              f"{snap.where(d)} counts {expected} rows but its files hold {rows_in}; the table's "
                              "statistics are wrong: rewrite that partition upstream, then re-run")
    if rows_out + rows_q != rows_in:  # a bug in the scoring pass: never commit a unit that lost or invented rows
        return UnitFailure(d, f"rows do not reconcile (read {rows_in}, scored {rows_out}, quarantined "
                              f"{rows_q}); nothing written for this day; this is a bug, please report it")
    return None


def _violations(ctx: UnitContext, d: str, results: list[ChunkResult], rows_in: int,
                stats: MergeableStats | None) -> list[dict]:
    """The unit's contract verdict (`stats`: its chunks' merged, after the row check's second stage) and the output's
    own score check."""
    violations = []
    if ctx.enforcer is not None:
        violations = [asdict(v) for v in ctx.enforcer.verdict(d, rows_in, stats)]
    bad_scores = sum(r.bad_scores for r in results)
    if bad_scores:  # the output's own contract: one finite score in [0, 1] per input row
        violations.append({"check": "output_score", "rows": bad_scores,
                           "message": f"{bad_scores} score(s) are not finite or outside [0, 1]"})
    return violations


def _commit_quarantine(ctx: UnitContext, d: str, unit: protocol.Unit, qadds: list, rows_in: int, rows_q: int,
                       violations: list[dict]) -> list[dict]:
    """Quarantine mode: rejected rows are the evidence, committed whatever happens to the scores; row-level
    violations give way to the bad-row budget. Returns the unit's violations in this mode."""
    qunit = _quarantine_unit(ctx, d, unit)
    qmeta = {"app_id": qunit.app_id, "ds": d, "input_fingerprint": unit.fingerprint, "rows": rows_q,
             "source_version": ctx.snap.version, "job": JOB}
    ctx.qcommitter.commit(qunit, qadds, qmeta)
    ctx.summary.rows_quarantined += rows_q
    budget = ctx.enforcer.bad_row_budget
    over = rows_in and rows_q / rows_in > budget
    violations = [v for v in violations if not v.get("row_level")]
    if over:
        violations.append({"check": "bad_row_budget", "rows": rows_q,
                           "message": f"{rows_q} of {rows_in} rows quarantined ({rows_q / rows_in:.2%}) "
                                      f"exceeds the bad-row budget {budget:.2%}; quarantine kept, scores not written"})
    return violations
