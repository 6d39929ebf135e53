"""A real ``shoplens api`` (uvicorn) in a subprocess on 127.0.0.1, for tests and the load benchmark.

Started in its own session with its log in a file, and stopped by PID (TERM, then KILL) also when a
test fails, like tests/promserver.py's servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.promserver import free_port, stop_processes

REPO = Path(__file__).resolve().parents[1]


@dataclass
class ApiProcess:
    port: int
    log: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: object = None, token: str | None = None,
                timeout: float = 10) -> tuple[int, dict | str]:  # fmt: skip
        """(status, JSON body or text) of one request; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def stop(self) -> None:
        stop_processes(self.processes)


def start_api(env: dict[str, str], lake: str, port: int | None = None, timeout: float = 60,
              workers: int = 1) -> ApiProcess:  # fmt: skip
    """``python -m services api`` with ``env`` added to a scrubbed environment; waits for /healthz.

    With ``workers`` > 1 the first process is uvicorn's supervisor; the workers are its children (in
    its process group, so :meth:`ApiProcess.stop` stops them too).
    """
    port = port or free_port()
    log = Path(env.get("SHOPLENS_WORK_DIR", "/tmp")) / f"api-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "api", "--host", "127.0.0.1", "--port", str(port), "--lake", lake,
         "--workers", str(workers)],
        env={**base, **env}, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    api = ApiProcess(port, log, [proc])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"shoplens api exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{api.url}/healthz", timeout=1):
                return api
        except OSError:
            time.sleep(0.2)
    api.stop()
    raise TimeoutError(f"shoplens api not ready in {timeout}s: {log.read_text()[-2000:]}")


def raw_post(port: int, path: str, chunks, headers: dict[str, str], timeout: float = 30) -> tuple[int, bytes, int]:
    """(status, body, bytes sent) of a POST whose body is streamed from ``chunks`` over a plain socket.

    Stops sending as soon as the server answers (a server that refuses a body early closes the
    connection while the client is still sending), so the answer is read, not lost to a reset.
    """
    import select
    import socket

    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(head).encode())
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = b""
        try:
            while b"\r\n\r\n" not in raw or len(raw.split(b"\r\n\r\n", 1)[1]) < _content_length(raw):
                part = sock.recv(65536)
                if not part:
                    break
                raw += part
        except ConnectionResetError:
            pass
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest.split(b"\r\n\r\n", 1)[-1], sent


def _content_length(raw: bytes) -> int:
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0
