"""(f) the engines' floors: what the least job costs on each engine here, on (b)'s and (d)'s own clocks.

- Ray: a driver that joins the cluster as the jobs do (engine.ray.session.connect) and runs one trivial task per
  CPU, submitted through Ray's Jobs API with the runtime env `lakescore submit` gives the score job (the repo as
  working dir, the same excludes), and followed to its end as `lakescore submit` follows a job; timed from launching
  the submitting process to its exit, as (b) is.
- Spark: spark-submit of a PySpark app that starts its SparkContext as the jobs do (the installed pyspark first,
  engine.spark.session.spark_context with engine.spark.executor.session_conf: C1-only executors, the project's
  Python daemon) on (d)'s master and runs one trivial Python task per core, with (d)'s spark-submit settings; timed
  from launch to exit, as (d) is.

Neither reads, predicts or writes anything: a job's fixed cost minus its engine's floor is what the job adds
(imports, MLflow, the model, the snapshot, planning, the commits). The floor is the platform's and the machine's
(JVM and Python start-up, Ray's upload, supervisor and workers, Spark's executor) with the jobs' own start-up
settings: what no job started this way can go under.

    python benchmarks/floor.py ray-submit ADDRESS CPUS   # the timed process: submit the driver below, follow it
    python benchmarks/floor.py ray-driver CPUS           # that driver (runs in the job's uploaded working dir)
    spark-submit benchmarks/floor.py spark CORES         # the Spark app
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
POLL_S = 0.2  # as jobs.submit polls the job's status


def _one(_) -> int:
    return 1


def ray_driver(cpus: int) -> int:
    import ray

    from engine.ray.session import connect

    connect(None)
    task = ray.remote(num_cpus=0.5)(_one)  # fractional, as the score job's chunk tasks
    got = ray.get([task.remote(i) for i in range(cpus)])
    return 0 if got == [1] * cpus else 1


def ray_submit(address: str, cpus: int) -> int:
    from jobs.submit import UPLOAD_EXCLUDES
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    job = client.submit_job(entrypoint=f"python benchmarks/floor.py ray-driver {cpus}",
                            runtime_env={"working_dir": str(REPO), "excludes": UPLOAD_EXCLUDES})
    while (status := str(client.get_job_info(job).status)) not in TERMINAL:
        time.sleep(POLL_S)
    if status != "SUCCEEDED":
        print(client.get_job_logs(job)[-2000:], file=sys.stderr)
        return 1
    return 0


def spark_app(cores: int) -> int:
    from engine.spark.pythonpath import prefer_installed_pyspark

    prefer_installed_pyspark()  # before pyspark is imported, as jobs.engines does
    from engine.spark.executor import session_conf
    from engine.spark.session import spark_context

    sc = spark_context("lakescore-floor", extra_conf=session_conf())
    got = sc.parallelize(range(cores), cores).map(_one).collect()
    sc.stop()
    return 0 if got == [1] * cores else 1


def run_ray_floor(args, wd, cluster) -> float:
    """Seconds of one Ray floor job on `cluster` (a LocalRayCluster), launch → exit of the submitting process;
    stops the bench (job.job_lines) when it fails."""
    from job import job_lines

    log_path = wd.out / "floor-ray.log"
    t0 = time.time()
    with open(log_path, "w") as logf:
        proc = subprocess.run([sys.executable, __file__, "ray-submit", cluster.address, str(args.num_cpus)],
                              env=cluster.env, stdout=logf, stderr=subprocess.STDOUT, cwd=str(REPO),
                              timeout=args.job_timeout)
    seconds = time.time() - t0
    job_lines(proc, log_path, "(f) Ray floor")
    return round(seconds, 3)


def run_spark_floor(args, wd, master: str, env: dict) -> float:
    """Seconds of one Spark floor app on `master`, launch → exit of spark-submit (spark_job.spark_submit), with
    (d)'s settings and a fresh event log; stops the bench (job.job_lines) when it fails."""
    from job import job_lines
    from spark_job import spark_job_conf, spark_submit

    events = wd.out / "spark-events-floor"
    if events.exists():
        shutil.rmtree(events)
    events.mkdir(parents=True)
    log_path = wd.out / "floor-spark.log"
    app = [__file__, "spark", str(args.spark_cores)]
    proc, t_start, t_end = spark_submit(master, spark_job_conf(args, events), app, env, log_path, wd.out,
                                        args.job_timeout)
    job_lines(proc, log_path, "(f) Spark floor")
    return round(t_end - t_start, 3)


def summarize(seconds: list[float]) -> dict | None:
    """The median of the runs, every run listed."""
    return {"seconds": round(statistics.median(seconds), 3), "all_seconds": seconds} if seconds else None


def main(argv: list[str]) -> int:
    if str(REPO) not in sys.path:  # run as a script (spark-submit, the Ray job's working dir): the project's packages
        sys.path.insert(1, str(REPO))
    modes = {"ray-driver": lambda a: ray_driver(int(a[0])), "ray-submit": lambda a: ray_submit(a[0], int(a[1])),
             "spark": lambda a: spark_app(int(a[0]))}
    if not argv or argv[0] not in modes:
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 2
    return modes[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
