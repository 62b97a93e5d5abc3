"""The lake on an object store: the validate and score jobs, both engines, against a real S3 server (moto's).

The lake root is `s3://lakescore/<run>/lake`; the config names only the endpoint, the region and AWS_ALLOW_HTTP,
and the credentials come from the environment (tests/s3.py). Everything is checked by reading the store
directly with `deltalake`, never through the job's own code.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from deltalake import CommitProperties, DeltaTable, write_deltalake

import s3
from conftest import DAYS, ROOT, ROWS, XGB, run_twice_concurrently
from engine.demo.data import make_day

pytestmark = pytest.mark.slow
CONTRACT = ROOT / "conf" / "contracts" / "features.yaml"
BAD_DAY, LATER_DAY = "2026-01-05", "2026-01-06"
DAY_LIST = [f"2026-01-0{i + 1}" for i in range(DAYS)]


def set_rows(t: pa.Table, column: str, rows: list[int], value) -> pa.Table:
    vals = t.column(column).to_pylist()
    for i in rows:
        vals[i] = value
    return t.set_column(t.schema.get_field_index(column), column, pa.array(vals, t.schema.field(column).type))


def lake_root(name: str) -> str:
    return f"s3://{s3.BUCKET}/{name}-{uuid.uuid4().hex[:8]}/lake"


def new_lake(server, demo_root: Path, root: str, endpoint: str | None = None) -> tuple[str, dict]:
    """The demo features copied onto the store (its Delta log as it is: versions 0…DAYS-1, one per day); the
    storage options for reaching it at `endpoint` (default the server itself)."""
    s3.upload_tree(demo_root / "lake" / "features", f"{root}/features", s3.storage_options(server.endpoint))
    return root, s3.storage_options(endpoint or server.endpoint)


def plant_bad_day(root: str, opts: dict) -> tuple[int, pa.Table]:
    """A new day with 3 bad rows (NaN f03 in rows 2 and 8, region 'mars' in 8 and 9); returns (its version, rows)."""
    bad = make_day(DAYS, BAD_DAY, ROWS, 50, seed=21)[0]
    bad = set_rows(set_rows(bad, "f03", [2, 8], float("nan")), "region", [8, 9], "mars")
    write_deltalake(f"{root}/features", bad, partition_by=["ds"], mode="append", schema_mode="merge", storage_options=opts)
    return DeltaTable(f"{root}/features", storage_options=opts).version(), bad


def write_config(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def lake_section(root: str, opts: dict) -> dict:
    return {"root": root, "storage_options": opts}  # no credentials: they are in the environment


def mlflow_section(demo_root: Path) -> dict:
    return {"tracking_uri": f"sqlite:///{demo_root}/mlruns.db", "artifact_root": str(demo_root / "mlartifacts")}


def run_main(main, config: Path, capfd, *args: str) -> tuple[int, dict, str]:
    """Run a job's entry point as a scheduler would; (exit code, summary line, everything it printed)."""
    code = main(["--config", str(config), *args])
    out, err = capfd.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    return code, summary, out + err


def commits(uri: str, opts: dict) -> list[dict]:
    return DeltaTable(uri, storage_options=opts).history()


def local_traces(cwd: Path) -> list[str]:
    """Anything a job wrote to the local disk instead of the store (e.g. a folder named 's3:' or 'lake')."""
    return sorted(p.name for p in cwd.iterdir() if p.name.startswith(("s3", "lake", "_reports", s3.BUCKET)))


# ------------------------------------------------------------------------------ both engines, end to end


