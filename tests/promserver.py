"""Real Prometheus + Pushgateway for tests: free ports on 127.0.0.1, temporary dirs, stopped by PID.

The Prometheus configuration is a test copy of ``monitoring/prometheus/prometheus.yml``: same jobs
and alert rules, a 1 s scrape/evaluation interval, the Pushgateway job pointed at the local gateway,
and the other jobs pointed at ``targets`` (job name -> host:port) or dropped when not given.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_YML = REPO / "monitoring" / "prometheus" / "prometheus.yml"
ALERTS_YML = REPO / "monitoring" / "prometheus" / "alerts.yml"
SCRAPE_SECONDS = 1


def binaries() -> dict[str, str | None]:
    """Paths of the binaries (Debian packages prometheus, prometheus-pushgateway), None when missing."""
    return {name: shutil.which(name) for name in ("prometheus", "prometheus-pushgateway", "promtool")}


def stop_processes(processes: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """Stop each process's group, newest first: TERM, then KILL after ``timeout``; empties the list.

    The processes must be started with ``start_new_session=True``, so that children (the JVM under
    ``spark-class``) stop with them.
    """
    for proc in reversed(processes):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    processes.clear()


def missing_binaries() -> list[str]:
    return [name for name, path in binaries().items() if path is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_config(
    pushgateway: str, targets: dict[str, str] | None = None, rules: Path = ALERTS_YML
) -> dict:
    """The stack's prometheus.yml rewritten for a test run (see the module docstring)."""
    import yaml

    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"]["scrape_interval"] = f"{SCRAPE_SECONDS}s"
    config["global"]["evaluation_interval"] = f"{SCRAPE_SECONDS}s"
    config["global"]["scrape_timeout"] = f"{SCRAPE_SECONDS}s"
    config["rule_files"] = [str(rules)]
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name == "pushgateway":
            job["static_configs"] = [{"targets": [pushgateway]}]
        elif targets and name in targets:
            job["static_configs"] = [{"targets": [targets[name]]}]
        else:
            continue
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


@dataclass
class PromStack:
    """A running Prometheus + Pushgateway pair; ``stop()`` ends both processes by PID."""

    workdir: Path
    prometheus_port: int
    pushgateway_port: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def pushgateway(self) -> str:
        """host:port, the form of ``SHOPLENS_PUSHGATEWAY_URL``."""
        return f"127.0.0.1:{self.pushgateway_port}"

    def api(self, path: str, **params: Any) -> dict:
        url = f"{self.prometheus_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    def query(self, expr: str) -> list[dict]:
        """Instant query; raises on a PromQL error, returns the result vector."""
        body = self.api("query", query=expr)
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        return body["data"]["result"]

    def wait_for(self, expr: str, predicate=bool, timeout: float = 20.0) -> list[dict]:
        """Poll ``expr`` until ``predicate(result)`` holds (e.g. a scrape has seen a push)."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.25)
        raise TimeoutError(f"{expr!r} did not reach the expected state in {timeout}s; last: {result}")

    def stop(self) -> None:
        stop_processes(self.processes)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready in {timeout}s: {log.read_text()[-2000:]}")


def start_stack(targets: dict[str, str] | None = None, rules: Path = ALERTS_YML) -> PromStack:
    """Start a Pushgateway and a Prometheus scraping it every second (plus ``targets``)."""
    import yaml

    workdir = Path(tempfile.mkdtemp(prefix="shoplens-prom-"))
    stack = PromStack(workdir, free_port(), free_port())
    try:
        gw_log = workdir / "pushgateway.log"
        gw = subprocess.Popen(
            [
                "prometheus-pushgateway",
                f"--web.listen-address={stack.pushgateway}",
                # Debian's build persists to /var/lib/prometheus by default, shared by every run
                f"--persistence.file={workdir / 'pushgateway.data'}",
            ],
            stdout=gw_log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.processes.append(gw)
        _wait_http(f"http://{stack.pushgateway}/-/ready", gw, gw_log)

        config = workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(prometheus_config(stack.pushgateway, targets, rules), sort_keys=False)
        )
        prom_log = workdir / "prometheus.log"
        prom = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{stack.prometheus_port}",
            ],
            stdout=prom_log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.processes.append(prom)
        _wait_http(f"{stack.prometheus_url}/-/ready", prom, prom_log)
    except BaseException:
        stack.stop()
        raise
    return stack
