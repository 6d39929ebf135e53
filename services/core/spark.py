"""The SparkSession factory and the bridge between the lake and Spark DataFrames."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.contract import EVENT_COLUMNS
from services.core.catalog import EVENTS
from services.core.jvm_archive import default_archive, sharing_option
from services.core.lake import Lake
from services.core.settings import Settings

#: The JIT option of a driver that mostly schedules Python tasks: the client compiler only (C1).
#: Measured on 2 cores: the session starts in 2.4 s instead of 3.2 s and its first Arrow job takes 1.65 s
#: instead of 2.1 s, since C2's compiler threads no longer compete with the start; but C2's code is what
#: long JVM work wants (``shoplens features`` on 5.2M events: 45 s with C1 only, 39.5 s with both).
QUICK_START = "-XX:TieredStopAtLevel=1"


def driver_java_options(archive: Path | None, *, quick_start: bool = False) -> str:
    """The driver JVM's options: UTC, Spark's classes mapped from ``archive`` when it is usable
    (services/core/jvm_archive.py), and :data:`QUICK_START` if asked."""
    return " ".join(
        o for o in ("-Duser.timezone=UTC", sharing_option(archive), QUICK_START if quick_start else "") if o
    )


def get_spark(settings: Settings, app_name: str = "shoplens", *, quick_start: bool = False) -> SparkSession:
    """A SparkSession for ``settings.spark_master`` (``local[*]`` by default, or a standalone cluster).

    ``quick_start``: for a short command whose JVM does little but schedule Python tasks (``shoplens
    ingest``): see :data:`QUICK_START`. In local mode the driver is the executor too; a cluster's
    executors keep their own options.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.executor.memory", settings.spark_executor_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(max(4, 2 * (os.cpu_count() or 2))))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config(
            "spark.driver.extraJavaOptions",
            driver_java_options(settings.jvm_archive or default_archive(), quick_start=quick_start),
        )
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    if settings.spark_auth_secret is not None:  # the cluster's daemons get the same secret (_SPARK_AUTH_SECRET)
        builder = (
            builder.config("spark.authenticate", "true")
            .config("spark.authenticate.secret", settings.spark_auth_secret.get_secret_value())
            .config("spark.network.crypto.enabled", "true")  # AES-based RPC encryption, keyed by the secret
        )
    if settings.spark_s3a and settings.s3_endpoint:
        scheme = "https" if settings.s3_secure else "http"
        builder = (
            builder.config("spark.hadoop.fs.s3a.endpoint", f"{scheme}://{settings.s3_endpoint}")
            .config("spark.hadoop.fs.s3a.path.style.access", "true")
            .config("spark.hadoop.fs.s3a.access.key", _secret(settings.s3_access_key))
            .config("spark.hadoop.fs.s3a.secret.key", _secret(settings.s3_secret_key))
        )
    if not settings.spark_console:
        _launch_jvm_logging_to(Path(settings.work_dir) / "logs" / "spark.log", builder)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _launch_jvm_logging_to(log: Path, builder: SparkSession.Builder) -> None:
    """Start the driver JVM with its stdout and stderr on ``log`` (before the session is built).

    Why: the JVM prints its log4j banner, ``WARNING: Using incubator modules`` and the native-hadoop
    warning at start, and the Python workers it forks inherit the same streams; the console should show
    shoplens's own progress only. pyspark's ``launch_gateway(popen_kwargs=...)`` is the documented hook
    for how the JVM is spawned; a JVM already running (a second session in one process) is reused.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None:
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    conf = SparkConf(loadDefaults=False).setAll(list(builder._options.items()))
    with open(log, "ab") as fh:
        SparkContext._ensure_initialized(gateway=launch_gateway(conf, popen_kwargs={"stdout": fh, "stderr": fh}))


def _secret(value: object) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value or "")


#: Columns each run-scoped dataset exposes (event files of runs before the Arrow ingest also carry
#: ingest-only columns that stay null).
_DATASET_COLUMNS = {EVENTS: (*EVENT_COLUMNS, "line_number", "run_id")}


def read_run_dataset(spark: SparkSession, lake: Lake, dataset: str) -> DataFrame | None:
    """Rows of a run-scoped dataset from committed runs only; None if nothing is committed."""
    path = lake.spark_path(dataset)
    committed = lake.committed_run_ids()
    if path is None or not committed:
        return None
    df = spark.read.parquet(path).where(F.col("run_id").isin(committed))
    columns = _DATASET_COLUMNS.get(dataset)
    return df.select(*columns) if columns else df


@contextmanager
def progress_lines(
    spark: SparkSession | Callable[[], SparkSession], label: str, every_s: float = 5.0, emit=print
) -> Iterator[None]:
    """Print a line of Spark task progress every few seconds while the block runs.

    ``spark`` may be a callable (e.g. a future's ``result``) for a session that is still starting.
    """
    stop = threading.Event()
    started = time.monotonic()

    def report() -> None:
        session = spark() if callable(spark) else spark
        tracker = session.sparkContext.statusTracker()
        while not stop.wait(every_s):
            done = total = 0
            for stage_id in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage_id)
                if info:
                    done += info.numCompletedTasks
                    total += info.numTasks
            elapsed = time.monotonic() - started
            stages = f"{done}/{total} tasks in active stages" if total else "planning"
            emit(f"[{label}] {elapsed:5.0f}s elapsed, {stages}")

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1)
