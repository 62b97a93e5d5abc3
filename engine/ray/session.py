"""Connecting to Ray: the job's cluster under `ray job submit`, a given address, or a local Ray.

Token authentication: Ray 2.60 turns it on for every new local cluster when RAY_AUTH_MODE is unset, and then warns
on every start ("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out…"), a
notice on every job's stderr that asks nothing of the operator. A local start here sets RAY_AUTH_MODE=token itself
(what Ray's default does, said explicitly, which Ray takes without a warning), through Ray's own step for it
(`_enable_token_auth`: the variable, for the GCS and raylet it starts, and a reload of the config that `import ray`
already cached; the variable alone leaves this driver without a token and the GCS never answers it). An operator's
own RAY_AUTH_MODE is left as it is; a Ray without that step falls back to its default (auth on, with its notice).
Auth is never turned off here: silencing the notice by `disabled` would open the cluster to anyone who can reach its
ports. Joining a cluster by address leaves the mode to the environment (the cluster decides).
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("lakescore")

AUTH_MODE = "RAY_AUTH_MODE"  # Ray's variable (ray._private.authentication.authentication_token_setup)


def connect(address: str | None) -> None:
    """Reuse an existing connection (tests share one), else join `address` / RAY_ADDRESS, else start locally."""
    import ray

    if ray.is_initialized():
        return
    kwargs = {"log_to_driver": True, "configure_logging": False}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, **kwargs)
    else:
        # A private local Ray for this process; the dashboard is not needed for a batch job.
        _token_auth_explicitly()
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **kwargs)
    log.info("ray: connected, %s CPU, %s GPU", ray.cluster_resources().get("CPU", 0), ray.cluster_resources().get("GPU", 0))


def joins_cluster(address: str | None) -> bool:
    """True when `connect(address)` joins a running Ray (an address, or RAY_ADDRESS, which `ray job submit` sets for
    its drivers) rather than starting one: a join starts no process, so the job may begin it before it knows its
    inputs and exit mid-way without leaving anything behind."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def prepare_background_connect() -> None:
    """Before `connect` runs on a thread other than the main one (jobs.engines): `ray.init` sets its SIGTERM handler
    (exit, so `ray job stop` unwinds the job's `finally` blocks) only on the main thread, and says so on stderr on any
    other; set the same handler here, on the main thread, and drop that one notice."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # ray._private.worker.init's handler
    ray_worker_log = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _SigtermNoticeFilter) for f in ray_worker_log.filters):
        ray_worker_log.addFilter(_SigtermNoticeFilter())


class _SigtermNoticeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


def _token_auth_explicitly() -> None:
    """Turn Ray's token auth on for a local start, as Ray's default would, without its notice (module docstring)."""
    if AUTH_MODE in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError:  # another Ray: its own default still turns auth on (and says so)
        return
    _enable_token_auth()


def in_submitted_job() -> bool:
    """True inside a job started by `ray job submit` (its working dir is an uploaded copy)."""
    # The job supervisor hands the driver its job config (runtime env, working dir) in this variable.
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
