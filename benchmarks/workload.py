"""The benchmark's workload: a seeded input table in the demo `features` schema (so `conf/score.yaml` and its
contract run unchanged) and a registered XGBoost model, generated once under --out and reused while their
parameters stay the same. Nothing here is timed."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.demo.data import CHANNELS, REGIONS, SEGMENTS

MODEL_NAME = "bench-xgb"
ALIAS = "champion"
EXPERIMENT = "lakescore-bench"
START_DATE = "2026-01-01"
REPO = Path(__file__).resolve().parent.parent
SETUP_VERSION = 2  # bump when the generated data or model change shape (2: the demo contract's columns)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def feature_names(n: int) -> list[str]:
    return [f"f{i:02d}" for i in range(n)]


def day_list(n: int) -> list[str]:
    d0 = dt.date.fromisoformat(START_DATE)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range(n)]


def file_plan(rows: int, days: int, file_rows: int) -> list[tuple[str, int, int]]:
    """[(ds, file index within the day, rows)]: rows split evenly over days, each day into ≤ file_rows files."""
    plan = []
    for i, ds in enumerate(day_list(days)):
        day_rows = rows // days + (1 if i < rows % days else 0)
        n_files = max(1, math.ceil(day_rows / file_rows))
        for k in range(n_files):
            n = day_rows // n_files + (1 if k < day_rows % n_files else 0)
            if n:
                plan.append((ds, k, n))
    return plan


def make_file(seed: int, day_index: int, k: int, ds: str, n: int, n_features: int, first_id: int) -> pa.Table:
    """One input file's rows in the demo schema: entity_id (int64, unique in the table), event_ts (timestamp),
    f00.. (float32), region/segment/channel (categories), email/phone (PII), ds."""
    rng = np.random.default_rng([seed, day_index, k])
    day0 = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.timezone.utc)
    secs = np.sort(rng.integers(0, 86_400, size=n)).astype(np.int64)
    event_us = int(day0.timestamp() * 1e6) + secs * 1_000_000
    x = rng.standard_normal((n, n_features), dtype=np.float32)
    ids = pa.array(np.arange(first_id, first_id + n, dtype=np.int64))
    cols = {
        "entity_id": ids,
        "event_ts": pa.array(event_us.astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
        **{name: pa.array(x[:, j]) for j, name in enumerate(feature_names(n_features))},
        "region": pa.array(np.array(REGIONS)[rng.integers(0, len(REGIONS), n)]),
        "segment": pa.array(np.array(SEGMENTS)[rng.integers(0, len(SEGMENTS), n)]),
        "channel": pa.array(np.array(CHANNELS)[rng.integers(0, len(CHANNELS), n)]),
        "email": pc.binary_join_element_wise("user", pc.cast(ids, pa.string()), "@example.com", ""),
        "phone": pc.binary_join_element_wise("+1-555-", pc.utf8_lpad(pc.cast(pc.bit_wise_and(ids, 0xFFFFF), pa.string()), 7, "0"), ""),
        "ds": pa.array([ds] * n, pa.string()),
    }
    return pa.table(cols)


def write_dataset(rows: int, args, lake: Path, parquet_dir: Path | None, delta: bool = True) -> dict:
    """Delta table `features` partitioned by ds (one append per file → several files a day), and optionally
    the same rows as plain Parquet files (with ds as a column); `delta=False` writes the Parquet files alone (the
    same seeded rows) beside a lake that is already there."""
    from deltalake import DeltaTable, write_deltalake

    for p in (lake if delta else None, parquet_dir):
        if p is not None and p.exists():
            shutil.rmtree(p)
    uri = str(lake / "features")
    if parquet_dir is not None:
        parquet_dir.mkdir(parents=True)
    days = day_list(args.days)
    first_id = 1
    plan = file_plan(rows, args.days, args.file_rows)
    t0 = time.monotonic()
    for ds, k, n in plan:
        t = make_file(args.seed, days.index(ds), k, ds, n, args.features, first_id)
        first_id += n
        if delta:
            write_deltalake(uri, t, partition_by=["ds"], mode="append")
        if parquet_dir is not None:
            pq.write_table(t, parquet_dir / f"part-{ds}-{k:04d}.parquet")
    dt_ = DeltaTable(uri)
    got = dt_.to_pyarrow_dataset().count_rows()
    if got != rows:
        raise SystemExit(f"setup: features table at {uri} holds {got} rows, expected {rows}")
    where = [str(p) for p in (uri if delta else None, parquet_dir) if p is not None]
    log(f"setup: wrote {rows:,} rows in {len(plan)} files over {args.days} days to {' and '.join(where)}"
        f" ({time.monotonic() - t0:.1f}s)")
    return {"rows": rows, "files": len(plan), "version": dt_.version()}


def train_and_register(args, tracking_uri: str, artifact_root: Path) -> dict:
    """A 200-tree depth-6 binary:logistic booster on a small seeded sample, logged as UBJ with the
    preprocessing spec in its metadata, registered as bench-xgb with alias @champion."""
    import mlflow
    import pandas as pd
    import xgboost as xgb
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from engine.models.registry import PREPROCESS_KEY
    from engine.models.preprocess import Feature, PreprocessSpec

    names = feature_names(args.features)
    spec = PreprocessSpec(tuple(Feature(n) for n in names))
    rng = np.random.default_rng([args.seed, 10_000])
    x = rng.standard_normal((args.train_rows, args.features), dtype=np.float32)
    w = rng.normal(0, 0.5, args.features).astype(np.float32)
    logit = x @ w + 0.8 * np.sin(x[:, 0] * x[:, 1]) + 0.5 * (x[:, 2] > 0.5) * x[:, 3] - 0.3
    y = (rng.random(args.train_rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    t0 = time.monotonic()
    params = {"objective": "binary:logistic", "max_depth": args.depth, "eta": 0.1, "seed": args.seed,
              "tree_method": "hist", "nthread": os.cpu_count() or 2}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=names), num_boost_round=args.trees)

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT, artifact_location="file://" + str(artifact_root))
    frame = pd.DataFrame(x[:5], columns=names)
    # Column-based signature: what spark_udf needs to map Spark columns to the model's features.
    sig = infer_signature(frame, booster.inplace_predict(x[:5]))
    with mlflow.start_run(experiment_id=exp_id, run_name="bench-xgb"):
        mlflow.log_params({"trees": args.trees, "depth": args.depth, "seed": args.seed, "rows": args.train_rows})
        info = mlflow.xgboost.log_model(booster, name="model", signature=sig, model_format="ubj",
                                        metadata={PREPROCESS_KEY: spec.to_json()}, registered_model_name=MODEL_NAME)
    version = int(info.registered_model_version)
    client.set_registered_model_alias(MODEL_NAME, ALIAS, str(version))
    log(f"setup: trained {args.trees} trees (depth {args.depth}) on {args.train_rows:,} rows and registered "
        f"models:/{MODEL_NAME}/{version} @{ALIAS} ({time.monotonic() - t0:.1f}s)")
    return {"version": version}


class Workdir:
    def __init__(self, out: Path):
        self.out = out
        self.parquet = out / "parquet"
        self.db = out / "mlflow.db"
        self.artifacts = out / "mlartifacts"
        self.manifest = out / "setup.json"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def raw_out(self) -> Path:
        return self.out / "raw_out"

    def spark_out(self, tuned: bool) -> Path:
        return self.out / ("spark_out_tuned" if tuned else "spark_out")

    def lake(self, rows: int) -> Path:
        return self.out / f"lake-{rows}"

    def features(self, rows: int) -> str:
        return str(self.lake(rows) / "features")

    def scores(self, rows: int) -> str:
        return str(self.lake(rows) / "scores")


def setup(args, wd: Workdir, sizes: set[int]) -> None:
    """Generate each needed dataset and the model once; reuse them when their parameters match."""
    wd.out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(wd.manifest.read_text()) if wd.manifest.is_file() else {}
    common = {"v": SETUP_VERSION, "seed": args.seed, "features": args.features, "days": args.days, "file_rows": args.file_rows}
    model_key = {"v": SETUP_VERSION, "seed": args.seed, "features": args.features, "trees": args.trees,
                 "depth": args.depth, "train_rows": args.train_rows}
    if args.fresh or manifest.get("model", {}).get("params") != model_key or not wd.db.exists():
        for p in (wd.db, wd.artifacts):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        manifest = {"datasets": manifest.get("datasets", {})}
        manifest["model"] = {"params": model_key, **train_and_register(args, wd.tracking_uri, wd.artifacts)}
        wd.manifest.write_text(json.dumps(manifest, indent=1))
    datasets = manifest.setdefault("datasets", {})
    for rows in sorted(sizes):
        key = {**common, "rows": rows, "parquet": rows == args.rows}
        have = datasets.get(str(rows))
        if not args.fresh and have and have.get("params") == key and Path(wd.features(rows)).exists():
            if rows == args.rows and parquet_rows(wd.parquet) != rows:  # the export holds another size's rows
                write_dataset(rows, args, wd.lake(rows), wd.parquet, delta=False)
            log(f"setup: reusing {rows:,}-row dataset in {wd.lake(rows)}")
            continue
        datasets[str(rows)] = {"params": key, **write_dataset(rows, args, wd.lake(rows), wd.parquet if rows == args.rows else None)}
        wd.manifest.write_text(json.dumps(manifest, indent=1))
    for rows in sorted(sizes):
        drift_reference(wd.lake(rows))


def parquet_rows(folder: Path) -> int | None:
    """Rows in the one Parquet export (None when absent): it holds the last size written with `--rows`, so another
    size's manifest entry must not reuse it as its own."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    return sum(pq.ParquetFile(p).metadata.num_rows for p in files) if files else None


