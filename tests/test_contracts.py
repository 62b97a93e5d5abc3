"""Data contracts in the score job (fail closed): hostile inputs on a real local Ray and real Delta tables."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import DAYS, ROOT, ROWS, score_config
from contracts.checks import CheckStats, row_masks
from contracts.spec import load_contract
from engine.demo.data import make_day
from engine.errors import ConfigError, ContractViolation
from engine.ray.executor import executor
from jobs.score import run_score

CONTRACT = str(ROOT / "conf" / "contracts" / "features.yaml")
NEW_DAY = "2026-01-05"
PLANTED = "planted.pii.4711@example.com"


def score(cfg):
    return run_score(cfg, executor(cfg.ray))


def append_day(lake, table: pa.Table) -> None:
    write_deltalake(str(lake / "features"), table, partition_by=["ds"], mode="append", schema_mode="merge")


def fresh_day(rows: int = ROWS, seed: int = 21) -> pa.Table:
    return make_day(DAYS, NEW_DAY, rows, 50, seed=seed)[0]


def run_new_day(lake, demo_root, *overrides):
    cfg = score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={NEW_DAY}", *overrides)
    with pytest.raises(ContractViolation) as e:
        score(cfg)
    assert e.value.exit_code == 3
    scores = lake / "scores"
    written = DeltaTable(str(scores)).to_pyarrow_table(columns=["ds"]).num_rows if scores.exists() else 0
    assert written == 0, "a failing unit must write nothing"
    return str(e.value), None


def reports(lake) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((lake / "_reports" / "score").glob("*.json"))]


def set_rows(t: pa.Table, column: str, rows: list[int], value) -> pa.Table:
    vals = t.column(column).to_pylist()
    for i in rows:
        vals[i] = value
    return t.set_column(t.schema.get_field_index(column), column, pa.array(vals, t.schema.field(column).type))


def test_clean_days_pass_and_are_written(ray_local, lake, demo_root):
    s = score(score_config(lake, demo_root, f"input.contract={CONTRACT}"))
    assert s.units_committed == DAYS and s.rows_out == DAYS * ROWS and not s.violations
    (rep,) = reports(lake)
    assert [u["status"] for u in rep["units"]] == ["pass"] * DAYS and rep["contract_hash"] == load_contract(CONTRACT).digest
    assert rep["pandera_schema_verdict"] == []


@pytest.mark.parametrize("mutate, check", [
    (lambda t: set_rows(t, "f03", [5, 9], float("nan")), "finite:f03"),
    (lambda t: set_rows(t, "f04", [7], float("inf")), "finite:f04"),
    (lambda t: set_rows(t, "f05", [3], 1e6), "range:f05"),
    (lambda t: set_rows(t, "region", [11], "atlantis"), "category:region"),
    (lambda t: t.set_column(0, "entity_id", pc.if_else(pc.equal(pa.array(np.arange(t.num_rows)), 4), None, t.column(0))), "not_null:entity_id"),
    (lambda t: set_rows(t, "entity_id", [1, 2], t.column("entity_id")[0].as_py()), "unique_key"),
    (lambda t: t.set_column(1, "event_ts", pc.add(t.column("event_ts"), pa.scalar(2 * 86_400_000_000, pa.duration("us")))), "event_in_partition:event_ts"),
])
def test_hostile_rows_fail_the_unit_closed_and_name_the_check(ray_local, lake, demo_root, mutate, check):
    append_day(lake, mutate(fresh_day()))
    msg, _ = run_new_day(lake, demo_root)
    assert check.split(":")[0] in msg or check in json.dumps(reports(lake)), msg
    (rep,) = reports(lake)
    (unit,) = rep["units"]
    assert unit["ds"] == NEW_DAY and unit["status"] == "fail" and unit["rows"] == ROWS
    assert check in [v["check"] for v in unit["violations"]]


def test_pii_values_never_reach_reports_or_errors(ray_local, lake, demo_root):
    bad = set_rows(set_rows(fresh_day(), "email", [3], PLANTED), "f05", [3], 1e6)
    append_day(lake, bad)
    assert PLANTED in DeltaTable(str(lake / "features")).to_pyarrow_table(columns=["email"]).column("email").to_pylist()  # positive control
    msg, _ = run_new_day(lake, demo_root)
    files = list((lake / "_reports").rglob("*"))
    texts = [p.read_text() for p in files if p.is_file()]
    assert texts and all(PLANTED not in t for t in texts) and PLANTED not in msg
    assert any("1000000.0" in t for t in texts)  # the non-PII failing value is quoted
    # MLflow: the report run's params and artifacts
    from mlflow.tracking import MlflowClient

    from contracts.enforce import REPORT_EXPERIMENT

    client = MlflowClient(f"sqlite:///{demo_root}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name(REPORT_EXPERIMENT).experiment_id])
    mine = [r for r in runs if r.data.params.get("units_failed") == "1" and "1000000.0" in _artifacts_text(client, r)]
    assert mine, "the failing run's report must be in MLflow"
    for r in mine:
        assert PLANTED not in json.dumps(r.data.params) and PLANTED not in _artifacts_text(client, r)


def test_schema_breaks_fail_every_unit_before_work(ray_local, lake, demo_root):
    t = fresh_day()
    t = t.set_column(t.schema.get_field_index("f07"), "f07", t.column("f07").cast(pa.string()))
    t = t.rename_columns(["f08_renamed" if n == "f08" else n for n in t.column_names]).append_column("extra", pa.array([1] * t.num_rows))
    t = t.drop_columns(["segment"])
    t = t.set_column(0, "entity_id", t.column("entity_id").cast(pa.string()))  # an int column arriving as string
    from deltalake import write_deltalake as w

    w(str(lake / "features"), t, partition_by=["ds"], mode="overwrite", schema_mode="overwrite")
    cfg = score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={NEW_DAY}")
    with pytest.raises(ContractViolation):
        score(cfg)
    (rep,) = reports(lake)
    checks = {(v["check"], v["column"]) for v in rep["units"][0]["violations"]}
    assert {("type", "f07"), ("type", "entity_id"), ("extra_column", "f08_renamed"), ("extra_column", "extra"),
            ("presence", "segment")} <= checks
    # pandera's schema-level verdict, built from the same contract, names the same problems
    assert {(v["check"], v["column"]) for v in rep["pandera_schema_verdict"]} == checks


def test_volume_empty_day_and_tenfold_drop(ray_local, lake, demo_root):
    append_day(lake, fresh_day(rows=ROWS // 10))
    msg, _ = run_new_day(lake, demo_root)
    assert "volume" in msg or "volume" in json.dumps(reports(lake))
    msg, _ = run_new_day(lake, demo_root, "input.ds=2026-01-09")  # missing day
    assert "volume" in msg


def test_empty_day_is_a_noop_where_the_contract_allows_it(ray_local, lake, demo_root, tmp_path):
    allow = tmp_path / "allow.yaml"
    allow.write_text(open(CONTRACT).read().replace("allow_empty: false", "allow_empty: true"))
    s = score(score_config(lake, demo_root, f"input.contract={allow}", "input.ds=2026-01-09"))
    assert s.skipped == ["2026-01-09"] and s.units_committed == 0 and not s.failed


def test_shifted_feature_fails_drift(ray_local, lake, demo_root):
    t = fresh_day()
    t = t.set_column(t.schema.get_field_index("f06"), "f06", pc.add(t.column("f06"), 1.5))
    append_day(lake, t)
    run_new_day(lake, demo_root)
    (rep,) = reports(lake)
    assert "drift:f06" in [v["check"] for v in rep["units"][0]["violations"]]


def test_units_are_independent_good_days_commit_bad_day_does_not(ray_local, lake, demo_root):
    append_day(lake, set_rows(fresh_day(), "f03", [1], float("nan")))
    cfg = score_config(lake, demo_root, f"input.contract={CONTRACT}")
    with pytest.raises(ContractViolation, match=NEW_DAY):
        score(cfg)
    days = set(DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds"]).column("ds").to_pylist())
    assert days == {f"2026-01-0{i + 1}" for i in range(DAYS)}


def test_contract_change_rescores_every_unit_but_the_same_contract_elsewhere_does_not(ray_local, lake, demo_root, tmp_path):
    """The input fingerprint includes the contract's hash (DESIGN.md): new rules re-check and re-score each day."""
    def run_ids() -> dict[str, list[str]]:
        t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "run_id"])
        return {r["ds"]: sorted(r["run_id_distinct"]) for r in t.group_by("ds").aggregate([("run_id", "distinct")]).to_pylist()}

    first = score(score_config(lake, demo_root, f"input.contract={CONTRACT}"))
    before = run_ids()
    assert before == {f"2026-01-0{i + 1}": [first.run_id] for i in range(DAYS)}
    moved = tmp_path / "same.yaml"  # a config change alone (another path, a comment): same contract hash
    moved.write_text("# the same rules, moved\n" + open(CONTRACT).read())
    same = score(score_config(lake, demo_root, f"input.contract={moved}"))
    assert same.units_skipped == DAYS and same.units_committed == 0 and run_ids() == before
    changed = tmp_path / "changed.yaml"
    changed.write_text(open(CONTRACT).read().replace("psi_max: 0.25", "psi_max: 0.3"))
    second = score(score_config(lake, demo_root, f"input.contract={changed}"))
    assert second.units_committed == DAYS and run_ids() == {d: [second.run_id] for d in before}
    assert DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds"]).num_rows == DAYS * ROWS


