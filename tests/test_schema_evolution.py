"""The direct Parquet reader under schema evolution: columns added at a later table version read as nulls in older
files, every batch carries the snapshot's types, and table features the reader cannot honour are refused (exit 5).

References are independent reads of the table through `deltalake` (which applies the table schema itself).
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
from engine.errors import ContractViolation, InputUnavailable
from engine.models.preprocess import Feature, PreprocessSpec
from engine.ray.executor import executor
from jobs.score import run_score
from engine.lake.snapshot import file_path, filesystem, iter_file_batches, open_snapshot
from tiny_models import register_xgb

OLD_DAY, NEW_DAY = f"2026-01-0{DAYS}", f"2026-01-0{DAYS + 1}"


@pytest.fixture
def evolved(lake):
    """The demo lake plus a day appended with two new columns (`schema_mode="merge"`): older files lack them."""
    t = make_day(DAYS, NEW_DAY, ROWS, 50, seed=21)[0]
    rng = np.random.default_rng(5)
    t = t.append_column("f_new", pa.array(rng.standard_normal(ROWS).astype(np.float32)))
    t = t.append_column("note", pa.array([f"n{i % 7}" for i in range(ROWS)]))
    write_deltalake(str(lake / "features"), t, partition_by=["ds"], mode="append", schema_mode="merge")
    return lake


def reference(lake, columns: list[str], days: list[str]) -> pa.Table:
    return DeltaTable(str(lake / "features")).to_pyarrow_table(columns=columns, filters=[("ds", "in", days)])


def test_reader_adds_missing_columns_as_nulls_with_the_snapshot_types(evolved):
    snap = open_snapshot("features", str(evolved / "features"))
    fs, base = filesystem(snap.uri)
    cols = ["entity_id", "f_new", "note"]
    target = pa.schema([snap.schema.field(c) for c in cols])
    (old,) = snap.files[OLD_DAY]
    got = pa.Table.from_batches(list(iter_file_batches(fs, file_path(base, old.path), cols, 1000, snap.schema)))
    assert got.schema == target and got.num_rows == ROWS
    ref = reference(evolved, cols, [OLD_DAY])
    assert got.column("f_new").null_count == got.column("note").null_count == ROWS == ref.column("note").null_count
    assert got.column("entity_id").to_pylist() == ref.column("entity_id").to_pylist()


def test_passthrough_column_added_later_is_null_for_older_days(ray_local, evolved, demo_root):
    cfg = score_config(evolved, demo_root, f"input.ds={OLD_DAY}..{NEW_DAY}", "input.passthrough_columns=[event_ts,note]")
    s = run_score(cfg, executor(cfg.ray))
    assert sorted(s.committed) == [OLD_DAY, NEW_DAY]
    out = DeltaTable(str(evolved / "scores")).to_pyarrow_table(columns=["entity_id", "ds", "note"])
    ref = reference(evolved, ["entity_id", "ds", "note"], [OLD_DAY, NEW_DAY])
    assert sorted(out.to_pylist(), key=lambda r: (r["ds"], r["entity_id"])) == \
        sorted(ref.to_pylist(), key=lambda r: (r["ds"], r["entity_id"]))
    assert out.filter(pa.compute.equal(out.column("ds"), OLD_DAY)).column("note").null_count == ROWS


def test_feature_added_later_is_filled_for_older_days(ray_local, evolved, demo_root, tmp_path):
    spec = PreprocessSpec((Feature("f00"), Feature("f_new", fill=0.5)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 2)).astype(np.float32)
    registry = register_xgb(tmp_path, "t-evolve", spec, x, (x[:, 0] + x[:, 1] > 0).astype(np.float32))
    cfg = score_config(evolved, demo_root, f"input.ds={OLD_DAY}..{NEW_DAY}", *registry)
    s = run_score(cfg, executor(cfg.ray))
    assert sorted(s.committed) == [OLD_DAY, NEW_DAY] and s.rows_out == 2 * ROWS
    import xgboost as xgb
    from mlflow.artifacts import download_artifacts

    booster = xgb.Booster()
    booster.load_model(download_artifacts("models:/t-evolve/1/model.ubj", tracking_uri=registry[0].split("=", 1)[1],
                                          dst_path=str(tmp_path / "dl")))
    ref = reference(evolved, ["ds", "entity_id", "f00", "f_new"], [OLD_DAY, NEW_DAY]).to_pandas()
    assert ref[ref["ds"] == OLD_DAY]["f_new"].isna().all()  # positive control: older rows have no f_new
    pred = booster.inplace_predict(ref[["f00", "f_new"]].fillna(0.5).to_numpy(np.float32))
    want = dict(zip(zip(ref["ds"], ref["entity_id"]), pred))
    out = DeltaTable(str(evolved / "scores")).to_pyarrow_table(columns=["ds", "entity_id", "score"]).to_pylist()
    assert len(out) == len(want) == 2 * ROWS
    assert all(abs(r["score"] - want[(r["ds"], r["entity_id"])]) < 1e-6 for r in out)


def test_non_nullable_column_added_later_fails_not_null_on_older_days(ray_local, evolved, demo_root, tmp_path):
    from contracts.validate import executor_gather, run_validate

    contract = tmp_path / "evolved.yaml"
    contract.write_text((ROOT / "conf" / "contracts" / "features.yaml").read_text().replace(
        "columns:\n", "columns:\n  note: {type: string, nullable: false}\n  f_new: {type: float, finite: true}\n"))
    cfg = resolve_paths(load_config(ValidateConfig, None, [
        f"lake.root={evolved}", f"input.contract={contract}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
        f"mlflow.artifact_root={demo_root}/mlartifacts"]))
    with pytest.raises(ContractViolation) as e:
        run_validate(cfg, executor_gather(executor(cfg.ray)))
    ref = reference(evolved, ["ds", "note"], [f"2026-01-0{i + 1}" for i in range(DAYS + 1)]).to_pandas()
    nulls = ref.groupby("ds")["note"].apply(lambda s: int(s.isna().sum())).to_dict()
    assert e.value.summary.failed == [d for d, n in sorted(nulls.items()) if n] and e.value.summary.passed == [NEW_DAY]
    (rep,) = [json.loads(p.read_text()) for p in (evolved / "_reports" / "validate").glob("*.json")]
    got = {u["ds"]: {v["check"]: v["rows"] for v in u["violations"]} for u in rep["units"]}
    assert got == {d: ({"not_null:note": n} if n else {}) for d, n in nulls.items()}


def protocol_commit(table, features: list[str]) -> None:
    """Commit a protocol upgrade naming `features` (reader and writer) straight into the Delta log."""
    log = table / "_delta_log"
    version = max(int(p.stem) for p in log.glob("*.json")) + 1
    actions = [{"protocol": {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": features,
                             "writerFeatures": features}},
               {"commitInfo": {"timestamp": 1767225600000, "operation": "SET TBLPROPERTIES"}}]
    (log / f"{version:020d}.json").write_text("".join(json.dumps(a) + "\n" for a in actions))


@pytest.mark.parametrize("feature", ["typeWidening", "typeWidening-preview", "variantType", "deletionVectors", "columnMapping"])
def test_tables_with_reader_features_the_reader_cannot_honour_are_refused(lake, feature):
    protocol_commit(lake / "features", [feature])
    assert feature in DeltaTable(str(lake / "features")).protocol().reader_features  # positive control
    with pytest.raises(InputUnavailable, match=feature) as e:
        open_snapshot("features", str(lake / "features"))
    assert e.value.exit_code == 5


def test_harmless_reader_features_are_accepted(lake):
    protocol_commit(lake / "features", ["timestampNtz"])
    assert open_snapshot("features", str(lake / "features")).partitions == [f"2026-01-0{i + 1}" for i in range(DAYS)]
