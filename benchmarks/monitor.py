"""What the bench watches while a part runs: the Ray cluster's memory (RSS/PSS of every process it owns, and
the object store's used bytes), and CPU burnt by foreign processes (the machine may be shared)."""
from __future__ import annotations

import os
import threading
import time

import psutil

from engine.testing.ray_cluster import LocalRayCluster


class _CpuWatch:
    """CPU seconds of some processes while a phase runs, sampled every `interval` s by a thread: `_sample()` gives
    pid → (tag, CPU seconds so far); a process's last sample stands for it (one that ends loses at most its last
    interval); `spent()` is each process's (tag, seconds burnt since the watch began)."""

    def __init__(self, cluster: LocalRayCluster | None, interval: float):
        self.cluster, self.interval = cluster, interval
        self.base: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = self.t1 = 0.0

    def _sample(self) -> dict[int, tuple[str, float]]:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.last.update(self._sample())

    def __enter__(self):
        self.base = {pid: cpu for pid, (_, cpu) in self._sample().items()}
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        self.last.update(self._sample())
        self.t1 = time.monotonic()

    def spent(self) -> list[tuple[str, float]]:
        return [(tag, max(0.0, cpu - self.base.get(pid, 0.0))) for pid, (tag, cpu) in self.last.items()]


class ForeignLoad(_CpuWatch):
    """CPU seconds burnt by processes that are neither this benchmark's descendants nor its Ray cluster's, while
    a timed phase runs (the machine may be shared): a contaminated figure says so instead of passing silently."""

    def __init__(self, cluster: LocalRayCluster | None = None, interval: float = 1.0):
        super().__init__(cluster, interval)
        self.names: dict[int, str] = {}

    def _mine(self) -> set[int]:
        children: dict[int, list[int]] = {}
        for p in psutil.process_iter(["pid", "ppid"]):
            children.setdefault(p.info["ppid"], []).append(p.info["pid"])
        mine, stack = {os.getpid()}, [os.getpid()]
        if self.cluster is not None:
            extra = {p.pid for p in self.cluster.processes()}
            mine |= extra
            stack += list(extra)
        while stack:
            for c in children.get(stack.pop(), ()):
                if c not in mine:
                    mine.add(c)
                    stack.append(c)
        return mine

    def _sample(self) -> dict[int, tuple[str, float]]:
        mine = self._mine()
        out = {}
        for p in psutil.process_iter(["pid", "cpu_times", "name"]):
            ct = p.info["cpu_times"]
            if p.info["pid"] not in mine and ct is not None:
                name = self.names.setdefault(p.info["pid"], p.info["name"] or "?")
                out[p.info["pid"]] = (name, ct.user + ct.system)
        return out

    def summary(self) -> dict:
        spent = self.spent()
        cpu = sum(c for _, c in spent)
        wall = max(1e-9, self.t1 - self.t0)
        by_name: dict[str, float] = {}
        for name, c in spent:
            by_name[name] = by_name.get(name, 0.0) + c
        top = {k: round(v, 1) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:4] if v >= 0.1}
        return {"foreign_cpu_s": round(cpu, 2), "foreign_cpu_share": round(cpu / (wall * (os.cpu_count() or 1)), 3),
                "foreign_top_cpu_s": top}


def _smaps_rollup(pid: int) -> tuple[int, int]:
    """(Rss, Pss) in bytes from /proc/<pid>/smaps_rollup (cheap: no per-mapping parsing)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return rss, pss


def _proc_label(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return "?"
    if not cmd:
        return "?"
    head = cmd[0]
    if head.startswith("ray::") or head.startswith("ray-dashboard"):
        return head.split(" ")[0]
    if any(c.startswith("jobs.") and c != "jobs.cli" for c in cmd[:4]):  # python -m jobs.score / jobs.evaluate …
        return "job-driver"
    for c in cmd[:4]:
        base = os.path.basename(c)
        if base in ("gcs_server", "raylet"):
            return base
        if c.endswith(".py"):
            return base
    if "ray.util.client.server" in cmd:
        return "client-server"
    return os.path.basename(head)


ROLES = ("supervisor", "driver", "workers", "ray_system")


def cpu_role(label: str) -> str:
    """The part a cluster process plays in a job, from its `_proc_label`: Ray's job supervisor, the job's driver, a
    worker (tasks, actors, idle pool workers), or Ray's own daemons (GCS, raylet, dashboard and agents)."""
    if label == "ray::JobSupervisor":
        return "supervisor"
    if label == "job-driver":
        return "driver"
    if label.startswith("ray::") and "Agent" not in label:
        return "workers"
    return "ray_system"


