"""A real S3-compatible server for the object-store tests: moto's server, from its own tool venv (`make setup`).

moto[server] pulls Flask and Werkzeug, which MLflow pins too, so it lives in a venv of its own made from the
pinned `tests/moto.lock`; the server is a separate process anyway. `MotoServer` starts it on a free port and
stops it by its pid. `CommitRaceProxy` is a small proxy in front of it that makes two commits race at the
store and, for the negative control of the concurrency tests, can drop `If-None-Match` (a store that ignores
conditional writes).

Credentials never travel in a config: the tests put them in the environment (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, read by delta-rs in every process), and `lake.storage_options` holds only the
endpoint, the region and AWS_ALLOW_HTTP.
"""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MOTO_VERSION = next(line.split("==", 1)[1].strip() for line in
                    (Path(__file__).parent / "moto.lock").read_text().splitlines() if line.startswith("moto=="))
DEFAULT_SERVER = Path.home() / ".cache" / "lakescore" / f"moto-{MOTO_VERSION}" / "bin" / "moto_server"
BUCKET = "lakescore"
REGION = "us-east-1"
# The credentials the tests' processes (driver, Ray workers, Spark's Python workers) find in their environment.
# The secret is new every session: the leak tests search every output for it.
SECRET = f"lakescore-planted-secret-{uuid.uuid4().hex}"
ENV = {"AWS_ACCESS_KEY_ID": "lakescore-test-key-id", "AWS_SECRET_ACCESS_KEY": SECRET}


# Runs argv[1:] bound to this process: Linux ends it (SIGTERM) when the test process dies, even killed before its
# fixture could stop it; `stop()` is the normal way.
_EXEC_BOUND = ("import ctypes, os, signal, sys\n"
               "try:\n    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
               "except (AttributeError, OSError):\n    pass\n"
               "os.execv(sys.argv[1], sys.argv[1:])\n")


def server_path() -> str:
    """moto_server: $LAKESCORE_MOTO_SERVER (set by the Makefile) or the tool venv's default place."""
    path = os.environ.get("LAKESCORE_MOTO_SERVER") or str(DEFAULT_SERVER)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"the object-store tests need moto's S3 server at {path} (moto[server] {MOTO_VERSION} in its "
                           "own venv, from tests/moto.lock); run `make setup` to create it, or set "
                           "LAKESCORE_MOTO_SERVER to a moto_server executable")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError as e:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode} before answering at {url}") from e
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer at {url} within {timeout:.0f}s") from e
            time.sleep(0.2)


class MotoServer:
    """moto_server on 127.0.0.1:<free port>, in its own process group; `stop()` ends exactly that process."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")
        cmd = [server_path(), "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen([sys.executable, "-c", _EXEC_BOUND, *cmd], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait_until_up(self.endpoint + "/", self.proc)
        except BaseException:
            self.stop()
            raise

    def create_bucket(self, name: str = BUCKET) -> None:
        """A plain PUT of the bucket (moto does not check signatures; no AWS SDK needed)."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT"), timeout=10).close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def storage_options(endpoint: str) -> dict[str, str]:
    """What a lake on the test store needs besides the credentials in the environment."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_ALLOW_HTTP": "true"}


class CommitRaceProxy:
    """An HTTP proxy to the S3 server, in a process of its own, that makes two commits of one version meet.

    delta-rs lists the log just before it writes a commit, so two runs committing one after the other never race
    at the store: the second sees the first and fails early. The proxy holds the first put of the commit file
    `hold` (a path suffix, e.g. "/run1/lake/scores/_delta_log/00000000000000000002.json") until a second put of it
    comes, so both writers have listed the log before either writes. delta-rs writes each commit file with
    `If-None-Match: *`: on an honest store one of the two then gets `PreconditionFailed`. With
    `ignore_conditional_writes=True` the header is dropped, as by a store that ignores conditional writes: both puts
    succeed and the second silently replaces the first. A process of its own, because delta-rs' file handler can
    hold the GIL while it waits for the store (a proxy thread in the test process would never answer it).
    """

    def __init__(self, upstream_port: int, hold: str, record: Path, ignore_conditional_writes: bool = False):
        self.record = record
        cmd = [sys.executable, "-c", _EXEC_BOUND, sys.executable, __file__, "proxy", str(upstream_port), hold,
               str(record)]
        self.proc = subprocess.Popen([*cmd, *(["--ignore-conditional-writes"] if ignore_conditional_writes else [])],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"the S3 proxy did not start (it said {line!r})")
        self.endpoint = f"http://127.0.0.1:{line}"

    @property
    def held_puts(self) -> list[int]:
        """The statuses the store gave the held puts, in the order they were answered."""
        return [int(x) for x in self.record.read_text().split()] if self.record.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc.stdout.close()


HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


def serve_proxy(upstream: int, hold: str, record: str, ignore_conditional_writes: bool) -> None:
    """The proxy process (see CommitRaceProxy); prints its port, then serves until terminated."""
    dropped = {"if-none-match"} if ignore_conditional_writes else set()
    barrier = threading.Barrier(2, timeout=120)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            held = self.command == "PUT" and self.path.endswith(hold)
            if held:
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:  # only one writer came: let it through
                    pass
            headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped | HOP}
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            if held:
                with lock, open(record, "a") as f:
                    f.write(f"{resp.status}\n")
            self.send_response_only(resp.status, resp.reason)
            head = self.command == "HEAD"  # its Content-Length is the object's size, with no body
            for k, v in resp.getheaders():
                if k.lower() not in HOP and (head or k.lower() != "content-length"):
                    self.send_header(k, v)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


def upload_tree(local: Path, url: str, opts: dict) -> None:
    """Copy a local folder (e.g. a Delta table, log and files) to an object-store URL as it is."""
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    dest = pafs.PyFileSystem(DeltaStorageHandler(url, opts))
    pafs.copy_files(str(local), "", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=dest)


def list_files(url: str, opts: dict) -> list[str]:
    """Every object under an object-store URL, as paths relative to it."""
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    fs = pafs.PyFileSystem(DeltaStorageHandler(url, opts))
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector("", recursive=True, allow_not_found=True))
                  if i.type == pafs.FileType.File)


def read_text(url: str, path: str, opts: dict) -> str:
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    fs = pafs.PyFileSystem(DeltaStorageHandler(url, opts))
    with fs.open_input_stream(path) as f:
        return f.read().decode("utf-8", "replace")


def write_text(url: str, path: str, text: str, opts: dict) -> None:
    """One text file onto the store (delta-rs' handler takes whole files: copied from a local one)."""
    import tempfile

    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "f"
        local.write_text(text, encoding="utf-8")
        pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=pafs.PyFileSystem(DeltaStorageHandler(url, opts)))


if __name__ == "__main__":  # python tests/s3.py proxy <upstream port> <hold> <record> [--ignore-conditional-writes]
    if len(sys.argv) >= 5 and sys.argv[1] == "proxy":
        serve_proxy(int(sys.argv[2]), sys.argv[3], sys.argv[4], "--ignore-conditional-writes" in sys.argv[5:])
