"""Process helpers shared by the local cluster harnesses (engine/testing/ray_cluster.py, spark_cluster.py).

A free loopback port, and signalling an exact list of processes (found by their own marks, never by name).
Imports: standard library and psutil only; both harness modules import this one, never each other.
"""
from __future__ import annotations

import socket

import psutil


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signal_all(procs: list[psutil.Process], how: str = "kill") -> None:
    """Send each process `how` ("kill" or "terminate"); those already gone are skipped."""
    for p in procs:
        try:
            getattr(p, how)()
        except psutil.NoSuchProcess:
            continue


def stop_all(procs: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM, then SIGKILL whatever is left after `grace_s`."""
    signal_all(procs, "terminate")
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    signal_all(alive, "kill")
    psutil.wait_procs(alive, timeout=5)
