"""Drift where it concentrates (issue 22, part 3), and the evaluate job's drift reference built by the workers
(issue 20, item 4).

Real parts: the demo lake (Delta), scored by the score job, with a shift planted in one slice of one day of the
features table; the evaluate job on a real local Ray (the session's) and in process; `drift_reference` and
`drift_metrics` read back with deltalake. Every expected number comes from numpy / scipy on rows read with
deltalake here (quantile edges, np.digitize bins, PSI and scipy's Wasserstein distance), sharing no code with
engine/drift.py.
"""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake
from scipy import stats as sps

from conftest import XGB, score_config
from engine.config import EvaluateConfig, load_config, resolve_paths
from engine.evaluation.job import run_evaluate
from engine.executor import LocalExecutor
from jobs.score import run_score
from test_driver_work import WINDOW as REFERENCE_DAYS
from test_driver_work import _DriverReads, _numpy_reference, _ray_executor
from test_evaluate import report_of

PLANTED, SHIFT, REGION = "f03", 1.0, "east"  # f03 moves by one standard deviation in region=east only
DAY = "2026-01-04"  # the evaluated window (one day); the reference is REFERENCE_DAYS
SLICES = "slices=[[region], [segment], [region, segment, channel]]"  # the 3-way cross: ~80 rows each, under support
MIN_SUPPORT = 200


@pytest.fixture(scope="module")
def planted(demo_root, tmp_path_factory):
    """The demo lake scored by the champion on every day, then f03 of the window's region=east rows shifted."""
    lake = tmp_path_factory.mktemp("slicedrift") / "lake"
    shutil.copytree(demo_root / "lake", lake)
    run_score(score_config(lake, demo_root), LocalExecutor())
    feats = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "=", DAY)]).to_pandas()
    east = feats["region"] == REGION
    feats.loc[east, PLANTED] = (feats.loc[east, PLANTED] + SHIFT).astype(np.float32)
    write_deltalake(str(lake / "features"), feats, mode="overwrite", predicate=f"ds = '{DAY}'", partition_by=["ds"])
    return lake


def config(lake, demo_root, *overrides: str) -> EvaluateConfig:
    base = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", f"models.champion=models:/{XGB}@champion",
            "models.challengers=[]", f"window={DAY}", "as_of=2026-01-20T00:00:00Z", SLICES,
            f"min_support={MIN_SUPPORT}", "gates.min_support=50", "metrics.bootstrap=20",
            f"drift.reference={REFERENCE_DAYS[0]}..{REFERENCE_DAYS[-1]}", 'drift.columns=["f0?"]',
            "drift.sample_rows=0"]
    return resolve_paths(load_config(EvaluateConfig, None, [*base, *overrides]))


@pytest.fixture(scope="module")
def evaluated(planted, demo_root, ray_local):
    """One evaluation on Ray, the driver's Parquet reads counted: (summary, report dict, rows the driver read)."""
    mp = pytest.MonkeyPatch()
    try:
        reads = _DriverReads(mp)
        s = run_evaluate(config(planted, demo_root), _ray_executor(planted, demo_root))
    finally:
        mp.undo()
    return s, report_of(s), reads.rows


# ------------------------------------------------------------------ independent numbers (numpy, scipy, deltalake)


def _features(lake, days: list[str]) -> pd.DataFrame:
    return DeltaTable(str(lake / "features")).to_pandas(filters=[("ds", "in", days)])


def _slice_masks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {"overall": np.ones(len(frame), bool)}
    for cols in (["region"], ["segment"], ["region", "segment", "channel"]):
        for values, idx in frame.groupby(cols).groups.items():
            values = values if isinstance(values, tuple) else (values,)
            mask = np.zeros(len(frame), bool)
            mask[frame.index.get_indexer(idx)] = True
            out[" & ".join(f"{c}={v}" for c, v in zip(cols, values))] = mask
    return out


def _expected(lake, column: str) -> dict[str, dict]:
    """Per slice: PSI and Wasserstein-1 (in reference standard deviations of the binned reference) of `column`."""
    ref, cur = _features(lake, REFERENCE_DAYS).reset_index(drop=True), _features(lake, [DAY]).reset_index(drop=True)
    edges = np.unique(np.quantile(ref[column].to_numpy(np.float64), np.linspace(0, 1, 11)[1:-1]))
    # each bin's mass at one point: the inner bins' midpoints, the two open bins at their finite edge
    points = np.concatenate([[edges[0]], (edges[:-1] + edges[1:]) / 2, [edges[-1]]])
    rmask, cmask = _slice_masks(ref), _slice_masks(cur)
    out = {}
    for name in sorted(set(rmask) | set(cmask)):
        r = ref[column].to_numpy(np.float64)[rmask.get(name, np.zeros(len(ref), bool))]
        c = cur[column].to_numpy(np.float64)[cmask.get(name, np.zeros(len(cur), bool))]
        p = np.bincount(np.digitize(r, edges), minlength=len(points)).astype(float)
        q = np.bincount(np.digitize(c, edges), minlength=len(points)).astype(float)
        row = {"support_reference": len(r), "support_current": len(c), "psi": None, "wasserstein": None,
               "reference_hist": p, "current_hist": q}
        if len(r) and len(c):
            ps, qs = np.maximum(p / p.sum(), 1e-4), np.maximum(q / q.sum(), 1e-4)
            row["psi"] = float(np.sum((qs - ps) * np.log(qs / ps)))
            spread = np.sqrt(np.cov(points, aweights=p, bias=True))
            row["wasserstein"] = sps.wasserstein_distance(points, points, p, q) / spread
        out[name] = row
    return out


# ------------------------------------------------------------------ issue 20 item 4: the reference, on the workers


def test_the_evaluate_reference_is_built_by_the_workers_and_the_driver_reads_no_row(evaluated):
    """main built it on the driver (stream_reference over every reference file, in this process): rows > 0."""
    _s, _rep, driver_rows = evaluated
    assert driver_rows == 0


def test_the_stored_evaluate_reference_equals_numpy_on_the_window(planted, evaluated):
    """Features and the champion's scores: the edges and counts stored in drift_reference (read with deltalake)
    equal numpy's on the reference window read with deltalake (no stride: the window holds 9000 rows)."""
    stored = DeltaTable(str(planted / "drift_reference")).to_pandas()
    by_column = {r.column: r for r in stored.itertuples()}
    for c in ("f00", PLANTED, "f09"):
        edges, counts, stride = _numpy_reference(planted, c, 10, 100_000)
        assert stride == 1
        assert np.array_equal(np.asarray(by_column[c].edges), edges)
        assert list(by_column[c].counts) == counts.tolist()
    scores = DeltaTable(str(planted / "scores")).to_pandas(filters=[("ds", "in", REFERENCE_DAYS),
                                                                   ("model_name", "=", XGB)])
    s = scores.sort_values(["ds", "entity_id"])["score"].to_numpy(np.float64)
    edges = np.unique(np.quantile(s, np.linspace(0, 1, 11)[1:-1]))
    row = by_column[f"score:{XGB}/1"]
    assert np.array_equal(np.asarray(row.edges), edges)
    assert list(row.counts) == np.bincount(np.digitize(s, edges), minlength=len(edges) + 1).tolist()


# ------------------------------------------------------------------ issue 22 part 3: drift per slice


def test_the_planted_slice_is_flagged_and_neither_the_overall_figure_nor_the_other_slices_are(planted, evaluated):
    """Every (feature, slice) figure equals the independent one; f03 in region=east is the one flagged pair; f03's
    overall PSI (and the overall table's verdict) stays under the limit: the shift is visible only per slice."""
    _s, rep, _rows = evaluated
    sl = rep["drift"]["slices"]
    pairs = {(p["feature"], p["slice"]): p for p in sl["pairs"]}
    assert len(pairs) == len(sl["pairs"])
    for column in ("f00", PLANTED, "f09"):
        for name, want in _expected(planted, column).items():
            got = pairs[(column, name)]
            assert (got["support_reference"], got["support_current"]) == (want["support_reference"],
                                                                         want["support_current"]), (column, name)
            assert got["psi"] == pytest.approx(want["psi"], rel=1e-9, abs=1e-12), (column, name)
            assert got["wasserstein"] == pytest.approx(want["wasserstein"], rel=1e-9, abs=1e-12), (column, name)
    east = _expected(planted, PLANTED)[f"region={REGION}"]
    overall = _expected(planted, PLANTED)["overall"]
    assert east["psi"] > 0.25 and east["wasserstein"] > 0.1  # the independent figures of the planted slice
    assert overall["psi"] < 0.25  # the overall figure alone would not flag it
    assert [(p["feature"], p["slice"]) for p in sl["pairs"] if p["flagged"]] == [(PLANTED, f"region={REGION}")]
    assert sl["pairs"][0]["rank"] == 1 and (sl["pairs"][0]["feature"], sl["pairs"][0]["slice"]) == (PLANTED,
                                                                                                  f"region={REGION}")
    assert pairs[(PLANTED, "overall")]["status"] == "ok" and sl["overall_flagged"] == []
    assert {p["column"]: p["status"] for p in rep["drift"]["psi"]}[PLANTED] == "ok"


