"""Throughput and memory of the score job, side by side with the raw limit and with a peer.

    python benchmarks/bench.py [--rows N] [--small-rows N] [--large-rows N] [--out DIR]

(a) raw:       one process, pyarrow read → float32 matrix → Booster.inplace_predict → Parquet (keys + score)
(b) lakescore: `ray job submit … python -m jobs.score` against a local `ray start --head` cluster
               (timed from submit to job end; cluster start-up excluded)
(c) spark_udf: mlflow.pyfunc.spark_udf on Spark local[2] reading the same Parquet, writing Parquet
Peak RSS of (b) at two sizes: the summed RSS of every process of the bench's own Ray cluster, sampled every
0.2 s, plus the object store's used bytes.

Prints a human table, then ONE JSON line (the last line on stdout). Setup (data, model) is cached under
--out and reused when its parameters match. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

MODEL_NAME = "bench-xgb"
ALIAS = "champion"
EXPERIMENT = "lakescore-bench"
START_DATE = "2026-01-01"
SETUP_VERSION = 1  # bump when the generated data or model change shape
TARGET_VS_RAW = 0.8
TARGET_VS_SPARK = 3.5
RSS_FLATNESS = 0.20


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def feature_names(n: int) -> list[str]:
    return [f"f{i:02d}" for i in range(n)]


# ------------------------------------------------------------------------------------------------ setup


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
    """One input file's rows: entity_id (int64), event_ts (timestamp), f00.. (float32), ds."""
    rng = np.random.default_rng([seed, day_index, k])
    day0 = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.timezone.utc)
    secs = np.sort(rng.integers(0, 86_400, size=n)).astype(np.int64)
    event_us = int(day0.timestamp() * 1e6) + secs * 1_000_000
    x = rng.standard_normal((n, n_features), dtype=np.float32)
    cols = {
        "entity_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        "event_ts": pa.array(event_us.astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
        **{name: pa.array(x[:, j]) for j, name in enumerate(feature_names(n_features))},
        "ds": pa.array([ds] * n, pa.string()),
    }
    return pa.table(cols)


def write_dataset(rows: int, args, lake: Path, parquet_dir: Path | None) -> dict:
    """Delta table `features` partitioned by ds (one append per file → several files a day), and optionally
    the same rows as plain Parquet files (with ds as a column)."""
    from deltalake import DeltaTable, write_deltalake

    for p in (lake, parquet_dir):
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
        write_deltalake(uri, t, partition_by=["ds"], mode="append")
        if parquet_dir is not None:
            pq.write_table(t, parquet_dir / f"part-{ds}-{k:04d}.parquet")
    dt_ = DeltaTable(uri)
    got = dt_.to_pyarrow_dataset().count_rows()
    if got != rows:
        raise SystemExit(f"setup: features table at {uri} holds {got} rows, expected {rows}")
    log(f"setup: wrote {rows:,} rows in {len(plan)} files over {args.days} days to {uri}"
        f"{' and ' + str(parquet_dir) if parquet_dir else ''} ({time.monotonic() - t0:.1f}s)")
    return {"rows": rows, "files": len(plan), "version": dt_.version()}


def train_and_register(args, tracking_uri: str, artifact_root: Path) -> dict:
    """A 200-tree depth-6 binary:logistic booster on a small seeded sample, logged as UBJ with the
    preprocessing spec in its metadata, registered as bench-xgb with alias @champion."""
    import mlflow
    import pandas as pd
    import xgboost as xgb
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from engine.models import PREPROCESS_KEY
    from engine.preprocess import Feature, PreprocessSpec

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
        if not args.fresh and have and have.get("params") == key and Path(wd.features(rows)).exists() and (
            rows != args.rows or wd.parquet.exists()
        ):
            log(f"setup: reusing {rows:,}-row dataset in {wd.lake(rows)}")
            continue
        datasets[str(rows)] = {"params": key, **write_dataset(rows, args, wd.lake(rows), wd.parquet if rows == args.rows else None)}
        wd.manifest.write_text(json.dumps(manifest, indent=1))


def load_booster(wd: Workdir):
    """The registered model's bytes, loaded through the same safe path as the job (outside all timings)."""
    import xgboost as xgb

    from engine.models import fetch_bundle

    bundle = fetch_bundle(f"models:/{MODEL_NAME}@{ALIAS}", wd.tracking_uri, None, False)
    booster = xgb.Booster()
    booster.load_model(bytearray(bundle.payload))
    return bundle, booster


