"""A private local Ray cluster (`ray start --head`) for `ray job submit`: end-to-end tests and the benchmark.

Test harness only (engine/testing): imported by tests/ and benchmarks/, never by product code; it imports only
engine/testing/processes.py (free ports, signalling its own processes).

Everything it starts is found by its own marks, never by a process name: `ray start` runs in a new session, so
its daemons (gcs, raylet, dashboard, agents) keep that process-group id, and every daemon's command line names
the cluster's unique `--temp-dir`; workers, the job supervisor and job drivers are their descendants. `stop()`
signals exactly that set, SIGTERM then SIGKILL (never `ray stop`, which stops every Ray on the machine).
Every port is a free one chosen here, so a concurrent Ray on the same machine cannot clash.

Ready means the dashboard's Jobs API answers `/api/version`, polled until a deadline (`ray start` returns
before the dashboard is up); nothing here sleeps a fixed time. Token authentication stays on
(`RAY_AUTH_MODE=token` for the cluster and for clients using `env`); the token comes from RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or `~/.ray/auth_token`. `ray start` does not create one (only a local `ray.init()` does), so on
a machine that never ran Ray the harness has Ray write `~/.ray/auth_token` first (`ray get-auth-token --generate`,
its output discarded: the token never reaches a log).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import psutil

from engine.testing.processes import free_port, signal_all, stop_all


def auth_token(env: Mapping[str, str] | None = None) -> str | None:
    """The token a client with environment `env` (default: this process's) sends, or None when it has none."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN"):
        return env["RAY_AUTH_TOKEN"].strip()
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    path = Path(env.get("RAY_AUTH_TOKEN_PATH") or home / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


def ensure_auth_token(env: Mapping[str, str]) -> None:
    """Give a machine that never ran Ray its `~/.ray/auth_token` (what a local `ray.init()` does; `ray start` only
    fails without it). A token already set (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, the file) is left as it is."""
    if auth_token(env) is not None:
        return
    ray = str(Path(sys.executable).parent / "ray")
    proc = subprocess.run([ray, "get-auth-token", "--generate"], check=False, env=dict(env), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    if proc.returncode != 0 or auth_token(env) is None:
        raise RuntimeError(f"ray get-auth-token --generate exited {proc.returncode} and left no token "
                           f"(~/.ray/auth_token): {proc.stderr.strip()[-500:]}")


class LocalRayCluster:
    """`with LocalRayCluster(num_cpus=2) as c:` → `c.address` is the dashboard URL for `ray job submit --address`."""

    def __init__(self, num_cpus: int = 2, env: dict[str, str] | None = None, log_path: str | Path | None = None,
                 worker_ports: int = 40):
        # Short and under /tmp: Ray's Unix socket paths live in the temp dir and have a length limit.
        self.temp_dir = tempfile.mkdtemp(prefix="lsr-", dir="/tmp")
        self.port, self.dash_port = free_port(), free_port()
        self.num_cpus = num_cpus
        self.log_path = Path(log_path) if log_path else Path(self.temp_dir) / "ray-start.log"
        # Workers bind ports from a range of their own, so two clusters on one machine do not race for one; below
        # Linux's ephemeral range (32768+), where free_port() picks the daemons' ports, so the two never collide.
        self.min_worker_port = 10000 + self.port % 250 * 2 * worker_ports
        self.worker_ports = worker_ports
        self.pgid: int | None = None
        self.node_groups: list[int] = []  # process groups of nodes added with add_node
        self.node_dirs: list[str] = []  # and their temp dirs
        # A job's `python` is looked up on the cluster's PATH: this interpreter's environment first.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "token", **(env or {})}
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dash_port}"

    def __enter__(self) -> "LocalRayCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout_s: float = 180) -> float:
        """Start the head node and wait until its Jobs API answers; returns the seconds it took."""
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
               f"--port={self.port}", f"--dashboard-port={self.dash_port}", "--dashboard-host=127.0.0.1",
               "--include-dashboard=true", f"--num-cpus={self.num_cpus}", "--num-gpus=0",
               f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
               f"--metrics-export-port={free_port()}", f"--min-worker-port={self.min_worker_port}",
               f"--max-worker-port={self.min_worker_port + self.worker_ports - 1}"]
        t0 = time.monotonic()
        ensure_auth_token(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as logf:
            proc = subprocess.Popen(cmd, env=self.env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
            self.pgid = proc.pid
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                rc = None
        if rc != 0:
            self.stop()
            raise RuntimeError(f"ray start {'timed out' if rc is None else f'exited {rc}'}; see {self.log_path}:\n"
                               + self.log_path.read_text(errors="replace")[-2000:])
        if auth_token(self.env) is None:
            self.stop()
            raise RuntimeError("ray start: token auth is on but no token was found (~/.ray/auth_token, RAY_AUTH_TOKEN "
                               "or RAY_AUTH_TOKEN_PATH); job clients cannot authenticate")
        self.wait_ready(max(10.0, timeout_s - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def add_node(self, num_cpus: int = 1, timeout_s: float = 120) -> int:
        """Start one more raylet on this machine, joined to the head (a second node of the cluster: its own
        resources, object store and workers); returns its process-group id, for `kill_node`."""
        # Its own temp dir, as on a separate machine: nodes sharing one would unpack the job's working dir into
        # the same folder, each replacing it while the other's processes import from it.
        temp_dir = tempfile.mkdtemp(prefix="lsn-", dir="/tmp")
        self.node_dirs.append(temp_dir)
        cmd = [str(Path(sys.executable).parent / "ray"), "start", f"--address=127.0.0.1:{self.port}",
               "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--num-gpus=0", "--disable-usage-stats",
               f"--temp-dir={temp_dir}",
               f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
               f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
               f"--min-worker-port={self.min_worker_port + self.worker_ports}",
               f"--max-worker-port={self.min_worker_port + 2 * self.worker_ports - 1}"]
        before = {n["node_id"] for n in self.nodes()}
        with open(self.log_path, "a") as logf:
            proc = subprocess.Popen(cmd, env=self.env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
            rc = proc.wait(timeout=timeout_s)
        self.node_groups.append(proc.pid)
        if rc != 0:
            raise RuntimeError(f"ray start --address exited {rc}; see {self.log_path}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if {n["node_id"] for n in self.nodes() if n["state"] == "ALIVE"} - before:
                return proc.pid
            time.sleep(0.25)
        raise RuntimeError(f"the node started by ray start (pgid {proc.pid}) did not register within {timeout_s:.0f} s")

    def nodes(self) -> list[dict]:
        """The cluster's nodes as the dashboard's state API lists them: [{"node_id", "state", …}]."""
        return self.api("/api/v0/nodes?limit=100", timeout=10.0)["data"]["result"]["result"]

    def kill_node(self, pgid: int) -> list[int]:
        """SIGKILL one added node: the processes of its group and their descendants (raylet, its workers)."""
        procs = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.info["pid"]) == pgid:
                    procs.append(p)
            except OSError:
                continue
        for p in list(procs):
            try:
                procs += p.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
        signal_all(procs)
        psutil.wait_procs(procs, timeout=10)
        return sorted({p.pid for p in procs})

    def wait_ready(self, timeout_s: float) -> None:
        """Poll the dashboard's `/api/version` until it answers; stop the cluster and raise at the deadline."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.api("/api/version", timeout=2.0)
                return
            except (OSError, ValueError) as e:  # refused, reset, HTTP 5xx while the dashboard starts, partial JSON
                last = e
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"ray dashboard at {self.address} did not answer /api/version within {timeout_s:.0f} s "
                           f"({type(last).__name__}: {last}); see {self.log_path} and {self.temp_dir}/session_latest/logs")

    def api(self, path: str, timeout: float = 5.0):
        """GET a dashboard endpoint as JSON, with the cluster's token."""
        req = urllib.request.Request(self.address + path)
        token = auth_token(self.env)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def object_store_used(self) -> float | None:
        """Used object-store bytes as the GCS reports them (raylet resource reports, about 1 s fresh)."""
        try:
            data = self.api("/api/cluster_status", timeout=2.0)["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        used = data.get("objectStoreMemory")
        return float(used[0]) if used else None

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: its process group or temp dir, and all their descendants."""
        if self.pgid is None:
            return []
        children: dict[int, list[int]] = {}
        seen: set[int] = set()
        for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
            pid = p.info["pid"]
            children.setdefault(p.info["ppid"], []).append(pid)
            try:
                pgid = os.getpgid(pid)
                cmdline = " ".join(p.info["cmdline"] or ())
                if pgid == self.pgid or pgid in self.node_groups or any(d in cmdline for d in [self.temp_dir, *self.node_dirs]):
                    seen.add(pid)
            except OSError:
                continue
        stack = list(seen)
        while stack:
            for c in children.get(stack.pop(), ()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        seen.discard(os.getpid())
        out = []
        for pid in seen:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:  # dead, waiting for its parent to reap it
                    out.append(proc)
            except psutil.NoSuchProcess:
                continue
        return out

    def stop(self, grace_s: float = 10) -> None:
        """SIGTERM this cluster's processes, SIGKILL what is left after `grace_s`, remove the temp dir.

        In rounds: a process that started while the others were stopping (a worker the raylet was launching) is not
        in the first listing, and is stopped by the next round."""
        for _ in range(3):
            procs = self.processes()
            if not procs:
                break
            stop_all(procs, grace_s)
        leftover = self.processes()
        if leftover:
            raise RuntimeError(f"ray cluster {self.temp_dir}: processes still alive after SIGKILL: "
                               f"{sorted(p.pid for p in leftover)}")
        for d in [self.temp_dir, *self.node_dirs]:
            shutil.rmtree(d, ignore_errors=True)
        self.pgid = None