@pytest.mark.parametrize("engine", ["ray", "spark"])
def test_validate_and_score_on_the_object_store_pinned_quarantined_reconciled_and_idempotent(
        engine, request, s3_server, demo_root, tmp_path, capfd):
    from jobs.score import main as score_main
    from jobs.validate import main as validate_main

    request.getfixturevalue("ray_local" if engine == "ray" else "spark")
    root, opts = new_lake(s3_server, demo_root, lake_root(engine))
    pinned, bad = plant_bad_day(root, opts)
    later = make_day(DAYS + 1, LATER_DAY, 500, 50, seed=22)[0]  # lands after the pin: the jobs must not read it
    write_deltalake(f"{root}/features", later, partition_by=["ds"], mode="append", storage_options=opts)
    contract = tmp_path / "q.yaml"
    contract.write_text(CONTRACT.read_text().replace("mode: fail_closed", "mode: quarantine") + "bad_row_budget: 0.01\n")
    common = {"engine": engine, "lake": lake_section(root, opts), "mlflow": mlflow_section(demo_root)}
    inp = {"version": pinned, "contract": str(contract)}
    assert "SECRET" not in json.dumps(common).upper() and s3.SECRET not in json.dumps(common)

    vconf = write_config(tmp_path / "validate.yaml", {**common, "input": inp})
    code, vsum, vlog = run_main(validate_main, vconf, capfd)
    # validate reports every violation (exit 3); it is the score job that sets the bad rows aside
    assert code == 3, vlog[-3000:]
    assert vsum["input_version"] == pinned and vsum["passed"] == DAY_LIST and vsum["failed"] == [BAD_DAY]
    assert {v["check"]: v["rows"] for v in vsum["violations"]} == {"finite:f03": 2, "category:region": 2}
    assert vsum["report"] == f"{root}/_reports/validate/{vsum['run_id']}.json"

    sconf = write_config(tmp_path / "score.yaml", {
        **common, "model": {"uri": f"models:/{XGB}@champion"},
        "input": {**inp, "passthrough_columns": ["event_ts"]}, "output": {"target_file_rows": 2000}})
    code, s, slog = run_main(score_main, sconf, capfd)
    assert code == 0, slog[-3000:]
    assert s["input_version"] == pinned and sorted(s["committed"]) == [*DAY_LIST, BAD_DAY]
    assert s["rows_in"] == (DAYS + 1) * ROWS and s["rows_quarantined"] == 3 and s["rows_out"] == (DAYS + 1) * ROWS - 3

    # Reconcile by reading the store directly: rows in = rows scored + rows quarantined, key for key.
    feats = DeltaTable(f"{root}/features", version=pinned, storage_options=opts).to_pyarrow_table(columns=["ds", "entity_id"])
    scores = DeltaTable(f"{root}/scores", storage_options=opts).to_pyarrow_table()
    quar = DeltaTable(f"{root}/quarantine", storage_options=opts).to_pyarrow_table()
    assert LATER_DAY not in set(scores.column("ds").to_pylist())
    assert set(scores.column("input_version").to_pylist()) == {pinned}
    assert set(scores.column("input_table").to_pylist()) == {"features"}
    ids = bad.column("entity_id").to_pylist()
    q_keys = {(d, json.loads(k)["entity_id"]) for d, k in zip(quar.column("ds").to_pylist(), quar.column("key").to_pylist())}
    assert q_keys == {(BAD_DAY, ids[i]) for i in (2, 8, 9)}
    scored = set(zip(scores.column("ds").to_pylist(), scores.column("entity_id").to_pylist()))
    assert scores.num_rows == len(scored) == feats.num_rows - 3
    assert scored | q_keys == set(zip(feats.column("ds").to_pylist(), feats.column("entity_id").to_pylist()))

    # Paths: every file the logs reference lives under its table on the store; nothing landed on the local disk.
    for table in ("scores", "quarantine"):
        dt = DeltaTable(f"{root}/{table}", storage_options=opts)
        uris = dt.file_uris()
        assert uris and all(u.startswith(f"{root}/{table}/") for u in uris), uris[:3]
        adds = pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist()
        assert all(not p.startswith(("/", "file:", "s3:")) and "://" not in p for p in adds), adds[:3]  # relative
        on_store = {f"{root}/{table}/{p}" for p in s3.list_files(f"{root}/{table}", opts) if not p.startswith("_delta_log/")}
        assert on_store == set(uris)  # no orphans, nothing missing
    assert s["report"] == f"{root}/_reports/score/{s['run_id']}.json"
    reports = s3.list_files(f"{root}/_reports", opts)
    assert {f"score/{s['run_id']}.json", f"validate/{vsum['run_id']}.json"} <= set(reports)
    assert json.loads(s3.read_text(f"{root}/_reports", f"score/{s['run_id']}.json", opts))["version"] == pinned
    assert local_traces(Path.cwd()) == [] and local_traces(tmp_path) == []
    assert s3.list_files(f"{root}/_scratch", opts) == []  # the key hashes its 2-chunk days spilled are gone

    # A re-run is a no-op: every unit skipped, no table moved.
    versions = {t: DeltaTable(f"{root}/{t}", storage_options=opts).version() for t in ("scores", "quarantine")}
    code, again, alog = run_main(score_main, sconf, capfd)
    assert code == 0, alog[-3000:]
    assert again["committed"] == [] and again["units_skipped"] == DAYS + 1 and again["rows_out"] == 0
    assert {t: DeltaTable(f"{root}/{t}", storage_options=opts).version() for t in versions} == versions

    # Secrets: the access key in the environment is nowhere in what the jobs printed or wrote.
    outputs = {"validate output": vlog, "score output": slog, "re-run output": alog, **mlflow_texts(demo_root)}
    places = leak_places(root, opts, outputs)
    assert places == [], f"the secret access key leaked into {places}"
    # Positive control: the same search finds the secret where we put it ourselves: in a report file, in the output
    # text, in a row of a table on the store and in a commit's userMetadata there.
    s3.write_text(f"{root}/_reports", "control/planted.txt", f"control {s3.SECRET}\n", opts)
    row = DeltaTable(f"{root}/quarantine", storage_options=opts).to_pyarrow_table().slice(0, 1)
    row = row.set_column(row.schema.get_field_index("run_id"), "run_id", pa.array([s3.SECRET], pa.string()))
    write_deltalake(f"{root}/quarantine", row, mode="append", partition_by=["ds", "source_table"], storage_options=opts)
    copy = DeltaTable(f"{root}/scores", storage_options=opts).to_pyarrow_table().slice(0, 1)  # a row as it is
    write_deltalake(f"{root}/scores", copy, mode="append", partition_by=["ds", "model_name", "model_version"],
                    storage_options=opts, commit_properties=CommitProperties(custom_metadata={"note": f"control {s3.SECRET}"}))
    assert s3.SECRET in json.dumps(commits(f"{root}/scores", opts)[0])  # the planted commit, on the store
    assert leak_places(root, opts, {"score output": slog + s3.SECRET}) == [
        "quarantine rows", "report control/planted.txt", "score output", "scores commits"]