class ForeignLoad:
    """CPU seconds burnt by processes that are neither this benchmark's descendants nor its Ray cluster's, while
    a timed phase runs (the machine may be shared): a contaminated figure says so instead of passing silently."""

    def __init__(self, cluster: "RayCluster | None" = None, interval: float = 1.0):
        self.cluster, self.interval = cluster, interval
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = self.t1 = 0.0

    def _mine(self) -> set[int]:
        children: dict[int, list[int]] = {}
        for p in psutil.process_iter(["pid", "ppid"]):
            children.setdefault(p.info["ppid"], []).append(p.info["pid"])
        mine, stack = {os.getpid()}, [os.getpid()]
        if self.cluster is not None:
            extra = {p.pid for p in self.cluster.processes()}
            mine |= extra
            stack += list(extra)
        while stack:
            for c in children.get(stack.pop(), ()):
                if c not in mine:
                    mine.add(c)
                    stack.append(c)
        return mine

    def _sample(self) -> dict[int, float]:
        mine = self._mine()
        out = {}
        for p in psutil.process_iter(["pid", "cpu_times", "name"]):
            ct = p.info["cpu_times"]
            if p.info["pid"] not in mine and ct is not None:
                out[p.info["pid"]] = ct.user + ct.system
                self.names.setdefault(p.info["pid"], p.info["name"] or "?")
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.last.update(self._sample())

    def __enter__(self):
        self.base = self._sample()
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        self.last.update(self._sample())
        self.t1 = time.monotonic()

    def summary(self) -> dict:
        per = {pid: max(0.0, v - self.base.get(pid, 0.0)) for pid, v in self.last.items()}
        cpu = sum(per.values())
        wall = max(1e-9, self.t1 - self.t0)
        by_name: dict[str, float] = {}
        for pid, c in per.items():
            by_name[self.names.get(pid, "?")] = by_name.get(self.names.get(pid, "?"), 0.0) + c
        top = {k: round(v, 1) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:4] if v >= 0.1}
        return {"foreign_cpu_s": round(cpu, 2), "foreign_cpu_share": round(cpu / (wall * (os.cpu_count() or 1)), 3),
                "foreign_top_cpu_s": top}


# ------------------------------------------------------------------------------------------- (a) raw


def run_raw(args, wd: Workdir, booster) -> dict:
    names = feature_names(args.features)
    files = sorted(wd.parquet.glob("*.parquet"))
    out_dir = wd.out / "raw_out"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    phases = {"read": 0.0, "matrix": 0.0, "predict": 0.0, "write": 0.0}
    rows = 0
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        t = time.perf_counter()
        table = pq.read_table(f, columns=["entity_id", *names])
        t1 = time.perf_counter()
        x = np.empty((table.num_rows, len(names)), dtype=np.float32)
        for j, name in enumerate(names):
            x[:, j] = table.column(name).to_numpy()
        t2 = time.perf_counter()
        scores = booster.inplace_predict(x, validate_features=False)
        t3 = time.perf_counter()
        pq.write_table(pa.table({"entity_id": table.column("entity_id"), "score": pa.array(scores.astype(np.float32, copy=False))}),
                       out_dir / f"part-{i:05d}.parquet", compression="zstd")
        t4 = time.perf_counter()
        phases["read"] += t1 - t
        phases["matrix"] += t2 - t1
        phases["predict"] += t3 - t2
        phases["write"] += t4 - t3
        rows += table.num_rows
    elapsed = time.perf_counter() - t0
    got = sum(pq.ParquetFile(p).metadata.num_rows for p in out_dir.glob("*.parquet"))
    if got != args.rows or rows != args.rows:
        raise SystemExit(f"raw: wrote {got} rows from {rows} read, expected {args.rows}")
    return {"seconds": elapsed, "rows_per_s": args.rows / elapsed, "files": len(files),
            "phases_s": {k: round(v, 3) for k, v in phases.items()}}


# -------------------------------------------------------------------------------------- (c) spark_udf


def run_spark(args, wd: Workdir) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ["MLFLOW_TRACKING_URI"] = wd.tracking_uri
    os.environ["MLFLOW_REGISTRY_URI"] = wd.tracking_uri
    import mlflow
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    mlflow.set_tracking_uri(wd.tracking_uri)
    mlflow.set_registry_uri(wd.tracking_uri)
    names = feature_names(args.features)
    out_dir = wd.out / "spark_out"
    t0 = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").appName("lakescore-bench-spark-udf")
             .config("spark.driver.memory", args.spark_driver_memory)
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.local.dir", str(wd.out / "spark-tmp"))
             .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={wd.out / 'spark-tmp'}")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        udf = mlflow.pyfunc.spark_udf(spark, f"models:/{MODEL_NAME}@{ALIAS}", result_type="float", env_manager="local")
        t1 = time.perf_counter()
        df = spark.read.parquet(str(wd.parquet))
        df.select("entity_id", udf(*[F.col(n) for n in names]).alias("score")) \
          .write.mode("overwrite").option("compression", "zstd").parquet(str(out_dir))
        t2 = time.perf_counter()
        got = spark.read.parquet(str(out_dir)).count()
    finally:
        spark.stop()
    if got != args.rows:
        raise SystemExit(f"spark_udf: wrote {got} rows, expected {args.rows}")
    elapsed = t2 - t0
    return {"seconds": elapsed, "rows_per_s": args.rows / elapsed, "session_startup_s": round(startup, 3),
            "udf_build_s": round(t1 - t0, 3), "scan_score_write_s": round(t2 - t1, 3)}


# ------------------------------------------------------------------------------------- (b) lakescore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth_token() -> str | None:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