def test_pii_passthrough_is_refused(ray_local, lake, demo_root):
    with pytest.raises(ConfigError, match="PII") as e:
        score(score_config(lake, demo_root, f"input.contract={CONTRACT}", "input.passthrough_columns=[email]"))
    assert e.value.exit_code == 2 and not (lake / "scores").exists()


def test_row_masks_match_a_pandas_reference():
    c = load_contract(CONTRACT)
    t = set_rows(set_rows(fresh_day(200), "f01", [3, 4], float("nan")), "f02", [5], 99.0)
    rc = c.resolve(t.schema)
    batch = t.to_batches()[0]
    masks = row_masks(batch, rc, NEW_DAY)
    df = t.to_pandas()
    assert np.array_equal(masks["finite:f01"], df["f01"].isna().to_numpy())
    assert np.array_equal(masks["range:f02"], (df["f02"] > 50).to_numpy())
    stats = CheckStats()
    bad = stats.update(batch, masks, rc, {})
    assert stats.bad_rows == int(bad.sum()) == 3 and stats.failed == {"finite:f01": 2, "range:f02": 1}


def test_validate_reports_the_same_failures_as_score_and_writes_nothing(ray_local, lake, demo_root):
    from contracts.validate import executor_gather, run_validate
    from engine.config import ValidateConfig, load_config, resolve_paths

    append_day(lake, set_rows(set_rows(fresh_day(), "f03", [1, 2], float("nan")), "region", [4], "mars"))
    cfg = resolve_paths(load_config(ValidateConfig, None, [f"lake.root={lake}", f"input.contract={CONTRACT}"]))
    with pytest.raises(ContractViolation, match=NEW_DAY):
        run_validate(cfg, executor_gather(executor(cfg.ray)))
    (vrep,) = reports_of(lake, "validate")
    assert [u["status"] for u in vrep["units"]] == ["pass"] * DAYS + ["fail"]
    assert not (lake / "scores").exists()
    run_new_day(lake, demo_root)
    (srep,) = reports(lake)
    assert {v["check"]: v["rows"] for v in vrep["units"][-1]["violations"]} == \
        {v["check"]: v["rows"] for v in srep["units"][0]["violations"]} == {"finite:f03": 2, "category:region": 1}


