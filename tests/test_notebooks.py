"""The notebooks run top to bottom against a freshly built lake, and what they print agrees with an independent read
of the tables (deltalake and pyarrow, none of the notebook's code). The analyst notebook: its pandas cells and its
Spark SQL cells (counts per model version, time travel, DESCRIBE HISTORY with the stamps) against scores and
features, its Polars and DuckDB cells (counts, days, score sums, time travel), and no Spark log below ERROR on the
kernel's stderr. The evaluation notebook: evaluations, the headline metrics over evaluations and versions, one
slice's history, two versions side by side, their paired deltas and the slices that regressed, against
eval_metrics. The backtest notebook: folds, per-fold metrics and the paired deltas with their intervals. In every
notebook, each cell that calls a plotting function left an inline image/png."""
from __future__ import annotations

import json
import math
import re

import nbformat
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from nbclient import NotebookClient

from conftest import ROOT, XGB, score_config
from engine.ray.executor import executor
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


SPARK_LOG = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (TRACE|DEBUG|INFO|WARN) |log4j profile|Setting default log level|"
                       r"To adjust logging level", re.M)


def test_scores_analyst_notebook_agrees_with_the_tables(ray_local, lake, demo_root, monkeypatch, capfd):
    cfg = score_config(lake, demo_root)
    summary = run_score(cfg, executor(cfg.ray))
    capfd.readouterr()
    monkeypatch.setenv("LAKESCORE_LAKE", str(lake))
    plant_alias_moves(lake)
    lines, outputs = run_notebook("scores_analyst.ipynb")
    # Quiet: Spark's JVM logs below ERROR (its startup notices, DeltaHistoryManager's timestamp warning) reach neither
    # the notebook's stderr blocks nor the kernel's own stderr (where the JVM writes under nbclient).
    kernel_err = capfd.readouterr().err + "".join(o["text"] for o in outputs if o.get("name") == "stderr")
    assert not SPARK_LOG.findall(kernel_err), kernel_err

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
    check_polars_and_duckdb_lines(lines, lake, scores)
    check_alias_holder_lines(lines)


HELD = re.compile(r"^(polars|spark sql): (\S+)@champion at \S+: version (\d+)$")


def plant_alias_moves(lake) -> None:
    """model_events after the score run (which recorded its first sight of @champion: version 1): a person's move to
    version 2 now, and a rollback dated tomorrow. The holder now is 2; a query that took the newest event would say 1."""
    import datetime as dt

    from engine.config import LakeConfig
    from engine.tables import model_events

    lk, now = LakeConfig(root=str(lake)), dt.datetime.now(dt.timezone.utc)
    for frm, to, kind, at, seq in ((1, 2, "promote", now, 1), (2, 1, "rollback", now + dt.timedelta(days=1), 2)):
        model_events.record(lk, model_events.Event(model_name=XGB, alias="champion", from_version=frm, to_version=to,
                                                   kind=kind, run_id=f"nb-{seq}", by="ann", why="notebook test", at=at,
                                                   seq=seq))
    rows = DeltaTable(str(lake / "model_events")).to_pyarrow_table().to_pylist()
    assert sorted((r["kind"], r["from_version"], r["to_version"]) for r in rows) == [
        ("external", None, 1), ("promote", 1, 2), ("rollback", 2, 1)]


def check_alias_holder_lines(lines: list[str]) -> None:
    """"Which version held @champion at T" in Polars and in Spark SQL: version 2 (plant_alias_moves), and the timeline."""
    held = {m[1]: (m[2], int(m[3])) for ln in lines if (m := HELD.match(ln))}
    assert held == {"polars": (XGB, 2), "spark sql": (XGB, 2)}, lines
    assert len([ln for ln in lines if ln.startswith("timeline: ")]) == 3


JVM_FREE = re.compile(r"^(polars|duckdb): (\S+) v(\d+): (\d+) rows, (\d+) days, score sum ([0-9.]+)$")
JVM_FREE_THEN = re.compile(r"^(polars|duckdb): scores at version (\d+): (\d+) rows$")