def mlflow_texts(demo_root: Path) -> dict[str, str]:
    """The MLflow store the jobs logged their reports to: the sqlite file (params, tags) and the report artifacts."""
    texts = {"mlflow db": (demo_root / "mlruns.db").read_bytes().decode("latin-1")}
    for p in (demo_root / "mlartifacts").rglob("*"):
        if p.is_file() and p.suffix in (".json", ".txt", ".yaml", ".html"):
            texts[f"mlflow artifact {p.name}"] = p.read_text(errors="replace")
    return texts


def leak_places(root: str, opts: dict, outputs: dict[str, str]) -> list[str]:
    """Where the secret appears: job outputs (log lines and summary), any value of the lake's tables (stamps
    included), any commit's metadata, any report file on the store."""
    found = [name for name, text in outputs.items() if s3.SECRET in text]
    for table in ("scores", "quarantine", "drift_reference"):
        uri = f"{root}/{table}"
        if not DeltaTable.is_deltatable(uri, opts):
            continue
        data = DeltaTable(uri, storage_options=opts).to_pyarrow_table()
        if s3.SECRET in json.dumps(data.to_pylist(), default=str):
            found.append(f"{table} rows")
        if s3.SECRET in json.dumps(commits(uri, opts), default=str):
            found.append(f"{table} commits")
    for path in s3.list_files(f"{root}/_reports", opts):
        if s3.SECRET in s3.read_text(f"{root}/_reports", path, opts):
            found.append(f"report {path}")
    return sorted(found)


# ------------------------------------------------------------------------------ concurrent runs of one unit

