"""Contract statistics merged across chunks: a day split over three files (three chunks, run as Ray tasks, Ray Data
actors or Spark tasks), with duplicate keys and failing rows in different files, gets the same verdict, counts and
quoted examples on every engine, whatever order the chunks finish in.
"""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from conftest import DAYS, ROWS
from engine.errors import ContractViolation
from engine.ray.executor import executor
from engine.score.scoring import plan_chunks
from engine.lake.snapshot import open_snapshot
from test_pipelines import NEW_DAY, PIPELINES, append, fresh_day, put, reference_failures, validate_config

pytestmark = pytest.mark.slow


def split_day() -> pa.Table:
    """Three files of 1000 rows: duplicate keys across files, four NaN (one more than a report quotes), bad regions."""
    t = fresh_day()
    ids = t.column("entity_id").to_pylist()
    t = put(put(t, "entity_id", [2500], ids[10]), "entity_id", [2999], ids[1001])
    t = put(t, "f03", [2900, 1100, 4, 2100], float("nan"))
    return put(t, "region", [2400, 20], "atlantis")


def test_a_day_split_over_files_gets_the_same_verdict_on_ray_and_on_spark(spark, ray_local, lake, demo_root):
    from contracts.validate import executor_gather, run_validate
    from engine.spark.executor import SparkExecutor

    t = split_day()
    append(lake, t, files=3)
    snap = open_snapshot("features", str(lake / "features"))
    assert len(plan_chunks([(f.path, f.num_records) for f in snap.files[NEW_DAY]], 1000)) == 3
    expected = reference_failures(t)
    expected["category:region"] = sum(r not in ("north", "south", "east", "west") for r in t.column("region").to_pylist())
    assert expected == {"finite:f03": 4, "category:region": 2, "unique_key": 4}

    reports = lake / "_reports" / "validate"
    got = {}
    for name, overrides, gather in [
        ("ray-tasks", PIPELINES["tasks"], None), ("ray-actors", PIPELINES["actors"], None),
        ("spark", [], executor_gather(SparkExecutor(spark))),
    ]:
        cfg = validate_config(lake, demo_root, "target_chunk_rows=1000", *overrides)
        before = set(reports.glob("*.json")) if reports.exists() else set()
        with pytest.raises(ContractViolation, match=NEW_DAY):
            run_validate(cfg, gather or executor_gather(executor(cfg.ray)))
        (new,) = set(reports.glob("*.json")) - before
        got[name] = json.loads(new.read_text())["units"]
    strip = lambda units: [(u["ds"], u["status"], u["rows"], sorted((v["check"], v["rows"], json.dumps(v["examples"]))
                                                                 for v in u["violations"])) for u in units]
    assert strip(got["ray-tasks"]) == strip(got["ray-actors"]) == strip(got["spark"])
    unit = got["spark"][-1]
    assert unit["ds"] == NEW_DAY and unit["rows"] == ROWS and [u["status"] for u in got["spark"]] == ["pass"] * DAYS + ["fail"]
    assert {v["check"]: v["rows"] for v in unit["violations"]} == expected
    # The quoted examples are the first failing rows in (file path, row) order, read here with pyarrow alone.
    import pyarrow.parquet as pq

    files = sorted(f.path for f in snap.files[NEW_DAY])
    day = pa.concat_tables(pq.read_table(lake / "features" / f, columns=["entity_id", "f03"]) for f in files)
    first = [i for i, v in zip(day.column("entity_id").to_pylist(), day.column("f03").to_pylist()) if v != v][:3]
    (nan,) = [v for v in unit["violations"] if v["check"] == "finite:f03"]
    assert [e["entity_id"] for e in nan["examples"]] == first and len(first) == 3