class RoleCpu(_CpuWatch):
    """CPU seconds each role of the cluster's processes (`cpu_role`) burnt while a job ran, sampled every `interval`
    s. Where a fixed cost is CPU-bound (2 cores), this says whose CPU it is; the driver's exact figure is its own
    getrusage (`driver_cpu_s`)."""

    def __init__(self, cluster: LocalRayCluster, interval: float = 0.5):
        super().__init__(cluster, interval)

    def _sample(self) -> dict[int, tuple[str, float]]:
        out = {}
        for p in self.cluster.processes():
            try:
                ct = p.cpu_times()
            except psutil.Error:
                continue
            out[p.pid] = (cpu_role(_proc_label(p)), ct.user + ct.system)
        return out

    def summary(self) -> dict[str, float]:
        out = dict.fromkeys(ROLES, 0.0)
        for role, cpu in self.spent():
            out[role] += cpu
        return {k: round(v, 2) for k, v in out.items()}


class MemorySampler:
    """Samples the cluster's summed RSS (and PSS) every `interval` s, and the object store's used bytes every ~1 s."""

    def __init__(self, cluster: LocalRayCluster, interval: float = 0.2):
        self.cluster, self.interval = cluster, interval
        self.samples: list[tuple[float, int, int, int]] = []  # (t, rss, pss, nprocs)
        self.obj: list[tuple[float, float]] = []
        self.peak_breakdown: dict[str, float] = {}
        self.per_process: dict[int, tuple[str, int]] = {}  # pid → (label, its own peak RSS)
        self._peak_rss = -1
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._mem, daemon=True), threading.Thread(target=self._objects, daemon=True)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def snapshot(self) -> tuple[int, int, int, dict]:
        procs = self.cluster.processes()
        rss = pss = 0
        parts: dict[str, float] = {}
        for p in procs:
            r, s = _smaps_rollup(p.pid)
            rss, pss = rss + r, pss + s
            label = _proc_label(p)
            parts[label] = parts.get(label, 0) + r / 2**20
            if r > self.per_process.get(p.pid, ("", -1))[1]:
                self.per_process[p.pid] = (label, r)
        return rss, pss, len(procs), parts

    def _mem(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            rss, pss, n, parts = self.snapshot()
            self.samples.append((t, rss, pss, n))
            if rss > self._peak_rss:
                self._peak_rss, self.peak_breakdown = rss, parts
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def _objects(self) -> None:
        while not self._stop.is_set():
            used = self.cluster.object_store_used()
            if used is not None:
                self.obj.append((time.monotonic(), used))
            self._stop.wait(1.0)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        obj = sorted(self.obj)
        peak_total = 0.0
        j, cur = 0, 0.0
        for t, rss, _pss, _n in self.samples:
            while j < len(obj) and obj[j][0] <= t:
                cur = obj[j][1]
                j += 1
            peak_total = max(peak_total, rss + cur)
        mb = 2**20
        return {
            "peak_total_mb": round(peak_total / mb, 1),
            "peak_rss_sum_mb": round(max(s[1] for s in self.samples) / mb, 1),
            "peak_pss_sum_mb": round(max(s[2] for s in self.samples) / mb, 1),
            "peak_object_store_mb": round(max((o[1] for o in obj), default=0.0) / mb, 1),
            "max_processes": max(s[3] for s in self.samples),
            "samples": len(self.samples),
            "at_peak_rss_mb_by_process": {k: round(v, 1) for k, v in sorted(self.peak_breakdown.items(), key=lambda kv: -kv[1])},
            # One process's own peak: the largest scoring worker (a Ray task or actor process) and the job's driver.
            "peak_rss_mb_largest_worker": _largest(self.per_process, lambda lb: lb.startswith("ray::") and "Job" not in lb),
            "peak_rss_mb_driver": _largest(self.per_process, lambda lb: lb == "job-driver"),
        }


def _largest(per_process: dict[int, tuple[str, int]], which) -> float | None:
    peaks = [r for label, r in per_process.values() if which(label)]
    return round(max(peaks) / 2**20, 1) if peaks else None
