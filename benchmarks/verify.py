"""Every part's output checked against (a)'s, row by row: the same keys, each exactly once, and every score within
TOLERANCE of the raw limit's. A fast but wrong configuration stops the bench (exit 1) instead of being reported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

TOLERANCE = 1e-6


class ScoresDiffer(Exception):
    """A part's scores are not (a)'s: the message says which part, how many rows, and the first differing keys."""


def read_parquet_scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    t = ds.dataset(str(path), format="parquet").to_table(columns=["entity_id", "score"])
    return t.column("entity_id").to_numpy(), t.column("score").to_numpy()


def read_delta_scores(uri: str) -> tuple[np.ndarray, np.ndarray]:
    from deltalake import DeltaTable

    t = DeltaTable(uri).to_pyarrow_table(columns=["entity_id", "score"])
    return t.column("entity_id").to_numpy(), t.column("score").to_numpy()


def compare(name: str, reference: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]) -> dict:
    """Join `got` to `reference` on entity_id; raise ScoresDiffer on a missing, extra or repeated key, or a score
    more than TOLERANCE away. Returns the join's figures for the JSON."""
    ref_keys, ref_scores = reference
    keys, scores = got
    ro, go = np.argsort(ref_keys, kind="stable"), np.argsort(keys, kind="stable")
    ref_keys, ref_scores, keys, scores = ref_keys[ro], ref_scores[ro], keys[go], scores[go]
    repeated = int(len(keys) - len(np.unique(keys)))
    if repeated or len(keys) != len(ref_keys) or not np.array_equal(keys, ref_keys):
        missing = np.setdiff1d(ref_keys, keys)
        extra = np.setdiff1d(keys, ref_keys)
        raise ScoresDiffer(f"{name}: {len(keys):,} rows against (a)'s {len(ref_keys):,}: {len(missing):,} keys missing "
                           f"(e.g. {missing[:5].tolist()}), {len(extra):,} extra (e.g. {extra[:5].tolist()}), "
                           f"{repeated:,} repeated; its output is not the input scored once")
    diff = np.abs(scores.astype(np.float64) - ref_scores.astype(np.float64))
    diff[np.isnan(scores) != np.isnan(ref_scores)] = np.inf
    bad = np.flatnonzero(~(diff <= TOLERANCE) & ~(np.isnan(scores) & np.isnan(ref_scores)))
    if len(bad):
        shown = ", ".join(f"{keys[i]}: {scores[i]!r} vs {ref_scores[i]!r}" for i in bad[:5])
        raise ScoresDiffer(f"{name}: {len(bad):,} of {len(keys):,} scores differ from (a)'s by more than {TOLERANCE:g} "
                           f"(max {float(np.max(diff[bad])):.3g}; entity_id: got vs raw — {shown})")
    return {"rows_compared": int(len(keys)), "max_abs_diff": float(diff.max()) if len(diff) else 0.0}