def test_slices_under_min_support_are_reported_under_support_and_never_flagged(planted, evaluated):
    """The 3-way crosses (~80 rows a day): region=east's carry the planted shift (PSI far above the limit) yet are
    "under_support", not flagged, and ranked after every supported pair."""
    _s, rep, _rows = evaluated
    pairs = rep["drift"]["slices"]["pairs"]
    want = _expected(planted, PLANTED)
    crosses = [p for p in pairs if p["feature"] == PLANTED and p["slice"].startswith(f"region={REGION} & ")]
    assert len(crosses) == 9
    for p in crosses:
        assert want[p["slice"]]["support_current"] < MIN_SUPPORT
        assert p["status"] == "under_support" and not p["flagged"]
    assert max(want[p["slice"]]["psi"] for p in crosses) > 0.25  # would be flagged by PSI alone
    statuses = [p["status"] for p in pairs]
    assert statuses.index("under_support") > max(i for i, s in enumerate(statuses) if s in ("ok", "drift"))
    assert rep["drift"]["slices"]["under_support"] == statuses.count("under_support")


def test_drift_metrics_rows_read_back_with_deltalake_equal_the_independent_figures(planted, evaluated):
    s, rep, _rows = evaluated
    t = DeltaTable(str(planted / "drift_metrics")).to_pandas()
    assert len(t) == len(rep["drift"]["slices"]["pairs"]) and t["evaluation"].nunique() == 1
    assert set(t["run_id"]) == {s.run_id} and set(t["config_hash"]) == {s.config_hash}
    assert set(t["window_start"]) == {DAY} and set(t["reference_window"]) == {f"{REFERENCE_DAYS[0]}..{REFERENCE_DAYS[-1]}"}
    assert t["as_of"].iloc[0] == pd.Timestamp("2026-01-20T00:00:00Z")
    want = _expected(planted, PLANTED)
    mine = t[t["feature"] == PLANTED].set_index("slice")
    assert set(mine.index) == set(want)
    for name, w in want.items():
        row = mine.loc[name]
        assert (row.support_reference, row.support_current) == (w["support_reference"], w["support_current"])
        assert row.psi == pytest.approx(w["psi"], rel=1e-9) and row.wasserstein == pytest.approx(w["wasserstein"],
                                                                                                  rel=1e-9)
        supported = min(w["support_reference"], w["support_current"]) >= MIN_SUPPORT
        assert bool(row.flagged) == (supported and w["psi"] > 0.25 and w["wasserstein"] > 0.1), name
    assert t[t["flagged"]][["feature", "slice"]].values.tolist() == [[PLANTED, f"region={REGION}"]]


def test_a_rerun_reuses_both_references_and_its_drift_metrics_unit_is_already_done(planted, demo_root, evaluated):
    """In process this time, the runner refusing any reference task: both references come from their tables; the
    same evaluation's drift_metrics unit is already done (no second file, the same rows)."""
    from engine.tables import drift_reference

    before = DeltaTable(str(planted / "drift_metrics")).version()
    files = sorted((planted / "drift_metrics").rglob("*.parquet"))
    mp = pytest.MonkeyPatch()
    mp.setattr(drift_reference, "reference_task", lambda *a: pytest.fail("a stored reference is rebuilt"))
    try:
        s = run_evaluate(config(planted, demo_root), LocalExecutor())
    finally:
        mp.undo()
    rep = report_of(s)
    assert "features" in rep["drift"]["reference_reused"] and "features slices" in rep["drift"]["reference_reused"]
    assert DeltaTable(str(planted / "drift_metrics")).version() == before
    assert sorted((planted / "drift_metrics").rglob("*.parquet")) == files
    assert rep["drift"]["slices"]["pairs"] == evaluated[1]["drift"]["slices"]["pairs"]


