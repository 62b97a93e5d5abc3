"""A private Spark standalone cluster (one master, N workers on loopback) for `spark-submit --master spark://…`.

Test harness only (engine/testing): used by the end-to-end tests and the benchmark, never by product code; it
imports only engine/testing/processes.py (free ports, signalling its own processes), not the Ray harness. The master and workers are started with this interpreter's `spark-class` in a
new session each, on free ports, with their work and log dirs under a directory the caller owns; `stop()`
signals those processes and their descendants by pid only (never `stop-all.sh`, which finds daemons by name).

Ready means the master's web UI JSON (`http://127.0.0.1:<ui>/json/`) reports status ALIVE and, once the
workers are launched, that many alive workers: polled until a deadline, never a fixed sleep.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from engine.testing.processes import free_port, signal_all, stop_all

MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"


class StandaloneSpark:
    """`with StandaloneSpark(work_dir) as s:` → `s.master_url` for `spark-submit --master`, `s.env` for its env."""

    def __init__(self, work_dir: str | Path, workers: int = 1, cores: int = 2, memory: str = "2g"):
        self.work_dir = Path(work_dir)
        self.workers, self.cores, self.memory = workers, cores, memory
        self.port, self.ui_port = free_port(), free_port()
        self.env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(self.work_dir / "worker"),
                    "SPARK_LOG_DIR": str(self.work_dir / "logs"), "PYSPARK_PYTHON": sys.executable}
        self.procs: list[subprocess.Popen] = []

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def __enter__(self) -> "StandaloneSpark":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _launch(self, name: str, *args: str) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / f"{name}.log", "w") as log:
            self.procs.append(subprocess.Popen([str(Path(sys.executable).parent / "spark-class"), *args], env=self.env,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def start(self, timeout_s: float = 120) -> float:
        """Start the master, wait until it is ALIVE, start the workers, wait until all registered."""
        t0 = time.monotonic()
        try:
            self._launch("master", MASTER, "--host", "127.0.0.1", "--port", str(self.port),
                         "--webui-port", str(self.ui_port))
            self._wait(lambda s: s.get("status") == "ALIVE", "the master to be ALIVE", t0 + timeout_s)
            for i in range(self.workers):
                self._launch(f"worker-{i}", WORKER, self.master_url, "--host", "127.0.0.1", "--webui-port",
                             str(free_port()), "--cores", str(self.cores), "--memory", self.memory)
            self._wait(lambda s: s.get("aliveworkers", 0) >= self.workers, f"{self.workers} alive worker(s)",
                       t0 + timeout_s)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def state(self) -> dict:
        """The master's view: status, aliveworkers, cores, workers…"""
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=2.0) as r:
            return json.loads(r.read())

    def _wait(self, ready, what: str, deadline: float) -> None:
        last = None
        while time.monotonic() < deadline:
            dead = [p.args[1] for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"spark standalone: {dead} exited while waiting for {what}; see {self.work_dir}/*.log")
            try:
                last = self.state()
                if ready(last):
                    return
            except (OSError, ValueError) as e:  # not listening yet, or a partial answer
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.25)
        raise RuntimeError(f"spark standalone at {self.ui_url}: timed out waiting for {what} (last: {last}); "
                           f"see {self.work_dir}/*.log")

    def processes(self) -> list[psutil.Process]:
        """The master's and workers' live processes and their descendants (executors, Python workers)."""
        found: dict[int, psutil.Process] = {}
        for p in self.procs:
            if p.poll() is not None:
                continue
            try:
                root = psutil.Process(p.pid)
                found[root.pid] = root
                found.update({c.pid: c for c in root.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def kill_worker(self, index: int) -> list[int]:
        """SIGKILL worker `index` and its descendants (its executors and their Python workers), as a lost machine."""
        proc = self.procs[1 + index]
        try:
            root = psutil.Process(proc.pid)
            victims = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        signal_all(victims)
        psutil.wait_procs(victims, timeout=10)
        proc.wait(5)
        return sorted(p.pid for p in victims)

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM workers then the master (and their descendants), SIGKILL what is left after `grace_s`."""
        stop_all(list(reversed(self.processes())), grace_s)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []
