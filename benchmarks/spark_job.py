"""(d) the score job on Spark: `spark-submit jobs/score.py --config conf/score.yaml engine=spark` to an already
running standalone master and worker (engine/testing/spark_cluster.py), timed from launching spark-submit until it
exits, and split with the job's own log lines:

- whole job: spark-submit's wall time (JVM and driver start-up, config, model and snapshot, the Spark jobs, the
  commits, the contract report, the exit);
- steady state: from the first Spark task's launch (Spark's event log, `Launch Time` of the scoring jobs' tasks)
  to the last unit's commit on the driver (the job's log line "unit …: committed, N rows");
- fixed cost: whole − steady;
- in-session: the job's core from its SparkSession being up to "score run … finished in Ns" (N, 0.1 s resolution),
  the region the peers' in-session clock times (benchmarks/peers.py).
Between the two, the SparkExecutor's per-unit line "unit …: N chunk(s) ran on Spark from <start> to <end>; model
loads by Python worker pid {…}" says when the chunk function itself began (after the Python worker's start-up).

The per-unit lines also say how many times each Python worker loaded the model: with spark.python.worker.reuse
and engine.models.scorers.cached_scorer every worker loads it once, however many chunks and units it runs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from job import _log_time, job_lines
from workload import ALIAS, MODEL_NAME, Workdir, log

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_CHUNKS = re.compile(r"^unit (\S+): (\d+) chunk\(s\) ran on Spark from ([\d.]+) to ([\d.]+); "
                     r"model loads by Python worker pid (\{.*\})$")
_COMMIT = re.compile(r"^unit (\S+): committed, (\d+) rows$")
_FINISHED = re.compile(r"^score run \S+ finished in ([\d.]+)s$")


def spark_job_conf(args, events: Path) -> dict[str, str]:
    """spark-submit --conf settings: the project's interpreter and code on the executors, one XGBoost/OpenMP thread
    per concurrent task (as (c′)), Spark's event log into `events` (task launch times), and --spark-job-conf."""
    conf = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": events.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",  # one plain JSON-lines file (Spark 4 rolls by default)
        "spark.pyspark.python": sys.executable,
        "spark.executorEnv.PYTHONPATH": str(REPO),
        "spark.executorEnv.OMP_NUM_THREADS": str(max(1, (os.cpu_count() or args.spark_cores) // args.spark_cores)),
        "spark.executor.memory": "1g",
        "spark.python.worker.reuse": "true",
        # The README's command line (the job sets the executors' JVM options itself): C1 only, the JVM moves no rows.
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    }
    for kv in args.spark_job_conf:
        k, _, v = kv.partition("=")
        conf[k] = v
    return conf


def parse_log(lines: list[str]) -> dict:
    """The job's timeline and the Python workers' model loads, from its own log lines (epoch seconds)."""
    chunks, commits, workers = [], [], {}
    marks: dict[str, float] = {}
    summary = None
    for line in lines:
        if line.startswith("{") and '"job": "score"' in line:
            try:
                summary = json.loads(line)
            except ValueError:
                pass
            continue
        if " lakescore: " not in line:
            continue
        t = _log_time(line)
        msg = line.split(" lakescore: ", 1)[1].strip()
        if t is not None and msg.startswith("config ") and "config" not in marks:
            marks["config"] = t
        elif t is not None and msg.startswith("input ") and "planned" in msg:
            marks["planned"] = t
        elif t is not None and (m := _FINISHED.match(msg)):
            marks["finished"] = t
            marks["run_start"] = t - float(m.group(1))  # the job core's start: after the SparkSession is up
            marks["in_session"] = float(m.group(1))
        elif m := _CHUNKS.match(msg):
            chunks.append((int(m.group(2)), float(m.group(3)), float(m.group(4))))
            for pid, loads in json.loads(m.group(5)).items():
                workers[int(pid)] = max(workers.get(int(pid), 0), int(loads))
        elif t is not None and (m := _COMMIT.match(msg)):
            commits.append((t, int(m.group(2))))
    return {"marks": marks, "chunks": chunks, "commits": commits, "workers": workers, "summary": summary}


def parse_event_log(events: Path) -> dict:
    """Launch and finish times (epoch s) of the tasks of the scoring jobs (job group `lakescore-…`), from the one
    application's event log in `events`."""
    files = [p for p in events.iterdir() if p.is_file()]
    if len(files) != 1:
        return {"error": f"expected one event log file in {events}, found {len(files)}"}
    stages: set[int] = set()
    launches, finishes = [], []
    with open(files[0]) as f:
        for line in f:
            if '"SparkListenerJobStart"' in line:
                e = json.loads(line)
                if str((e.get("Properties") or {}).get("spark.jobGroup.id", "")).startswith("lakescore-"):
                    stages.update(e.get("Stage IDs", []))
            elif '"SparkListenerTaskEnd"' in line:
                e = json.loads(line)
                if e.get("Stage ID") in stages:
                    info = e["Task Info"]
                    launches.append(info["Launch Time"] / 1000)
                    finishes.append(info["Finish Time"] / 1000)
    if not launches:
        return {"error": f"no scoring tasks in {files[0]}"}
    return {"tasks": len(launches), "first_launch": min(launches), "last_finish": max(finishes),
            "task_s_sum": round(sum(b - a for a, b in zip(launches, finishes)), 3)}


def model_cache(parsed: dict) -> dict:
    """Chunks run, Python workers that ran them, and model loads per worker: the cache holds when every worker
    loaded the model exactly once (and it is shown only if some worker ran more than one chunk)."""
    workers, n_chunks = parsed["workers"], sum(c[0] for c in parsed["chunks"])
    return {"chunks": n_chunks, "python_workers": len(workers), "model_loads": sum(workers.values()),
            "loads_by_pid": {str(k): v for k, v in sorted(workers.items())},
            "holds": bool(workers) and all(v == 1 for v in workers.values()),
            "workers_reused": n_chunks > len(workers)}


def timeline(parsed: dict, tasks: dict, t_start: float, t_end: float, rows: int) -> dict:
    """Whole job, steady state (first task launch → last commit) and the fixed cost, with the phases around them."""
    whole = t_end - t_start
    out: dict = {"whole_s": round(whole, 3), "whole_rows_per_s": rows / whole}
    marks, chunks, commits = parsed["marks"], parsed["chunks"], parsed["commits"]
    if "first_launch" in tasks and commits:
        first, last_commit = tasks["first_launch"], max(t for t, _ in commits)
        steady = last_commit - first
        out.update({"steady_s": round(steady, 3), "steady_rows_per_s": rows / steady if steady > 0 else None,
                    "fixed_cost_s": round(whole - steady, 3), "submit_to_first_task_s": round(first - t_start, 3),
                    "planned_to_first_task_s": round(first - marks["planned"], 3) if "planned" in marks else None,
                    "task_span_s": round(tasks["last_finish"] - first, 3),
                    "last_task_to_last_commit_s": round(last_commit - tasks["last_finish"], 3),
                    "last_commit_to_exit_s": round(t_end - last_commit, 3), "commits": len(commits)})
        if chunks:  # the Python worker's start-up: imports, the unit's and the bundle's broadcasts
            out["first_task_to_first_chunk_s"] = round(min(c[1] for c in chunks) - first, 3)
    rel = {"submit_to_config_s": ("config", t_start), "config_to_run_start_s": ("run_start", "config"),
           "run_start_to_planned_s": ("planned", "run_start"), "finished_to_exit_s": (t_end, "finished")}
    for key, (b, a) in rel.items():
        tb = marks.get(b) if isinstance(b, str) else b
        ta = marks.get(a) if isinstance(a, str) else a
        out[key] = None if ta is None or tb is None else round(tb - ta, 3)
    if parsed["summary"]:
        out["job_elapsed_s"] = parsed["summary"].get("elapsed_s")
    if marks.get("in_session"):  # the in-session clock, as the peers': the job's core once its SparkSession is up
        out["in_session_s"] = marks["in_session"]
        out["in_session_rows_per_s"] = rows / marks["in_session"]
    return out


def spark_submit(master: str, conf: dict[str, str], app: list[str], env: dict, log_path: Path, cwd: Path,
                 timeout: float) -> tuple[subprocess.CompletedProcess, float, float]:
    """`spark-submit --master master --conf k=v … app…`, its output into `log_path`; (the process, launch and exit
    times in epoch s): the whole-process clock of (c)–(c″) whole and (d)."""
    cmd = [str(BIN / "spark-submit"), "--master", master]
    for k, v in conf.items():
        cmd += ["--conf", f"{k}={v}"]
    t_start = time.time()
    with open(log_path, "w") as logf:
        proc = subprocess.run([*cmd, *app], env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=str(cwd),
                              timeout=timeout)
    return proc, t_start, time.time()


def run_spark_job(args, wd: Workdir, master: str, env: dict, rows: int) -> dict:
    """spark-submit the score job for the `rows`-row lake to `master`; check the exit code and the row count."""
    scores = Path(wd.scores(rows))
    for derived in (scores, wd.lake(rows) / "quarantine"):
        if derived.exists():
            shutil.rmtree(derived)  # a fresh output table: otherwise every unit would be skipped as up to date
    events = wd.out / "spark-events"
    if events.exists():
        shutil.rmtree(events)
    events.mkdir(parents=True)
    conf = spark_job_conf(args, events)
    app = [str(REPO / "jobs" / "score.py"), "--config", str(REPO / "conf" / "score.yaml"), "engine=spark",
           f"lake.root={wd.lake(rows)}", f"mlflow.tracking_uri={wd.tracking_uri}", f"mlflow.artifact_root={wd.artifacts}",
           f"model.uri=models:/{MODEL_NAME}@{ALIAS}", f"input.contract={REPO / 'conf' / 'contracts' / 'features.yaml'}",
           *args.spark_job_override]
    log_path = wd.out / "spark-job.log"
    log(f"spark_job: spark-submit to {master} ({rows:,} rows)")
    # no --jars: the job needs no delta-spark (README)
    proc, t_start, t_end = spark_submit(master, conf, app, env, log_path, wd.out, args.job_timeout)
    lines = job_lines(proc, log_path, "spark_job: spark-submit", scores, rows)
    parsed = parse_log(lines)
    tasks = parse_event_log(events)
    tl = timeline(parsed, tasks, t_start, t_end, rows)
    cache = model_cache(parsed)
    log(f"spark_job: {rows:,} rows in {tl['whole_s']:.1f}s → {tl['whole_rows_per_s']:,.0f} rows/s whole, "
        f"{tl.get('steady_rows_per_s') or 0:,.0f} rows/s steady; model loads by worker pid {cache['loads_by_pid']}")
    return {"rows": rows, "seconds": tl["whole_s"], "rows_per_s": tl["whole_rows_per_s"], "log": str(log_path),
            "timeline": tl, "tasks": tasks, "model_cache": cache, "conf": {k: v for k, v in conf.items() if k != "spark.pyspark.python"}}
