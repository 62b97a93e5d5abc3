"""Per-batch latency as a mergeable histogram: bounded in size whatever the row count, merged across chunks,
workers and engines like the other statistics, and read back as percentiles.

Bins are log-spaced, 20 per decade from 1 µs to 10⁴ s; a percentile is the geometric middle of its bin, so it is
within 6 % of the exact value (10^(1/40) − 1).
"""
from __future__ import annotations

import math

PER_DECADE = 20
LOW = 1e-6  # seconds: bin 0 holds everything faster
BINS = PER_DECADE * 10  # up to 10⁴ s; the last bin holds everything slower


def bin_of(seconds: float) -> int:
    if seconds <= LOW:
        return 0
    return min(BINS - 1, int(math.log10(seconds / LOW) * PER_DECADE))


def add(hist: dict[str, int], seconds: float, n: int = 1) -> None:
    """Count `n` batches of `seconds` each into `hist` ({bin index as str: count}, JSON-ready)."""
    k = str(bin_of(seconds))
    hist[k] = hist.get(k, 0) + n


def merge(into: dict[str, int], other: dict[str, int] | None) -> dict[str, int]:
    for k, v in (other or {}).items():
        into[k] = into.get(k, 0) + int(v)
    return into


def percentile(hist: dict[str, int], q: float) -> float | None:
    """The q-th percentile (0–100) in seconds, or None for an empty histogram."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for k in sorted(hist, key=int):
        seen += hist[k]
        if seen >= rank:
            return LOW * 10 ** ((int(k) + 0.5) / PER_DECADE)
    return None


def summary_ms(hist: dict[str, int]) -> dict[str, float | None]:
    """p50 / p95 / p99 in milliseconds, rounded for the summary line and the ledger."""
    out = {}
    for q in (50, 95, 99):
        p = percentile(hist, q)
        out[f"p{q}"] = None if p is None else round(p * 1000, 3)
    return out
