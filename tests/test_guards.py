"""Guards of the score job that only fire on broken inputs or models, each triggered by a real run.

- rows reconcile: the Delta log's row count of a day disagrees with what its files hold;
- output score: a model whose scores leave [0, 1] (a regression objective registered by mistake).
Each time the unit fails, nothing of it is written, and the other units are committed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import DAYS, ROWS, score_config
from engine.demo.data import make_day
from engine.errors import ContractViolation, LakescoreError
from engine.models.preprocess import Feature, PreprocessSpec
from engine.ray.executor import executor
from jobs.score import run_score
from tiny_models import register_xgb

NEW_DAY = f"2026-01-0{DAYS + 1}"
PREV_DAY = f"2026-01-0{DAYS}"


def written(lake, ds: str) -> int:
    path = lake / "scores"
    if not path.exists():
        return 0
    t = DeltaTable(str(path)).to_pyarrow_table(columns=["ds"])
    return sum(1 for d in t.column("ds").to_pylist() if d == ds)


def understate_log_rows(table, ds: str, by: int) -> tuple[int, int]:
    """Rewrite the numRecords statistic of `ds`'s add action in the Delta log; returns (file rows, logged rows)."""
    for commit in sorted((table / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        adds = [a["add"] for a in actions if "add" in a and a["add"]["partitionValues"].get("ds") == ds]
        if adds:
            (add,) = adds
            stats = json.loads(add["stats"])
            stats["numRecords"] -= by
            add["stats"] = json.dumps(stats)
            commit.write_text("".join(json.dumps(a) + "\n" for a in actions))
            return stats["numRecords"] + by, stats["numRecords"]
    raise AssertionError(f"no add action for ds={ds}")


@pytest.mark.parametrize("pipeline", [["ray.pipeline=tasks"], ["ray.pipeline=actors", "ray.actors=1", "ray.num_cpus=0.25"]],
                         ids=["tasks", "actors"])
def test_a_day_whose_log_row_count_disagrees_with_its_file_is_not_written(ray_local, lake, demo_root, pipeline):
    write_deltalake(str(lake / "features"), make_day(DAYS, NEW_DAY, ROWS, 50, seed=21)[0], partition_by=["ds"], mode="append")
    in_file, in_log = understate_log_rows(lake / "features", NEW_DAY, 1)
    assert (in_file, in_log) == (ROWS, ROWS - 1)
    assert DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "=", NEW_DAY)]).num_rows == ROWS  # the file
    cfg = score_config(lake, demo_root, f"input.ds={PREV_DAY}..{NEW_DAY}", *pipeline)
    with pytest.raises(LakescoreError) as e:
        run_score(cfg, executor(cfg.ray))
    msg = str(e.value)
    assert "rows do not reconcile" in msg and NEW_DAY in msg and f"log {ROWS - 1}" in msg and f"read {ROWS}" in msg, msg
    assert e.value.exit_code != 0
    assert e.value.summary.committed == [PREV_DAY] and e.value.summary.units_failed == 1
    assert written(lake, NEW_DAY) == 0 and written(lake, PREV_DAY) == ROWS
    referenced = {f.removeprefix("file://") for f in DeltaTable(str(lake / "scores")).file_uris()}
    assert {str(p) for p in (lake / "scores").rglob("*.parquet")} == referenced  # the failed unit's files are gone


def test_a_model_scoring_outside_zero_one_fails_the_output_contract(ray_local, lake, demo_root, tmp_path):
    spec = PreprocessSpec((Feature("f00"), Feature("f01")))
    x = np.random.default_rng(1).standard_normal((300, 2)).astype(np.float32)
    registry = register_xgb(tmp_path, "t-regressor", spec, x, np.full(300, 1.5, np.float32), "reg:squarederror")
    cfg = score_config(lake, demo_root, f"input.ds={PREV_DAY}", *registry)
    with pytest.raises(ContractViolation, match="output_score") as e:
        run_score(cfg, executor(cfg.ray))
    assert e.value.exit_code == 3 and PREV_DAY in str(e.value)
    (v,) = [v for v in e.value.summary.violations if v["check"] == "output_score"]
    assert v["rows"] == ROWS and v["ds"] == PREV_DAY
    assert written(lake, PREV_DAY) == 0
    scores = lake / "scores"
    assert not list(scores.rglob("*.parquet")) if scores.exists() else True