class RayCluster:
    """A private `ray start --head` cluster: its own temp dir and ports, found and stopped by its own pids.

    `ray start` daemonizes; it is launched in a new session, so its daemons (gcs, raylet, dashboard, agents)
    keep its process-group id, and their cmdlines name our unique temp dir. Workers and the job driver are
    descendants of the raylet. Nothing outside that set is ever signalled (no `ray stop`)."""

    def __init__(self, out: Path, num_cpus: int):
        self.temp_dir = f"/tmp/lsb-{uuid.uuid4().hex[:8]}"  # short: Ray's unix socket paths have a length limit
        self.port, self.dash_port = free_port(), free_port()
        self.client_port, self.agent_port = free_port(), free_port()
        self.num_cpus = num_cpus
        self.log_path = out / "ray-start.log"
        self.pgid: int | None = None
        self.env = dict(os.environ)
        # Token auth stays on: both the cluster and the clients use RAY_AUTH_MODE=token.
        self.env["RAY_AUTH_MODE"] = "token"
        self.env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + self.env.get("PATH", "")
        self.env.pop("RAY_ADDRESS", None)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dash_port}"

    def start(self) -> float:
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
               f"--dashboard-port={self.dash_port}", "--dashboard-host=127.0.0.1", f"--num-cpus={self.num_cpus}",
               "--num-gpus=0", "--include-dashboard=true", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
               # Every fixed default port pinned to a free one, so a concurrent Ray on this machine cannot clash.
               f"--ray-client-server-port={self.client_port}", f"--dashboard-agent-listen-port={self.agent_port}",
               f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
               f"--metrics-export-port={free_port()}"]
        t0 = time.monotonic()
        with open(self.log_path, "w") as logf:
            proc = subprocess.Popen(cmd, env=self.env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
            self.pgid = proc.pid
            rc = proc.wait(timeout=180)
        if rc != 0:
            self.stop()
            raise SystemExit(f"ray start failed (exit {rc}); see {self.log_path}")
        if auth_token() is None:
            self.stop()
            raise SystemExit("ray start: token auth is on but no token was found (~/.ray/auth_token, RAY_AUTH_TOKEN or "
                             "RAY_AUTH_TOKEN_PATH); the job client cannot authenticate")
        # Wait for the jobs API to answer (the dashboard comes up after `ray start` returns).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.api("/api/version")
                break
            except Exception:
                time.sleep(0.5)
        else:
            self.stop()
            raise SystemExit(f"ray dashboard at {self.dashboard} did not answer within 60 s")
        return time.monotonic() - t0

    def api(self, path: str, timeout: float = 5.0) -> dict:
        req = urllib.request.Request(self.dashboard + path)
        token = auth_token()
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def object_store_used(self) -> float | None:
        """Used object-store bytes as the GCS reports them (raylet resource reports, ~1 s fresh)."""
        try:
            data = self.api("/api/cluster_status", timeout=2.0)["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
            used_total = data.get("objectStoreMemory")
            return float(used_total[0]) if used_total else None
        except Exception:
            return None

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: pgid or temp-dir match, plus all their descendants."""
        if self.pgid is None:
            return []
        children: dict[int, list[int]] = {}
        roots = []
        for p in psutil.process_iter(["pid", "ppid"]):
            pid, ppid = p.info["pid"], p.info["ppid"]
            children.setdefault(ppid, []).append(pid)
            try:
                if os.getpgid(pid) == self.pgid:
                    roots.append(pid)
                    continue
            except OSError:
                continue
        seen = set(roots)
        # Cmdline match catches any daemon that left the process group.
        for p in psutil.process_iter(["pid", "cmdline"]):
            if p.info["pid"] not in seen and self.temp_dir in " ".join(p.info["cmdline"] or ()):
                seen.add(p.info["pid"])
        stack = list(seen)
        while stack:
            for c in children.get(stack.pop(), ()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        seen.discard(os.getpid())
        out = []
        for pid in seen:
            try:
                out.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        leftover = self.processes()
        if leftover:
            log(f"warning: {len(leftover)} process(es) of the bench cluster still alive: {[p.pid for p in leftover]}")
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.pgid = None if not leftover else self.pgid


def _smaps_rollup(pid: int) -> tuple[int, int]:
    """(Rss, Pss) in bytes from /proc/<pid>/smaps_rollup (cheap: no per-mapping parsing)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return rss, pss


def _proc_label(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return "?"
    if not cmd:
        return "?"
    head = cmd[0]
    if head.startswith("ray::") or head.startswith("ray-dashboard"):
        return head.split(" ")[0]
    if "jobs.score" in cmd:
        return "job-driver"
    for c in cmd[:4]:
        base = os.path.basename(c)
        if base in ("gcs_server", "raylet"):
            return base
        if c.endswith(".py"):
            return base
    if "ray.util.client.server" in cmd:
        return "client-server"
    return os.path.basename(head)


class MemorySampler:
    """Samples the cluster's summed RSS (and PSS) every `interval` s, and the object store's used bytes every ~1 s."""

    def __init__(self, cluster: RayCluster, interval: float = 0.2):
        self.cluster, self.interval = cluster, interval
        self.samples: list[tuple[float, int, int, int]] = []  # (t, rss, pss, nprocs)
        self.obj: list[tuple[float, float]] = []
        self.peak_breakdown: dict[str, float] = {}
        self._peak_rss = -1
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._mem, daemon=True), threading.Thread(target=self._objects, daemon=True)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def snapshot(self) -> tuple[int, int, int, dict]:
        procs = self.cluster.processes()
        rss = pss = 0
        parts: dict[str, float] = {}
        for p in procs:
            r, s = _smaps_rollup(p.pid)
            rss, pss = rss + r, pss + s
            label = _proc_label(p)
            parts[label] = parts.get(label, 0) + r / 2**20
        return rss, pss, len(procs), parts

    def _mem(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            rss, pss, n, parts = self.snapshot()
            self.samples.append((t, rss, pss, n))
            if rss > self._peak_rss:
                self._peak_rss, self.peak_breakdown = rss, parts
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def _objects(self) -> None:
        while not self._stop.is_set():
            used = self.cluster.object_store_used()
            if used is not None:
                self.obj.append((time.monotonic(), used))
            self._stop.wait(1.0)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        obj = sorted(self.obj)
        peak_total = 0.0
        j, cur = 0, 0.0
        for t, rss, _pss, _n in self.samples:
            while j < len(obj) and obj[j][0] <= t:
                cur = obj[j][1]
                j += 1
            peak_total = max(peak_total, rss + cur)
        mb = 2**20
        return {
            "peak_total_mb": round(peak_total / mb, 1),
            "peak_rss_sum_mb": round(max(s[1] for s in self.samples) / mb, 1),
            "peak_pss_sum_mb": round(max(s[2] for s in self.samples) / mb, 1),
            "peak_object_store_mb": round(max((o[1] for o in obj), default=0.0) / mb, 1),
            "max_processes": max(s[3] for s in self.samples),
            "samples": len(self.samples),
            "at_peak_rss_mb_by_process": {k: round(v, 1) for k, v in sorted(self.peak_breakdown.items(), key=lambda kv: -kv[1])},
        }


def _log_time(line: str) -> float | None:
    """Epoch seconds of a lakescore log line ('2026-01-01 12:00:00,123 INFO lakescore: …')."""
    try:
        stamp = line[:23]
        return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:23]) / 1000
    except (ValueError, IndexError):
        return None


def _profile(lines: list[str], t_submit: float, t_end: float) -> dict:
    """Phase boundaries of the job from its own log lines (wall clock, relative to submit)."""
    marks: dict[str, float] = {}
    commits = []
    summary = None
    for line in lines:
        if " lakescore: " not in line:
            if line.startswith("{") and '"job": "score"' in line:
                try:
                    summary = json.loads(line)
                except ValueError:
                    pass
            continue
        t = _log_time(line)
        if t is None:
            continue
        msg = line.split(" lakescore: ", 1)[1]
        if msg.startswith("config ") and "config" not in marks:
            marks["config"] = t
        elif msg.startswith("ray: connected"):
            marks["connected"] = t
        elif msg.startswith("input ") and "planned" in msg:
            marks["planned"] = t
        elif msg.startswith("unit ") and "rows" in msg:
            commits.append(t)
        elif msg.startswith("score run ") and "finished" in msg:
            marks["finished"] = t
    prof: dict = {"wall_s": round(t_end - t_submit, 3)}
    if summary:
        prof["job_elapsed_s"] = summary.get("elapsed_s")
    def span(a: str | float, b: str | float) -> float | None:
        ta = marks.get(a) if isinstance(a, str) else a
        tb = marks.get(b) if isinstance(b, str) else b
        return None if ta is None or tb is None else round(tb - ta, 3)
    prof["submit_to_first_log_s"] = span(t_submit, "config")  # CLI start, upload, runtime env, driver start, imports
    prof["connect_s"] = span("config", "connected")  # ray.init from the driver
    prof["model_and_snapshot_s"] = span("connected", "planned")  # registry → bundle, Delta snapshot, planning
    if commits:
        prof["tasks_to_first_commit_s"] = span("planned", commits[0])
        prof["planned_to_last_commit_s"] = span("planned", commits[-1])
        prof["commits"] = len(commits)
    prof["last_commit_to_finished_s"] = span(commits[-1], "finished") if commits else None
    prof["finished_to_cli_exit_s"] = span("finished", t_end)
    return prof


def _job_info(cluster: RayCluster, submission_id: str, t_submit: float, t_end: float, lines: list[str]) -> dict:
    """Split the job's edges with the Jobs API's own timestamps: CLI/upload before the job exists, and the
    driver's exit and the CLI's log tail after the job's last line."""
    try:
        info = cluster.api(f"/api/jobs/{submission_id}")
    except Exception as e:
        return {"job_info_error": f"{type(e).__name__}: {e}"[:200]}
    start, end = (info.get("start_time") or 0) / 1000, (info.get("end_time") or 0) / 1000
    first = next((t for t in map(_log_time, (ln for ln in lines if " lakescore: " in ln)) if t), None)
    finished = next((_log_time(ln) for ln in lines if " lakescore: score run " in ln), None)
    out = {}
    if start:
        out["cli_and_upload_s"] = round(start - t_submit, 3)  # `ray job submit` start-up, packaging, upload
        if first:
            out["supervisor_driver_start_s"] = round(first - start, 3)  # supervisor actor, runtime env, driver imports
    if end:
        if finished:
            out["driver_exit_s"] = round(end - finished, 3)  # summary line, interpreter and Ray shutdown, supervisor notices
        out["cli_notices_end_s"] = round(t_end - end, 3)
    return out


def _task_stats(cluster: RayCluster, submission_id: str, t_submit: float) -> dict:
    """Per-task timings of the chunk tasks from Ray's state API (best effort)."""
    try:
        jobs = cluster.api("/api/jobs/")
        job_id = next((j.get("job_id") for j in jobs if j.get("submission_id") == submission_id), None)
        path = "/api/v0/tasks?limit=10000&detail=1&filter_keys=name&filter_predicates=%3D&filter_values=_score_chunk_task"
        if job_id:
            path += f"&filter_keys=job_id&filter_predicates=%3D&filter_values={job_id}"
        data = cluster.api(path, timeout=20)
        tasks = data["data"]["result"]["result"]
    except Exception as e:  # the state API is optional here
        return {"error": f"{type(e).__name__}: {e}"[:200]}
    durs, starts, ends, pending = [], [], [], []
    for t in tasks:
        s, e = t.get("start_time_ms"), t.get("end_time_ms")
        if s and e:
            durs.append((e - s) / 1000)
            starts.append(s / 1000)
            ends.append(e / 1000)
        c = t.get("creation_time_ms")
        if c and s:
            pending.append((s - c) / 1000)
    if not durs:
        return {"tasks": len(tasks)}
    return {
        "tasks": len(tasks),
        "timeline_s": sorted((round(a - t_submit, 2), round(b - t_submit, 2)) for a, b in zip(starts, ends)),
        "task_s_mean": round(float(np.mean(durs)), 3),
        "task_s_max": round(max(durs), 3),
        "task_s_sum": round(sum(durs), 3),
        "first_task_start_after_submit_s": round(min(starts) - t_submit, 3),
        "last_task_end_after_submit_s": round(max(ends) - t_submit, 3),
        "tasks_span_s": round(max(ends) - min(starts), 3),
        "wait_before_run_s_mean": round(float(np.mean(pending)), 3) if pending else None,
    }


def _bench_contract(wd) -> str:
    """A contract for the bench table: key, event time, 50 finite features in range, volume."""
    path = wd.out / "contract.yaml"
    path.write_text(
        "table: features\nkey: [entity_id]\nevent_time: event_ts\n"
        "columns:\n  entity_id: {type: int, nullable: false}\n  event_ts: {type: timestamp, nullable: false}\n"
        "  \"f??\": {type: float, finite: true, min: -100, max: 100}\n"
        "volume: {lookback: 7, min_ratio: 0.1, max_ratio: 10}\n"
    )
    return str(path.resolve())


def run_lakescore(args, wd: Workdir, cluster: RayCluster, rows: int, tag: str, sample: bool) -> dict:
    """Submit the score job for the `rows`-row lake and wait for it; verify the scores table."""
    from deltalake import DeltaTable

    scores = Path(wd.scores(rows))
    if scores.exists():
        shutil.rmtree(scores)  # a fresh output table: otherwise every unit would be skipped as up to date
    excludes = [".git", "/lake", "/mlruns", "/mlruns.db", "/mlartifacts", "/spark-warehouse", "/metastore_db", ".venv",
                "**/__pycache__", "/benchmarks/out"]
    try:
        excludes.append("/" + str(wd.out.resolve().relative_to(REPO)))
    except ValueError:
        pass
    runtime_env = {"excludes": sorted(set(excludes)), "env_vars": {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}}
    for k, v in json.loads(args.runtime_env_extra or "{}").items():
        runtime_env[k] = {**runtime_env[k], **v} if isinstance(v, dict) and isinstance(runtime_env.get(k), dict) else v
    submission_id = f"lakescore-bench-{tag}-{uuid.uuid4().hex[:8]}"
    job_args = ["--config", "conf/score.yaml", f"lake.root={wd.lake(rows)}", f"mlflow.tracking_uri={wd.tracking_uri}",
                f"mlflow.artifact_root={wd.artifacts}", f"model.uri=models:/{MODEL_NAME}@{ALIAS}",
                "input.passthrough_columns=[]", f"input.contract={_bench_contract(wd) if args.with_contract else 'null'}",
                *args.job_override]
    if args.submitter == "ray":
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray_bin, "job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps(runtime_env), "--submission-id", submission_id, "--",
               "python", "-m", "jobs.score", *job_args]
    else:  # the production path: lakescore submit (its own upload excludes and absolute paths)
        cmd = [sys.executable, "-m", "jobs.cli", "submit", "--address", cluster.dashboard, "--submission-id",
               submission_id, "score", *job_args]
    log_path = wd.out / f"job-{tag}.log"
    idle = None
    sampler = None
    if sample:
        time.sleep(1.0)
        idle = MemorySampler(cluster).snapshot()
    log(f"lakescore[{tag}]: submitting {submission_id} ({rows:,} rows){' with memory sampling' if sample else ''}")
    t_submit = time.time()
    with open(log_path, "w") as logf:
        if sample:
            sampler = MemorySampler(cluster, args.sample_interval).__enter__()
        try:
            proc = subprocess.run(cmd, env=cluster.env, stdout=logf, stderr=subprocess.STDOUT, cwd=str(REPO),
                                  timeout=args.job_timeout)
        finally:
            if sampler:
                sampler.__exit__(None, None, None)
    t_end = time.time()
    lines = log_path.read_text(errors="replace").splitlines()
    if proc.returncode != 0:
        tail = "\n".join(lines[-30:])
        raise SystemExit(f"lakescore[{tag}]: {args.submitter} submit exited {proc.returncode}; log {log_path}:\n{tail}")
    got = DeltaTable(str(scores)).to_pyarrow_dataset().count_rows()
    if got != rows:
        raise SystemExit(f"lakescore[{tag}]: scores table at {scores} holds {got} rows, expected {rows}; log {log_path}")
    elapsed = t_end - t_submit
    profile = _profile(lines, t_submit, t_end)
    profile.update(_job_info(cluster, submission_id, t_submit, t_end, lines))
    res = {"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": rows / elapsed, "log": str(log_path),
           "profile": profile, "tasks": _task_stats(cluster, submission_id, t_submit)}
    if sampler:
        res["memory"] = sampler.summary()
        res["memory"]["idle_cluster_rss_mb"] = round(idle[0] / 2**20, 1)
    log(f"lakescore[{tag}]: {rows:,} rows in {elapsed:.1f}s → {rows / elapsed:,.0f} rows/s, scores verified ({got:,} rows)")
    return res


