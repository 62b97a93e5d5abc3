"""The drift_reference table: a reference is read once per (table, window, its files), stored, and reused by the
score and validate jobs with the same verdicts; a new day reuses it, a rewritten reference day rebuilds it."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import DAYS, ROWS, score_config
from contracts.enforce import Enforcer
from contracts.partition import drift_features
from engine.tables.drift_reference import PARTITION_COLUMNS, TABLE
from engine.errors import ContractViolation
from engine.lake.snapshot import open_snapshot
from test_contracts import CONTRACT, NEW_DAY, append_day, fresh_day, reports, score

WINDOW = ["2026-01-01", "2026-01-02", "2026-01-03"]  # the contract's drift.reference


def numpy_reference(lake, column: str, bins: int = 10):
    """Edges and counts of the window read with deltalake and computed with numpy (exact: the window is small)."""
    t = DeltaTable(str(lake / "features")).to_pyarrow_table(columns=[column], filters=[("ds", "in", WINDOW)])
    v = t.column(column).to_numpy().astype(np.float64)
    v = v[np.isfinite(v)]
    edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
    return edges, np.histogram(v, bins=[-np.inf, *edges, np.inf])[0]


def enforcer(lake):
    snap = open_snapshot("features", str(lake / "features"))
    return Enforcer(CONTRACT, snap, ["entity_id"], [], reference_table=str(lake / TABLE))


def stored(lake):
    t = DeltaTable(str(lake / TABLE))
    return t, t.to_pyarrow_table()


def test_reference_is_stored_once_then_reused_with_the_same_numbers(lake, caplog):
    caplog.set_level(logging.INFO, logger="lakescore")
    first = enforcer(lake)
    assert not first.reference_reused and "drift reference committed" in caplog.text
    table, rows = stored(lake)
    feats = drift_features(first.rc)
    assert table.metadata().partition_columns == PARTITION_COLUMNS and table.version() == 1  # create + one commit
    assert sorted(rows.column("column").to_pylist()) == sorted(feats) and len(table.file_uris()) == 1
    for c in ("f00", "f02", "f49"):  # against numpy on a direct deltalake read of the window
        edges, counts = numpy_reference(lake, c)
        assert np.array_equal(first.edges[c], edges) and first.ref_hist[c].tolist() == counts.tolist()
    caplog.clear()
    second = enforcer(lake)
    assert second.reference_reused and "drift reference reused" in caplog.text
    assert DeltaTable(str(lake / TABLE)).version() == 1  # nothing committed again
    assert second.edges.keys() == first.edges.keys()
    assert all(np.array_equal(second.edges[c], first.edges[c]) and np.array_equal(second.ref_hist[c], first.ref_hist[c])
               for c in first.edges)
    plain = Enforcer(CONTRACT, open_snapshot("features", str(lake / "features")), ["entity_id"], [])  # no table
    assert all(np.array_equal(plain.edges[c], second.edges[c]) for c in plain.edges)


def test_an_appended_day_reuses_the_reference_and_a_rewritten_reference_day_rebuilds_it(lake):
    first = enforcer(lake)
    append_day(lake, fresh_day())  # a daily append: a new table version, the window's files unchanged
    after_append = enforcer(lake)
    assert after_append.snap.version == first.snap.version + 1 and after_append.reference_reused
    # A reference day rewritten (a correction upstream): its files change, so does the reference.
    day = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "=", "2026-01-02")])
    day = day.set_column(day.schema.get_field_index("f00"), "f00", pc.multiply(day.column("f00"), 3.0))
    write_deltalake(str(lake / "features"), day, mode="overwrite", predicate="ds = '2026-01-02'")
    rebuilt = enforcer(lake)
    assert not rebuilt.reference_reused
    edges, counts = numpy_reference(lake, "f00")
    assert np.array_equal(rebuilt.edges["f00"], edges) and rebuilt.ref_hist["f00"].tolist() == counts.tolist()
    assert not np.array_equal(rebuilt.edges["f00"], first.edges["f00"])
    _, rows = stored(lake)
    refs = rows.group_by(["reference_id", "table_version"]).aggregate([("column", "count")]).to_pylist()
    assert sorted((r["table_version"], r["column_count"]) for r in refs) == [
        (first.snap.version, len(first.edges)), (rebuilt.snap.version, len(first.edges))]
    assert set(rows.column("table").to_pylist()) == {"features"}
    assert enforcer(lake).reference_reused  # and the rebuilt one is reused in turn


def test_score_runs_reuse_the_stored_reference_and_give_the_same_drift_verdict(ray_local, lake, demo_root, caplog):
    caplog.set_level(logging.INFO, logger="lakescore")
    t = fresh_day()
    append_day(lake, t.set_column(t.schema.get_field_index("f06"), "f06", pc.add(t.column("f06"), 1.5)))
    cfg = score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={NEW_DAY}")
    verdicts = []
    for run in range(2):
        caplog.clear()
        with pytest.raises(ContractViolation) as e:
            score(cfg)
        assert e.value.exit_code == 3
        assert ("drift reference reused" in caplog.text) == (run == 1)
        verdicts.append(str(e.value).split("; report ")[0])
    first, second = reports(lake)
    assert verdicts[0] == verdicts[1] and first["run_id"] != second["run_id"]
    assert first["units"] == second["units"]  # the same violations, PSI values included
    assert "drift:f06" in [v["check"] for v in first["units"][0]["violations"]]
    assert DeltaTable(str(lake / TABLE)).version() == 1
    assert DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds"]).num_rows == 0  # the drifted day: not written


def test_validate_reuses_the_reference_the_score_job_stored(ray_local, lake, demo_root, caplog):
    from contracts.validate import executor_gather, run_validate
    from engine.config import ValidateConfig, load_config, resolve_paths
    from engine.ray.executor import executor

    caplog.set_level(logging.INFO, logger="lakescore")
    s = score(score_config(lake, demo_root, f"input.contract={CONTRACT}"))
    assert s.units_committed == DAYS and "drift reference committed" in caplog.text
    caplog.clear()
    cfg = resolve_paths(load_config(ValidateConfig, None, [f"lake.root={lake}", f"input.contract={CONTRACT}",
                                                           f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db"]))
    v = run_validate(cfg, executor_gather(executor(cfg.ray)))
    assert v.units_passed == DAYS and v.rows == DAYS * ROWS and "drift reference reused" in caplog.text
    assert DeltaTable(str(lake / TABLE)).version() == 1


def test_a_second_store_of_the_same_reference_is_already_done_and_leaves_no_file(lake):
    """Two runs that built the same reference at once: one commit lands, the other finds it done (same app_id)."""
    from engine.tables.drift_reference import reference_key, store

    snap = open_snapshot("features", str(lake / "features"))
    key = reference_key(snap, "2026-01-01..2026-01-03", WINDOW, ["f00"], 10)
    edges, counts = numpy_reference(lake, "f00")
    assert store(str(lake / TABLE), key, snap.version, {"f00": edges}, {"f00": counts}, run_id="a" * 32) == "committed"
    assert store(str(lake / TABLE), key, snap.version, {"f00": edges}, {"f00": counts}, run_id="b" * 32) == "already-done"
    table = DeltaTable(str(lake / TABLE))
    on_disk = list((lake / TABLE).rglob("*.parquet"))
    assert table.version() == 1 and len(on_disk) == 1 and table.to_pyarrow_table().num_rows == 1
