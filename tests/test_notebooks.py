"""The analyst notebooks run top to bottom against a freshly scored lake, and what they print agrees with an
independent read of the scores and features tables (deltalake and pyarrow, none of the notebook's code): the pandas
cells, and the Spark SQL cells (counts per model version, time travel, DESCRIBE HISTORY with the stamps)."""
from __future__ import annotations

import json
import re

import nbformat
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from nbclient import NotebookClient

from conftest import ROOT, score_config
from engine.ray.score import executor
from jobs.score import run_score

pytestmark = pytest.mark.slow
PARTITION = re.compile(r"^(\S+) v(\d+) (\d{4}-\d{2}-\d{2}): (\d+) rows scored, mean score ([0-9.]+); "
                       r"(\d+) input rows at features v(\d+)$")
PER_VERSION = re.compile(r"^(spark sql|pandas): (\S+) v(\d+): (\d+) rows over (\d+) days$")
TIME_TRAVEL = re.compile(r"^spark sql: scores VERSION AS OF (\d+): (\d+) rows \(latest, v(\d+): (\d+) rows\)$")


def expected_partitions(lake) -> dict[tuple, tuple]:
    """(model, version, ds) → (rows, mean score, input rows at the recorded input version, input version)."""
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "model_name", "model_version", "score",
                                                                     "input_version"])
    agg = t.group_by(["model_name", "model_version", "ds"]).aggregate(
        [("score", "count"), ("score", "mean"), ("input_version", "max")])
    out = {}
    for r in agg.to_pylist():
        feats = DeltaTable(str(lake / "features"), version=r["input_version_max"])
        day = feats.to_pyarrow_table(columns=["ds"])
        n_in = pc.sum(pc.equal(day.column("ds"), r["ds"])).as_py()
        out[(r["model_name"], r["model_version"], r["ds"])] = (r["score_count"], r["score_mean"], n_in,
                                                               r["input_version_max"])
    return out


