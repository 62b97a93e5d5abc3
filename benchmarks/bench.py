"""Throughput and memory of the score job, side by side with the raw limit and with a peer (defaults and tuned).

    python benchmarks/bench.py [--rows N] [--small-rows N] [--large-rows N] [--repeat N] [--out DIR]

(a)  raw:        one process, pyarrow read → float32 matrix → Booster.inplace_predict → Parquet (keys + score)
(b)  lakescore:  `lakescore submit … score --config conf/score.yaml` (its contract and passthrough column, as
                 users run it) against a private `ray start --head` cluster; (b0) the same with input.contract=null
                 gives the contract's cost
(c)  spark_udf:  mlflow.pyfunc.spark_udf on Spark local[N] with Spark's and XGBoost's defaults
(c′) spark_udf tuned: Arrow batch size, one XGBoost thread per task, partitions per core (benchmarks/peers.py)
(c″) score_dataframe: lakescore's DataFrame path (engine/spark/dataframe.py) with (c′)'s settings
     (c), (c′), (c″) on two clocks: in a running local[N] session (start-up excluded), and whole-process: spark-submit
     of benchmarks/peer_app.py to (d)'s standalone master and worker, from launch to exit, as (d) is timed
(d)  spark_job:  `spark-submit jobs/score.py --config conf/score.yaml engine=spark` to an already running standalone
                 master and worker (engine/testing/spark_cluster.py): whole job, steady state, fixed cost, model loads
(a′) raw beside: (a) again right before each run of (b) and of (d), for ratios of two runs taken together (this
                 machine's speed drifts by a third within minutes; a job's rate over the raw run beside it does not)
(f)  floor:      each engine's least job (join, one trivial task per core, exit) on (b)'s and (d)'s clocks, run beside
                 them: the part of their fixed cost no job can go under here (benchmarks/floor.py)
Every output is joined to (a)'s on entity_id: a missing, extra or repeated key, or a score more than 1e-6 away,
stops the bench with exit 1. Each throughput part runs --repeat times; all runs are listed, the median reported.
`--scaling`: (a), (b), (c′) and (d) at several sizes instead, a table and a plot (benchmarks/scaling.py).
Peak RSS of (b) at two sizes (benchmarks/monitor.py). Prints a human table, then ONE JSON line (the last line on
stdout). Setup (data, model) is cached under --out (benchmarks/workload.py). See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

import psutil  # noqa: E402

import floor  # noqa: E402
import verify  # noqa: E402
from chunk_profile import profile_chunk, profile_driver  # noqa: E402
from engine.testing.ray_cluster import LocalRayCluster  # noqa: E402
from engine.testing.spark_cluster import StandaloneSpark  # noqa: E402
from job import run_lakescore  # noqa: E402
from monitor import ForeignLoad  # noqa: E402
from peers import PEERS, peer_out, run_peer_in_session, run_peer_whole  # noqa: E402
from raw import run_raw  # noqa: E402
from report import print_table  # noqa: E402
from evaluate_bench import run_evaluate_job, run_micro  # noqa: E402
from spark_job import run_spark_job  # noqa: E402
from workload import Workdir, load_booster, log, setup  # noqa: E402

PARTS = ("raw", "lakescore", "nocontract", "spark", "spark_tuned", "spark_df", "spark_job", "peers_whole", "rss",
         "profile", "evaluate", "floor", "raw_beside")
PEER_PART = dict(zip(PEERS, ("spark", "spark_tuned", "spark_df")))  # (c), (c′), (c″): JSON key → --skip name


def timed(name: str, fn, cluster, check) -> dict:
    """One run of a part, with the foreign load while it ran; `check(run)` verifies its output (not timed)."""
    with ForeignLoad(cluster) as fl:
        r = fn()
    r.update(fl.summary())
    r["verified"] = check(r)
    log(f"{name}: {r['rows_per_s']:,.0f} rows/s (foreign CPU share {r['foreign_cpu_share']:.0%}), output verified")
    return r


def summarize(runs: list[dict]) -> dict | None:
    """Every run listed; the median reported (no best-of, no outliers dropped)."""
    if not runs:
        return None
    return {"rows_per_s": statistics.median(r["rows_per_s"] for r in runs),
            "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
            "all_rows_per_s": [round(r["rows_per_s"]) for r in runs], "all_seconds": [round(r["seconds"], 3) for r in runs],
            "all_foreign_cpu_share": [r["foreign_cpu_share"] for r in runs], "runs": runs}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=4_000_000,
                   help="rows for the throughput runs (a), (b), (c), (c′), (c″), (d); e.g. 16000000 for the large size")
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
    p.add_argument("--submitter", choices=["lakescore", "ray"], default="lakescore",
                   help="submit (b) with `lakescore submit` (default) or plain `ray job submit`")
    p.add_argument("--runtime-env-extra", default="", metavar="JSON",
                   help='merged into the job\'s runtime env, e.g. \'{"worker_process_setup_hook": "xgboost.config.get_config"}\'')
    p.add_argument("--sample-interval", type=float, default=0.2, help="seconds between RSS samples")
    p.add_argument("--spark-driver-memory", default="4g")
    p.add_argument("--spark-cores", type=int, default=os.cpu_count() or 2, help="N of Spark's local[N] for (c) and (c′)")
    p.add_argument("--spark-arrow-batch", type=int, default=100_000,
                   help="(c′) spark.sql.execution.arrow.maxRecordsPerBatch (Spark's default, used by (c): 10000)")
    p.add_argument("--spark-partitions-per-core", type=int, default=4, help="(c′) input partitions per core")
    p.add_argument("--spark-worker-memory", default="2g", help="(d) memory the standalone worker offers")
    p.add_argument("--spark-job-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="(d) extra spark-submit --conf, e.g. spark.executorEnv.OMP_NUM_THREADS=2 (repeatable)")
    p.add_argument("--spark-job-override", action="append", default=[], metavar="KEY=VALUE",
                   help="(d) extra score-job override, e.g. spark.units_in_flight=4 (repeatable)")
    p.add_argument("--job-timeout", type=int, default=3600)
    p.add_argument("--skip", default="", help="comma list of parts to skip: " + ",".join(PARTS))
    p.add_argument("--repeat", type=int, default=3, help="runs of each throughput part; all listed, the median reported")
    p.add_argument("--fresh", action="store_true", help="regenerate data and model even if cached")
    p.add_argument("--scaling", action="store_true",
                   help="the scaling curve instead: (a), (b), (c′) whole and (d) at --scaling-rows; writes scaling.md, "
                        "scaling.png and scaling.json into --out (benchmarks/scaling.py)")
    p.add_argument("--scaling-rows", default="1000000,4000000,16000000", metavar="N,N,…",
                   help="the sizes of --scaling (default 1M, 4M, 16M rows)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.scaling:
        import scaling

        return scaling.run(args)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(PARTS):
        raise SystemExit(f"--skip: unknown part(s) {sorted(skip - set(PARTS))}; known: {', '.join(PARTS)}")
    wd = Workdir(Path(args.out).resolve())
    sizes = {args.rows} | (set() if "rss" in skip else {args.small_rows, args.large_rows})
    machine = {"cpus": os.cpu_count(), "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
               "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    setup(args, wd, sizes)
    bundle, booster = load_booster(wd)
    result: dict = {"rows": args.rows, "small_rows": args.small_rows, "large_rows": args.large_rows,
                    "features": args.features, "trees": args.trees, "depth": args.depth, "repeat": args.repeat,
                    "machine": machine, "job_overrides": args.job_override, "runtime_env_extra": args.runtime_env_extra or None}
    try:
        measure(args, wd, skip, booster, bundle, result)
    except verify.ScoresDiffer as e:
        print(f"bench: error: wrong scores — {e}", file=sys.stderr, flush=True)
        return 1
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_table(args, result)
    print(json.dumps(result, default=str), flush=True)
    return 0


def whole_peers(skip: set[str]) -> list[str]:
    """The peers run on the whole-process clock: those not skipped, unless `peers_whole` is."""
    return [] if "peers_whole" in skip else [p for p in PEERS if PEER_PART[p] not in skip]


def measure_spark(args, wd: Workdir, skip: set[str], reference, standalone, peers: dict, spark_job: list,
                  spark_floor: list, raw_beside) -> None:
    """(c), (c′), (c″) on both clocks, then (d) and its engine's floor (f), interleaved run by run, so a change in
    the machine's load hits all alike. `peers` gets "<part>" (in-session) and "<part>_whole" lists."""
    def parquet_check(path):
        return lambda r: verify.compare(path.name, reference, verify.read_parquet_scores(path))

    env = {**standalone.env, "PYTHONPATH": str(REPO)} if standalone is not None else None
    for i in range(args.repeat):
        for part in PEERS:
            if PEER_PART[part] not in skip:
                log(f"{part}: run {i + 1}/{args.repeat}")
                peers[part].append(timed(part, lambda: run_peer_in_session(args, wd, part), None,
                                         parquet_check(peer_out(wd, part, whole=False))))
        for part in whole_peers(skip):
            log(f"{part} whole: run {i + 1}/{args.repeat}")
            peers[f"{part}_whole"].append(timed(f"{part}_whole", lambda: run_peer_whole(args, wd, part, standalone.master_url, env),
                                                None, parquet_check(peer_out(wd, part, whole=True))))
        if "spark_job" not in skip:
            raw_beside("spark_job")
            log(f"spark_job: run {i + 1}/{args.repeat}")
            spark_job.append(timed("spark_job", lambda: run_spark_job(args, wd, standalone.master_url, env, args.rows),
                                   None, lambda r: verify.compare("(d) spark_job", reference,
                                                                  verify.read_delta_scores(wd.scores(args.rows)))))
            if "floor" not in skip:
                spark_floor.append(floor.run_spark_floor(args, wd, standalone.master_url, env))
                log(f"floor: Spark's least job {spark_floor[-1]:.1f}s")


