"""Spark + delta-spark (local jars) read the Delta tables that deltalake and lakescore write, with time travel."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import DAYS, ROWS, XGB, score_config
from engine.demo.data import make_day
from engine.executor import LocalExecutor
from jobs.score import run_score

pytestmark = pytest.mark.slow


def counts_by(table: pa.Table, *cols: str) -> dict:
    grouped = table.group_by(list(cols)).aggregate([([], "count_all")])
    return {tuple(r[c] for c in cols): r["count_all"] for r in grouped.to_pylist()}


def spark_counts_by(spark, sql_from: str, *cols: str) -> dict:
    rows = spark.sql(f"SELECT {', '.join(cols)}, count(*) AS n FROM {sql_from} GROUP BY {', '.join(cols)}").collect()
    return {tuple(r[c] for c in cols): r["n"] for r in rows}


def day_sums(table: pa.Table) -> dict:
    """Per ds: (rows, sum of entity_id, sum of event_ts in µs), from a deltalake read."""
    t = table.append_column("ts_us", table["event_ts"].cast(pa.int64()))
    g = t.group_by("ds").aggregate([([], "count_all"), ("entity_id", "sum"), ("ts_us", "sum")])
    return {r["ds"]: (r["count_all"], r["entity_id_sum"], r["ts_us_sum"]) for r in g.to_pylist()}


def test_time_travel_matches_deltalake(spark, tmp_path):
    path = str(tmp_path / "features")
    # v0: day 1; v1: day 2 plus late rows for day 1; v2: day 3.
    appends = [
        make_day(0, "2026-01-01", 400, 8, seed=5)[0],
        pa.concat_tables([make_day(1, "2026-01-02", 300, 8, seed=5)[0], make_day(9, "2026-01-01", 50, 8, seed=5)[0]]),
        make_day(2, "2026-01-03", 200, 8, seed=5)[0],
    ]
    for t in appends:
        write_deltalake(path, t, mode="append", partition_by=["ds"])
    assert DeltaTable(path).version() == 2

    for v in range(3):
        rows = spark.sql(
            f"SELECT ds, count(*) AS n, sum(entity_id) AS s, sum(unix_micros(event_ts)) AS t"
            f" FROM delta.`{path}` VERSION AS OF {v} GROUP BY ds"
        ).collect()
        expected = day_sums(DeltaTable(path, version=v).to_pyarrow_table())
        assert {r["ds"]: (r["n"], r["s"], r["t"]) for r in rows} == expected
    v1 = spark.sql(f"SELECT count(*) AS n FROM delta.`{path}` VERSION AS OF 1").first()["n"]
    assert v1 == DeltaTable(path, version=1).to_pyarrow_table().num_rows == 400 + 300 + 50
    latest = spark.sql(f"SELECT count(*) AS n FROM delta.`{path}`").first()["n"]
    assert latest == DeltaTable(path).to_pyarrow_table().num_rows == 950
    types = dict(spark.read.format("delta").load(path).dtypes)
    assert types["ds"] == "string" and types["event_ts"] == "timestamp" and types["entity_id"] == "bigint"


def test_spark_reads_scores_written_by_the_score_job(spark, lake, demo_root):
    summary = run_score(score_config(lake, demo_root), LocalExecutor())
    assert summary.units_committed == DAYS and summary.rows_out == DAYS * ROWS
    path = str(lake / "scores")
    dt = DeltaTable(path)
    expected = dt.to_pyarrow_table()
    src = f"delta.`{path}`"

    df = spark.read.format("delta").load(path)
    types = dict(df.dtypes)
    assert (types["ds"], types["model_name"], types["model_version"]) == ("string", "string", "bigint")
    assert types["score"] == "float" and types["scored_at"] == "timestamp"
    assert df.count() == expected.num_rows == DAYS * ROWS
    parts = spark_counts_by(spark, src, "ds", "model_name", "model_version")
    assert parts == counts_by(expected, "ds", "model_name", "model_version")
    assert set(parts) == {(f"2026-01-0{i + 1}", XGB, 1) for i in range(DAYS)}
    got = spark.sql(
        f"SELECT sum(CAST(score AS DOUBLE)) AS s, count(DISTINCT entity_id) AS k, min(run_id) AS r, max(run_id) AS r2,"
        f" min(unix_micros(scored_at)) AS t, max(unix_micros(scored_at)) AS t2 FROM {src}"
    ).first()
    assert got["s"] == pytest.approx(pc.sum(expected["score"].cast(pa.float64())).as_py(), rel=1e-9)
    assert got["k"] == len(pc.unique(expected["entity_id"]))
    assert got["r"] == got["r2"] == summary.run_id
    assert got["t"] == got["t2"] == expected["scored_at"].cast(pa.int64())[0].as_py()

    # DESCRIBE HISTORY shows the userMetadata JSON of each unit's commit, as deltalake's history() does.
    hist = spark.sql(f"DESCRIBE HISTORY {src}").select("version", "userMetadata").collect()
    spark_meta = {r["version"]: json.loads(r["userMetadata"]) for r in hist if r["userMetadata"]}
    rs_meta = {h["version"]: json.loads(h["userMetadata"]) for h in dt.history() if "userMetadata" in h}
    assert spark_meta == rs_meta and len(spark_meta) == DAYS
    assert sorted(m["ds"] for m in spark_meta.values()) == [f"2026-01-0{i + 1}" for i in range(DAYS)]
    for m in spark_meta.values():
        assert (m["run_id"], m["model_name"], m["model_version"], m["rows"]) == (summary.run_id, XGB, 1, ROWS)


def test_pandera_pyspark_schema_from_the_same_contract_flags_the_same_columns(spark, tmp_path):
    from pathlib import Path

    from contracts.checks import row_masks
    from contracts.schemas import pyspark_schema
    from contracts.spec import load_contract

    t = make_day(0, "2026-01-01", 200, 50, seed=4)[0]
    vals = t.column("f02").to_pylist()
    vals[3] = 99.0
    t = t.set_column(t.schema.get_field_index("f02"), "f02", pa.array(vals, pa.float32()))
    regions = t.column("region").to_pylist()
    regions[5] = "mars"
    t = t.set_column(t.schema.get_field_index("region"), "region", pa.array(regions))
    path = str(tmp_path / "features")
    write_deltalake(path, t, partition_by=["ds"])
    contract = load_contract(Path(__file__).resolve().parent.parent / "conf" / "contracts" / "features.yaml")
    rc = contract.resolve(DeltaTable(path).to_pyarrow_table().schema)
    masks = row_masks(DeltaTable(path).to_pyarrow_table().to_batches()[0], rc, "2026-01-01")
    df = spark.read.format("delta").load(path).drop("ds")
    checked = pyspark_schema(rc, df.schema).validate(df)
    errors = json.dumps(dict(checked.pandera.errors), default=str)
    assert set(masks) == {"range:f02", "category:region"}
    assert "f02" in errors and "region" in errors and "DATA" in errors
    assert "f03" not in errors  # clean columns pass


def test_validate_on_spark_and_on_ray_reach_the_same_verdicts(spark, ray_local, lake, demo_root):
    """Hostile rows in one day: both engines report the same checks, counts and examples; other days pass on both."""
    from pathlib import Path

    from contracts.validate import executor_gather, run_validate
    from engine.config import ValidateConfig, load_config, resolve_paths
    from engine.errors import ContractViolation
    from engine.ray.executor import executor
    from engine.spark.executor import SparkExecutor

    t = make_day(DAYS, "2026-01-05", ROWS // 10, 50, seed=8)[0]  # 10× fewer rows: volume
    t = t.set_column(t.schema.get_field_index("f06"), "f06", pc.add(t.column("f06"), 1.5))  # shifted: drift

    def put(t, col, rows, value):
        vals = t.column(col).to_pylist()
        for i in rows:
            vals[i] = value
        return t.set_column(t.schema.get_field_index(col), col, pa.array(vals, t.schema.field(col).type))

    t = put(t, "f03", [1, 2], float("nan"))
    t = put(t, "f04", [3], float("-inf"))
    t = put(t, "f05", [4], 1e6)
    t = put(t, "region", [5], "atlantis")
    t = put(t, "entity_id", [6], None)
    t = put(t, "entity_id", [7, 8], t.column("entity_id")[9].as_py())
    ts = t.column("event_ts").to_pylist()
    ts[10] = ts[10].replace(year=2025)
    t = t.set_column(1, "event_ts", pa.array(ts, t.schema.field("event_ts").type))
    write_deltalake(str(lake / "features"), t, partition_by=["ds"], mode="append")
    contract = str(Path(__file__).resolve().parent.parent / "conf" / "contracts" / "features.yaml")
    cfg = resolve_paths(load_config(ValidateConfig, None, [f"lake.root={lake}", f"input.contract={contract}",
                                                           f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
                                                           f"mlflow.artifact_root={demo_root}/mlartifacts"]))
    verdicts = {}
    reports = lake / "_reports" / "validate"
    for name, gather in (("ray", executor_gather(executor(cfg.ray))), ("spark", executor_gather(SparkExecutor(spark)))):
        before = set(reports.glob("*.json")) if reports.exists() else set()
        with pytest.raises(ContractViolation, match="2026-01-05"):
            run_validate(cfg, gather)
        (new,) = set(reports.glob("*.json")) - before
        verdicts[name] = json.loads(new.read_text())
    strip = lambda rep: [(u["ds"], u["status"], u["rows"], sorted((v["check"], v["rows"], json.dumps(v["examples"], sort_keys=True))
                                                                for v in u["violations"])) for u in rep["units"]]
    assert strip(verdicts["ray"]) == strip(verdicts["spark"])
    bad = {v["check"]: v["rows"] for v in verdicts["spark"]["units"][-1]["violations"]}
    assert bad == {"finite:f03": 2, "finite:f04": 1, "range:f04": 1, "range:f05": 1, "category:region": 1, "not_null:entity_id": 1,
                   "unique_key": 3, "event_in_partition:event_ts": 1, "volume": None, "drift:f06": None}
    assert [u["status"] for u in verdicts["ray"]["units"]] == ["pass"] * DAYS + ["fail"]
