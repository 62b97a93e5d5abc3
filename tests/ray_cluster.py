"""Start and stop a private `ray start --head` cluster for end-to-end tests, by its own temp dir and pids only."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    def __init__(self, num_cpus: int = 2, env: dict | None = None):
        self.temp_dir = tempfile.mkdtemp(prefix="lsr", dir="/tmp")  # short: Unix socket paths are limited
        self.port, self.dash = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dash}"
        self.num_cpus = num_cpus
        # The job's `python` is looked up on the cluster's PATH: make it this interpreter's venv.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "PATH": path, **(env or {})}

    def start(self) -> "RayCluster":
        ray = str(Path(sys.executable).parent / "ray")
        cmd = [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
               f"--dashboard-port={self.dash}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
               f"--num-cpus={self.num_cpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
               f"--metrics-export-port={free_port()}", f"--min-worker-port={20000 + self.port % 1000 * 20}",
               f"--max-worker-port={20000 + self.port % 1000 * 20 + 19}"]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed: {out.stderr[-2000:]}")
        return self

    def processes(self) -> list[psutil.Process]:
        """Processes whose command line names our temp dir, and all their descendants."""
        roots = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if self.temp_dir in " ".join(p.info["cmdline"] or []):
                    roots.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found = {p.pid: p for p in roots}
        for p in roots:
            try:
                found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        time.sleep(0.2)
