"""A real PostgreSQL for tests and benchmarks: Debian's binaries, a temporary directory, 127.0.0.1.

``initdb`` refuses to run as root, so as root the server runs as ``nobody`` (the data directory is
handed over to it). The server is stopped with ``pg_ctl stop -m fast`` and, should that fail, by the
postmaster's PID; the directory is removed. Use the session-scoped ``pg_server`` fixture (import it
into the test module), or :func:`start_server` / :func:`stop_server` from a benchmark.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def _pg_bin() -> Path:
    """$SHOPLENS_PG_BIN, else the newest /usr/lib/postgresql/<major>/bin (15 on Debian 12)."""
    if os.environ.get("SHOPLENS_PG_BIN"):
        return Path(os.environ["SHOPLENS_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if
                   p.parts[-3].isdigit() else 0)  # fmt: skip
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
USER = "shoplens"
#: The warehouse's server settings as docker-compose.yml starts it (erasure needs WAL segments removed).
WAREHOUSE_SETTINGS = {"wal_recycle": "off"}


def missing() -> str | None:
    """Why no server can start here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"PostgreSQL binaries not found in {PG_BIN} (apt-get install -y postgresql)"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool as ``nobody`` when we are root (initdb/postgres refuse root)."""
    if os.geteuid() == 0:
        cmd = " ".join(f"'{a}'" for a in args)
        args = ["su", "nobody", "-s", "/bin/sh", "-c", cmd]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@dataclass
class PgServer:
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pidfile.read_text().splitlines()[0])
        return None


def start_server(settings: dict[str, str] | None = None) -> PgServer:
    """initdb + pg_ctl start on a free port (trust auth for user ``shoplens``, 127.0.0.1 only)."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="shoplens-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
    server = PgServer(root, _free_port())
    try:
        done = _as_owner([str(PG_BIN / "initdb"), "-D", str(server.data), "-U", USER, "-A", "trust", "-E", "UTF8",
                          "--no-sync"])  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")
        opts = f"-p {server.port} -k {root} -h 127.0.0.1"
        for k, v in (settings or {}).items():
            opts += f" -c {k}={v}"
        done = _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(server.data), "-o", opts, "-l", str(root / "server.log"),
                          "-w", "-t", "60", "start"])  # fmt: skip
        if done.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stdout[-500:]} {done.stderr[-500:]} {log[-1500:]}")
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: PgServer) -> None:
    """Fast shutdown; the postmaster's PID gets SIGKILL if it is still there after 20 s."""
    pid = server.pid()
    if pid is not None:
        with contextlib.suppress(Exception):
            _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(server.data), "-m", "fast", "-w", "-t", "20", "stop"], 30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL for the whole run; skipped where the Debian binaries are missing."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    server = start_server(WAREHOUSE_SETTINGS)
    try:
        yield server
    finally:
        stop_server(server)