def reports_of(lake, job) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((lake / "_reports" / job).glob("*.json"))]


def test_pandera_pandas_schema_reports_the_same_checks_as_the_arrow_masks():
    import pandas as pd
    import pandera.errors

    from contracts.schemas import pandas_schema

    t = set_rows(set_rows(set_rows(fresh_day(300), "f01", [3, 4], float("nan")), "f02", [5], 99.0), "region", [6], "mars")
    t = set_rows(t, "email", [6], PLANTED)
    rc = load_contract(CONTRACT).resolve(t.schema)
    masks = row_masks(t.to_batches()[0], rc, NEW_DAY)
    with pytest.raises(pandera.errors.SchemaErrors) as e:
        pandas_schema(rc).validate(t.drop_columns(["ds"]).to_pandas(types_mapper=pd.ArrowDtype), lazy=True)
    fc = e.value.failure_cases
    got = {(str(r.check).split(":")[0], r.column) for r in fc.itertuples() if r.index is not None and r.index == r.index}
    assert got == {tuple(k.split(":")) for k in masks}  # same (check, column) pairs as the Arrow row checks
    assert PLANTED not in fc.to_string()  # PII columns carry no value checks


def quarantine_contract(tmp_path, budget: float) -> str:
    p = tmp_path / "q.yaml"
    p.write_text(open(CONTRACT).read().replace("mode: fail_closed", "mode: quarantine") + f"bad_row_budget: {budget}\n")
    return str(p)


