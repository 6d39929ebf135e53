"""A real standalone Spark cluster with RPC authentication and encryption, configured the way
docker-compose.yml and the manifests do it (``spark.authenticate`` and ``spark.network.crypto.enabled``
in the daemons' options, the secret in ``_SPARK_AUTH_SECRET``; the driver's from
``SHOPLENS_SPARK_AUTH_SECRET``): a driver with the secret runs a job on the executors, a driver without
it or with another one is not let in."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

import pytest

from tests.promserver import stop_processes
from tests.sparkcluster import spark_class, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.skipif(spark_class() is None, reason="pyspark's spark-class is missing")]
DAEMON_OPTS = "-Dspark.authenticate=true -Dspark.network.crypto.enabled=true"
DRIVER = """
import sys
from services.core.settings import Settings
from services.core.spark import get_spark
settings = Settings(spark_master=sys.argv[1], spark_driver_memory="512m", spark_executor_memory="512m",
                    spark_console=True)
spark = get_spark(settings, app_name=sys.argv[2])
print("SUM", spark.range(1000).selectExpr("sum(id) AS s").first()["s"], flush=True)
spark.stop()
"""


def _driver(url: str, name: str, secret: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLENS_")}
    env |= {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    if secret is not None:
        env["SHOPLENS_SPARK_AUTH_SECRET"] = secret
    return subprocess.Popen([sys.executable, "-c", DRIVER, url, name], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip


def test_only_a_driver_with_the_secret_gets_executors(tmp_path):
    secret = secrets.token_hex(32)
    cluster = start_cluster(cores=1, memory="1g", env={
        "SPARK_MASTER_OPTS": DAEMON_OPTS, "SPARK_WORKER_OPTS": DAEMON_OPTS, "_SPARK_AUTH_SECRET": secret})  # fmt: skip
    intruders: list[subprocess.Popen] = []
    try:
        intruders = [_driver(cluster.url, "no-secret", None), _driver(cluster.url, "wrong-secret", secrets.token_hex(32))]
        good = _driver(cluster.url, "with-secret", secret)
        out, _ = good.communicate(timeout=180)
        assert good.returncode == 0 and "SUM 499500" in out, out[-3000:]
        time.sleep(5)  # the intruders had as long as the good driver, and more
        status = cluster.status()
        apps = {a["name"] for a in [*status["activeapps"], *status["completedapps"]]}
        assert "with-secret" in apps and not apps & {"no-secret", "wrong-secret"}, apps
        assert all(p.poll() is None or p.returncode != 0 for p in intruders)
    finally:
        stop_processes(intruders, timeout=10)
        cluster.stop()
