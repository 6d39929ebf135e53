"""The SparkSession factory and the bridge between the lake and Spark DataFrames."""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from etl.contract import EVENT_COLUMNS
from services.core.catalog import EVENTS
from services.core.jvm_archive import default_archive, sharing_option
from services.core.lake import Lake
from services.core.settings import Settings
from services.core.timelines import in_tasks

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
    committed = lake.committed_run_ids()
    if not committed:
        return None
    columns = _DATASET_COLUMNS.get(dataset)
    df = read_parquet(spark, lake, dataset, columns, keys=lake.committed_files(dataset))
    if df is None:
        return None
    df = df.where(F.col("run_id").isin(committed))
    return df.select(*columns) if columns else df


def read_parquet(spark: SparkSession, lake: Lake, prefix: str, columns: Sequence[str] | None = None, *,
                 keys: Sequence[str] | None = None) -> DataFrame | None:  # fmt: skip
    """The Parquet files below ``prefix`` (or its files ``keys``) as a DataFrame read by the executors
    from the store itself; None if there are none. ``columns``: on S3 the tasks fetch only these (and
    the partition columns); the caller selects.

    On local disk Spark's own reader opens the lake's directory, the one the store's tasks write. On S3
    the tasks fetch the objects (:func:`store_parquet`): nothing is mirrored to the driver's disk, so
    executors on other hosts need no directory shared with it.
    """
    local = lake.store.local_path(prefix)
    if local is not None:
        if not (local.exists() and any(local.rglob("*.parquet"))):
            return None
        return spark.read.parquet(str(local))
    found = [k for k in (lake.store.list(prefix) if keys is None else keys) if _is_data(k)]
    return store_parquet(spark, lake.store, prefix, found, columns) if found else None


def _is_data(key: str) -> bool:
    return key.endswith(".parquet") and not key.rsplit("/", 1)[-1].startswith((".", "_"))


def store_parquet(spark: SparkSession, store: Any, base: str, keys: Sequence[str],
                  columns: Sequence[str] | None = None) -> DataFrame:  # fmt: skip
    """Parquet objects of ``store`` read in Spark tasks (:func:`services.core.timelines.in_tasks`), each
    task fetching its files from the store itself, as ingestion's and the timeline runner's tasks do.

    The ``name=value`` directories between ``base`` and a file are columns, typed as Spark's partition
    discovery types them here (a day as a date, digits as an integer, else text; null in a file without
    that directory). The columns' types are those of the first file (dictionaries decoded); a file
    without a column gives nulls.
    """
    keys = list(keys)
    parts = [_partition_values(base, k) for k in keys]
    names = list(dict.fromkeys(n for p in parts for n in p))
    partition = pa.schema([pa.field(n, _partition_type([p[n] for p in parts if n in p])) for n in names])
    first = _value_types(_read_schema(store, keys[0]))
    wanted = [f for f in first if f.name not in partition.names and (columns is None or f.name in columns)]
    schema = pa.schema([*wanted, *partition])

    def read(i: int) -> Iterator[pa.RecordBatch]:
        file = pq.ParquetFile(io.BytesIO(store.read_bytes(keys[i])))
        present = [f.name for f in wanted if f.name in file.schema_arrow.names]
        table = file.read(columns=present)
        n = table.num_rows
        arrays = [table.column(f.name).cast(f.type) if f.name in present else pa.nulls(n, f.type) for f in wanted]
        arrays += [pa.array([parts[i].get(f.name)] * n, pa.string()).cast(f.type) for f in partition]
        yield from pa.Table.from_arrays(arrays, schema=schema).to_batches()

    return in_tasks(spark, range(len(keys)), read, from_arrow_schema(schema))


def _read_schema(store: Any, key: str) -> pa.Schema:
    local = store.local_path(key)
    return pq.read_schema(local if local is not None else io.BytesIO(store.read_bytes(key)))


def _value_types(schema: pa.Schema) -> list[pa.Field]:
    """The fields of ``schema`` as a Spark column holds them: dictionaries as their values, times in µs."""
    def spark_type(t: pa.DataType) -> pa.DataType:
        if pa.types.is_dictionary(t):
            return spark_type(t.value_type)
        return pa.timestamp("us", tz=t.tz) if pa.types.is_timestamp(t) else t

    return [pa.field(f.name, spark_type(f.type)) for f in schema]


def _partition_values(base: str, key: str) -> dict[str, str]:
    """``{name: value}`` of the ``name=value`` directories of ``key`` below ``base``."""
    rel = key[len(base.rstrip("/")) + 1:] if base else key
    return dict(seg.split("=", 1) for seg in rel.split("/")[:-1] if "=" in seg)


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _partition_type(values: list[str]) -> pa.DataType:
    if all(_DAY.fullmatch(v) for v in values):
        return pa.date32()
    if all(v.isdigit() and len(v) < 10 for v in values):
        return pa.int32()
    return pa.string()


def write_to_store(df: DataFrame, store: Any, prefix: str, partition_by: str | None = None) -> int:
    """Write ``df`` as Parquet under ``prefix`` of ``store`` from the executors' tasks; returns the rows.

    Each task writes its rows to ``<prefix>/[<partition_by>=<value>/]part-PPPPP.parquet`` (P: its
    partition, so a retried task overwrites its own file), without the partition column, as Spark's
    writer lays them out. Unpartitioned, a task writes its file even when it has no rows, and a plan
    that runs no task gets one empty file, so an output always has a file that carries the schema.
    """
    schema = to_arrow_schema(df.schema, timezone="UTC")  # the session time zone (get_spark)
    kept = pa.schema([f for f in schema if f.name != partition_by])

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        name = f"part-{TaskContext.get().partitionId():05d}.parquet"
        received = list(batches)
        table = pa.Table.from_batches(received).cast(schema) if received else schema.empty_table()
        if partition_by is None:
            store.write_bytes(f"{prefix}/{name}", _parquet(table))
        else:
            column = table.column(partition_by)
            for value in pc.unique(column).to_pylist():
                rows = table.filter(pc.is_null(column) if value is None else pc.equal(column, value))
                store.write_bytes(f"{prefix}/{partition_by}={_partition_text(value)}/{name}",
                                  _parquet(rows.select(kept.names)))  # fmt: skip
        yield pa.RecordBatch.from_pydict({"rows": [table.num_rows]}, pa.schema([("rows", pa.int64())]))

    written = [r["rows"] for r in df.mapInArrow(task, "rows long").collect()]
    if partition_by is None and not written:  # a plan of no partitions (an empty relation) ran no task
        store.write_bytes(f"{prefix}/part-00000.parquet", _parquet(schema.empty_table()))
    return sum(written)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _partition_text(value: object) -> str:
    """A partition directory's value as Spark writes it (a day in ISO form; null as Hive's default)."""
    if value is None:
        return "__HIVE_DEFAULT_PARTITION__"
    return value.isoformat() if isinstance(value, date) else str(value)


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
