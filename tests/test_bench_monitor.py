"""The bench's CPU accounting by role (benchmarks/monitor.py: RoleCpu, cpu_role), against the kernel's own figure
for a real process: a figure the bench prints to say whose CPU a job's fixed cost is."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import monitor  # noqa: E402

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\ntime.sleep({idle})"


class _Cluster:
    """Stands for the bench's LocalRayCluster: only `processes()` is asked for."""

    def __init__(self, procs):
        self.procs = procs

    def processes(self):
        return [p for p in self.procs if p.is_running()]


def test_roles_name_the_job_parts():
    assert monitor.cpu_role("ray::JobSupervisor") == "supervisor"
    assert monitor.cpu_role("job-driver") == "driver"
    assert monitor.cpu_role("ray::_chunk_task") == "workers" and monitor.cpu_role("ray::IDLE") == "workers"
    assert monitor.cpu_role("ray::DashboardAgent") == "ray_system" and monitor.cpu_role("raylet") == "ray_system"


def test_cpu_counts_only_what_burns_while_watched_and_keeps_a_process_that_ended():
    """A process that burnt 0.6 s before the watch began and 0.5 s during it counts ~0.5 s; one that burns 0.4 s and
    exits mid-watch keeps its last sample. Broken builds caught: absolute CPU times summed (1.1 s), or an ended
    process dropped (0.5 s)."""
    before = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6, idle=1.0) + "\n" + BURN.format(s=0.5, idle=30)])
    short = None
    try:
        while sum(psutil.Process(before.pid).cpu_times()[:2]) < 0.55:  # user + system (process_time counts both)
            time.sleep(0.05)
        watched = [psutil.Process(before.pid)]
        with monitor.RoleCpu(_Cluster(watched), interval=0.1) as roles:
            short = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.4, idle=0.3)])
            watched.append(psutil.Process(short.pid))
            short.wait(30)
            time.sleep(2.0)  # the first process's second burn
        got = roles.summary()["ray_system"]  # plain python processes: no role of a job
        assert 0.8 <= got <= 1.2, got
    finally:
        before.kill()
        if short is not None:
            short.kill()