def check_polars_and_duckdb_lines(lines: list[str], lake, scores: DeltaTable) -> None:
    """The JVM-free paths (Polars' read_delta/scan_delta, DuckDB over the deltalake Arrow dataset): per model version
    counts, days and score sums, and a time-travel count, against deltalake's own reads."""
    t = scores.to_pyarrow_table(columns=["model_name", "model_version", "ds", "score"])
    agg = t.group_by(["model_name", "model_version"]).aggregate([("ds", "count"), ("ds", "count_distinct"),
                                                                  ("score", "sum")])
    want = {(r["model_name"], r["model_version"]): (r["ds_count"], r["ds_count_distinct"], r["score_sum"])
            for r in agg.to_pylist()}
    then = scores.version() - 1
    n_then = DeltaTable(str(lake / "scores"), version=then).to_pyarrow_dataset().count_rows()
    for engine in ("polars", "duckdb"):
        got = {(m[2], int(m[3])): (int(m[4]), int(m[5]), float(m[6])) for ln in lines
               if (m := JVM_FREE.match(ln)) and m[1] == engine}
        assert got.keys() == want.keys(), (engine, lines)
        for k, (n, days, total) in want.items():
            assert got[k][:2] == (n, days) and got[k][2] == pytest.approx(total, rel=1e-9, abs=1e-6), (engine, k)
        assert [(int(m[2]), int(m[3])) for ln in lines if (m := JVM_FREE_THEN.match(ln)) and m[1] == engine] == [
            (then, n_then)], (engine, lines)


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


NUM = r"(nan|[-+]?\d+\.\d+)"
EVALUATION = re.compile(r"^evaluation: (\S+) v(\d+) window (\S+)\.\.(\S+) as_of (\S+) scores v(\d+) labels v(\d+) "
                        r"features v(\d+) slices (\d+) run (\w+)$")
HISTORY = re.compile(rf"^history: (\S+) v(\d+) (\S+) on (.+?) \| window (\S+)\.\.(\S+) as_of (\S+) \| {NUM} "
                     rf"\[{NUM}, {NUM}\] support (\d+) (\w+)$")
SIDE_HEAD = re.compile(r"^side by side: (\S+) on (\S+) \| (\S+) v(\d+) \| (\S+) v(\d+)$")
SIDE = re.compile(rf"^side: (.+?) \| {NUM} \[{NUM}, {NUM}\] support (\d+) (\w+) \| {NUM} \[{NUM}, {NUM}\] "
                  rf"support (\d+) (\w+)$")
DELTA = re.compile(rf"^delta: (\S+) v(\d+) - (\S+) (\S+) on (.+?) \| {NUM} \[{NUM}, {NUM}\] support (\d+) \| "
                   r"(above 0|below 0|spans 0|undefined)$")
STAMP = "%Y-%m-%dT%H:%M:%SZ"
HEADLINE = ("roc_auc", "pr_auc", "log_loss", "brier", "ece")
OVER = re.compile(rf"^over evaluations: (\S+) v(\d+) (\S+) on overall \| (\S+) \| {NUM} \[{NUM}, {NUM}\] "
                  r"support (\d+) (\w+)$")
REGRESSED = re.compile(rf"^regressed: (\S+) on (.+?) \| {NUM} \[{NUM}, {NUM}\] support (\d+)$")
MATURITY = re.compile(rf"^maturity: (\S+) v(\d+) k=(\d+) \| labelled {NUM} \| roc_auc {NUM}$")
AS_OF = re.compile(rf"^as-of history: (\S+) v(\d+) window (\S+)\.\.(\S+) as_of (\S+) labels v(\d+) \| roc_auc {NUM} "
                   r"support (\d+)$")


PLOTTING = re.compile(r"\bplt\.|\.(plot|errorbar|hlines|fill_between|scatter|bar|barh|imshow)\(")


def undrawn_plots(nb) -> list[int]:
    """Code cells that call a plotting function but left no image/png among their outputs (an Agg backend, a
    missing plt.show() or an exception swallowed on the way): the analyst would see no picture."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and PLOTTING.search(c.source)
            and not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]


def run_notebook(name: str) -> tuple[list[str], list[dict]]:
    """Execute notebooks/<name> in a fresh kernel; its printed lines and every output of its code cells. Every
    cell that plots must have drawn an inline image."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    assert not undrawn_plots(nb), f"{name}: plotting cells {undrawn_plots(nb)} drew no image/png"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    # Stream outputs may split a line across messages: join each cell's text before splitting it into lines.
    lines = [ln for c in nb.cells if c.cell_type == "code"
             for ln in "".join(o.get("text", "") for o in c.get("outputs", [])).splitlines()]
    return lines, outputs


def close(printed: str, want) -> bool:
    """A number printed with 6 decimals (or 'nan') against the table's float (NaN/None for a null)."""
    if printed == "nan":
        return want is None or math.isnan(want)
    return want is not None and not math.isnan(want) and abs(float(printed) - want) <= 6e-7