RACE_DAY = "2026-01-02"


def race_one_unit(root: str, opts: dict, demo_root: Path, hooks_for) -> list:
    """Two score runs of unit RACE_DAY in two threads; `hooks_for(barrier)` holds them where the test wants."""
    from engine.config import ScoreConfig, load_config, resolve_paths
    from engine.ray.executor import executor
    from jobs.score import run_score

    overrides = [f"lake.root={root}", *(f"lake.storage_options.{k}={v}" for k, v in opts.items()),
                 f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
                 f"model.uri=models:/{XGB}@champion", "input.passthrough_columns=[event_ts]"]
    first = resolve_paths(load_config(ScoreConfig, None, [*overrides, "input.ds=2026-01-01"]))
    assert run_score(first, executor(first.ray)).committed == ["2026-01-01"]  # the table exists before the race
    cfg = resolve_paths(load_config(ScoreConfig, None, [*overrides, f"input.ds={RACE_DAY}"]))
    barrier = threading.Barrier(2, timeout=120)
    return run_twice_concurrently(lambda: run_score(cfg, executor(cfg.ray), hooks=hooks_for(barrier)))


def one_copy_of_the_unit(root: str, opts: dict, results: list) -> None:
    """The protocol's invariant: one run committed the unit, the other found it done; one commit, one copy."""
    assert sorted((r.committed, r.already_done) for r in results) == [([], [RACE_DAY]), ([RACE_DAY], [])]
    winner = next(r for r in results if r.committed)
    metas = [json.loads(h["userMetadata"]) for h in commits(f"{root}/scores", opts) if h.get("userMetadata")]
    assert [m["run_id"] for m in metas if m.get("app_id") == f"lakescore/score/{RACE_DAY}/{XGB}/1"] == [winner.run_id]
    t = DeltaTable(f"{root}/scores", storage_options=opts).to_pyarrow_table(filters=[("ds", "=", RACE_DAY)])
    assert t.num_rows == ROWS and not t.select(["entity_id"]).to_pandas().duplicated().any()
    assert set(t.column("run_id").to_pylist()) == {winner.run_id}
    dt = DeltaTable(f"{root}/scores", storage_options=opts)
    on_store = {f"{root}/scores/{p}" for p in s3.list_files(f"{root}/scores", opts) if not p.startswith("_delta_log/")}
    assert on_store == set(dt.file_uris())  # the loser's files were dropped


def test_mlflow_model_and_report_artifacts_on_the_object_store(ray_local, s3_server, demo_root, tmp_path, capfd,
                                                               monkeypatch):
    """MLflow's artifacts on the store too (boto3; MLFLOW_S3_ENDPOINT_URL for an S3-compatible one): the model is
    registered there and the score job downloads it from there; the contract report is logged there."""
    from mlflow.tracking import MlflowClient

    from backtests import recipes
    from engine.demo import models
    from jobs.score import main as score_main

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint)
    root, opts = new_lake(s3_server, demo_root, lake_root("mlflow"))
    artifacts = root.removesuffix("/lake") + "/mlartifacts"
    tracking = f"sqlite:///{tmp_path}/mlruns.db"
    feats = DeltaTable(f"{root}/features", storage_options=opts).to_pyarrow_table()
    spec = models.demo_spec(50)
    train = [("ds", "in", DAY_LIST[:2])]
    x, y = models.training_set(DeltaTable(str(demo_root / "lake" / "features")).to_pyarrow_table(filters=train),
                               DeltaTable(str(demo_root / "lake" / "labels")).to_pyarrow_table(filters=train), spec)
    models.register(tracking, artifacts, spec, x, y, "s3-xgb", "s3-mlp", trees=5, depth=3, seed=3, champion="xgb",
                    train_xgb=recipes.train_xgb, train_mlp=recipes.train_mlp)
    client = MlflowClient(tracking)
    version = client.get_model_version_by_alias("s3-xgb", "champion")
    model_files = s3.list_files(artifacts, opts)
    assert any(f.endswith("MLmodel") for f in model_files) and any(f.endswith(".ubj") for f in model_files), model_files

    conf = write_config(tmp_path / "score.yaml", {
        "engine": "ray", "lake": lake_section(root, opts),
        "mlflow": {"tracking_uri": tracking, "artifact_root": artifacts},
        "model": {"uri": "models:/s3-xgb@champion"}, "input": {"contract": str(CONTRACT)}})
    code, s, out = run_main(score_main, conf, capfd)
    assert code == 0, out[-3000:]
    assert (s["model"], s["model_version"]) == ("s3-xgb", int(version.version))
    scores = DeltaTable(f"{root}/scores", storage_options=opts).to_pyarrow_table(columns=["model_version", "score"])
    assert scores.num_rows == feats.num_rows == DAYS * ROWS
    assert set(scores.column("model_version").to_pylist()) == {int(version.version)}

    (run,) = client.search_runs([client.get_experiment_by_name("lakescore-contract-reports").experiment_id])
    assert run.info.artifact_uri.startswith(f"{artifacts}/")
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert logged == {f"{s['run_id']}.json", f"{s['run_id']}.txt"}
    on_store = s3.list_files(run.info.artifact_uri, opts)
    assert sorted(on_store) == sorted(logged)  # the report is on the store, read back directly
    assert local_traces(Path.cwd()) == [] and not list(tmp_path.glob("mlartifacts*"))


