"""engine.drift: PSI per feature against an independent numpy computation, mergeable histograms, the seeded sample
read straight from a Delta snapshot, and Evidently's drift page (self-contained, no PII)."""
from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, WriterProperties, write_deltalake

from engine.drift import Histograms, evidently_report, feature_drift, sample_rows, stream_reference
from engine.errors import ConfigError
from engine.lake.snapshot import open_snapshot


def numpy_psi(ref_vals: np.ndarray, cur_vals: np.ndarray, edges: np.ndarray, eps: float = 1e-4) -> float:
    """PSI written out from its definition, with np.histogram over [-inf, edges…, inf] (right-open bins)."""
    bounds = np.concatenate([[-np.inf], edges, [np.inf]])
    r = np.histogram(ref_vals[np.isfinite(ref_vals)], bins=bounds)[0]
    c = np.histogram(cur_vals[np.isfinite(cur_vals)], bins=bounds)[0]
    total = 0.0
    for a, b in zip(r / r.sum(), c / c.sum()):
        a, b = max(a, eps), max(b, eps)
        total += (b - a) * np.log(b / a)
    return total


def test_feature_drift_equals_an_independent_numpy_psi_and_flags_the_shifted_column():
    rng = np.random.default_rng(3)
    ref = pa.table({"a": rng.standard_normal(20_000), "b": rng.exponential(1.0, 20_000)})
    cur = pa.table({"a": rng.standard_normal(7_000) + 0.8, "b": rng.exponential(1.0, 7_000)})
    edges, hist = stream_reference(lambda: ref.to_batches(max_chunksize=3000), ["a", "b"], 10)
    current = Histograms(edges)
    for batch in cur.to_batches(max_chunksize=1000):
        current.update(batch)
    rows = feature_drift(hist, edges, current.counts, psi_max=0.25)
    assert [r["column"] for r in rows] == ["a", "b"]
    for r in rows:
        expect = numpy_psi(ref.column(r["column"]).to_numpy(), cur.column(r["column"]).to_numpy(), edges[r["column"]])
        assert r["psi"] == pytest.approx(expect, rel=1e-12, abs=1e-15)
    assert {r["column"]: r["status"] for r in rows} == {"a": "drift", "b": "ok"}
    per = feature_drift(hist, edges, current.counts, psi_max=0.25, per_column={"a": 10.0})
    assert per[0]["status"] == "ok"
    missing = feature_drift(hist, edges, {"a": current.counts["a"]})
    assert missing[1] == {"column": "b", "psi": None, "status": "missing"}


def test_histograms_merge_in_any_split_and_travel_as_json_bytes():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(10_000)
    x[::50] = np.nan
    edges = {"x": np.array([-1.0, 0.0, 0.5, 2.0])}
    t = pa.table({"x": x})
    whole = Histograms(edges).update(t)
    parts = [Histograms(edges).update(b) for b in t.to_batches(max_chunksize=777)]
    merged = Histograms(edges)
    for p in reversed(parts):
        merged.merge(Histograms.from_bytes(p.to_bytes()))
    finite = x[np.isfinite(x)]
    expect = np.histogram(finite, bins=[-np.inf, -1.0, 0.0, 0.5, 2.0, np.inf])[0]
    assert whole.counts["x"].tolist() == merged.counts["x"].tolist() == expect.tolist()
    assert merged.rows == whole.rows == len(x)
    data = whole.to_bytes()
    assert json.loads(data)["counts"]["x"] == expect.tolist()  # plain JSON, no pickle
    with pytest.raises(ValueError, match="different edges"):
        merged.merge(Histograms({"x": np.array([0.0])}))