def test_evaluation_notebook_agrees_with_eval_metrics(lake, demo_root, monkeypatch):
    from conftest import MLP, XGB
    from engine.evaluation.job import run_evaluate
    from engine.executor import LocalExecutor
    from test_evaluate import eval_config

    run_score(score_config(lake, demo_root), LocalExecutor())
    run_score(score_config(lake, demo_root, f"model.uri=models:/{MLP}/1"), LocalExecutor())
    # Two windows with champion and challenger, then a newer one of the champion alone: the side-by-side and the
    # deltas must come from the newest evaluation that holds both versions, the history from all three.
    runs = {}
    for window, more in (("2026-01-02..2026-01-03", ()), ("2026-01-02..2026-01-04", ()),
                         ("2026-01-03..2026-01-04", ("models.challengers=[]",))):
        runs[window] = run_evaluate(eval_config(lake, demo_root, f"window={window}", "mlflow.log_reports=false", *more),
                                    LocalExecutor()).run_id
    monkeypatch.setenv("LAKESCORE_LAKE", str(lake))
    lines, outputs = run_notebook("evaluation.ipynb")

    em = DeltaTable(str(lake / "eval_metrics")).to_pandas()
    metrics, deltas = em[em.kind == "metric"], em[em.kind == "delta"]
    want_evals = {}
    for (name, version, ev), g in metrics.groupby(["model_name", "model_version", "evaluation"]):
        r = g.iloc[0]
        assert g[["window_start", "as_of", "scores_version", "run_id"]].nunique().max() == 1, ev
        assert ev.startswith(f"{r.window_start}..{r.window_end}@{r.as_of:%Y-%m-%dT%H:%M:%S.%fZ}~vs-{XGB}.1~"), ev
        want_evals[(name, version, r.window_start, r.window_end, f"{r.as_of:{STAMP}}")] = (
            r.scores_version, r.labels_version, r.features_version, g.slice.nunique(), r.run_id)
    got = [m.groups() for ln in lines if (m := EVALUATION.match(ln))]
    got_evals = {(n, int(v), s, e, t): (int(sv), int(lv), int(fv), int(k), run) for n, v, s, e, t, sv, lv, fv, k, run in got}
    assert len(got) == len(want_evals) == 5 and got_evals == want_evals, lines
    assert all(run == runs[f"{k[2]}..{k[3]}"] for k, (*_, run) in got_evals.items())
    assert f"champion: {XGB} v1" in lines and f"challenger: {MLP} v1" in lines

    want = metrics[(metrics.model_name == XGB) & (metrics.model_version == 1) & (metrics.slice == "segment=enterprise")
                   & (metrics.metric == "roc_auc")].sort_values(["as_of", "window_end", "window_start"])
    hist = [m.groups() for ln in lines if (m := HISTORY.match(ln))]
    assert len(hist) == len(want) == 3, lines
    for (name, version, metric, slice_, start, end, as_of, value, low, high, n, status), r in zip(hist, want.itertuples()):
        assert (name, version, metric, slice_) == (XGB, "1", "roc_auc", "segment=enterprise")
        assert (start, end, as_of, int(n), status) == (r.window_start, r.window_end, f"{r.as_of:{STAMP}}", r.support,
                                                       r.status)
        assert close(value, r.value) and close(low, r.ci_low) and close(high, r.ci_high), (value, low, high, r)

    # The newest evaluation holding both versions: the 02..04 window (the 03..04 one has the champion alone).
    (newest,) = metrics[(metrics.model_name == MLP) & (metrics.window_end == "2026-01-04")].evaluation.unique()
    assert [m.groups() for ln in lines if (m := SIDE_HEAD.match(ln))] == [("roc_auc", newest, XGB, "1", MLP, "1")]
    want = metrics[(metrics.evaluation == newest) & (metrics.metric == "roc_auc")]
    side = [m.groups() for ln in lines if (m := SIDE.match(ln))]
    assert side[0][0] == "overall" and sorted(s[0] for s in side) == sorted(want.slice.unique()), lines
    for slice_, *cells in side:
        for (name, version), (value, low, high, n, status) in zip(((XGB, 1), (MLP, 1)), (cells[:5], cells[5:])):
            (r,) = want[(want.model_name == name) & (want.model_version == version) & (want.slice == slice_)].itertuples()
            assert close(value, r.value) and close(low, r.ci_low) and close(high, r.ci_high), (slice_, name)
            assert (int(n), status) == (r.support, r.status)

    want = deltas[(deltas.evaluation == newest) & (deltas.metric == "roc_auc")]
    got = [m.groups() for ln in lines if (m := DELTA.match(ln))]
    assert len(got) == len(want) == len(side) and got[0][4] == "overall", lines
    for name, version, base, metric, slice_, value, low, high, n, where in got:
        (r,) = want[want.slice == slice_].itertuples()
        assert (name, int(version), base, metric) == (r.model_name, r.model_version, r.baseline, "roc_auc") == (
            MLP, 1, f"{XGB}/1", "roc_auc")
        assert close(value, r.value) and close(low, r.ci_low) and close(high, r.ci_high) and int(n) == r.support
        assert where == ("undefined" if math.isnan(r.ci_low) or math.isnan(r.ci_high) else "above 0" if r.ci_low > 0
                         else "below 0" if r.ci_high < 0 else "spans 0"), (slice_, where)
    assert any(g[5] != "nan" for g in got)
    assert f"plot: 3 history points, {len(want)} differences" in lines
    assert any("image/png" in o.get("data", {}) for o in outputs)

    # Metrics over evaluations and model versions, with intervals: every overall row of the headline metrics.
    want = metrics[(metrics.slice == "overall") & metrics.metric.isin(HEADLINE)]
    got = {(m[1], int(m[2]), m[3], m[4]): m.groups()[4:] for ln in lines if (m := OVER.match(ln))}
    assert len(got) == len(want) == 5 * len(set(want.metric)) and set(want.metric) == set(HEADLINE), lines
    for r in want.itertuples():
        value, low, high, n, status = got[(r.model_name, r.model_version, r.metric, r.evaluation)]
        assert close(value, r.value) and close(low, r.ci_low) and close(high, r.ci_high), r
        assert (int(n), status) == (r.support, r.status)

    # The slices that regressed on that evaluation: every challenger − champion delta (all metrics) whose paired
    # interval says worse, from the table and an independent reading of the interval.
    cand = deltas[(deltas.evaluation == newest) & (deltas.model_name == MLP) & (deltas.model_version == 1)]
    worse = cand[[expected_reading(r.metric, r.value, r.ci_low, r.ci_high) == "worse" for r in cand.itertuples()]]
    got = {(m[1], m[2]): m.groups()[2:] for ln in lines if (m := REGRESSED.match(ln))}
    assert set(got) == {(r.metric, r.slice) for r in worse.itertuples()}, (sorted(got), lines)
    for r in worse.itertuples():
        value, low, high, n = got[(r.metric, r.slice)]
        assert close(value, r.value) and close(low, r.ci_low) and close(high, r.ci_high) and int(n) == r.support
    assert f"regressed: {len(worse)} of {len(cand)} (metric, slice) deltas worse by the paired interval" in lines

    # Labels as they mature: the newest evaluation's curve (the 03..04 window, the champion alone) and that window's
    # evaluations over as-of times, every printed number against the table's rows.
    mat = em[(em.kind == "maturity") & (em.window_start == "2026-01-03") & (em.window_end == "2026-01-04")]
    got = [m.groups() for ln in lines if (m := MATURITY.match(ln))]
    assert len(got) == mat.maturity_days.nunique() == 14 and {g[0] for g in got} == {XGB}, lines
    for name, version, k, frac, auc in got:
        row = mat[(mat.model_name == name) & (mat.model_version == int(version)) & (mat.maturity_days == int(k))]
        assert close(frac, row[row.metric == "labelled_fraction"].value.item())
        assert close(auc, row[row.metric == "roc_auc"].value.item()), (k, auc)
    assert float(got[0][3]) < float(got[-1][3]) == 1.0  # the demo's labels arrive over days: a curve that rises
    want = metrics[(metrics.window_start == "2026-01-03") & (metrics.window_end == "2026-01-04")
                   & (metrics.slice == "overall") & (metrics.metric == "roc_auc")]
    got = [m.groups() for ln in lines if (m := AS_OF.match(ln))]
    assert len(got) == len(want) > 0, lines
    for name, version, start, end, as_of, labels_v, value, n in got:
        (r,) = want[(want.model_name == name) & (want.model_version == int(version))].itertuples()
        assert (f"{r.as_of:{STAMP}}", int(labels_v), int(n)) == (as_of, r.labels_version, r.support)
        assert close(value, r.value)