def test_a_tiny_shift_on_a_large_sample_is_not_flagged_while_a_real_shift_is():
    """A million rows per slice: a 0.02-SD shift in slice g=a is "significant" (a KS test's p-value is ~0), yet its
    effect sizes (PSI, Wasserstein in reference SDs, computed here with numpy/scipy) are tiny, so it is not
    flagged; the 0.8-SD shift in g=b is. A p-value rule would flag both."""
    import pyarrow as pa

    from engine.drift import SliceHistograms
    from engine.evaluation.slice_drift import compare

    n = 1_000_000
    rng = np.random.default_rng(5)
    ref_x, cur_x = rng.standard_normal(2 * n), rng.standard_normal(2 * n)
    cur_x[:n] += 0.02
    cur_x[n:] += 0.8
    g = np.array(["a"] * n + ["b"] * n)
    assert sps.ks_2samp(ref_x[:n], cur_x[:n]).pvalue < 1e-12
    edges = np.unique(np.quantile(ref_x, np.linspace(0, 1, 11)[1:-1]))

    def hist(x):
        return SliceHistograms({"x": edges}, [("g",)]).update(pa.table({"x": x, "g": g}))

    pairs = {p["slice"]: p for p in compare(hist(ref_x), hist(cur_x), 0.25, 0.1, 200)}
    points = np.concatenate([[edges[0]], (edges[:-1] + edges[1:]) / 2, [edges[-1]]])
    for name, sl in (("g=a", slice(0, n)), ("g=b", slice(n, 2 * n))):
        p = np.bincount(np.digitize(ref_x[sl], edges), minlength=len(points)) / n
        q = np.bincount(np.digitize(cur_x[sl], edges), minlength=len(points)) / n
        psi = float(np.sum((q - p) * np.log(q / p)))
        w = sps.wasserstein_distance(points, points, p, q) / np.sqrt(np.cov(points, aweights=p, bias=True))
        assert pairs[name]["psi"] == pytest.approx(psi, rel=1e-9)
        assert pairs[name]["wasserstein"] == pytest.approx(w, rel=1e-9)
    assert pairs["g=a"]["psi"] < 0.01 and pairs["g=a"]["wasserstein"] < 0.05
    assert not pairs["g=a"]["flagged"] and pairs["g=a"]["status"] == "ok"
    assert pairs["g=b"]["flagged"] and pairs["g=b"]["status"] == "drift"


def test_the_report_ranks_the_pairs_and_draws_the_top_ones_with_both_histograms(planted, evaluated):
    """The drift section keeps the overall table and adds the ranked pairs; the first is f03 in region=east, drawn as
    inline SVG bars whose heights are the independent histograms' shares (no external resource on the page)."""
    import re
    from pathlib import Path

    from html_check import parse

    s, rep, _rows = evaluated
    page = Path(s.report).with_name("report.html").read_text()
    parse(page)
    section = page[page.index('id="drift"'):page.index('id="notes"')]
    assert "<h3>Features</h3>" in section and 'id="slice-drift"' in section  # the overall table stays
    table = section[section.index('id="slice-drift"'):]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1])
    top = rep["drift"]["slices"]["top"]
    assert 0 < len(rows) == len(top) <= 10
    for row, p in zip(rows, top):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[:3] == [str(p["rank"]), p["feature"], p["slice"]]
    first = rows[0]
    assert f">{PLANTED}<" in first and f">region={REGION}<" in first and "<svg" in first
    want = _expected(planted, PLANTED)[f"region={REGION}"]
    heights = [float(h) for h in re.findall(r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="([^"]+)"', first)]
    ref_h, cur_h = heights[2::2], heights[3::2]  # after the legend's two swatches: (reference, current) per bin
    shares = np.concatenate([want["reference_hist"] / want["reference_hist"].sum(),
                             want["current_hist"] / want["current_hist"].sum()])
    scale = max(ref_h + cur_h) / shares.max()
    assert np.allclose(ref_h + cur_h, shares * scale, atol=0.06)
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


def test_spark_builds_the_references_and_gives_the_same_drift_per_slice(planted, demo_root, evaluated, spark,
                                                                          tmp_path):
    """The same evaluation on Spark, in a copy of the lake without the stored references: Spark's side tasks build
    them and its tasks accumulate the current histograms per slice; every pair equals Ray's."""
    from engine.spark.executor import SparkExecutor

    lake = tmp_path / "lake"
    shutil.copytree(planted, lake, ignore=shutil.ignore_patterns("drift_*", "_reports"))
    cfg = config(lake, demo_root)
    rep = report_of(run_evaluate(cfg, SparkExecutor(spark, cfg.spark)))
    assert rep["drift"]["reference_reused"] == []
    assert rep["drift"]["slices"]["pairs"] == evaluated[1]["drift"]["slices"]["pairs"]
    assert rep["drift"]["psi"] == evaluated[1]["drift"]["psi"]