def drift_reference(lake: Path) -> None:
    """Store the contract's drift reference (its window's histograms) once, as a scheduled pipeline has it before
    its daily runs: built inside a timed run, it would charge the job a one-off driver pass over the window."""
    from contracts.enforce import Enforcer
    from engine.tables.drift_reference import TABLE
    from engine.lake.snapshot import open_snapshot

    t0 = time.monotonic()
    lake = lake.resolve()  # the job's uri: the reference is keyed by it
    snap = open_snapshot("features", str(lake / "features"), "latest", {})
    enforcer = Enforcer(str(REPO / "conf" / "contracts" / "features.yaml"), snap, [], [], {},
                        reference_table=str(lake / TABLE))
    log(f"setup: drift reference of {lake} {'reused' if enforcer.reference_reused else 'built and stored'} "
        f"({time.monotonic() - t0:.1f}s)")


def load_booster(wd: Workdir):
    """The registered model's bytes, loaded through the same safe path as the job (outside all timings)."""
    import xgboost as xgb

    from engine.models.registry import fetch_bundle

    bundle = fetch_bundle(f"models:/{MODEL_NAME}@{ALIAS}", wd.tracking_uri, None, False)
    booster = xgb.Booster()
    booster.load_model(bytearray(bundle.payload))
    return bundle, booster