# ---------------------------------------------------------------------------------- chunk micro-profile


class _TimedScorer:
    def __init__(self, scorer):
        self.inner, self.spec, self.seconds = scorer, scorer.spec, 0.0

    def predict(self, x):
        t = time.perf_counter()
        y = self.inner.predict(x)
        self.seconds += time.perf_counter() - t
        return y


def profile_chunk(args, wd: Workdir, bundle, nthread: int) -> dict:
    """One chunk of the job's own work (engine functions, no Ray) with per-phase timers."""
    from deltalake import DeltaTable

    from engine.models import build_scorer
    from engine.preprocess import to_matrix
    from engine.scoring import Stamps, file_schema, partition_dir, score_batch
    from engine.snapshot import file_path, filesystem, iter_file_batches
    from engine.writer import RollingParquetWriter

    uri = wd.features(args.rows)
    table = DeltaTable(uri)
    acts = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    files, acc = [], 0
    for a in sorted(acts, key=lambda a: a["path"]):  # about one target_file_rows chunk
        if acc >= args.target_file_rows:
            break
        files.append(a["path"])
        acc += a["num_records"]
    scorer = _TimedScorer(build_scorer(bundle, "cpu", nthread=nthread))
    schema = file_schema(pa.schema(table.schema().to_arrow()), ["entity_id"], [], "score")
    stamps = Stamps(MODEL_NAME, 1, "run", "features", table.version(), "r" * 32, "h" * 16,
                    dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    fs, base = filesystem(uri)
    out_base = str(wd.out / "profile_out")
    shutil.rmtree(out_base, ignore_errors=True)
    writer = RollingParquetWriter(fs, out_base, partition_dir({"ds": "x", "model_name": MODEL_NAME, "model_version": 1}),
                                  schema, {"ds": "x", "model_name": MODEL_NAME, "model_version": 1},
                                  args.target_file_rows, "zstd", prefix="part-profile")
    cols = ["entity_id", *feature_names(args.features)]
    t_read = t_score = t_write = t_matrix = 0.0
    rows = 0
    t0 = time.perf_counter()
    for path in files:
        it = iter_file_batches(fs, file_path(base, path), cols, 131_072)
        while True:
            t = time.perf_counter()
            batch = next(it, None)
            t_read += time.perf_counter() - t
            if batch is None:
                break
            rows += batch.num_rows
            t = time.perf_counter()
            out = score_batch(batch, scorer, schema, ["entity_id"], [], stamps)
            t_score += time.perf_counter() - t
            t = time.perf_counter()
            writer.write(out)
            t_write += time.perf_counter() - t
            t = time.perf_counter()
            to_matrix(batch, bundle.spec)  # timed apart (not part of the total)
            t_matrix += time.perf_counter() - t
    t = time.perf_counter()
    writer.close()
    t_write += time.perf_counter() - t
    total = t_read + t_score + t_write
    shutil.rmtree(out_base, ignore_errors=True)
    return {"rows": rows, "nthread": nthread, "total_s": round(total, 3), "rows_per_s": round(rows / total),
            "read_s": round(t_read, 3), "to_matrix_s": round(t_matrix, 3), "predict_s": round(scorer.seconds, 3),
            "stamps_and_assembly_s": round(t_score - scorer.seconds - t_matrix, 3), "write_and_stats_s": round(t_write, 3),
            "wall_s": round(time.perf_counter() - t0 - t_matrix, 3)}


_DRIVER_PROFILE = r"""
import json, sys, tempfile, time
marks = {}
t = time.perf_counter()
def mark(name):
    global t
    now = time.perf_counter(); marks[name] = round(now - t, 3); t = now
import engine.config, jobs._main  # noqa: E401  what `python -m jobs.score` imports first
mark("import_job_and_config_s")
import ray  # noqa: F401
from engine.ray.score import executor  # noqa: F401
mark("import_ray_and_executor_s")
from engine.models import resolve_model, download_model, load_bundle
mark("import_models_s")
tracking, table = sys.argv[1], sys.argv[2]
ref = resolve_model(sys.argv[3], tracking)
mark("resolve_model_s")
with tempfile.TemporaryDirectory() as tmp:
    path = download_model(ref, tracking, None, tmp)
    mark("download_model_s")
    bundle = load_bundle(path, ref, False)
    mark("load_bundle_s")
from engine.snapshot import open_snapshot, select_partitions, check_files_exist
snap = open_snapshot("features", table, "latest", {})
days, _ = select_partitions(snap, "all")
mark("open_snapshot_s")
check_files_exist(snap, days, {})
mark("check_files_exist_s")
print(json.dumps(marks))
"""


def profile_driver(wd: Workdir, rows: int) -> dict:
    """The job driver's start-up steps, timed in a cold Python process (no Ray cluster needed)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _DRIVER_PROFILE, wd.tracking_uri, wd.features(rows), f"models:/{MODEL_NAME}@{ALIAS}"],
                          env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else f"exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_total_s"] = round(total, 3)
    return out


# ----------------------------------------------------------------------------------------------- main


def best_of(n: int, name: str, fn, cluster) -> dict:
    """Run a timed part n times (each with its foreign-load figure); keep the fastest, list them all."""
    runs = []
    for i in range(n):
        log(f"{name}: run {i + 1}/{n}")
        with ForeignLoad(cluster) as fl:
            r = fn()
        r.update(fl.summary())
        log(f"{name}: {r['rows_per_s']:,.0f} rows/s (foreign CPU share {r['foreign_cpu_share']:.0%})")
        runs.append(r)
    best = dict(max(runs, key=lambda r: r["rows_per_s"]))
    best["all_rows_per_s"] = [round(r["rows_per_s"]) for r in runs]
    best["all_foreign_cpu_share"] = [r["foreign_cpu_share"] for r in runs]
    return best


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=4_000_000, help="rows for the throughput runs (a), (b), (c)")
    p.add_argument("--small-rows", type=int, default=1_000_000, help="rows for the small peak-RSS run of (b)")
    p.add_argument("--large-rows", type=int, default=8_000_000, help="rows for the large peak-RSS run of (b)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out"), help="work dir (data, model, outputs, logs)")
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--trees", type=int, default=200)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--train-rows", type=int, default=50_000)
    p.add_argument("--days", type=int, default=4, help="ds partitions of the input table")
    p.add_argument("--file-rows", type=int, default=250_000, help="rows per input data file")
    p.add_argument("--target-file-rows", type=int, default=1_000_000, help="the job's output.target_file_rows (for the chunk profile)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the Ray cluster (ray start --num-cpus)")
    p.add_argument("--job-override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for the score job, e.g. ray.max_in_flight=4 (repeatable)")
    p.add_argument("--with-contract", action="store_true",
                   help="(b) enforces a data contract (key, event time, 50 finite features, volume) in the same pass")
    p.add_argument("--submitter", choices=["lakescore", "ray"], default="lakescore",
                   help="submit (b) with `lakescore submit` (default) or plain `ray job submit`")
    p.add_argument("--runtime-env-extra", default="", metavar="JSON",
                   help='merged into the job\'s runtime env, e.g. \'{"worker_process_setup_hook": "xgboost.config.get_config"}\'')
    p.add_argument("--sample-interval", type=float, default=0.2, help="seconds between RSS samples")
    p.add_argument("--spark-driver-memory", default="4g")
    p.add_argument("--job-timeout", type=int, default=3600)
    p.add_argument("--skip", default="", help="comma list of parts to skip: raw,lakescore,spark,rss,profile")
    p.add_argument("--repeat", type=int, default=1, help="runs of each throughput part; the fastest is reported")
    p.add_argument("--fresh", action="store_true", help="regenerate data and model even if cached")
    return p.parse_args(argv)


def fmt(v, spec=",.0f") -> str:
    return "—" if v is None else format(v, spec)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"raw", "lakescore", "spark", "rss", "profile"}
    if unknown:
        raise SystemExit(f"--skip: unknown part(s) {sorted(unknown)}")
    wd = Workdir(Path(args.out).resolve())
    sizes = {args.rows} | (set() if "rss" in skip else {args.small_rows, args.large_rows})
    machine = {"cpus": os.cpu_count(), "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
               "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    setup(args, wd, sizes)
    bundle, booster = load_booster(wd)

    result: dict = {"rows": args.rows, "small_rows": args.small_rows, "large_rows": args.large_rows,
                    "features": args.features, "trees": args.trees, "depth": args.depth, "machine": machine,
                    "job_overrides": args.job_override, "runtime_env_extra": args.runtime_env_extra or None}
    raw = spark = main_run = small = large = prof = None
    if "raw" not in skip:
        raw = best_of(args.repeat, "raw", lambda: run_raw(args, wd, booster), None)
    if "spark" not in skip:
        spark = best_of(args.repeat, "spark_udf", lambda: run_spark(args, wd), None)
    if "profile" not in skip:
        prof = {f"nthread_{n}": profile_chunk(args, wd, bundle, n) for n in (1, 2)}
        prof["driver_cold_start"] = profile_driver(wd, args.rows)
        log(f"profile: chunk {prof['nthread_1']['rows_per_s']:,} rows/s (1 thread), "
            f"{prof['nthread_2']['rows_per_s']:,} rows/s (2 threads); driver start-up {prof['driver_cold_start']}")
    if not ({"lakescore", "rss"} <= skip):
        cluster = RayCluster(wd.out, args.num_cpus)
        log(f"ray: starting a private cluster (temp dir {cluster.temp_dir}, gcs port {cluster.port}, dashboard {cluster.dashboard})")
        try:
            startup = cluster.start()
            log(f"ray: cluster up in {startup:.1f}s")
            result["ray_cluster_startup_s"] = round(startup, 2)
            if "rss" not in skip:
                # Also the warm-up: the first submission uploads the working dir (cached by hash after).
                small = run_lakescore(args, wd, cluster, args.small_rows, "small", sample=True)
            if "lakescore" not in skip:
                main_run = best_of(args.repeat, "lakescore", lambda: run_lakescore(args, wd, cluster, args.rows, "main", sample=False),
                                   cluster)
            if "rss" not in skip:
                large = run_lakescore(args, wd, cluster, args.large_rows, "large", sample=True)
        finally:
            cluster.stop()
            log("ray: cluster stopped")

    r_raw = raw["rows_per_s"] if raw else None
    r_ls = main_run["rows_per_s"] if main_run else None
    r_sp = spark["rows_per_s"] if spark else None
    rss_s = small["memory"]["peak_total_mb"] if small else None
    rss_l = large["memory"]["peak_total_mb"] if large else None
    result.update({
        "raw_rows_per_s": round(r_raw) if r_raw else None,
        "lakescore_rows_per_s": round(r_ls) if r_ls else None,
        "spark_udf_rows_per_s": round(r_sp) if r_sp else None,
        "ratio_vs_raw": round(r_ls / r_raw, 3) if r_ls and r_raw else None,
        "ratio_vs_spark_udf": round(r_ls / r_sp, 3) if r_ls and r_sp else None,
        "peak_rss_mb_small": rss_s,
        "peak_rss_mb_large": rss_l,
        "rss_ratio_large_small": round(rss_l / rss_s, 3) if rss_s and rss_l else None,
        "raw_s": round(raw["seconds"], 3) if raw else None,
        "lakescore_s": main_run["seconds"] if main_run else None,
        "spark_udf_s": round(spark["seconds"], 3) if spark else None,
        "raw": raw, "spark_udf": spark, "lakescore": main_run, "chunk_profile": prof,
        "rss_small": small, "rss_large": large,
        "targets": {"ratio_vs_raw_min": TARGET_VS_RAW, "ratio_vs_spark_udf_min": TARGET_VS_SPARK,
                    "rss_ratio_large_small_within": RSS_FLATNESS},
    })
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    span = (main_run or {}).get("tasks", {}).get("tasks_span_s")
    if span:
        # Steady state vs fixed cost: rows over the span of the chunk tasks, and everything else in the wall time.
        result["lakescore_tasks_rows_per_s"] = round(args.rows / span)
        result["lakescore_fixed_overhead_s"] = round(main_run["seconds"] - span, 2)
    job_s = (main_run or {}).get("profile", {}).get("job_elapsed_s")
    if job_s:
        # What the job itself reports (config parsed → summary), without the CLI, upload, driver exit and log tail.
        result["lakescore_job_rows_per_s"] = round(args.rows / job_s)
    result["foreign_cpu_share"] = {k: v.get("foreign_cpu_share") for k, v in (("raw", raw), ("lakescore", main_run),
                                                                            ("spark_udf", spark)) if v}

    def mark(ok):
        return "" if ok is None else ("  ok" if ok else "  MISS")

    ratio_raw, ratio_sp, rr = result["ratio_vs_raw"], result["ratio_vs_spark_udf"], result["rss_ratio_large_small"]
    w = 64
    print("=" * w)
    print(f"lakescore benchmark: {args.rows:,} rows × {args.features} float32 features, "
          f"XGBoost {args.trees} trees depth {args.depth}, {machine['cpus']} CPUs")
    print("-" * w)
    print(f"{'(a) raw limit (1 process)':<34}{fmt(r_raw):>14} rows/s")
    print(f"{'(b) lakescore (' + args.submitter + ' submit)':<34}{fmt(r_ls):>14} rows/s")
    print(f"{'(c) mlflow spark_udf local[2]':<34}{fmt(r_sp):>14} rows/s")
    print("-" * w)
    print(f"{'(b)/(a)':<34}{fmt(ratio_raw, '.2f'):>14}   target ≥ {TARGET_VS_RAW}{mark(None if ratio_raw is None else ratio_raw >= TARGET_VS_RAW)}")
    print(f"{'(b)/(c)':<34}{fmt(ratio_sp, '.2f'):>14}   target ≥ {TARGET_VS_SPARK}{mark(None if ratio_sp is None else ratio_sp >= TARGET_VS_SPARK)}")
    print(f"{'peak RSS (b) @ ' + fmt(args.small_rows) + ' rows':<34}{fmt(rss_s, ',.0f'):>14} MB")
    print(f"{'peak RSS (b) @ ' + fmt(args.large_rows) + ' rows':<34}{fmt(rss_l, ',.0f'):>14} MB")
    print(f"{'large/small':<34}{fmt(rr, '.2f'):>14}   target 1 ± {RSS_FLATNESS}"
          f"{mark(None if rr is None else abs(rr - 1) <= RSS_FLATNESS)}")
    if result["foreign_cpu_share"]:
        print(f"{'foreign CPU share':<34}" + ", ".join(f"{k} {v:.0%}" for k, v in result["foreign_cpu_share"].items()))
    if main_run:
        p = main_run["profile"]
        print("-" * w)
        print("(b) where the time goes (s; job log, Jobs API and state API):")
        for k in ("cli_and_upload_s", "supervisor_driver_start_s", "connect_s", "model_and_snapshot_s",
                  "tasks_to_first_commit_s", "planned_to_last_commit_s", "last_commit_to_finished_s", "driver_exit_s",
                  "cli_notices_end_s", "wall_s"):
            print(f"  {k:<32}{fmt(p.get(k), '.2f'):>10}")
        if span:
            print(f"  {'chunk tasks span':<32}{span:>10.2f}   → {fmt(result['lakescore_tasks_rows_per_s'])} rows/s while tasks run")
            print(f"  {'fixed overhead (wall - span)':<32}{result['lakescore_fixed_overhead_s']:>10.2f}")
    print("=" * w)
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
