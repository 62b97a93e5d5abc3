"""engine/evaluation: metrics from mergeable statistics against scikit-learn, partition invariance, slices, key
hashes, bootstrap coverage on simulated data with a known truth, and paired champion/challenger deltas."""
from __future__ import annotations

import importlib.util
import math
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pytest
from sklearn import metrics as skm

from engine.errors import ConfigError, LakescoreError
from engine.evaluation import (EvalStats, MetricsSpec, compare, compute_metrics, reliability, row_key_hash,
                               score_histogram)
from engine.evaluation import curves
from tests.conftest import ROOT

SEGMENTS, CHANNELS = np.array(["consumer", "smb", "enterprise"]), np.array(["web", "app", "store"])


def binary_data(n: int, seed: int = 0, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(np.int64)
    x = rng.standard_normal(n) + shift * y - 1.2
    score = 1.0 / (1.0 + np.exp(-x))
    cols = {"segment": SEGMENTS[rng.integers(0, 3, n)], "channel": CHANNELS[rng.integers(0, 3, n)]}
    keys = pa.table({"entity_id": pa.array([f"e{i:07d}" for i in range(n)]), "seq": pa.array(np.arange(n))})
    return keys, y, score, cols


def by(rows, **kw) -> dict:
    """The rows matching every key=value, keyed by metric."""
    return {r["metric"]: r for r in rows if all(r[k] == v for k, v in kw.items())}


def stats_for(spec, keys, y, scores: dict, cols: dict, chunks: int = 1, seed: int = 0) -> EvalStats:
    """EvalStats over the rows split into `chunks` random parts, each its own object, merged in random order."""
    n = len(y)
    rng = np.random.default_rng(seed)
    part = rng.integers(0, chunks, n)
    objs = []
    for c in rng.permutation(chunks):
        idx = np.flatnonzero(part == c)
        st = EvalStats(spec, list(scores))
        st.FLUSH_ROWS = 5000  # exercises both buffered and direct accumulation
        for lo in range(0, len(idx), 3000 if c % 2 else 7000):
            b = idx[lo:lo + (3000 if c % 2 else 7000)]
            st.update(row_key_hash(keys.take(b), ["entity_id", "seq"], spec.seed), y[b],
                      {m: s[b] for m, s in scores.items()}, {k: pa.array(v[b]) for k, v in cols.items()})
        objs.append(EvalStats.from_bytes(st.to_bytes()) if c % 2 else st)
    out = objs[0]
    for o in objs[1:]:
        out.merge(o)
    return out


SPEC = MetricsSpec(thresholds=(0.3, 0.5), top_k_pct=(1.0, 5.0), slices=(("segment",), ("segment", "channel")),
                   min_support=100, bootstrap=100)


def test_binary_metrics_match_sklearn_overall_and_per_slice():
    keys, y, s, cols = binary_data(40_000)
    stats = stats_for(SPEC, keys, y, {"m/1": s}, cols)
    rows = compute_metrics(stats)
    fine = stats.view("m/1", "fine")
    seg, chan = cols["segment"], cols["channel"]
    cases = [("overall", (0, ()), "", np.ones(len(y), bool)), ("segment=smb", (1, ("smb",)), "smb", seg == "smb"),
             ("segment=enterprise & channel=app", (2, ("enterprise", "app")), "enterprise,app",
              (seg == "enterprise") & (chan == "app"))]
    for name, key, values, mask in cases:
        got, ys, ss = by(rows, slice=name), y[mask], s[mask]
        sid = stats.slices.index(key)
        pos, neg = fine[sid, 1].astype(float), fine[sid, 0].astype(float)
        auc = skm.roc_auc_score(ys, ss)
        assert abs(got["roc_auc"]["value"] - auc) <= min(1e-4, curves.roc_auc_bound(pos, neg) + 1e-12)
        ap = skm.average_precision_score(ys, ss)
        assert abs(got["pr_auc"]["value"] - ap) <= curves.average_precision_bound(pos, neg) + 1e-12
        assert abs(got["pr_auc"]["value"] - ap) <= 1e-3
        assert got["log_loss"]["value"] == pytest.approx(skm.log_loss(ys, ss), rel=1e-12)
        assert got["brier"]["value"] == pytest.approx(skm.brier_score_loss(ys, ss), rel=1e-12)
        for t in SPEC.thresholds:
            pred = ss >= t
            assert got[f"precision@{t:g}"]["value"] == pytest.approx(skm.precision_score(ys, pred), abs=1e-12)
            assert got[f"recall@{t:g}"]["value"] == pytest.approx(skm.recall_score(ys, pred), abs=1e-12)
            assert got[f"f1@{t:g}"]["value"] == pytest.approx(skm.f1_score(ys, pred), abs=1e-12)
        order = np.argsort(-ss, kind="stable")
        for k in SPEC.top_k_pct:
            nk = math.ceil(k * len(ys) / 100)
            tp = ys[order[:nk]].sum()
            pbound, rbound = curves.top_k_bound(pos, neg, k)
            assert abs(got[f"precision@top{k:g}%"]["value"] - tp / nk) <= pbound + 1e-12
            assert abs(got[f"recall@top{k:g}%"]["value"] - tp / ys.sum()) <= rbound + 1e-12
            assert abs(got[f"precision@top{k:g}%"]["value"] - tp / nk) <= 0.02
        edges = np.arange(11) / 10
        b = np.minimum(np.searchsorted(edges, ss, side="right") - 1, 9)
        ece = sum(abs(ss[b == i].sum() - ys[b == i].sum()) for i in range(10)) / len(ys)
        assert got["ece_binned"]["value"] == pytest.approx(ece, rel=1e-10)  # the plug-in; "ece" is bias-corrected
        assert got["base_rate"]["value"] == pytest.approx(ys.mean(), rel=1e-12)
        assert got["mean_score"]["value"] == pytest.approx(ss.mean(), rel=1e-12)
        assert got["support"]["value"] == len(ys) == got["support"]["support"]
        assert got["positives"]["value"] == ys.sum()
        assert all(r["status"] == "ok" and r["slice_values"] == values for r in got.values())
        for m in ("roc_auc", "brier", "precision@0.5", "precision@top5%"):
            assert got[m]["ci_low"] < got[m]["value"] < got[m]["ci_high"]


def test_regression_metrics_match_sklearn_and_mape_leaves_zero_labels_out():
    rng = np.random.default_rng(3)
    n = 30_000
    y = np.round(rng.gamma(2.0, 50.0, n) + 1000.0, 1)
    y[rng.random(n) < 0.05] = 0.0
    p = y + rng.normal(2.0, 20.0, n)
    seg = SEGMENTS[rng.integers(0, 3, n)]
    keys = pa.table({"entity_id": pa.array(np.arange(n).astype(str)), "seq": pa.array(np.arange(n))})
    spec = MetricsSpec(task="regression", slices=(("segment",),), bootstrap=50)
    for chunks in (1, 5):
        rows = compute_metrics(stats_for(spec, keys, y, {"r/1": p}, {"segment": seg}, chunks=chunks))
        for name, mask in (("overall", np.ones(n, bool)), ("segment=smb", seg == "smb")):
            got, ys, ps = by(rows, slice=name), y[mask], p[mask]
            nz = ys != 0
            assert got["mae"]["value"] == pytest.approx(skm.mean_absolute_error(ys, ps), rel=1e-12)
            assert got["rmse"]["value"] == pytest.approx(math.sqrt(skm.mean_squared_error(ys, ps)), rel=1e-12)
            assert got["r2"]["value"] == pytest.approx(skm.r2_score(ys, ps), rel=1e-10)
            assert got["mape"]["value"] == pytest.approx(
                skm.mean_absolute_percentage_error(ys[nz], ps[nz]), rel=1e-12)
            assert got["mape_zero_labels"]["value"] == (~nz).sum()
            assert got["bias"]["value"] == pytest.approx((ps - ys).mean(), rel=1e-10)
            assert got["mean_label"]["value"] == pytest.approx(ys.mean(), rel=1e-12)
            assert got["mean_prediction"]["value"] == pytest.approx(ps.mean(), rel=1e-12)
            assert got["support"]["value"] == mask.sum()
            assert got["mae"]["ci_low"] < got["mae"]["value"] < got["mae"]["ci_high"]


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for key, va in ra.items():
            vb = rb[key]
            if isinstance(va, float) and isinstance(vb, float):
                assert va == pytest.approx(vb, rel=1e-12, abs=1e-12), (ra, key, vb)
            else:
                assert va == vb, (ra, key, vb)


def test_any_partitioning_and_serialization_give_the_same_metrics():
    keys, y, s, cols = binary_data(30_000, seed=5)
    s2 = np.clip(s + np.random.default_rng(9).normal(0, 0.05, len(s)), 0, 1)
    one = stats_for(SPEC, keys, y, {"a/1": s, "b/2": s2}, cols, chunks=1)
    seven = stats_for(SPEC, keys, y, {"a/1": s, "b/2": s2}, cols, chunks=7, seed=11)
    back = EvalStats.from_bytes(seven.to_bytes())
    assert one.rows == seven.rows == back.rows == len(y)
    for m in ("a/1", "b/2"):
        for name in ("fine", "coarse"):  # integer counts: identical
            order = [sorted(one.slices).index(x) for x in one.slices]
            a = one.view(m, name)[np.argsort(order)]
            b = seven.view(m, name)[np.argsort([sorted(seven.slices).index(x) for x in seven.slices])]
            assert np.array_equal(a, b)
    _same_rows(compute_metrics(one), compute_metrics(seven))
    _same_rows(compute_metrics(seven), compute_metrics(back))
    _same_rows(compare(one, "a/1", "b/2"), compare(back, "a/1", "b/2"))
    _same_rows(reliability(one, "a/1"), reliability(back, "a/1"))
    assert score_histogram(one, "b/2") == score_histogram(seven, "b/2")


def test_slices_are_discovered_named_and_never_dropped_under_support():
    spec = MetricsSpec(slices=(("segment",), ("segment", "channel"), ("tier",)), min_support=50, bootstrap=20)
    st = EvalStats(spec, ["m/1"])
    rng = np.random.default_rng(2)
    # Batch 1: a dictionary column; batch 2: plain strings with a value batch 1 lacked, and nulls; ints for tier.
    seg1 = pa.DictionaryArray.from_arrays(pa.array([0, 1] * 100, pa.int32()), pa.array(["smb", "enterprise", "x"]))
    st.update(rng.integers(0, 2**63, 200, dtype=np.uint64), np.tile([0, 0, 1, 1], 50), {"m/1": rng.random(200)},
              {"segment": seg1, "channel": pa.array(["app"] * 200), "tier": np.ones(200, np.int64)})
    seg2 = pa.array(["smb"] * 30 + [None] * 10 + ["consumer"] * 20)
    st.update(rng.integers(0, 2**63, 60, dtype=np.uint64), np.tile([0, 1], 30), {"m/1": rng.random(60)},
              {"segment": seg2, "channel": pa.array(["web"] * 60), "tier": np.full(60, 2)})
    rows = compute_metrics(st)
    support = {r["slice"]: (r["support"], r["status"]) for r in rows if r["metric"] == "roc_auc"}
    assert support == {"overall": (260, "ok"), "segment=(null)": (10, "under_support"),
                       "segment=consumer": (20, "under_support"), "segment=enterprise": (100, "ok"),
                       "segment=smb": (130, "ok"), "segment=(null) & channel=web": (10, "under_support"),
                       "segment=consumer & channel=web": (20, "under_support"),
                       "segment=enterprise & channel=app": (100, "ok"), "segment=smb & channel=app": (100, "ok"),
                       "segment=smb & channel=web": (30, "under_support"), "tier=1": (200, "ok"),
                       "tier=2": (60, "ok")}
    r = by(rows, slice="segment=smb & channel=web")["roc_auc"]
    assert (r["slice_columns"], r["slice_values"]) == ("segment,channel", "smb,web")
    assert [r["slice"] for r in rows if r["metric"] == "support"][0] == "overall"
    one_class = by(rows, slice="overall")
    assert one_class["roc_auc"]["value"] is not None
    st2 = EvalStats(MetricsSpec(bootstrap=10, min_support=1), ["m/1"])
    st2.update(np.arange(10, dtype=np.uint64), np.zeros(10), {"m/1": np.linspace(0, 1, 10)}, {})
    undefined = by(compute_metrics(st2), slice="overall")
    assert undefined["roc_auc"]["value"] is None and undefined["roc_auc"]["status"] == "undefined"
    assert undefined["log_loss"]["status"] == "ok"
    no_boot = EvalStats(MetricsSpec(bootstrap=0, min_support=1), ["m/1"])
    no_boot.update(np.arange(10, dtype=np.uint64), np.tile([0, 1], 5), {"m/1": np.linspace(0, 1, 10)}, {})
    assert all(r["ci_low"] is None and r["ci_high"] is None for r in compute_metrics(no_boot))


def test_row_key_hash_depends_on_values_not_on_types_chunks_or_batches():
    n = 1000
    ids = np.arange(n) * 7919
    ts = np.datetime64("2024-01-01T00:00:00", "us") + np.arange(n).astype("timedelta64[s]")
    names = [f"ent-{i:05d}" if i % 10 else "é" * (i % 13) for i in range(n)]
    base = pa.table({"id": pa.array(ids, pa.int64()), "ts": pa.array(ts), "name": pa.array(names)})
    other = pa.table({"id": pa.array(ids, pa.int32()),
                      "ts": pa.array(ts).cast(pa.timestamp("ns", tz="UTC")),
                      "name": pa.chunked_array([pa.array(names[:300], pa.large_string()),
                                                pa.array(names[300:], pa.large_string())]).dictionary_encode()})
    cols = ["id", "ts", "name"]
    h = row_key_hash(base, cols, 7)
    assert h.dtype == np.uint64 and len(np.unique(h)) == n
    assert np.array_equal(h, row_key_hash(other, cols, 7))
    assert np.array_equal(h[400:], row_key_hash(base.slice(400), cols, 7))
    assert np.array_equal(h, np.concatenate([row_key_hash(b, cols, 7) for b in base.to_batches(max_chunksize=128)]))
    assert (h != row_key_hash(base, cols, 8)).mean() > 0.99
    assert (h != row_key_hash(base, ["id", "name", "ts"], 7)).mean() > 0.99
    swapped = pa.table({"name": pa.array(["ab", "a", None, ""]), "id": pa.array([1, 1, 1, 1])})
    assert len(set(row_key_hash(swapped, ["name", "id"], 0).tolist())) == 4
    buckets = np.bincount((h >> np.uint64(56)).astype(np.intp), minlength=256)
    assert buckets.max() < 20  # ~4 per bucket: spread, not clustered


def binormal_auc_se(mu: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """True AUC and its standard error for binormal scores (negatives N(0,1), positives N(mu,1)).

    Hanley & McNeil's variance of the Mann-Whitney AUC, (A(1-A) + (n1-1)(Q1-A²) + (n0-1)(Q2-A²)) / (n1·n0), with
    Q1 = P(two positives both outrank one negative) and Q2 = P(one positive outranks two negatives) taken exactly for
    this model (each a bivariate normal orthant probability with correlation 1/2) rather than from Hanley-McNeil's
    exponential approximation, which is 8 % off for binormal scores at this AUC."""
    from scipy.stats import multivariate_normal

    auc = NormalDist().cdf(mu / math.sqrt(2))
    q = float(multivariate_normal(mean=[0, 0], cov=[[1, 0.5], [0.5, 1]]).cdf([mu / math.sqrt(2)] * 2))
    var = (auc * (1 - auc) + (n_pos - 1) * (q - auc**2) + (n_neg - 1) * (q - auc**2)) / (n_pos * n_neg)
    return auc, math.sqrt(var)


def test_bootstrap_intervals_cover_known_true_values_at_nominal_rate():
    """Binormal scores (negatives N(0,1), positives N(mu,1), through a sigmoid): true AUC = Φ(mu/√2); base rate
    0.3 by construction; true Brier score from 4M draws (its error ~1e-4 ≪ the intervals' half-width ~0.02).

    600 datasets of 1000 rows, 95 % intervals from 200 replicates: coverage has binomial sd 0.9 %, so the band
    0.92–0.975 passes a correct method and fails 90 % or 99 % intervals labelled 95 % (≥ 2.5 sd outside). The mean
    half-width must also be 1.96 analytic standard errors within ±15 % (Hanley-McNeil for the AUC, binomial for the
    base rate): this catches intervals of the right coverage by luck but the wrong width (e.g. 93 % or 98 %
    intervals, which the coverage band alone cannot tell from 95 % at this many datasets)."""
    mu, pi, n, sims = 1.0, 0.3, 1000, 600
    rng = np.random.default_rng(123)
    yb = rng.random(4_000_000) < pi
    sb = 1 / (1 + np.exp(-(rng.standard_normal(len(yb)) + mu * yb)))
    true_brier = float(np.mean((sb - yb) ** 2))
    keys = pa.table({"id": pa.array(np.arange(n))})
    hits = {"roc_auc": 0, "base_rate": 0, "brier": 0}
    half = {m: [] for m in hits}
    se = {"roc_auc": [], "base_rate": []}
    true_auc = NormalDist().cdf(mu / math.sqrt(2))
    truth = {"roc_auc": true_auc, "base_rate": pi, "brier": true_brier}
    for i in range(sims):
        # The seed is part of the method (it picks buckets and weights): each dataset gets its own.
        spec = MetricsSpec(bootstrap=200, seed=i, thresholds=(), top_k_pct=())
        key_hash = row_key_hash(keys, ["id"], spec.seed)
        y = (rng.random(n) < pi).astype(np.int64)
        s = 1 / (1 + np.exp(-(rng.standard_normal(n) + mu * y)))
        st = EvalStats(spec, ["m/1"])
        st.update(key_hash, y, {"m/1": s}, {})
        got = by(compute_metrics(st), slice="overall")
        for m in hits:
            hits[m] += got[m]["ci_low"] <= truth[m] <= got[m]["ci_high"]
            half[m].append((got[m]["ci_high"] - got[m]["ci_low"]) / 2)
        se["roc_auc"].append(binormal_auc_se(mu, int(y.sum()), n - int(y.sum()))[1])
        se["base_rate"].append(math.sqrt(pi * (1 - pi) / n))
    coverage = {m: h / sims for m, h in hits.items()}
    z = NormalDist().inv_cdf(0.975)
    width = {m: float(np.mean(half[m]) / (z * np.mean(se[m]))) for m in se}
    print("coverage", coverage, "half-width / analytic", width)
    assert all(0.92 <= c <= 0.975 for c in coverage.values()), coverage
    assert all(0.85 <= w <= 1.15 for w in width.values()), width


def test_compare_identical_challenger_is_zero_and_a_better_one_is_above_zero():
    keys, y, s, cols = binary_data(20_000, seed=8, shift=0.8)
    better = 1 / (1 + np.exp(-(np.log(s / (1 - s)) + 0.8 * (y - 0.25))))
    stats = stats_for(SPEC, keys, y, {"champ/1": s, "same/1": s.copy(), "better/2": better}, cols, chunks=3)
    same = compare(stats, "champ/1", "same/1")
    assert same and all(r["value"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0 for r in same
                        if r["value"] is not None)
    assert all(r["baseline"] == "champ/1" and r["model"] == "same/1" for r in same)
    assert not {"support", "positives", "base_rate"} & {r["metric"] for r in same}
    d = by(compare(stats, "champ/1", "better/2"), slice="overall")
    want = skm.roc_auc_score(y, better) - skm.roc_auc_score(y, s)
    assert d["roc_auc"]["value"] == pytest.approx(want, abs=2e-4)
    assert 0 < d["roc_auc"]["ci_low"] < d["roc_auc"]["value"] < d["roc_auc"]["ci_high"]
    assert d["pr_auc"]["ci_low"] > 0 and d["log_loss"]["ci_high"] < 0
    assert d["brier"]["value"] == pytest.approx(skm.brier_score_loss(y, better) - skm.brier_score_loss(y, s), rel=1e-9)


def test_reliability_bins_and_score_histogram_match_numpy():
    keys, y, s, cols = binary_data(20_000, seed=4)
    stats = stats_for(SPEC, keys, y, {"m/1": s}, cols, chunks=2)
    rel = reliability(stats, "m/1")
    b = np.minimum((s * 10).astype(int), 9)
    assert [r["count"] for r in rel] == np.bincount(b, minlength=10).tolist()
    for k, r in enumerate(rel):
        assert (r["bin_low"], r["bin_high"]) == pytest.approx((k / 10, (k + 1) / 10))
        if r["count"]:
            assert r["mean_score"] == pytest.approx(s[b == k].mean(), rel=1e-12)
            assert r["frac_positive"] == pytest.approx(y[b == k].mean(), rel=1e-12)
    hist = score_histogram(stats, "m/1", bins=20)
    assert len(hist["edges"]) == 21 and sum(hist["positive"]) == y.sum() and sum(hist["negative"]) == (1 - y).sum()
    ref_pos = np.histogram(s[y == 1], bins=20, range=(0, 1))[0]
    near_edge = np.abs(s * 20 - np.round(s * 20)) * 0.05 < 4e-4  # within one fine bin of a display edge
    assert np.abs(np.array(hist["positive"]) - ref_pos).sum() <= 2 * near_edge.sum()


def test_bad_inputs_fail_with_one_line_reasons():
    st = EvalStats(MetricsSpec(slices=(("segment",),)), ["m/1"])
    h = np.arange(3, dtype=np.uint64)
    with pytest.raises(ConfigError, match="labels are not all 0/1"):
        st.update(h, np.array([0, 1, 2]), {"m/1": np.array([0.1, 0.2, 0.3])}, {"segment": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match=r"probabilities in \[0, 1\]"):
        st.update(h, np.array([0, 1, 1]), {"m/1": np.array([0.1, 1.2, 0.3])}, {"segment": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="probabilities"):
        st.update(h, np.array([0, 1, 1]), {"m/1": np.array([0.1, np.nan, 0.3])}, {"segment": ["a", "b", "c"]})
    with pytest.raises(LakescoreError, match="slice column 'segment' missing"):
        st.update(h, np.array([0, 1, 1]), {"m/1": np.array([0.1, 0.2, 0.3])}, {})
    with pytest.raises(LakescoreError, match="different specs"):
        st.merge(EvalStats(MetricsSpec(), ["m/1"]))
    with pytest.raises(ConfigError, match="thresholds"):
        MetricsSpec(thresholds=(1.5,))
    with pytest.raises(LakescoreError, match="bad magic"):
        EvalStats.from_bytes(b"\x80\x04pickle")
    assert st.rows == 0


def test_eval_metrics_benchmark_runs_and_reports_rows_per_s():
    spec = importlib.util.spec_from_file_location("eval_metrics_bench", ROOT / "benchmarks" / "eval_metrics.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.run(rows=60_000, batch=10_000, repeat=1)
    assert out["eval_rows_per_s_per_core"] > 0 and out["slices"] == 20 and out["bootstrap"] == 200


def test_every_interval_contains_its_estimate_and_ece_is_bias_corrected():
    """Calibrated scores (true ECE 0) on small slices: the plug-in binned ECE is biased up and its bootstrap
    replicates again, so a percentile interval sat above the estimate (the demo's `segment=smb 0.0028 [0.0033,
    0.0088]`). Every reported interval must hold its estimate, metrics and paired deltas alike."""
    rng = np.random.default_rng(5)
    n = 6000
    s = rng.uniform(0.02, 0.6, n)
    y = (rng.random(n) < s).astype(np.int64)  # calibrated by construction
    other = np.clip(s + rng.normal(0, 0.02, n), 0.001, 0.999)
    cols = {"segment": SEGMENTS[rng.integers(0, 3, n)], "channel": CHANNELS[rng.integers(0, 3, n)]}
    keys = pa.table({"entity_id": pa.array([f"e{i:07d}" for i in range(n)]), "seq": pa.array(np.arange(n))})
    stats = stats_for(SPEC, keys, y, {"champ/1": s, "chall/2": other}, cols, chunks=2)
    rows = compute_metrics(stats) + compare(stats, "champ/1", "chall/2")
    checked = [r for r in rows if r["ci_low"] is not None and r["value"] is not None]
    assert len(checked) > 100
    outside = [(r["model"], r["slice"], r["metric"], r["value"], r["ci_low"], r["ci_high"]) for r in checked
               if not r["ci_low"] <= r["value"] <= r["ci_high"]]
    assert outside == []
    ece = {r["slice"]: r for r in rows if r["metric"] == "ece" and r["model"] == "champ/1"}
    plug = {r["slice"]: r["value"] for r in rows if r["metric"] == "ece_binned" and r["model"] == "champ/1"}
    # the correction lowers the biased plug-in on every slice (true ECE is 0), and the plug-in has no interval
    assert all(ece[k]["value"] < plug[k] for k in ece) and len(ece) == len(plug) > 5
    assert all(r["ci_low"] is None for r in rows if r["metric"] == "ece_binned")


def test_roc_and_pr_points_match_sklearn_and_the_confusion_matrix_counts_rows():
    from engine.evaluation.metrics import roc_pr_curves

    keys, y, s, cols = binary_data(20_000, seed=9)
    stats = stats_for(SPEC, keys, y, {"m/1": s}, cols, chunks=2)
    cur = roc_pr_curves(stats, "m/1")
    fpr, tpr, thr = skm.roc_curve(y, s)
    pts = cur["points"]
    assert 20 <= len(pts) <= 400 and (cur["positives"], cur["negatives"]) == (int(y.sum()), int((1 - y).sum()))
    for p in pts:
        # the point's own counts against the rows: score >= its threshold (exact but for a row within one fine bin)
        pred = s >= p["threshold"]
        assert abs(p["tp"] - int((pred & (y == 1)).sum())) <= 2 and abs(p["fp"] - int((pred & (y == 0)).sum())) <= 2
        # and on sklearn's curve: its TPR at our FPR lies between the steps around it (bin resolution)
        i = np.searchsorted(fpr, p["fpr"], side="right") - 1
        j = np.searchsorted(fpr, p["fpr"], side="left")
        assert tpr[max(j - 1, 0)] - 2e-3 <= p["tpr"] <= tpr[min(i + 1, len(tpr) - 1)] + 2e-3
    prec, rec, _ = skm.precision_recall_curve(y, s)
    for p in pts[len(pts) // 10:]:
        k = np.argmin(np.abs(rec - p["tpr"]))
        assert abs(p["precision"] - prec[k]) < 0.02
    for c in cur["confusion"]:
        pred = s >= c["threshold"]
        assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum()),
                                                        int((~pred & (y == 1)).sum()), int((~pred & (y == 0)).sum()))
