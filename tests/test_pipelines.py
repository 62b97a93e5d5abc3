"""Both Ray pipelines (`tasks`, `actors`) enforce the same contract: hostile rows, quarantine, validate, split days.

Every case runs through both pipeline shapes and is judged against an independent read of the input (pandas on a
direct `deltalake` read), never against the other pipeline's output.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import DAYS, ROOT, ROWS, score_config
from engine.config import ValidateConfig, load_config, resolve_paths
from engine.demo.data import make_day
from engine.errors import ContractViolation
from engine.ray.executor import executor
from jobs.score import run_score
from engine.score.scoring import plan_chunks
from engine.lake.snapshot import open_snapshot

CONTRACT = str(ROOT / "conf" / "contracts" / "features.yaml")
NEW_DAY = "2026-01-05"
DAYS_LIST = [f"2026-01-0{i + 1}" for i in range(DAYS)]
PIPELINES = {
    "tasks": ["ray.pipeline=tasks"],
    "actors": ["ray.pipeline=actors", "ray.actors=1", "ray.num_cpus=0.25"],
}


@pytest.fixture(params=sorted(PIPELINES))
def pipeline(request) -> list[str]:
    return PIPELINES[request.param]


def fresh_day(rows: int = ROWS, seed: int = 21) -> pa.Table:
    return make_day(DAYS, NEW_DAY, rows, 50, seed=seed)[0]


def put(t: pa.Table, column: str, rows: list[int], value) -> pa.Table:
    vals = t.column(column).to_pylist()
    for i in rows:
        vals[i] = value
    return t.set_column(t.schema.get_field_index(column), column, pa.array(vals, t.schema.field(column).type))


def append(lake, t: pa.Table, files: int = 1) -> None:
    """Append `t` to the features table as `files` separate data files (one commit each), in row order."""
    step = -(-t.num_rows // files)
    for i in range(files):
        write_deltalake(str(lake / "features"), t.slice(i * step, step), partition_by=["ds"], mode="append")


def reference_failures(t: pa.Table) -> dict[str, int]:
    """The contract's failing checks on the new day, computed with pandas (the independent reference)."""
    df = t.to_pandas()
    out = {}
    for c in [c for c in df.columns if c.startswith("f") and len(c) == 3]:
        if (n := int((~np.isfinite(df[c])).sum())):
            out[f"finite:{c}"] = n
    keys = df["entity_id"].dropna()
    if (n := int(keys.duplicated(keep=False).sum())):
        out["unique_key"] = n
    return out


def reports(lake, job: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((lake / "_reports" / job).glob("*.json"))]


def unit_checks(rep: dict, ds: str = NEW_DAY) -> dict[str, int | None]:
    (unit,) = [u for u in rep["units"] if u["ds"] == ds]
    return {v["check"]: v["rows"] for v in unit["violations"]}


def table_rows(path) -> int:
    return DeltaTable(str(path)).to_pyarrow_table(columns=["ds"]).num_rows if path.exists() else 0


def orphans(table) -> set[str]:
    """Parquet files under a table's directory that its log does not reference."""
    if not table.exists():
        return set()
    referenced = set(DeltaTable(str(table)).file_uris())
    return {str(p) for p in table.rglob("*.parquet")} - {r.removeprefix("file://") for r in referenced}


@pytest.mark.parametrize("hostile", ["nan_feature", "duplicate_key"])
def test_hostile_day_fails_closed_on_both_pipelines(ray_local, lake, demo_root, pipeline, hostile):
    t = fresh_day()
    t = put(t, "f03", [5, 9], float("nan")) if hostile == "nan_feature" else \
        put(t, "entity_id", [1, 2], t.column("entity_id")[0].as_py())
    append(lake, t)
    expected = reference_failures(t)
    assert expected == ({"finite:f03": 2} if hostile == "nan_feature" else {"unique_key": 3})  # positive control
    cfg = score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={NEW_DAY}", *pipeline)
    with pytest.raises(ContractViolation) as e:
        run_score(cfg, executor(cfg.ray))
    assert e.value.exit_code == 3 and NEW_DAY in str(e.value)
    assert table_rows(lake / "scores") == 0 and not orphans(lake / "scores")
    (rep,) = reports(lake, "score")
    assert unit_checks(rep) == expected


def quarantine_contract(tmp_path, budget: float) -> str:
    p = tmp_path / "q.yaml"
    p.write_text(open(CONTRACT).read().replace("mode: fail_closed", "mode: quarantine") + f"bad_row_budget: {budget}\n")
    return str(p)


def test_quarantine_mode_sets_bad_rows_aside_on_both_pipelines(ray_local, lake, demo_root, tmp_path, pipeline):
    t = put(put(fresh_day(), "f03", [2, 8], float("nan")), "region", [8, 9], "mars")
    append(lake, t)
    ids = t.column("entity_id").to_pylist()
    cfg = score_config(lake, demo_root, f"input.contract={quarantine_contract(tmp_path, 0.01)}", f"input.ds={NEW_DAY}",
                       *pipeline)
    s = run_score(cfg, executor(cfg.ray))
    assert (s.rows_in, s.rows_out, s.rows_quarantined, s.committed) == (ROWS, ROWS - 3, 3, [NEW_DAY])
    q = DeltaTable(str(lake / "quarantine")).to_pyarrow_table()
    got = {json.loads(k)["entity_id"]: sorted(c) for k, c in zip(q.column("key").to_pylist(), q.column("failed_checks").to_pylist())}
    assert got == {ids[2]: ["finite:f03"], ids[8]: ["category:region", "finite:f03"], ids[9]: ["category:region"]}
    scored = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["entity_id"]).column("entity_id").to_pylist()
    assert sorted(scored) == sorted(set(ids) - set(got))
    assert not orphans(lake / "quarantine") and not orphans(lake / "scores")