@pytest.fixture
def small_table(tmp_path):
    uri = str(tmp_path / "t")
    rng = np.random.default_rng(9)
    for day in ["2026-02-01", "2026-02-02", "2026-02-03"]:
        n = 4000
        t = pa.table({"id": pa.array(np.arange(n) + 10_000 * int(day[-1]), pa.int64()), "v": rng.standard_normal(n),
                      "seg": pa.array(rng.choice(["a", "b", "c"], n)), "email": pa.array([f"p{i}@x.org" for i in range(n)]),
                      "ds": pa.array([day] * n)})
        for half in (t.slice(0, n // 2), t.slice(n // 2)):  # two files per day, four row groups per file
            write_deltalake(uri, half, partition_by=["ds"], mode="append",
                            writer_properties=WriterProperties(max_row_group_size=500))
    return uri


def test_sample_is_seeded_bounded_and_made_of_real_rows(small_table):
    snap = open_snapshot("t", small_table)
    days = ["2026-02-01", "2026-02-02"]
    s1 = sample_rows(snap, days, ["id", "v"], 500, seed=1)
    s2 = sample_rows(snap, days, ["id", "v"], 500, seed=1)
    s3 = sample_rows(snap, days, ["id", "v"], 500, seed=2)
    assert s1.column_names == ["id", "v"] and s1.num_rows == 500 and s1.equals(s2) and not s1.equals(s3)
    full = DeltaTable(small_table).to_pyarrow_table(columns=["id", "v", "ds"], filters=[("ds", "in", days)])
    truth = dict(zip(full.column("id").to_pylist(), full.column("v").to_pylist()))
    ids = s1.column("id").to_pylist()
    assert len(set(ids)) == 500 and all(truth[i] == v for i, v in zip(ids, s1.column("v").to_pylist()))
    everything = sample_rows(snap, days, ["id"], 10**6, seed=1)
    assert sorted(everything.column("id").to_pylist()) == sorted(truth)
    with pytest.raises(ConfigError, match="no column"):
        sample_rows(snap, days, ["nope"], 10, seed=1)


def test_evidently_page_is_self_contained_names_the_columns_and_refuses_pii(small_table, tmp_path):
    snap = open_snapshot("t", small_table)
    cols = ["v", "seg"]
    ref = sample_rows(snap, ["2026-02-01", "2026-02-02"], [*cols, "email"], 2000, seed=5)
    cur = sample_rows(snap, ["2026-02-03"], [*cols, "email"], 2000, seed=5)
    cur = cur.set_column(0, "v", pa.array(cur.column("v").to_numpy() + 2.0))
    out = evidently_report(ref, cur, cols, str(tmp_path / "drift.html"), pii=["email"])
    html = open(out, encoding="utf-8").read()
    assert html.lstrip().startswith("<!DOCTYPE html>") and len(html) > 100_000  # the JS bundle is inlined
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r"<link[^>]+href=[\"']https?:", html)
    assert '"v"' in html and '"seg"' in html and "@x.org" not in html  # the sample's PII column never reached it
    with pytest.raises(ConfigError, match="pii"):
        evidently_report(ref, cur, ["v", "email"], str(tmp_path / "x.html"), pii=["email"])


def test_bin_counts_equal_numpy_histogram_semantics_with_ties_and_non_finite_values():
    """The comparison-per-edge counts against an independent reference: searchsorted + bincount on the finite values."""
    from engine.drift import bin_counts

    rng = np.random.default_rng(3)
    for _ in range(300):
        v = np.round(rng.normal(size=int(rng.integers(0, 3000))), 1)  # rounded: many values equal to an edge
        if len(v) > 3:
            v[rng.integers(0, len(v), 3)] = [np.nan, np.inf, -np.inf]
        edges = np.unique(np.round(rng.normal(size=int(rng.integers(0, 12))), 1))
        finite = v[np.isfinite(v)]
        expected = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
        got = bin_counts(v, edges)
        assert np.array_equal(got, expected) and got.sum() == len(finite)


def test_sample_of_a_table_with_many_row_groups_reads_a_bounded_number_of_them(small_table):
    """Above `max_row_groups` the sample comes from that many row groups, not from every one (a uniform sample of
    5,000 rows of a billion-row window would read every row group on the driver); it stays seeded, of real rows,
    and of the size asked. Breaks if the reader goes back to touching every row group that one pick falls in."""
    snap = open_snapshot("t", small_table)
    days = ["2026-02-01", "2026-02-02"]  # 2 days × 2 files × 4 row groups of 500 rows
    s1 = sample_rows(snap, days, ["id", "v"], 600, seed=3, max_row_groups=3)
    assert s1.num_rows == 600 and s1.equals(sample_rows(snap, days, ["id", "v"], 600, seed=3, max_row_groups=3))
    groups = {(i // 10_000, (i % 10_000) // 500) for i in s1.column("id").to_pylist()}
    assert len(groups) <= 3, groups
    full = DeltaTable(small_table).to_pyarrow_table(columns=["id", "v"], filters=[("ds", "in", days)])
    truth = dict(zip(full.column("id").to_pylist(), full.column("v").to_pylist()))
    assert len(set(s1.column("id").to_pylist())) == 600
    assert all(truth[i] == v for i, v in zip(s1.column("id").to_pylist(), s1.column("v").to_pylist()))
    uniform = sample_rows(snap, days, ["id"], 600, seed=3)  # 16 groups ≤ the default bound: every group in reach
    assert len({(i // 10_000, (i % 10_000) // 500) for i in uniform.column("id").to_pylist()}) > 3
