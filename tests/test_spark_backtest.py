"""The backtest job on Spark (`lakescore backtest … engine=spark`, through the one engine switch jobs.engines) against
the same backtest on Ray: the same `backtest_metrics` rows, read directly with deltalake, in every column but the
run's own (run_id, created_at). Both run on the session's shared clusters (tests/conftest.py: ray_local, spark).

What a broken build shows here: `engine=spark` refused for backtests (exit 2), a Spark executor that loses the
group's payload or the baseline model (rows missing, baseline metrics different), start lines never printed.
"""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from deltalake import DeltaTable

from conftest import ROOT, XGB

pytestmark = pytest.mark.slow
CONTRACT = ROOT / "conf" / "contracts" / "features.yaml"
RUN_COLUMNS = ["run_id", "created_at"]


def backtest(lake, demo_root, engine: str, capsys) -> tuple[int, dict, str]:
    from jobs.backtest import main

    code = main(["--config", str(ROOT / "conf" / "backtest.yaml"), f"engine={engine}", f"lake.root={lake}",
                 f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
                 f"mlflow.artifact_root={demo_root}/mlartifacts",
                 f"baseline.model=models:/{XGB}@champion", "folds.train_days=2", "folds.n_folds=2", "recipe.trees=20",
                 "recipe.depth=3", "metrics.bootstrap=30", "min_support=50", f"features.contract={CONTRACT}",
                 "mlflow.log_reports=false", "--no-progress"])
    out = capsys.readouterr()
    return code, json.loads(out.out.strip().splitlines()[-1]), out.err


def metric_rows(lake):
    df = DeltaTable(str(lake / "backtest_metrics")).to_pandas().drop(columns=RUN_COLUMNS)
    return df.sort_values(["fold", "model", "slice", "metric"]).reset_index(drop=True)


def test_backtest_on_spark_gives_the_same_metrics_as_on_ray(demo_root, tmp_path, ray_local, spark, capsys):
    runs = {}
    lake = tmp_path / "lake"  # one path for both runs: lake.root is in the config hash, so in the backtest id
    for engine in ("ray", "spark"):
        if lake.exists():
            lake.rename(tmp_path / "after-ray")
        shutil.copytree(demo_root / "lake", lake)
        code, summary, err = backtest(lake, demo_root, engine, capsys)
        assert code == 0, err[-3000:]
        assert summary["folds_committed"] == [0, 1] and summary["folds_failed"] == []
        for fold in (0, 1):  # each group's start line, printed when it starts (Spark: when its job is submitted)
            assert f"fold(s) [{fold}] start" in err, engine
        runs[engine] = (summary, metric_rows(lake))
    (ray_s, ray_rows), (spark_s, spark_rows) = runs["ray"], runs["spark"]
    assert ray_s["backtest_id"] == spark_s["backtest_id"]  # same config and versions: the same backtest
    assert len(ray_rows) > 0 and set(ray_rows.fold) == {0, 1}
    assert len(set(ray_rows.model)) == 2  # the recipe and the champion baseline (the bundle shipped to the tasks)
    pd.testing.assert_frame_equal(ray_rows, spark_rows, check_exact=True)
