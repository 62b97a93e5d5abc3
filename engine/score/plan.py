"""The score job's plan: which units this run scores, which it skips, which it retracts.

A unit is one (ds, model_name, model_version) with its input fingerprint (the day's files plus the contract's
digest). `plan_units` lists the selected days' units and the retractions (output days of this model whose input
day is gone), records the empty or missing days (a no-op where the contract allows it, else a volume failure),
and keeps only the units that are not `up_to_date`:

- a unit whose recorded fingerprint matches, or that was committed from a newer input version (superseded), or
  whose input day was only rewritten (compacted, `dataChange: false`) since the version it was scored from, is
  skipped unless forced, but only where the partition's files back that record (their fingerprint stamps,
  engine.score.scoring.FINGERPRINT, read from the log's statistics, equal the recorded fingerprint); a unit whose
  files do not (a RESTORE to an earlier version; files written before the stamp existed) is redone and listed as
  `restored`.

Imports go down: engine.lake (commit protocol, delta_log, snapshot), engine.score.scoring, engine.score.units;
engine.score.run imports this module.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from deltalake import DeltaTable

from engine.config.jobs import ScoreConfig
from engine.lake import commit as protocol
from engine.lake.delta_log import CommitLog
from engine.lake.snapshot import Snapshot
from engine.models.registry import ModelRef
from engine.score.scoring import PARTITION_COLUMNS
from engine.score.units import JOB, ContractEnforcer, Summary, fail_unit

log = logging.getLogger("lakescore")


@dataclass
class ScorePlan:
    """The units of one run: all those of the selected days (`units`, by ds), the days to score (`pending`) and
    the units to retract (input day gone: output replaced with nothing), by ds."""

    units: dict[str, protocol.Unit]
    pending: list[str]
    retract: dict[str, protocol.Unit]

    def by_app(self) -> dict[str, tuple[str, protocol.Unit]]:
        return {u.app_id: (d, u) for d, u in self.units.items()}


def unit_of(cfg: ScoreConfig, snap: Snapshot, ref: ModelRef, digest: str, d: str) -> protocol.Unit:
    """The unit of day `d` for model `ref`: its application id, partition and input fingerprint."""
    pv = {"ds": d, "model_name": ref.name, "model_version": ref.version}
    return protocol.Unit(app_id=protocol.app_id(JOB, pv, PARTITION_COLUMNS), partition_values=pv,
                         fingerprint=snap.fingerprint(d, digest), input_table=cfg.input.table,
                         input_version=snap.version, context=digest)


def plan_units(cfg: ScoreConfig, snap: Snapshot, ref: ModelRef, days: list[str], absent: list[str], *,
               out: DeltaTable, enforcer: ContractEnforcer | None, summary: Summary, force: bool,
               evidence: protocol.Evidence, inputs: CommitLog) -> ScorePlan:
    """Plan the run over the selected `days` (with files) and `absent` ones (see the module docstring): the units
    to score and to retract; skipped and failed days are recorded in `summary`."""
    digest = enforcer.digest if enforcer else ""
    units = {d: unit_of(cfg, snap, ref, digest, d) for d in days}
    # Output days of this model whose input day is gone (retracted upstream): replaced with nothing.
    gone = [d for d in _scored_days(out, ref.name, ref.version) if d not in snap.files and _selected(d, cfg.input.ds)]
    retract = {d: dataclasses.replace(unit_of(cfg, snap, ref, digest, d), empty=True) for d in gone}
    summary.units_planned = len(units) + len(set(absent) | set(gone))
    for d in absent:
        if d in retract:
            continue
        # An empty or missing day: a no-op where the contract allows it, else a volume violation.
        if enforcer is not None and not enforcer.verdict(d, 0, None):
            summary.skipped.append(d)
            continue
        fail_unit(summary, d, [{"check": "volume", "rows": 0, "message": f"no rows in {snap.where()} (empty or missing partition)"}])
    pending = [d for d in units if not up_to_date(out, units[d], force, summary, evidence, inputs)]
    retract = {d: u for d, u in retract.items() if not up_to_date(out, u, force, summary, evidence)}
    log.info("input %s: %d unit(s) planned, %d up to date or superseded, %d to score, %d to retract%s", snap.where(),
             summary.units_planned, len(summary.skipped), len(pending), len(retract), " (forced)" if force else "")
    return ScorePlan(units=units, pending=pending, retract=retract)


def _selected(ds: str, spec: str) -> bool:
    """Whether `ds` is inside the run's `input.ds` selection ("all" | day | "a..b"; ISO dates sort as strings)."""
    if spec == "all":
        return True
    lo, _, hi = spec.partition("..")
    return lo <= ds <= (hi or lo)


def _scored_days(out: DeltaTable, model_name: str, model_version: int) -> list[str]:
    """Days holding output of this model version, from the log's partition values (no data read)."""
    parts = out.partitions(file_pruning_predicate=[("model_name", "=", model_name), ("model_version", "=", str(model_version))])
    return sorted({p["ds"] for p in parts})


def up_to_date(out: DeltaTable, unit: protocol.Unit, force: bool, summary: Summary, evidence: protocol.Evidence,
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


def _rewritten_since(out: DeltaTable, unit: protocol.Unit, inputs: CommitLog) -> int | None:
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
