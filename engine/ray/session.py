"""Connecting to Ray: the job's cluster under `ray job submit`, a given address, or a local Ray."""
from __future__ import annotations

import logging
import os

log = logging.getLogger("lakescore")


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
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **kwargs)
    log.info("ray: connected, %s CPU, %s GPU", ray.cluster_resources().get("CPU", 0), ray.cluster_resources().get("GPU", 0))


def in_submitted_job() -> bool:
    """True inside a job started by `ray job submit` (its working dir is an uploaded copy)."""
    # The job supervisor hands the driver its job config (runtime env, working dir) in this variable.
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
