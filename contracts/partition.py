"""Checks on a whole partition (volume, freshness, drift, key uniqueness): no rows to quarantine, they fail the unit.

All of them work from what is already at hand: row counts from the Delta log, and the merged `CheckStats`
that the scoring pass produced, so they add no pass over the data. Drift compares those histograms with the
reference window's (engine.drift computes them, engine.tables.drift_reference stores and reuses them).
"""
from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass

import numpy as np

from contracts.checks import CheckStats
from contracts.spec import ResolvedContract
from engine.drift import psi


@dataclass(frozen=True)
class Violation:
    check: str  # e.g. "volume", "range:f03"
    column: str | None
    rows: int | None  # failing rows (row checks), None for partition checks
    message: str
    examples: tuple = ()
    row_level: bool = False


def _lookback(rc: ResolvedContract, ds: str, history: dict[str, int | None]) -> list[int | None]:
    """Row counts of the `lookback` partitions before `ds` (None: the log has no count for it)."""
    return [history[d] for d in sorted(history) if d < ds][-rc.contract.volume.lookback:]


def volume(rc: ResolvedContract, ds: str, rows: int, history: dict[str, int | None]) -> Violation | None:
    """Row count against the median of the previous partitions whose count the log knows (and emptiness)."""
    c = rc.contract
    if rows == 0:
        if c.allow_empty:
            return None
        return Violation("volume", None, None, f"partition ds={ds} is empty or missing (the contract does not allow empty partitions)")
    if c.volume is None:
        return None
    window = _lookback(rc, ds, history)
    before = [n for n in window if n is not None]  # an unknown count is unknown, not 0
    if not before:
        return None
    ref = float(np.median(before))
    ratio = rows / ref if ref else float("inf")
    if ratio < c.volume.min_ratio or ratio > c.volume.max_ratio:
        unknown = f"; {len(window) - len(before)} more had no row count in the log" if len(before) < len(window) else ""
        return Violation("volume", None, None,
                         f"partition ds={ds} has {rows} rows, {ratio:.2f}× the median {ref:.0f} of the previous "
                         f"{len(before)} partition(s){unknown} (allowed {c.volume.min_ratio}–{c.volume.max_ratio}×)")
    return None


def volume_note(rc: ResolvedContract, ds: str, history: dict[str, int | None]) -> str | None:
    """Says how many of the partitions the volume check looks back on had no row count (left out), if any."""
    if rc.contract.volume is None:
        return None
    window = _lookback(rc, ds, history)
    unknown = sum(n is None for n in window)
    if not unknown:
        return None
    known = len(window) - unknown
    used = f"the median uses the other {known}" if known else "the volume ratio was not checked"
    return (f"{unknown} of the previous {len(window)} partition(s) have no row count in the log (a table converted to "
            f"Delta or written without statistics): left out of the volume check; {used}")


def freshness(rc: ResolvedContract, newest_ds: str | None, today: dt.date | None = None) -> Violation | None:
    c = rc.contract
    if c.max_age_days is None or newest_ds is None:
        return None
    today = today or dt.datetime.now(dt.timezone.utc).date()
    age = (today - dt.date.fromisoformat(newest_ds)).days
    if age > c.max_age_days:
        return Violation("freshness", None, None,
                         f"newest partition ds={newest_ds} is {age} days old (the contract allows {c.max_age_days})")
    return None


def drift_features(rc: ResolvedContract) -> list[str]:
    d = rc.contract.drift
    if d is None:
        return []
    floats = [n for n, s in rc.columns.items() if s.type == "float" and not s.pii]
    if not d.features:
        return floats
    return [n for n in floats if any(fnmatch.fnmatchcase(n, p) for p in d.features)]


def drift(rc: ResolvedContract, ds: str, stats: CheckStats, ref_hist: dict[str, np.ndarray]) -> list[Violation]:
    d = rc.contract.drift
    if d is None or stats.rows == 0:
        return []
    out = []
    for f, ref in ref_hist.items():
        cur = stats.hist.get(f)
        if cur is None:
            continue
        value = psi(ref, np.asarray(cur))
        limit = d.per_feature.get(f, d.psi_max)
        if value > limit:
            out.append(Violation(f"drift:{f}", f, None, f"feature {f} drifted in ds={ds}: PSI {value:.3f} > {limit} "
                                                        f"against the reference window {d.reference}"))
    return out


def row_violations(rc: ResolvedContract, ds: str, stats: CheckStats) -> list[Violation]:
    """Row-check counts of a unit, plus key uniqueness, as violations."""
    out = []
    for check, n in sorted(stats.failed.items()):
        kind, col = check.split(":", 1)
        out.append(Violation(check, col, n, f"{n} row(s) of ds={ds} fail {kind} on column {col!r}",
                             tuple(stats.examples.get(check, ())), row_level=True))
    dups = stats.duplicate_keys()
    if dups:
        out.append(Violation("unique_key", ",".join(rc.contract.key), dups,
                             f"{dups} row(s) of ds={ds} share a key {rc.contract.key} with another row"))
    return out
