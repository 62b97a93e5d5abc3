"""The benchmark's score check (benchmarks/verify.py): a part whose output is not (a)'s, row by row, stops the bench.

A row count cannot tell: each case below writes as many rows as the input."""
from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import verify  # noqa: E402

KEYS = np.arange(1, 1001, dtype=np.int64)
RAW = np.random.default_rng(5).random(1000).astype(np.float32)


def shuffled(keys, scores, seed=1):
    order = np.random.default_rng(seed).permutation(len(keys))
    return keys[order], scores[order]


def test_the_same_scores_in_another_order_pass(tmp_path):
    pq.write_table(pa.table({"entity_id": KEYS[::-1], "score": RAW[::-1]}), tmp_path / "part-0.parquet")
    got = verify.compare("c", (KEYS, RAW), verify.read_parquet_scores(tmp_path))
    assert got == {"rows_compared": 1000, "max_abs_diff": 0.0}


def test_a_score_off_by_more_than_the_tolerance_stops_the_bench():
    wrong = RAW.copy()
    wrong[17] += np.float32(1e-4)
    with pytest.raises(verify.ScoresDiffer, match=r"c′: 1 of 1,000 scores differ .* 18: "):
        verify.compare("c′", (KEYS, RAW), shuffled(KEYS, wrong))
    nan = RAW.copy()
    nan[3] = np.nan
    with pytest.raises(verify.ScoresDiffer, match="1 of 1,000"):
        verify.compare("b", (KEYS, RAW), (KEYS, nan))


def test_float32_rounding_within_the_tolerance_passes():
    near = (RAW.astype(np.float64) + 4e-7).astype(np.float32)
    assert verify.compare("b", (KEYS, RAW), (KEYS, near))["max_abs_diff"] <= verify.TOLERANCE


def test_a_repeated_key_in_place_of_another_stops_the_bench():
    keys = KEYS.copy()
    keys[10] = keys[11]  # same row count: one row scored twice, one never
    with pytest.raises(verify.ScoresDiffer, match=r"1 keys missing \(e.g. \[11\]\).*1 repeated"):
        verify.compare("b", (KEYS, RAW), (keys, RAW))