def test_quarantine_sets_bad_rows_aside_once_and_scores_the_rest(ray_local, lake, demo_root, tmp_path):
    bad = set_rows(set_rows(fresh_day(), "f03", [2, 8], float("nan")), "region", [8, 9], "mars")
    bad = set_rows(bad, "email", [8], PLANTED)
    append_day(lake, bad)
    cfg = score_config(lake, demo_root, f"input.contract={quarantine_contract(tmp_path, 0.01)}", f"input.ds={NEW_DAY}")
    s = score(cfg)
    assert s.rows_in == ROWS and s.rows_out == ROWS - 3 and s.rows_quarantined == 3 and s.committed == [NEW_DAY]
    q = DeltaTable(str(lake / "quarantine")).to_pyarrow_table()
    assert q.num_rows == 3 and set(q.column("ds").to_pylist()) == {NEW_DAY}
    assert set(q.column("source_table").to_pylist()) == {"features"}
    by_key = {json.loads(k)["entity_id"]: sorted(c) for k, c in zip(q.column("key").to_pylist(), q.column("failed_checks").to_pylist())}
    ids = bad.column("entity_id").to_pylist()
    assert by_key == {ids[2]: ["finite:f03"], ids[8]: ["category:region", "finite:f03"], ids[9]: ["category:region"]}
    scored = set(DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["entity_id"]).column("entity_id").to_pylist())
    assert scored.isdisjoint(by_key) and len(scored) == ROWS - 3
    # PII: not in the decoded quarantine rows, not in the report (positive control: it is in the input)
    assert PLANTED in DeltaTable(str(lake / "features")).to_pyarrow_table(columns=["email"]).column("email").to_pylist()
    assert all(PLANTED not in json.dumps(r, default=str) for r in q.to_pylist())
    assert all(PLANTED not in p.read_text() for p in (lake / "_reports").rglob("*.*"))
    again = score(cfg)
    assert again.units_skipped == 1 and DeltaTable(str(lake / "quarantine")).to_pyarrow_table().num_rows == 3


def test_quarantine_over_budget_keeps_the_evidence_and_writes_no_scores(ray_local, lake, demo_root, tmp_path):
    append_day(lake, set_rows(fresh_day(), "f05", list(range(100)), 1e6))
    cfg = score_config(lake, demo_root, f"input.contract={quarantine_contract(tmp_path, 0.01)}", f"input.ds={NEW_DAY}")
    with pytest.raises(ContractViolation, match="bad_row_budget"):
        score(cfg)
    assert DeltaTable(str(lake / "quarantine")).to_pyarrow_table().num_rows == 100
    assert not (lake / "scores").exists() or DeltaTable(str(lake / "scores")).to_pyarrow_table().num_rows == 0


def test_partition_checks_fail_closed_even_in_quarantine_mode(ray_local, lake, demo_root, tmp_path):
    append_day(lake, fresh_day(rows=ROWS // 10))
    cfg = score_config(lake, demo_root, f"input.contract={quarantine_contract(tmp_path, 0.5)}", f"input.ds={NEW_DAY}")
    with pytest.raises(ContractViolation, match="volume"):
        score(cfg)


def _artifacts_text(client, run) -> str:
    import tempfile

    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory() as d:
        local = download_artifacts(run_id=run.info.run_id, artifact_path="", dst_path=d, tracking_uri=client._tracking_client.tracking_uri)
        from pathlib import Path

        return "".join(p.read_text(errors="replace") for p in Path(local).rglob("*") if p.is_file())
