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