def test_two_concurrent_runs_of_one_unit_on_the_object_store_leave_one_copy(ray_local, s3_server, demo_root):
    """The barrier test of the commit protocol, on S3: both runs pass the "already done?" check, then commit."""
    from engine.score.run import Hooks

    root, opts = new_lake(s3_server, demo_root, lake_root("race"))
    results = race_one_unit(root, opts, demo_root, lambda b: Hooks(after_check=lambda units: units and b.wait()))
    one_copy_of_the_unit(root, opts, results)


@pytest.mark.parametrize("store", ["honest", "ignores-conditional-writes"])
def test_commits_racing_at_the_store_keep_the_invariant_only_where_conditional_writes_hold(
        ray_local, s3_server, demo_root, store, tmp_path):
    """Both runs' commit puts meet at the store (a proxy holds the first until the second comes), so both listed the
    log before either wrote.

    On the honest store one put gets PreconditionFailed and that run settles as "already done". On a store that
    ignores `If-None-Match` (the negative control) both puts succeed, both runs believe they committed, and the
    second commit file replaced the first: the invariant the test checks is broken, so the test can catch it.
    """
    from engine.score.run import Hooks

    root = lake_root(f"race-{store}")
    # scores: version 0 creates the table, 1 commits the first day, 2 is the version both racing runs write
    race_commit = f"/{root.split('/', 3)[3]}/scores/_delta_log/{2:020d}.json"
    proxy = s3.CommitRaceProxy(s3_server.port, race_commit, tmp_path / "held.txt",
                               ignore_conditional_writes=store != "honest")
    try:
        root, opts = new_lake(s3_server, demo_root, root, endpoint=proxy.endpoint)
        results = race_one_unit(root, opts, demo_root, lambda b: Hooks(after_check=lambda units: units and b.wait()))
    finally:
        proxy.stop()
    opts = s3.storage_options(s3_server.endpoint)  # checked on the store directly
    if store == "honest":
        assert sorted(proxy.held_puts) == [200, 412]  # the two commits really met at the store
        one_copy_of_the_unit(root, opts, results)
    else:
        assert proxy.held_puts == [200, 200]
        assert [r.committed for r in results] == [[RACE_DAY], [RACE_DAY]]  # both believe they won
        rows = DeltaTable(f"{root}/scores", storage_options=opts).to_pyarrow_table(filters=[("ds", "=", RACE_DAY)])
        lost = {r.run_id for r in results} - set(rows.column("run_id").to_pylist())
        assert len(lost) == 1  # one run's commit was silently replaced: it reported rows that are nowhere
        with pytest.raises(AssertionError):
            one_copy_of_the_unit(root, opts, results)


# ------------------------------------------------------------------------------ analysts: Spark SQL over s3a://


