"""`lakescore submit [--address URL] <job> --config conf/<job>.yaml [key=value …]`: run a job on a Ray cluster.

Unlike `ray job submit`, which exits 1 for any failure, this exits with the job's own code (DESIGN.md's table).
Before uploading it validates the config here (a bad key is exit 2 without touching the cluster), resolves every
path to an absolute path or URL (the job runs in an uploaded copy of the working dir, where a relative path
would point inside the copy), and excludes the lake and MLflow files from the upload.

Ray 2.60 clusters enforce token authentication on job submission: the client uses RAY_AUTH_MODE=token and the
token from RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` prints it on the head node).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import (BacktestConfig, DemoConfig, EvaluateConfig, ScoreConfig, ValidateConfig,  # noqa: E402
                           load_config, resolve_paths)
from engine.errors import ConfigError, LakescoreError  # noqa: E402
from engine.logs import FORMATS  # noqa: E402
from jobs._main import examples_epilog  # noqa: E402

JOBS = {"score": ScoreConfig, "validate": ValidateConfig, "evaluate": EvaluateConfig, "backtest": BacktestConfig,
        "demo": DemoConfig}
# Ray matches excludes as .gitignore lines: a bare name ("lake") drops every folder of that name at any depth (the
# package engine/lake too), so the project's own outputs are anchored at the upload's root with a leading "/".
UPLOAD_EXCLUDES = [".git", ".venv", ".make", "**/__pycache__", "/lake", "/mlruns", "/mlruns.db", "/mlartifacts",
                   "/benchmarks/out", "/spark-warehouse", "/metastore_db", "*.db"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
EXAMPLES = (
    "lakescore submit score --config conf/score.yaml input.ds=2026-01-05   # RAY_ADDRESS or http://127.0.0.1:8265",
    "lakescore submit --address http://head:8265 --submission-id score-2026-01-05 score --config conf/score.yaml",
    "lakescore submit evaluate --config conf/evaluate.yaml --log-format json",
)


def build_entrypoint(job: str, config: str, overrides: list[str], flags: list[str], cwd: str) -> tuple[str, list[str]]:
    """The job's command line with absolute paths, and the upload excludes for paths under `cwd`."""
    if job not in JOBS:
        raise ConfigError(f"unknown job {job!r}; known: {', '.join(sorted(JOBS))}")
    cfg = resolve_paths(load_config(JOBS[job], config, overrides), cwd)
    pinned = [f"lake.root={cfg.lake.root}", f"mlflow.tracking_uri={cfg.mlflow.tracking_uri}",
              f"mlflow.artifact_root={cfg.mlflow.artifact_root}"]
    if cfg.mlflow.registry_uri:
        pinned.append(f"mlflow.registry_uri={cfg.mlflow.registry_uri}")
    excludes = list(UPLOAD_EXCLUDES)
    for p in (cfg.lake.root, cfg.mlflow.artifact_root):
        rel = os.path.relpath(p, cwd) if os.path.isabs(p) else None
        if rel and not rel.startswith(".."):
            excludes.append("/" + rel)
    args = ["python", "-m", f"jobs.{job}", "--config", os.path.relpath(config, cwd), *overrides, *pinned, *flags]
    return " ".join(shlex.quote(a) for a in args), excludes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lakescore submit", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=examples_epilog(*EXAMPLES))
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
                   help="Ray dashboard address (default RAY_ADDRESS or http://127.0.0.1:8265)")
    p.add_argument("--submission-id", default=None, help="Ray submission id (a scheduler's idempotency key)")
    p.add_argument("--timeout-s", type=float, default=24 * 3600, help="give up waiting after this long (exit 1)")
    p.add_argument("job", choices=sorted(JOBS))
    p.add_argument("--config", required=True)
    p.add_argument("--force", action="store_true")
    p.add_argument("--log-format", choices=FORMATS, default=None, help="the job's log lines: text or json")
    p.add_argument("--no-progress", action="store_true", help="no periodic progress lines in the job's log")
    p.add_argument("overrides", nargs="*")
    try:
        args = p.parse_intermixed_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        flags = (["--force"] if args.force else []) + (["--no-progress"] if args.no_progress else []) \
            + (["--log-format", args.log_format] if args.log_format else [])
        entry, excludes = build_entrypoint(args.job, args.config, args.overrides, flags, os.getcwd())
        return _submit(args.address, entry, excludes, args.timeout_s, args.submission_id)
    except LakescoreError as e:
        print(f"lakescore submit: error: {e}", file=sys.stderr)
        return e.exit_code


def _submit(address: str, entrypoint: str, excludes: list[str], timeout_s: float,
            submission_id: str | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"] == "token" and not (
        os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or (Path.home() / ".ray" / "auth_token").is_file()
    ):
        raise ConfigError("no Ray auth token: set RAY_AUTH_TOKEN or copy the head node's ~/.ray/auth_token "
                          "(`ray get-auth-token` on the head prints it)")
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as e:  # connection refused, auth rejected: the cluster is unavailable to us
        raise ConfigError(f"cannot reach the Ray job server at {address} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160] if str(e) else ''}); check --address and the auth token") from e
    from engine.tables.ledger import code_revision

    commit = code_revision()[1]  # the upload carries no .git: the run ledger gets the commit from here
    env_vars = {"LAKESCORE_CODE_COMMIT": commit} if commit else {}
    job_id = client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                               runtime_env={"working_dir": ".", "excludes": excludes, "env_vars": env_vars})
    print(f"lakescore submit: job {job_id} submitted to {address}: {entrypoint}", file=sys.stderr, flush=True)

    printed = 0

    async def tail() -> None:
        nonlocal printed
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()
            printed += len(lines)

    async def follow() -> object:
        # Ray's log tail only notices the end of a job seconds later (it sleeps between reads); poll the status
        # beside it, and once the job has ended print whatever the tail had not yet printed.
        task = asyncio.ensure_future(tail())
        deadline = time.monotonic() + timeout_s
        while True:
            info = client.get_job_info(job_id)
            if str(info.status) in TERMINAL or task.done():
                break
            if time.monotonic() > deadline:
                task.cancel()
                return None
            await asyncio.sleep(0.2)
        if not task.done():
            task.cancel()
        rest = client.get_job_logs(job_id)[printed:]
        sys.stdout.write(rest)
        sys.stdout.flush()
        while str(info.status) not in TERMINAL:
            await asyncio.sleep(0.2)
            info = client.get_job_info(job_id)
        return info

    info = asyncio.run(follow())
    if info is None:
        print(f"lakescore submit: job {job_id} still running after {timeout_s:.0f}s; stopping it", file=sys.stderr)
        client.stop_job(job_id)
        return 1
    code = info.driver_exit_code
    if code is None:
        code = 0 if str(info.status) == "SUCCEEDED" else 1
    print(f"lakescore submit: job {job_id} {info.status}, exit code {code}", file=sys.stderr)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