def test_the_new_drift_keys_leave_the_config_hash_alone_at_their_default_and_move_it_when_set(planted, demo_root):
    """Outputs store the config hash: a config that does not set the new keys keeps its hash; setting one moves it."""
    from engine.config import config_hash

    base = config_hash(config(planted, demo_root))
    assert config_hash(config(planted, demo_root, "drift.wasserstein_max=0.1", "drift.top_slices=10")) == base
    assert config_hash(config(planted, demo_root, "drift.wasserstein_max=0.2")) != base
    assert config_hash(config(planted, demo_root, "drift.top_slices=3")) != base
    # The label-maturity keys (added with the drift ones; a gate list with a default factory too) behave the same.
    assert config_hash(config(planted, demo_root, "maturity.days=14", "gates.min_maturity=[]")) == base
    assert config_hash(config(planted, demo_root, "maturity.days=7")) != base
    assert config_hash(config(planted, demo_root, "gates.min_maturity=[{metric: roc_auc, days: 3}]")) != base


def test_slice_histograms_merge_by_addition_and_equal_numpy_per_slice(monkeypatch):
    """NaN and ±inf values (left out of every bin, still rows of their slice), null slice values ("(null)"), three
    chunks merged through JSON, and the fallback for groups with too many combinations: the same integers as numpy
    counting each slice on its own."""
    import pyarrow as pa

    import engine.drift as drift
    from engine.drift import SliceHistograms

    rng = np.random.default_rng(3)
    n = 30_000
    x = rng.standard_normal(n)
    x[::17], x[::23], x[::29] = np.nan, np.inf, -np.inf
    region = np.array(["north", "east", "west", None], dtype=object)[rng.integers(0, 4, n)]
    segment = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    table = pa.table({"x": x, "region": pa.array(region.tolist()), "segment": segment})
    edges = np.array([-1.0, -0.2, 0.0, 0.5, 1.3])
    groups = [("region",), ("region", "segment")]

    def counted(t):
        return SliceHistograms({"x": edges}, groups).update(t)

    whole = counted(table)
    parts = [counted(table.slice(a, 10_000)) for a in (0, 10_000, 20_000)]
    merged = SliceHistograms.from_json(parts[0].to_json())
    for p in parts[1:]:
        merged.merge(SliceHistograms.from_json(p.to_json()))
    monkeypatch.setattr(drift, "_MAX_COMBINATIONS", 1)
    fallback = counted(table)
    assert merged.to_json() == whole.to_json() == fallback.to_json()
    names = np.array(["(null)" if r is None else r for r in region])
    masks = {"overall": np.ones(n, bool)}
    for r in set(names):
        masks[f"region={r}"] = names == r
        for s in "abc":
            masks[f"region={r} & segment={s}"] = (names == r) & (segment == s)
    assert set(whole.slices) == set(masks)
    for name, m in masks.items():
        v = x[m][np.isfinite(x[m])]
        assert whole.slices[name]["rows"] == m.sum()
        assert whole.slices[name]["counts"]["x"].tolist() == np.bincount(np.digitize(v, edges), minlength=6).tolist()


def test_the_report_says_where_the_drift_is_before_what_changed(evaluated):
    """A promotion reader sees the flagged pair at the top of the page (with a link down to it), before the metric
    detail; a report without flagged drift says nothing there. Breaks if the drift stays only at the bottom."""
    from pathlib import Path

    from engine.evaluation.report import render_html

    s, rep, _rows = evaluated
    page = Path(s.report).with_name("report.html").read_text()
    top = page[:page.index('id="changed"')]
    assert f"{PLANTED} in region={REGION}" in top and 'href="#slice-drift"' in top
    quiet = {**rep, "drift": {**rep["drift"], "psi": [{**p, "status": "ok"} for p in rep["drift"]["psi"]],
                              "slices": {**rep["drift"]["slices"],
                                         "pairs": [{**p, "flagged": False} for p in rep["drift"]["slices"]["pairs"]]}}}
    quiet_page = render_html(quiet)
    assert "Drift:" not in quiet_page[:quiet_page.index('id="changed"')]