def test_evaluation_notebook_with_one_model_version_shows_its_history_only(lake, demo_root, monkeypatch, tmp_path):
    """A table without delta rows: the champion is the version with most evaluations; nothing to put side by side."""
    from conftest import XGB
    from engine.evaluation.job import run_evaluate
    from engine.executor import LocalExecutor
    from test_evaluate import eval_config

    run_score(score_config(lake, demo_root), LocalExecutor())
    for window in ("2026-01-02..2026-01-03", "2026-01-03..2026-01-04"):
        run_evaluate(eval_config(lake, demo_root, f"window={window}", "mlflow.log_reports=false",
                                 "models.challengers=[]"), LocalExecutor())
    monkeypatch.setenv("LAKESCORE_LAKE", str(lake))
    lines, _ = run_notebook("evaluation.ipynb")
    metrics = DeltaTable(str(lake / "eval_metrics")).to_pandas(filters=[("kind", "=", "metric")])
    want = metrics[(metrics.slice == "segment=enterprise") & (metrics.metric == "roc_auc")].sort_values("window_start")
    hist = [m.groups() for ln in lines if (m := HISTORY.match(ln))]
    assert [(h[0], h[4], h[5]) for h in hist] == [(XGB, r.window_start, r.window_end) for r in want.itertuples()]
    assert len(hist) == 2 and all(close(h[7], r.value) for h, r in zip(hist, want.itertuples()))
    assert f"champion: {XGB} v1" in lines and "challenger: none" in lines
    assert "side by side: no evaluation holds both a champion and a challenger" in lines
    assert not any(DELTA.match(ln) or SIDE.match(ln) for ln in lines)
    assert "plot: 2 history points, 0 differences" in lines
    assert "regressed: no evaluation compares a challenger with the champion" in lines
    want = metrics[(metrics.slice == "overall") & metrics.metric.isin(HEADLINE)]
    assert len([ln for ln in lines if OVER.match(ln)]) == len(want) == 2 * len(HEADLINE)


