"""engine.evaluation.keyjoin: joins on key hashes are only candidates, settled on the key values.

Broken builds these catch: a `find` that returns rows for absent hashes or misses present ones (checked against a
dict built here); a key check that lets a shared hash or a null key through (the evaluation would join one key's
score with another's label); a `newest` whose choice among revisions differs from the exact path's rule (largest
label time, the earliest row on a tie)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from engine.evaluation import keyjoin
from engine.evaluation.join import _LABEL_TS, newest_per_key


def test_find_returns_each_present_hash_with_its_row_and_nothing_else():
    rng = np.random.default_rng(3)
    right = rng.permutation(np.arange(1000, 3000, 2, dtype=np.uint64))
    left = np.sort(rng.choice(np.arange(500, 3500, dtype=np.uint64), 800, replace=False))
    where = {int(h): r for r, h in enumerate(right)}
    i, r = keyjoin.Index(right).find(left)
    assert [int(h) for h in left[i]] == [int(h) for h in left if int(h) in where]
    assert all(where[int(left[a])] == b for a, b in zip(i, r))
    assert keyjoin.Index(right).repeats() == 0 and keyjoin.Index(np.array([5, 1, 5, 5], np.uint64)).repeats() == 2
    e, f = keyjoin.Index(np.zeros(0, np.uint64)).find(left)
    assert len(e) == len(f) == 0


def test_a_shared_hash_or_a_null_key_is_a_mismatch_never_a_match():
    left = pa.table({"k": [1, 2, None], "t": [10, 20, 30]})
    right = pa.table({"k": [1, 7, None], "t": [10, 20, 30]})
    keyjoin.check_same_keys(left, np.array([0]), right, np.array([0]), ["k", "t"])  # equal keys: no error
    with pytest.raises(keyjoin.Mismatch):  # row 1 of each: same "hash" position, different keys
        keyjoin.check_same_keys(left, np.array([0, 1]), right, np.array([0, 1]), ["k", "t"])
    with pytest.raises(keyjoin.Mismatch):  # nulls never join (as in Acero)
        keyjoin.check_same_keys(left, np.array([2]), right, np.array([2]), ["k", "t"])


def test_newest_keeps_the_row_the_exact_path_keeps():
    rng = np.random.default_rng(5)
    n = 2000
    keys = rng.integers(0, 300, n)
    ts = rng.integers(0, 20, n)  # many ties of one key's times
    t = pa.table({"k": keys, _LABEL_TS: ts, "row": np.arange(n)})
    want = sorted(newest_per_key(t, ["k"]).column("row").to_pylist())
    rows = np.arange(n)
    got = keyjoin.newest(keyjoin.key_hash(t, ["k"]), ts, rows, t, ["k"])
    assert sorted(got.rows.tolist()) == want
    assert np.all(np.diff(got.sorted.astype(np.float64)) > 0)  # one row per key, hashes ascending
    shared = np.zeros(n, np.uint64)  # every key one hash: the grouping check refuses it
    with pytest.raises(keyjoin.Mismatch):
        keyjoin.newest(shared, ts, rows, t, ["k"])
