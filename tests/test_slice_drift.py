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
        row = {"support_reference": len(r), "support_current": len(c), "psi": None, "wasserstein": None}
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