def test_analysts_read_the_scores_on_the_object_store_with_spark_sql_over_s3a(
        ray_local, spark, s3_server, demo_root, tmp_path, capfd):
    """The score job writes to `s3://`; Spark SQL through delta-spark and S3A (a fresh JVM with the S3A jars, in a
    process of its own) reads the same rows, per-day counts and versions as `deltalake` does, by `s3a://` and
    `s3://`."""
    from engine.config import LakeConfig
    from engine.errors import ConfigError
    from engine.spark.jars import MANIFEST, default_dest, jar_paths
    from engine.spark.session import s3a_conf, spark_session
    from jobs.score import main as score_main

    root, opts = new_lake(s3_server, demo_root, lake_root("s3a"))
    sconf = write_config(tmp_path / "score.yaml", {
        "engine": "ray", "lake": lake_section(root, opts), "mlflow": mlflow_section(demo_root),
        "model": {"uri": f"models:/{XGB}@champion"}})
    code, s, slog = run_main(score_main, sconf, capfd)
    assert code == 0 and sorted(s["committed"]) == DAY_LIST, slog[-3000:]

    # The reference: the store read directly with deltalake, at the latest version and two earlier ones.
    uri = f"{root}/scores"
    latest = DeltaTable(uri, storage_options=opts).version()
    versions = [1, latest - 1]
    ref = DeltaTable(uri, storage_options=opts).to_pyarrow_table(columns=["ds", "entity_id", "score"])
    ref_rows = sorted(zip(*(ref.column(c).to_pylist() for c in ("ds", "entity_id", "score"))))

    def days_at(v: int) -> dict[str, int]:
        t = DeltaTable(uri, version=v, storage_options=opts).to_pyarrow_table(columns=["ds"])
        counts = t.group_by("ds").aggregate([("ds", "count")])
        return dict(zip(counts.column("ds").to_pylist(), counts.column("ds_count").to_pylist()))

    ref_days, ref_travel = days_at(latest), {str(v): days_at(v) for v in versions}
    assert ref_days == {d: ROWS for d in DAY_LIST}
    assert len(ref_travel["1"]) == 1 and len(ref_travel[str(latest - 1)]) == DAYS - 1  # the versions differ

    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "s3a_read.py"),
         json.dumps({"root": root, "storage_options": opts, "warehouse": str(tmp_path / "wh"), "versions": versions})],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    reads = ", ".join(f"{k} {v['read_s']}s" for k, v in got["reads"].items())
    print(f"s3a session start {got['start_s']}s, reads {reads}")
    for scheme, read in got["reads"].items():
        assert sorted(map(tuple, read["rows"])) == ref_rows, scheme
        assert read["per_day_sql"] == ref_days, scheme
        assert read["versions"] == {v: {"sql": days, "reader": days} for v, days in ref_travel.items()}, scheme
        assert read["history"] == list(range(latest + 1)), scheme
    # The session reached the store through the mapped settings alone; the credentials stayed in the environment.
    assert s3a_conf(opts).items() <= got["conf"].items()
    assert not [k for k in got["conf"] if "access.key" in k or "secret" in k or "session.token" in k]
    assert s3.SECRET not in proc.stdout + proc.stderr

    # Without the connector there is no reading: the jars' own check, and a JVM started without them (the shared
    # `spark`) fails at the first query and is refused up front by spark_session.
    no_s3a = tmp_path / "jars"
    no_s3a.mkdir()
    shutil.copy(default_dest() / MANIFEST, no_s3a / MANIFEST)
    assert jar_paths(no_s3a) == jar_paths()
    with pytest.raises(ConfigError, match=r"S3A connector jars .* \(s3a.txt\); run .*make setup-s3a"):
        jar_paths(no_s3a, s3a=True)
    with pytest.raises(Exception, match="Class org.apache.hadoop.fs.s3a.S3AFileSystem not found"):
        spark.read.format("delta").load(f"s3a://{uri.split('://', 1)[1]}").count()
    with pytest.raises(ConfigError, match="started without the S3A connector"):
        spark_session(lake=LakeConfig(root=root, storage_options=opts))
