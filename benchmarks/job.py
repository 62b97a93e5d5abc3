"""(b) lakescore: the score job submitted to the bench's private Ray cluster, timed from submit to the CLI's exit,
and split into phases from the job's log, the Jobs API and the state API."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from engine.testing.ray_cluster import LocalRayCluster
from monitor import MemorySampler, RoleCpu
from workload import ALIAS, MODEL_NAME, Workdir, log

REPO = Path(__file__).resolve().parent.parent


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
        prof["driver_phases_s"] = summary.get("phases")  # the job's own phase clock (engine.run.Run: mark, step)
        # The driver's own CPU seconds (its getrusage at the end of the run, every thread): the work that must not
        # grow with the rows; the bench compares it across sizes (report.driver_cpu).
        prof["driver_cpu_s"] = summary.get("driver_cpu_s")
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


def _job_info(cluster: LocalRayCluster, submission_id: str, t_submit: float, t_end: float, lines: list[str]) -> dict:
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


def chunk_tasks(tasks: list[dict]) -> list[dict]:
    """The state API's rows of the score job's chunk tasks: the Ray executor's remote functions, plain and streaming
    (named from the module, so a rename cannot silently empty (b)'s steady state); not its warm-up or side tasks."""
    from engine.ray.executor import _chunk_task, _chunk_task_started

    names = {_chunk_task.__name__, _chunk_task_started.__name__}
    return [t for t in tasks if t.get("name") in names]


def _task_stats(cluster: LocalRayCluster, submission_id: str, t_submit: float) -> dict:
    """Per-task timings of the chunk tasks from Ray's state API (best effort)."""
    try:
        jobs = cluster.api("/api/jobs/")
        job_id = next((j.get("job_id") for j in jobs if j.get("submission_id") == submission_id), None)
        path = "/api/v0/tasks?limit=10000&detail=1"
        if job_id:
            path += f"&filter_keys=job_id&filter_predicates=%3D&filter_values={job_id}"
        data = cluster.api(path, timeout=20)
        tasks = chunk_tasks(data["data"]["result"]["result"])
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


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (the submitting CLI, once `subprocess.run` has waited for it)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def job_lines(proc, log_path: Path, who: str, scores: Path | None = None, rows: int | None = None) -> list[str]:
    """A finished job's log lines; stops the bench (with the log's tail) on a non-zero exit, or when `scores` does not
    hold `rows` rows."""
    from deltalake import DeltaTable

    lines = log_path.read_text(errors="replace").splitlines()
    if proc.returncode != 0:
        tail = "\n".join(lines[-30:])
        raise SystemExit(f"{who} exited {proc.returncode}; log {log_path}:\n{tail}")
    if scores is not None:
        got = DeltaTable(str(scores)).to_pyarrow_dataset().count_rows()
        if got != rows:
            raise SystemExit(f"{who}: scores table at {scores} holds {got} rows, expected {rows}; log {log_path}")
    return lines


def run_lakescore(args, wd: Workdir, cluster: LocalRayCluster, rows: int, tag: str, sample: bool,
                  contract: bool = True) -> dict:
    """Submit the score job for the `rows`-row lake and wait for it; check the scores table's row count.

    `conf/score.yaml` as users run it (its contract, with drift and key uniqueness, and its passthrough column),
    only the paths and the model pointed at the bench's; `contract=False` adds `input.contract=null`."""
    scores = Path(wd.scores(rows))
    for derived in (scores, wd.lake(rows) / "quarantine"):
        if derived.exists():
            shutil.rmtree(derived)  # a fresh output table: otherwise every unit would be skipped as up to date
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
                *([] if contract else ["input.contract=null"]), *args.job_override]
    if args.submitter == "ray":
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray_bin, "job", "submit", "--address", cluster.address, "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps(runtime_env), "--submission-id", submission_id, "--",
               "python", "-m", "jobs.score", *job_args]
    else:  # the production path: lakescore submit (its own upload excludes and absolute paths)
        cmd = [sys.executable, "-m", "jobs.cli", "submit", "--address", cluster.address, "--submission-id",
               submission_id, "score", *job_args]
    log_path = wd.out / f"job-{tag}.log"
    idle = None
    sampler = None
    if sample:
        time.sleep(1.0)
        idle = MemorySampler(cluster).snapshot()
    log(f"lakescore[{tag}]: submitting {submission_id} ({rows:,} rows){' with memory sampling' if sample else ''}")
    children_cpu = _children_cpu()
    t_submit = time.time()
    with open(log_path, "w") as logf, RoleCpu(cluster) as roles:
        if sample:
            sampler = MemorySampler(cluster, args.sample_interval).__enter__()
        try:
            proc = subprocess.run(cmd, env=cluster.env, stdout=logf, stderr=subprocess.STDOUT, cwd=str(REPO),
                                  timeout=args.job_timeout)
        finally:
            if sampler:
                sampler.__exit__(None, None, None)
    t_end = time.time()
    cpu_by_role = {"cli": round(_children_cpu() - children_cpu, 2), **roles.summary()}
    lines = job_lines(proc, log_path, f"lakescore[{tag}]: {args.submitter} submit", scores, rows)
    elapsed = t_end - t_submit
    profile = _profile(lines, t_submit, t_end)
    profile.update(_job_info(cluster, submission_id, t_submit, t_end, lines))
    if profile.get("driver_cpu_s") is not None:  # the driver's own getrusage: exact where the sample is not
        cpu_by_role["driver"] = profile["driver_cpu_s"]
    res = {"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": rows / elapsed, "log": str(log_path),
           "driver_cpu_s": profile.get("driver_cpu_s"), "profile": profile, "cpu_by_role": cpu_by_role, "tasks": _task_stats(cluster, submission_id, t_submit)}
    if sampler:
        res["memory"] = sampler.summary()
        res["memory"]["idle_cluster_rss_mb"] = round(idle[0] / 2**20, 1)
    log(f"lakescore[{tag}]: {rows:,} rows in {elapsed:.1f}s → {rows / elapsed:,.0f} rows/s ({rows:,} rows written, counted in the table); driver CPU {profile.get('driver_cpu_s')} s")
    return res
