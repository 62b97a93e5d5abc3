"""engine.spark.dataframe.score_dataframe on a real local Spark: the demo model scores a DataFrame (a Delta read, a
join, a filter) like an independent XGBoost prediction on the same rows, stamps every row, refuses pickle models and
bad inputs before any Spark job, and loads the model once per Python worker."""
from __future__ import annotations

import datetime as dt
import os

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
import xgboost as xgb
from deltalake import DeltaTable
from mlflow.tracking import MlflowClient

from conftest import XGB
from engine.demo.models import demo_spec
from engine.errors import ConfigError, ContractViolation, ModelRefused
from engine.models.registry import PREPROCESS_KEY, fetch_bundle
from engine.models.scorers import scorer_loads
from engine.score.scoring import Stamps
from engine.spark.dataframe import NO_VERSION, batch_function, score_dataframe

pytestmark = pytest.mark.slow
DAY = "2026-01-02"
CATEGORIES = [("region", ["north", "south", "east", "west"]), ("segment", ["consumer", "smb", "enterprise"]),
              ("channel", ["web", "app", "store"])]


@pytest.fixture(scope="module")
def df_spark(tmp_path_factory):
    """A local Spark for this module; stopped at the end only if this fixture started it."""
    from pyspark.sql import SparkSession

    from engine.spark.session import spark_session

    started = SparkSession.getActiveSession() is None
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = spark_session("lakescore-dataframe-tests", extra_conf={"spark.sql.warehouse.dir": str(warehouse),
                                                                     "spark.python.worker.reuse": "true"})
    yield session
    if started:
        session.stop()


@pytest.fixture(scope="module")
def model(demo_root):
    tracking = f"sqlite:///{demo_root}/mlruns.db"
    return tracking, f"models:/{XGB}@champion", fetch_bundle(f"models:/{XGB}@champion", tracking, None, False)


def independent_scores(features: pa.Table, bundle) -> dict[tuple, float]:
    """(entity_id, ds) → XGBoost's own prediction on a matrix built with pandas (none of lakescore's preprocessing)."""
    booster = xgb.Booster()
    booster.load_model(bytearray(bundle.payload))
    df = features.to_pandas()
    x = df[[f"f{i:02d}" for i in range(50)]].clip(-8, 8).to_numpy(np.float32)
    cats = [df[c].map({v: i for i, v in enumerate(vals)}).to_numpy(np.float32) for c, vals in CATEGORIES]
    return dict(zip(zip(df["entity_id"], df["ds"]), booster.inplace_predict(np.column_stack([x, *cats]))))


def assert_scores(got: pa.Table, want: dict[tuple, float]) -> None:
    ids = list(zip(got.column("entity_id").to_pylist(), got.column("ds").to_pylist()))
    assert len(ids) == len(set(ids)) == len(want) and set(ids) == set(want)
    np.testing.assert_allclose(got.column("score").to_numpy(), [want[i] for i in ids], rtol=0, atol=1e-6)


def test_scores_match_an_independent_xgboost_prediction_with_stamps_on_every_row(df_spark, demo_root, model):
    tracking, uri, bundle = model
    path = str(demo_root / "lake" / "features")
    df = df_spark.read.format("delta").load(path)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    out = score_dataframe(df, uri, tracking_uri=tracking, keys=["entity_id"], passthrough=["ds", "event_ts"])
    assert out.columns == ["entity_id", "ds", "event_ts", "score", "model_run_id", "input_table", "input_version",
                           "run_id", "config_hash", "scored_at", "model_name", "model_version"]
    assert dict(out.dtypes)["score"] == "float"
    got = out.toArrow()
    features = DeltaTable(path).to_pyarrow_table()
    assert got.num_rows == features.num_rows
    assert_scores(got, independent_scores(features, bundle))
    ref = MlflowClient(tracking).get_model_version_by_alias(XGB, "champion")
    constant = {"model_name": XGB, "model_version": int(ref.version), "model_run_id": ref.run_id,
                "input_table": "dataframe", "input_version": NO_VERSION}
    for col, value in constant.items():
        assert got.column(col).null_count == 0 and pc.unique(got.column(col)).to_pylist() == [value], col
    for col in ("run_id", "config_hash", "scored_at"):
        assert got.column(col).null_count == 0 and len(pc.unique(got.column(col))) == 1, col
    assert len(got.column("run_id")[0].as_py()) == 32 and len(got.column("config_hash")[0].as_py()) == 16
    assert before <= got.column("scored_at")[0].as_py() <= dt.datetime.now(dt.timezone.utc)
    key = ["entity_id", "ds"]
    assert (features.select([*key, "event_ts"]).sort_by([(k, "ascending") for k in key]).to_pylist()
            == got.select([*key, "event_ts"]).sort_by([(k, "ascending") for k in key]).to_pylist())


