"""A real Spark standalone cluster (one master, one or more workers) from the pip pyspark, for tests.

Started with ``bin/spark-class`` (the pip package has no ``sbin/``), bound to 127.0.0.1 on free ports,
with ``SPARK_CONF_DIR=infra/spark`` so the daemons use the stack's own spark-defaults.conf (including
the Prometheus servlet the stack scrapes). Stopped by PID, also on failure.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.promserver import free_port, stop_processes

REPO = Path(__file__).resolve().parents[1]


def spark_class() -> Path | None:
    """``bin/spark-class`` of the installed pyspark, or None."""
    try:
        import pyspark
    except ImportError:
        return None
    path = Path(pyspark.__file__).parent / "bin" / "spark-class"
    return path if path.exists() and shutil.which("java") else None


@dataclass
class SparkCluster:
    workdir: Path
    master_port: int
    webui_port: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def webui(self) -> str:
        return f"127.0.0.1:{self.webui_port}"

    def status(self) -> dict:
        """The master's JSON status (workers, active and completed applications)."""
        with urllib.request.urlopen(f"http://{self.webui}/json/", timeout=5) as resp:
            return json.load(resp)

    def stop(self) -> None:
        stop_processes(self.processes, timeout=15)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_cluster(cores: int = 1, memory: str = "1g", timeout: float = 60.0, workers: int = 1,
                  hide: list[Path] | None = None, env: dict[str, str] | None = None) -> SparkCluster:  # fmt: skip
    """Start a master and ``workers`` workers and wait until they are ALIVE at the master.

    ``env``: added to the daemons' environment (``SPARK_MASTER_OPTS``, ``_SPARK_AUTH_SECRET``...).
    ``hide``: directories each worker (and every executor and Python worker it starts) must not see: the
    worker runs in a mount namespace of its own (``unshare -m``) with an empty tmpfs over each, so a
    task that reached for the driver's files would fail as it would on another host.
    """
    binary = spark_class()
    if binary is None:
        raise RuntimeError("pyspark's bin/spark-class or java is missing")
    workdir = Path(tempfile.mkdtemp(prefix="shoplens-spark-"))
    cluster = SparkCluster(workdir, free_port(), free_port())
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_CONF_DIR": str(REPO / "infra" / "spark"),
           "SPARK_LOG_DIR": str(workdir), "SPARK_WORKER_DIR": str(workdir / "work"), **(env or {})}  # fmt: skip
    commands = {
        "master": [str(binary), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                   "--port", str(cluster.master_port), "--webui-port", str(cluster.webui_port)],
    }
    for i in range(workers):
        worker = [str(binary), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                  "--cores", str(cores), "--memory", memory, "--webui-port", str(free_port()),
                  "--work-dir", str(workdir / f"work-{i}"), cluster.url]  # fmt: skip
        if hide:
            mounts = " && ".join(f"mount -t tmpfs none {shlex.quote(str(d))}" for d in hide)
            worker = ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh", *worker]
        commands[f"worker-{i}"] = worker
    try:
        for name, cmd in commands.items():
            log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps the descriptor
            cluster.processes.append(
                subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
            log.close()
            if name == "master":
                _wait(lambda: cluster.status()["url"] == cluster.url, timeout, cluster, name)
        _wait(lambda: sum(w["state"] == "ALIVE" for w in cluster.status()["workers"]) >= workers,
              timeout, cluster, "worker")  # fmt: skip
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, timeout: float, cluster: SparkCluster, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in cluster.processes):
            raise RuntimeError(f"spark {name} exited: {(cluster.workdir / f'{name}.log').read_text()[-2000:]}")
        try:
            if ready():
                return
        except (OSError, ValueError):  # not listening yet, or a Spark HTML page where the JSON belongs (seen in CI under load)
            pass
        time.sleep(0.5)
    raise RuntimeError(f"spark {name} not ready after {timeout:.0f}s")