FOLD = re.compile(r"^fold: (\d+) cutoff (\S+) train (\S+)\.\.(\S+) \((\d+) rows\) test (\S+)\.\.(\S+) \((\d+) rows\) "
                  r"model of fold (\d+)$")
PER_FOLD = re.compile(r"^per fold: (\d+) (\S+) roc_auc = ([0-9.]+) \[([0-9.]+), ([0-9.]+)\]$")
ACROSS = re.compile(r"^across folds: (\S+) roc_auc mean ([0-9.]+) std ([0-9.]+) over (\d+) folds$")


def test_backtest_notebook_agrees_with_backtest_metrics(lake, demo_root, monkeypatch):
    from backtests.runner import run_backtest
    from engine.executor import LocalExecutor
    from test_backtest import bt_config

    s = run_backtest(bt_config(lake, demo_root, "baseline.kind=base_rate", "mlflow.log_reports=false"),
                     LocalExecutor())
    monkeypatch.setenv("LAKESCORE_LAKE", str(lake))
    lines, _ = run_notebook("backtest.ipynb")
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

    # The delta table: recipe − baseline per fold and slice with the table's paired interval and its reading.
    deltas = bm[(bm.kind == "delta") & (bm.metric == "roc_auc")]
    got = [m.groups() for ln in lines if (m := BT_DELTA.match(ln))]
    assert len(got) == len(deltas) > 0, lines
    for fold, slice_, value, low, high, where in got:
        (r,) = deltas[(deltas.fold == int(fold)) & (deltas.slice == slice_)].itertuples()
        assert close(value, r.value) and close(low, r.ci_low) and close(high, r.ci_high), (fold, slice_)
        assert where == expected_reading("roc_auc", r.value, r.ci_low, r.ci_high), (fold, slice_, where)


BT_DELTA = re.compile(rf"^delta: fold (\d+) (.+?) roc_auc recipe - baseline {NUM} \[{NUM}, {NUM}\] "
                      r"(better|worse|no clear difference|changed|undefined)$")
LOWER = {"log_loss", "brier", "ece", "mae", "rmse", "mape"}
HIGHER = {"roc_auc", "pr_auc", "r2"}


def expected_reading(metric: str, value, low, high) -> str:
    """Independent of engine.evaluation.report: a paired interval that excludes 0 is a change; better or worse by
    the metric's direction."""
    if value is None or math.isnan(value):
        return "undefined"
    if low is None or high is None or math.isnan(low) or math.isnan(high) or low <= 0 <= high:
        return "no clear difference"
    up = 1 if metric in HIGHER or metric.startswith(("precision@", "recall@", "f1@")) else -1 if metric in LOWER else 0
    if up == 0:
        return "changed"
    return "better" if (low > 0) == (up > 0) else "worse"