def test_scores_analyst_notebook_agrees_with_the_tables(ray_local, lake, demo_root, monkeypatch):
    cfg = score_config(lake, demo_root)
    summary = run_score(cfg, executor(cfg.ray))
    monkeypatch.setenv("LAKESCORE_LAKE", str(lake))
    nb = nbformat.read(ROOT / "notebooks" / "scores_analyst.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    # Stream outputs may split a line across messages: join each cell's text before splitting it into lines.
    lines = [ln for c in nb.cells if c.cell_type == "code"
             for ln in "".join(o.get("text", "") for o in c.get("outputs", [])).splitlines()]

    got = {}
    for ln in lines:
        if m := PARTITION.match(ln):
            name, version, ds, rows, mean, n_in, iv = m.groups()
            got[(name, int(version), ds)] = (int(rows), float(mean), int(n_in), int(iv))
    want = expected_partitions(lake)
    assert len(want) == summary.units_committed > 0
    assert got.keys() == want.keys(), lines
    for k, (rows, mean, n_in, iv) in want.items():
        assert got[k][0] == rows == n_in and got[k][2] == n_in and got[k][3] == iv, k
        assert got[k][1] == pytest.approx(mean, abs=2e-6), k
    assert f"{len(want)} partitions reconcile with their input snapshots" in lines

    scores = DeltaTable(str(lake / "scores"))
    assert f"scores version {scores.version()} | features version {DeltaTable(str(lake / 'features')).version()}" in lines
    history = [h for h in scores.history(5)]
    want_history = []
    for h in history:
        meta = json.loads(h.get("userMetadata") or "{}")
        want_history.append(f"{h['version']} {meta.get('app_id')} {meta.get('rows')} {meta.get('run_id', '')[:8]}")
    assert want_history and all(line in lines for line in want_history)
    assert sum(summary.run_id[:8] in line for line in lines if not line.startswith("spark history:")) == min(
        5, summary.units_committed)
    check_spark_and_pandas_lines(lines, lake, scores)


def check_spark_and_pandas_lines(lines: list[str], lake, scores: DeltaTable) -> None:
    """Per model version counts (Spark SQL and pandas), time travel and history agree with deltalake's own reads."""
    t = scores.to_pyarrow_table(columns=["model_name", "model_version", "ds"])
    agg = t.group_by(["model_name", "model_version"]).aggregate([("ds", "count"), ("ds", "count_distinct")])
    want = {(r["model_name"], r["model_version"]): (r["ds_count"], r["ds_count_distinct"]) for r in agg.to_pylist()}
    for engine in ("spark sql", "pandas"):
        got = {(m[2], int(m[3])): (int(m[4]), int(m[5])) for ln in lines
               if (m := PER_VERSION.match(ln)) and m[1] == engine}
        assert got == want, (engine, lines)

    (travel,) = [m.groups() for ln in lines if (m := TIME_TRAVEL.match(ln))]
    then, n_then, latest, n_now = map(int, travel)
    assert latest == scores.version() and then == latest - 1
    assert n_then == DeltaTable(str(lake / "scores"), version=then).to_pyarrow_dataset().count_rows() < n_now == t.num_rows
    assert f"pandas: scores at version {then}: {n_then} rows" in lines

    want_history = []
    for h in scores.history(5):
        m = json.loads(h.get("userMetadata") or "{}")
        assert m or h["operation"] == "CREATE TABLE", h  # every write is stamped
        stamps = (f" {m['app_id']} model {m['model_name']} v{m['model_version']} input {m['input_table']}@"
                  f"{m['input_version']} run {m['run_id'][:8]} config {m['config_hash']}") if m else ""
        want_history.append(f"spark history: v{h['version']} {h['operation']}{stamps}")
    assert [ln for ln in lines if ln.startswith("spark history:")] == want_history


EVALUATION = re.compile(r"^evaluation: (\S+) v(\d+) (\S+)\.\.(\S+) as of (\S+) scores v(\d+) labels v(\d+) "
                        r"features v(\d+) run (\w{8})$")
HISTORY = re.compile(r"^history: (\S+) v(\d+) (\S+) roc_auc (\S+)\.\.(\S+) = ([0-9.]+) \[([0-9.]+), ([0-9.]+)\] n=(\d+)$")
SIDE = re.compile(r"^side by side: (\S+) roc_auc (.+?): (.*)$")
DELTA = re.compile(r"^delta: (\S+) v(\d+) - (\S+) roc_auc (.+?) = ([-+0-9.]+) \[([-+0-9.]+), ([-+0-9.]+)\]$")


def test_evaluation_notebook_agrees_with_eval_metrics(lake, demo_root, monkeypatch):
    from conftest import MLP, XGB
    from engine.evaluate_job import LocalEvalExecutor, run_evaluate
    from engine.score_job import LocalExecutor
    from test_evaluate import eval_config

    run_score(score_config(lake, demo_root), LocalExecutor())
    run_score(score_config(lake, demo_root, f"model.uri=models:/{MLP}/1"), LocalExecutor())
    for window in ("2026-01-02..2026-01-03", "2026-01-02..2026-01-04"):
        run_evaluate(eval_config(lake, demo_root, f"window={window}", "mlflow.log_reports=false"), LocalEvalExecutor())
    monkeypatch.setenv("LAKESCORE_LAKE", str(lake))
    nb = nbformat.read(ROOT / "notebooks" / "evaluation.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    lines = [ln for c in nb.cells if c.cell_type == "code"
             for ln in "".join(o.get("text", "") for o in c.get("outputs", [])).splitlines()]
    em = DeltaTable(str(lake / "eval_metrics")).to_pandas()
    metrics = em[em.kind == "metric"]
    evals = metrics.groupby(["model_name", "model_version", "evaluation"]).first().reset_index()
    got = [m.groups() for ln in lines if (m := EVALUATION.match(ln))]
    assert len(got) == len(evals) == 4, lines
    for name, version, start, end, _as_of, sv, lv, fv, run in got:
        row = evals[(evals.model_name == name) & (evals.model_version == int(version)) & (evals.window_start == start)
                    & (evals.window_end == end)].iloc[0]
        assert (int(sv), int(lv), int(fv), run) == (row.scores_version, row.labels_version, row.features_version,
                                                    row.run_id[:8])
    hist = [m.groups() for ln in lines if (m := HISTORY.match(ln))]
    assert len(hist) == 2 and {h[0] for h in hist} <= {XGB, MLP}
    for name, version, slice_, start, end, value, low, high, n in hist:
        want = metrics[(metrics.model_name == name) & (metrics.model_version == int(version)) & (metrics.slice == slice_)
                       & (metrics.metric == "roc_auc") & (metrics.window_start == start) & (metrics.window_end == end)]
        (r,) = want.itertuples()
        assert (float(value), float(low), float(high), int(n)) == pytest.approx((r.value, r.ci_low, r.ci_high, r.support),
                                                                                abs=1e-6)
    side = [m.groups() for ln in lines if (m := SIDE.match(ln))]
    newest = side[0][0]
    assert {s for _e, s, _c in side} == set(metrics.slice)  # every slice, both versions
    for ev, slice_, cells in side:
        for cell in cells.split(" | "):
            name, version, value, low, high = re.fullmatch(r"(\S+) v(\d+) ([0-9.]+) \[([0-9.]+), ([0-9.]+)\]", cell).groups()
            (r,) = metrics[(metrics.evaluation == ev) & (metrics.model_name == name) & (metrics.model_version == int(version))
                           & (metrics.slice == slice_) & (metrics.metric == "roc_auc")].itertuples()
            assert (float(value), float(low), float(high)) == pytest.approx((r.value, r.ci_low, r.ci_high), abs=1e-6)
    deltas = [m.groups() for ln in lines if (m := DELTA.match(ln))]
    want = em[(em.kind == "delta") & (em.metric == "roc_auc") & (em.evaluation == newest)]
    assert len(deltas) == len(want) > 0
    for name, version, base, slice_, value, low, high in deltas:
        (r,) = want[(want.model_name == name) & (want.slice == slice_)].itertuples()
        assert r.baseline == base and float(value) == pytest.approx(r.value, abs=1e-6)
        assert (float(low), float(high)) == pytest.approx((r.ci_low, r.ci_high), abs=1e-6)


FOLD = re.compile(r"^fold: (\d+) cutoff (\S+) train (\S+)\.\.(\S+) \((\d+) rows\) test (\S+)\.\.(\S+) \((\d+) rows\) "
                  r"model of fold (\d+)$")
PER_FOLD = re.compile(r"^per fold: (\d+) (\S+) roc_auc = ([0-9.]+) \[([0-9.]+), ([0-9.]+)\]$")
ACROSS = re.compile(r"^across folds: (\S+) roc_auc mean ([0-9.]+) std ([0-9.]+) over (\d+) folds$")


def test_backtest_notebook_agrees_with_backtest_metrics(lake, demo_root, monkeypatch):
    from backtests.runner import LocalBacktestExecutor, run_backtest
    from test_backtest import bt_config

    s = run_backtest(bt_config(lake, demo_root, "baseline.kind=base_rate", "mlflow.log_reports=false"),
                     LocalBacktestExecutor())
    monkeypatch.setenv("LAKESCORE_LAKE", str(lake))
    nb = nbformat.read(ROOT / "notebooks" / "backtest.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    lines = [ln for c in nb.cells if c.cell_type == "code"
             for ln in "".join(o.get("text", "") for o in c.get("outputs", [])).splitlines()]
    bm = DeltaTable(str(lake / "backtest_metrics")).to_pandas()
    assert set(bm.backtest_id) == {s.backtest_id}
    folds = [m.groups() for ln in lines if (m := FOLD.match(ln))]
    assert [int(f[0]) for f in folds] == sorted(set(bm.fold)) == [0, 1]
    for fold, cutoff, ts, te, n_train, _s, _e, n_test, trained_on in folds:
        row = bm[bm.fold == int(fold)].iloc[0]
        assert (cutoff, ts, te, int(n_train), int(n_test), int(trained_on)) == (
            row.cutoff, row.train_start, row.train_end, row.train_rows, row.test_rows, row.trained_on)
    overall = bm[(bm.kind == "metric") & (bm.slice == "overall") & (bm.metric == "roc_auc")]
    per = [m.groups() for ln in lines if (m := PER_FOLD.match(ln))]
    assert len(per) == len(overall) == 4
    for fold, model, value, low, high in per:
        (r,) = overall[(overall.fold == int(fold)) & (overall.model == model)].itertuples()
        assert (float(value), float(low), float(high)) == pytest.approx((r.value, r.ci_low, r.ci_high), abs=1e-6)
    across = {m[1]: (float(m[2]), float(m[3]), int(m[4])) for ln in lines if (m := ACROSS.match(ln))}
    for model, g in overall.groupby("model"):
        assert across[model] == pytest.approx((g.value.mean(), g.value.std(), len(g)), abs=1e-6)
