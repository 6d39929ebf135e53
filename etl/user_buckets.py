"""Per-user work over the lake's event files on Spark: file tasks -> user buckets -> one task per bucket.

Used where a computation needs all of a user's events at once (a funnel walk, features at several
cutoffs). Two stages of Arrow tasks, and no event ever becomes a JVM row (Spark's Parquet-to-Arrow
path cost more than the per-user work itself):

1. each task reads a few consecutive event files (:data:`FILES_PER_TASK`), their columns from the
   lake's store, optionally transforms each (``prepare``), and cuts the rows by user bucket, handing
   Spark one Arrow IPC blob per bucket;
2. Spark shuffles the blobs by bucket (every user lies within one bucket), and one task per bucket
   concatenates its blobs and runs ``work`` on them.

Buckets are a seeded polars hash of ``user_key`` (the same in every task of a run).

A result too big to collect through the driver (the propensity examples of 3M users: several GB,
past ``spark.driver.maxResultSize`` and a compose driver's 1.5 GB heap) can instead be written by
the bucket tasks to the store as Arrow IPC files (``to_store``) and read back with :func:`read_stored`:
the rows never pass through the JVM.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import ipc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from etl.spark_tasks import one_task_each

__all__ = ["STORED", "per_user_bucket", "read_stored"]

#: Lake event files per user bucket (~370k events each in a generated month): a few million events
#: per bucket task, and several tasks per core.
FILES_PER_BUCKET: Final[int] = 8
#: Event files read by one task of the first stage (at least two tasks per core): a Spark task costs
#: about 0.1 s on its own, as much as a file's work when that work is small (the scores' activity
#: parts: 171 files 24 s one per task, 15 s eight per task, on 2 cores).
FILES_PER_TASK: Final[int] = 8
_BUCKET_SEED: Final[int] = 11
#: What the file tasks hand to Spark: one row per (task, user bucket), the rows as Arrow IPC.
_BLOBS: Final[T.StructType] = T.StructType(
    [T.StructField("bucket", T.IntegerType(), False), T.StructField("rows", T.BinaryType(), False)]
)
_BLOBS_ARROW: Final[pa.Schema] = pa.schema([("bucket", pa.int32(), False), ("rows", pa.binary(), False)])
#: What the bucket tasks return with ``to_store``: one row per file written.
STORED: Final[pa.Schema] = pa.schema([("key", pa.string(), False), ("rows", pa.int64(), False)])


def per_user_bucket(
    spark: SparkSession,
    store: Any,
    keys: Sequence[str],
    columns: Sequence[str],
    work: Callable[[pl.DataFrame], pa.Table],
    schema: pa.Schema,
    prepare: Callable[[pa.Table], pl.DataFrame] = pl.from_arrow,
    read_dictionary: Sequence[str] = (),
    to_store: str | None = None,
) -> DataFrame:
    """The rows of ``work(events of one user bucket)`` over every bucket, as one DataFrame of ``schema``.

    ``keys``: Parquet event files in ``store`` with at least ``columns``. ``prepare`` turns each file's
    rows (``read_dictionary`` columns as Arrow dictionaries, the rest plain) into the polars frame that
    is cut by its ``user_key`` column; ``work`` gets whole users, in no particular row order, and
    returns a table of ``schema``. With ``to_store`` (a prefix in ``store``), each bucket's table is
    written to ``<to_store>/bucket-<n>.arrow`` (a retried task rewrites the same file) and the
    DataFrame has :data:`STORED` rows instead.
    """
    buckets = max(int(spark.conf.get("spark.sql.shuffle.partitions")), math.ceil(len(keys) / FILES_PER_BUCKET))
    keys, columns, dictionary = list(keys), list(columns), list(read_dictionary) or None

    tasks = min(len(keys), max(2 * spark.sparkContext.defaultParallelism, math.ceil(len(keys) / FILES_PER_TASK)))

    def cut(task: int) -> Iterator[pa.RecordBatch]:
        frames = []
        for i in range(task * len(keys) // tasks, (task + 1) * len(keys) // tasks):  # consecutive files
            table = pq.read_table(io.BytesIO(store.read_bytes(keys[i])), columns=columns, read_dictionary=dictionary)
            frames.append(prepare(table))
        yield from _blobs(pl.concat(frames), buckets)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        by_bucket: dict[int, list[pl.DataFrame]] = {}
        for batch in batches:
            for bucket, blob in zip(batch.column(0).to_pylist(), batch.column(1), strict=True):
                by_bucket.setdefault(bucket, []).append(pl.read_ipc_stream(io.BytesIO(blob.as_buffer())))
        for bucket, parts in by_bucket.items():
            table = work(pl.concat(parts))
            if to_store is None:
                yield from table.to_batches()
                continue
            key, sink = f"{to_store}/bucket-{bucket:05d}.arrow", pa.BufferOutputStream()
            with ipc.new_file(sink, schema) as writer:
                writer.write_table(table)
            store.write_bytes(key, sink.getvalue().to_pybytes())
            yield pa.RecordBatch.from_arrays([pa.array([key]), pa.array([table.num_rows], pa.int64())], schema=STORED)

    blobs = one_task_each(spark, tasks, cut, _BLOBS).repartition(buckets, "bucket")
    return blobs.mapInArrow(run, from_arrow_schema(STORED if to_store is not None else schema))


def read_stored(store: Any, written: Iterable[tuple[str, int]], schema: pa.Schema) -> pa.Table:
    """The tables of ``schema`` a ``to_store`` run of :func:`per_user_bucket` wrote, as one table.

    ``written``: the run's collected :data:`STORED` rows, (key, rows) each; a file that does not hold
    the rows its task reported is an error.
    """
    files = sorted((str(key), int(rows)) for key, rows in written)
    tables = [ipc.open_file(pa.BufferReader(store.read_bytes(key))).read_all() for key, _ in files]
    for (key, rows), table in zip(files, tables, strict=True):
        if table.num_rows != rows:
            raise RuntimeError(f"{key}: {table.num_rows} rows where its task wrote {rows}")
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _blobs(rows: pl.DataFrame, buckets: int) -> Iterator[pa.RecordBatch]:
    bucket = (pl.col("user_key").hash(seed=_BUCKET_SEED) % buckets).cast(pl.Int32).alias("bucket")
    for (b,), part in rows.with_columns(bucket).partition_by("bucket", include_key=False, as_dict=True).items():
        sink = io.BytesIO()
        part.write_ipc_stream(sink, compression="uncompressed")  # Spark's shuffle compresses
        yield pa.RecordBatch.from_arrays([pa.array([b], pa.int32()), pa.array([sink.getvalue()])], schema=_BLOBS_ARROW)