def validate_config(lake, demo_root, *overrides: str) -> ValidateConfig:
    return resolve_paths(load_config(ValidateConfig, None, [
        f"lake.root={lake}", f"input.contract={CONTRACT}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
        f"mlflow.artifact_root={demo_root}/mlartifacts", *overrides]))


def test_validate_reports_hostile_rows_on_both_pipelines(ray_local, lake, demo_root, pipeline):
    from contracts.validate import executor_gather, run_validate

    t = put(put(fresh_day(), "f03", [1, 2], float("nan")), "entity_id", [7, 8], fresh_day().column("entity_id")[9].as_py())
    append(lake, t)
    cfg = validate_config(lake, demo_root, *pipeline)
    with pytest.raises(ContractViolation, match=NEW_DAY) as e:
        run_validate(cfg, executor_gather(executor(cfg.ray)))
    assert e.value.exit_code == 3 and e.value.summary.passed == DAYS_LIST
    (rep,) = reports(lake, "validate")
    assert unit_checks(rep) == reference_failures(t) == {"finite:f03": 2, "unique_key": 3}
    assert [u["status"] for u in rep["units"]] == ["pass"] * DAYS + ["fail"]
    assert not (lake / "scores").exists()


def split_hostile_day() -> pa.Table:
    """A day of three files: duplicate keys across files, NaN features in the first and the last file."""
    t = fresh_day()
    ids = t.column("entity_id").to_pylist()
    t = put(t, "entity_id", [2500], ids[10])  # file 3 repeats a key of file 1
    t = put(t, "entity_id", [2999], ids[1001])  # and one of file 2
    return put(put(t, "f03", [4, 2900], float("nan")), "f07", [1500], float("nan"))


def test_a_day_split_over_chunks_reports_duplicate_keys_across_chunks(ray_local, lake, demo_root, pipeline, monkeypatch):
    import engine.lake.scratch

    monkeypatch.setattr(engine.lake.scratch, "ROWS_PER_BUCKET", 1000)  # the day's key hashes counted in 3 bucket tasks
    t = split_hostile_day()
    append(lake, t, files=3)
    snap = open_snapshot("features", str(lake / "features"))
    assert len(plan_chunks([(f.path, f.num_records) for f in snap.files[NEW_DAY]], 1000)) == 3  # three chunks
    expected = reference_failures(t)
    assert expected == {"finite:f03": 2, "finite:f07": 1, "unique_key": 4}
    cfg = score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={NEW_DAY}",
                       "output.target_file_rows=1000", *pipeline)
    with pytest.raises(ContractViolation, match=NEW_DAY):
        run_score(cfg, executor(cfg.ray))
    assert table_rows(lake / "scores") == 0 and not orphans(lake / "scores")
    assert not (lake / "_scratch").exists()  # the spilled key hashes are gone with the run
    (srep,) = reports(lake, "score")
    assert unit_checks(srep) == expected

    from contracts.validate import executor_gather, run_validate

    vcfg = validate_config(lake, demo_root, "target_chunk_rows=1000", *pipeline)
    with pytest.raises(ContractViolation, match=NEW_DAY):
        run_validate(vcfg, executor_gather(executor(vcfg.ray)))
    (vrep,) = reports(lake, "validate")
    assert unit_checks(vrep) == expected
    assert [u["rows"] for u in vrep["units"]] == [ROWS] * (DAYS + 1)
    assert not (lake / "_scratch").exists()


def test_actor_result_codec_rebuilds_the_chunk_result_whole():
    from contracts.checks import CheckStats, row_masks
    from contracts.enforce import ContractCheck
    from contracts.spec import load_contract
    from engine.executor import decode_result, encode_result
    from engine.work import ChunkResult

    t = put(put(fresh_day(300), "f03", [1, 2], float("nan")), "entity_id", [7], fresh_day(300).column("entity_id")[9].as_py())
    rc = load_contract(CONTRACT).resolve(t.schema)
    stats = CheckStats()
    batch = t.to_batches()[0]
    stats.update(batch, row_masks(batch, rc, NEW_DAY), rc, {"f06": np.array([-1.0, 0.0, 1.0])})
    with pytest.raises(ValueError, match="seal"):  # key hashes never leave the worker
        stats.to_bytes()
    stats.seal()  # a one-chunk unit: its duplicate keys are counted where it ran
    adds = [{"path": "ds=x/part-1.parquet", "size": 10, "partition_values": {"ds": "x"}, "stats": "{}"}]
    r = ChunkResult("u", 300, 297, adds, stats, 2, [{"path": "q.parquet"}], 3, 7)
    check = ContractCheck(rc, {})
    back = decode_result(*encode_result(r), check)
    assert (back.unit, back.rows_in, back.rows_out, back.adds, back.bad_scores, back.quarantine_adds,
            back.rows_quarantined, back.chunk) == ("u", 300, 297, adds, 2, [{"path": "q.parquet"}], 3, 7)
    assert (back.checks.rows, back.checks.bad_rows, back.checks.failed, back.checks.examples) == \
        (stats.rows, stats.bad_rows, stats.failed, stats.examples) == (300, 2, {"finite:f03": 2}, stats.examples)
    assert back.checks.duplicate_keys() == stats.duplicate_keys() == 2
    assert np.array_equal(back.checks.hist["f06"], stats.hist["f06"])
    assert decode_result(*encode_result(ChunkResult("u", 5, 5, [])), None).checks is None