def start_standalone(args, wd: Workdir, result: dict) -> StandaloneSpark:
    """(d)'s standalone master and one worker (--spark-cores cores), also the whole-process peers' cluster."""
    standalone = StandaloneSpark(wd.out / "spark-standalone", workers=1, cores=args.spark_cores,
                                 memory=args.spark_worker_memory)
    log(f"spark: starting a standalone master and worker ({args.spark_cores} cores)")
    result["spark_standalone_startup_s"] = round(standalone.start(), 2)
    return standalone


def measure(args, wd: Workdir, skip: set[str], booster, bundle, result: dict) -> None:
    """Run every part not skipped into `result`; raises verify.ScoresDiffer on the first wrong output."""
    def raw_run() -> dict:
        return timed("raw", lambda: run_raw(args, wd, booster), None, lambda r: True)

    raw_runs: list[dict] = []
    for i in range(1 if "raw" in skip else args.repeat):  # (a) is also the reference: run once even when skipped
        log(f"raw: run {i + 1}")
        raw_runs.append(raw_run())
    reference = verify.read_parquet_scores(wd.raw_out)
    beside: dict[str, list[dict]] = {"lakescore": [], "spark_job": []}

    def raw_beside(part: str) -> None:
        """(a′): (a) once more, right before a run of `part`; its output is (a)'s again (not verified twice)."""
        if "raw_beside" not in skip:
            log(f"raw beside {part}: run {len(beside[part]) + 1}")
            beside[part].append(raw_run())
    peers: dict[str, list[dict]] = {k: [] for p in PEERS for k in (p, f"{p}_whole")}
    spark_job: list[dict] = []
    spark_floor: list[float] = []
    standalone = None
    if "spark_job" not in skip or whole_peers(skip):  # started once, before any timing, as (b)'s Ray cluster is
        standalone = start_standalone(args, wd, result)
    try:
        measure_spark(args, wd, skip, reference, standalone, peers, spark_job, spark_floor, raw_beside)
    finally:
        if standalone is not None:
            standalone.stop()
            log("spark: standalone master and worker stopped")
    result["spark_job"] = summarize(spark_job)
    result["spark_floor"] = floor.summarize(spark_floor)
    result.update({k: summarize(v) for k, v in peers.items() if k.endswith("_whole")})
    prof = None
    if "profile" not in skip:
        prof = {f"nthread_{n}": profile_chunk(args, wd, bundle, n) for n in (1, 2)}
        prof["driver_cold_start"] = profile_driver(wd, args.rows)
    small = large = None
    ls = {True: [], False: []}
    evaluate: list[dict] = []
    ray_floor: list[float] = []
    if "evaluate" not in skip:  # the accumulation alone, one thread, before the cluster starts (a quiet machine)
        log("evaluate: metric accumulation microbenchmark (one thread)")
        result["eval_micro"] = run_micro(2_000_000, args.repeat)
    modes = [c for c, part in ((True, "lakescore"), (False, "nocontract")) if part not in skip]
    if modes or "rss" not in skip or "evaluate" not in skip:  # (e) too needs the cluster, with or without (b)
        cluster = LocalRayCluster(args.num_cpus, log_path=wd.out / "ray-start.log")
        log(f"ray: starting a private cluster (temp dir {cluster.temp_dir}, dashboard {cluster.address})")
        try:
            result["ray_cluster_startup_s"] = round(cluster.start(), 2)
            if "rss" not in skip:
                # Also the warm-up: the first submission uploads the working dir (cached by hash after).
                small = run_lakescore(args, wd, cluster, args.small_rows, "small", sample=True)
            for i in range(args.repeat):  # interleaved, so a change in the machine's load hits both alike
                for contract in modes:
                    tag = "main" if contract else "nocontract"
                    if contract:
                        raw_beside("lakescore")
                    log(f"lakescore[{tag}]: run {i + 1}/{args.repeat}")
                    ls[contract].append(timed(tag, lambda: run_lakescore(args, wd, cluster, args.rows, tag, False, contract),
                                              cluster, lambda r: verify.compare(f"(b) {tag}", reference,
                                                                                verify.read_delta_scores(wd.scores(args.rows)))))
                if True in modes and "floor" not in skip:
                    ray_floor.append(floor.run_ray_floor(args, wd, cluster))
                    log(f"floor: Ray's least job {ray_floor[-1]:.1f}s")
            if "evaluate" not in skip:
                if not modes:  # (e) evaluates the scores (b) wrote; without (b), write them once (untimed)
                    run_lakescore(args, wd, cluster, args.rows, "for-evaluate", False)
                for i in range(args.repeat):
                    log(f"evaluate: run {i + 1}/{args.repeat}")
                    evaluate.append(timed("evaluate", lambda: run_evaluate_job(args, wd, cluster, args.rows), cluster,
                                          lambda r: r["rows"] == args.rows))
            if "rss" not in skip:
                large = run_lakescore(args, wd, cluster, args.large_rows, "large", sample=True)
        finally:
            cluster.stop()
            log("ray: cluster stopped")
    result.update({"raw": summarize(raw_runs) if "raw" not in skip else None,
                   **{p: summarize(peers[p]) for p in PEERS},
                   "lakescore": summarize(ls[True]),
                   "lakescore_no_contract": summarize(ls[False]), "evaluate": summarize(evaluate),
                   "ray_floor": floor.summarize(ray_floor),
                   "raw_beside": {k: summarize(v) for k, v in beside.items()},
                   "chunk_profile": prof, "rss_small": small,
                   "rss_large": large})


if __name__ == "__main__":
    sys.exit(main())