def test_a_joined_and_filtered_dataframe_is_scored_row_for_row(df_spark, demo_root, model):
    tracking, uri, bundle = model
    lake = demo_root / "lake"
    feats = df_spark.read.format("delta").load(str(lake / "features")).where(f"ds = '{DAY}' AND f01 > 0")
    labels = df_spark.read.format("delta").load(str(lake / "labels")).select("entity_id", "ds", "label")
    joined = feats.join(labels, ["entity_id", "ds"]).where("label = 1")
    out = score_dataframe(joined, uri, tracking_uri=tracking, keys=["entity_id", "ds"], passthrough=["label"],
                          input_table="features ⋈ labels", input_version=3, run_id="r" * 32)
    got = out.toArrow()
    f = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "=", DAY)])
    f = f.filter(pc.greater(f.column("f01"), 0))
    lab = DeltaTable(str(lake / "labels")).to_pyarrow_table(filters=[("ds", "=", DAY)], columns=["entity_id", "label"])
    want_rows = f.join(lab, "entity_id").filter(pc.equal(pc.field("label"), 1))
    assert 0 < got.num_rows == want_rows.num_rows < DeltaTable(str(lake / "features")).to_pyarrow_table().num_rows
    assert_scores(got, independent_scores(want_rows, bundle))
    assert pc.unique(got.column("label")).to_pylist() == [1] and pc.unique(got.column("ds")).to_pylist() == [DAY]
    assert pc.unique(got.column("input_table")).to_pylist() == ["features ⋈ labels"]
    assert pc.unique(got.column("input_version")).to_pylist() == [3]
    assert pc.unique(got.column("run_id")).to_pylist() == ["r" * 32]


def test_missing_or_non_numeric_features_and_bad_arguments_are_named_before_any_spark_job(df_spark, demo_root, model):
    tracking, uri, _ = model
    df = df_spark.read.format("delta").load(str(demo_root / "lake" / "features"))
    jobs = df_spark.sparkContext.statusTracker().getJobIdsForGroup(None)
    cases = [
        (df.drop("f03", "region"), {}, ContractViolation, r"features \['f03', 'region'\] are missing"),
        (df.withColumn("f07", df["f07"].cast("string")), {}, ContractViolation, r"\['f07 \(string\)'\] are not numeric"),
        (df, {"keys": ["entity"]}, ConfigError, r"keys/passthrough columns \['entity'\] are missing"),
        (df, {"keys": ["entity_id"], "passthrough": ["entity_id"]}, ConfigError, "more than once"),
        (df, {"passthrough": ["ds"], "score_column": "ds"}, ConfigError, "collide"),
        (df.join(df.select("entity_id", "ds", "f00"), ["entity_id", "ds"]), {}, ContractViolation,
         r"\['f00'\] appear more than once"),
    ]
    for frame, kwargs, error, match in cases:
        with pytest.raises(error, match=match) as e:
            score_dataframe(frame, uri, tracking_uri=tracking, **kwargs)
        assert "\n" not in str(e.value)
    assert df_spark.sparkContext.statusTracker().getJobIdsForGroup(None) == jobs


def test_pickle_models_are_refused(df_spark, demo_root, tmp_path):
    spec = demo_spec(50)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(len(spec.features), 4), torch.nn.Sigmoid()).eval()
    d = tmp_path / "m"
    mlflow.pytorch.save_model(net, str(d), serialization_format="pickle", metadata={PREPROCESS_KEY: spec.to_json()})
    tracking = f"sqlite:///{tmp_path}/mlruns.db"
    client = MlflowClient(tracking, registry_uri=tracking)
    run = client.create_run(client.create_experiment("pickled", artifact_location=(tmp_path / "art").as_uri()))
    client.log_artifacts(run.info.run_id, str(d), "model")
    client.create_registered_model("t-pickled")
    client.create_model_version("t-pickled", f"{run.info.artifact_uri}/model", run.info.run_id)
    df = df_spark.read.format("delta").load(str(demo_root / "lake" / "features"))
    with pytest.raises(ModelRefused, match="pickle-based") as e:
        score_dataframe(df, "models:/t-pickled/1", tracking_uri=tracking, keys=["entity_id"])
    assert e.value.exit_code == 5 and "\n" not in str(e.value)


def test_the_model_loads_once_per_python_worker_across_tasks(df_spark, demo_root, model):
    """Eight tasks on local[2] with Python worker reuse: each worker process loads the model once, on its first task,
    whatever the number of tasks and batches it serves. Each task runs the function that score_dataframe hands
    mapInArrow (with nthread=1, a setting no other test loads with) and reports its worker's pid and that worker's
    load count for the bundle before and after scoring."""
    _, _, bundle = model
    df = df_spark.read.format("delta").load(str(demo_root / "lake" / "features")).repartition(8)
    stamps = Stamps(XGB, bundle.ref.version, bundle.ref.run_id, "dataframe", NO_VERSION, "p" * 32, "h" * 16,
                    dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    score = batch_function(df_spark.sparkContext.broadcast(bundle), ["entity_id"], [], "score", stamps, "cpu", 4096, 1)

    def probe(batches):
        before = scorer_loads(bundle)
        rows = sum(b.num_rows for b in score(batches))
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "rows": [rows], "loads": [scorer_loads(bundle) - before]})

    seen = df.mapInArrow(probe, "pid long, rows long, loads long").toArrow()
    assert seen.num_rows == 8 and pc.sum(seen.column("rows")).as_py() == df.count()
    pids = set(seen.column("pid").to_pylist())
    assert len(pids) < seen.num_rows, "workers were not reused: nothing to show"
    loads = seen.group_by("pid").aggregate([("loads", "sum")]).column("loads_sum").to_pylist()
    assert loads == [1] * len(pids), seen.to_pylist()
