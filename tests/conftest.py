"""Shared fixtures: one local Ray and one small demo lake + MLflow registry per session (they take seconds).

Isolation: every test writes under its temp dirs only. The session runs from a private working directory (so the
configs' relative defaults — `./lake`, `sqlite:///mlruns.db`, `./mlartifacts`, Spark's `spark-warehouse` and
`derby.log` — land there) with MLFLOW_TRACKING_URI pointing there too, and ends by failing if the repository
tree gained, lost or changed any file: a test that writes into the repo cannot pass, whatever the order.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from engine.config import ScoreConfig, load_config, resolve_paths  # noqa: E402

# Tool caches, not test outputs: bytecode (when PYTHONDONTWRITEBYTECODE is unset) and pytest's own cache.
_NOT_OUTPUTS = {".git", "__pycache__", ".pytest_cache"}
DAYS = 4
ROWS = 3000
XGB = "t-xgb"
MLP = "t-mlp"


def repo_files(root: Path = ROOT) -> dict[str, tuple[int, int]]:
    """Every file and directory under the repository, tracked or not, ignored or not: path → (mtime_ns, size)."""
    found = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in _NOT_OUTPUTS]
        for name in [*dirs, *files]:
            p = os.path.join(d, name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            found[os.path.relpath(p, root)] = (st.st_mtime_ns, 0 if name in dirs else st.st_size)
    return found


def repo_changes(before: dict, after: dict) -> list[str]:
    added = after.keys() - before.keys()
    new = [f"new {p}" for p in sorted(added) if os.path.dirname(p) not in added]  # a new dir once, not its contents
    gone = [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    # A directory's mtime moves when an entry is added or removed: that entry is reported itself.
    changed = [f"changed {p}" for p in sorted(before.keys() & after.keys())
               if before[p] != after[p] and not os.path.isdir(ROOT / p)]
    return new + gone + changed


@pytest.fixture(scope="session", autouse=True)
def isolated_session(tmp_path_factory):
    """Run the session from a private cwd with a private default MLflow store; fail if the repo tree changed."""
    import s3

    before = repo_files()
    work = tmp_path_factory.mktemp("cwd")
    old_cwd, old_uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    # The object-store tests' credentials: in the environment before Ray or Spark starts, so that their workers
    # inherit them like the driver (a lake on S3 takes credentials from each process's environment).
    old_env = {k: os.environ.get(k) for k in s3.ENV}
    os.environ.update(s3.ENV)
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlruns.db"
    yield work
    os.chdir(old_cwd)
    for k, v in old_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if old_uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old_uri
    changes = repo_changes(before, repo_files())
    if changes:
        pytest.fail(f"tests wrote into the repository {ROOT} (write under tmp_path instead): "
                    + "; ".join(changes[:20]) + (f"; … {len(changes) - 20} more" if len(changes) > 20 else "")
                    + " (files you edited yourself while the tests ran show up here too: rerun)",
                    pytrace=False)


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray for the session; stopped at the end (only what we started)."""
    import ray

    started = not ray.is_initialized()
    if started:
        # Workers import the project from the repo root.
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local Spark (delta-spark) for the session: 2 cores, 2 attempts per task (a failed attempt is retried)."""
    from engine.spark.executor import SESSION_CONF
    from engine.spark.session import spark_session

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = spark_session("lakescore-tests", master="local[2,2]",
                            extra_conf={**SESSION_CONF, "spark.sql.warehouse.dir": str(warehouse)})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on a free port with the `lakescore` bucket, for the session; stopped by its pid."""
    import s3

    server = s3.MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        server.create_bucket()
        yield server
    finally:
        server.stop()


def make_demo_project(root: Path, days: int, rows: int, data_seed: int, xgb: str, mlp: str, trees: int, depth: int
                      ) -> Path:
    """A project folder like `make demo` leaves, under `root`: lake/{features,labels} (one Delta version per day),
    mlruns.db and mlartifacts/ with both demo models (`xgb` the champion) trained on the first two days."""
    from deltalake import DeltaTable

    from backtests import recipes
    from engine.demo import data, models

    lake = root / "lake"
    data.write_lake(str(lake / "features"), str(lake / "labels"), "2026-01-01", days, rows, 50, seed=data_seed)
    spec = models.demo_spec(50)
    train = data.days("2026-01-01", 2)
    ft = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "in", train)])
    lt = DeltaTable(str(lake / "labels")).to_pyarrow_table(filters=[("ds", "in", train)])
    x, y = models.training_set(ft, lt, spec)
    models.register(f"sqlite:///{root}/mlruns.db", str(root / "mlartifacts"), spec, x, y, xgb, mlp, trees=trees,
                    depth=depth, seed=3, champion="xgb", train_xgb=recipes.train_xgb, train_mlp=recipes.train_mlp)
    return root


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A small demo lake (DAYS days × ROWS rows, one Delta version per day) and both demo models registered."""
    return make_demo_project(tmp_path_factory.mktemp("demo"), DAYS, ROWS, 11, XGB, MLP, trees=30, depth=4)


@pytest.fixture
def lake(demo_root, tmp_path):
    """A private copy of the demo lake (tests append to it and write scores); the registry is shared."""
    dst = tmp_path / "lake"
    shutil.copytree(demo_root / "lake", dst)
    return dst


def score_config(lake: Path, demo_root: Path, *overrides: str) -> ScoreConfig:
    base = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={demo_root}/mlartifacts", f"model.uri=models:/{XGB}@champion",
            "input.passthrough_columns=[event_ts]", "output.target_file_rows=2000"]
    return resolve_paths(load_config(ScoreConfig, None, [*base, *overrides]))


def run_twice_concurrently(fn) -> list:
    """`fn()` in two threads at once (tests of concurrent runs hold them at a barrier inside); their results, once
    both ended; an exception in either fails the test."""
    import threading

    results, errors = [], []

    def run():
        try:
            results.append(fn())
        except Exception as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    return results
