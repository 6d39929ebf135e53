"""Per-user work over the lake's event files on Spark: file tasks -> user buckets -> one task per bucket.

Used where a computation needs all of a user's events at once (a funnel walk, features at several
cutoffs). Two stages of Arrow tasks, and no event ever becomes a JVM row (Spark's Parquet-to-Arrow
path cost more than the per-user work itself):

1. one task per event file reads its columns from the lake's store, optionally transforms them
   (``prepare``), and cuts the rows by user bucket, handing Spark one Arrow IPC blob per bucket;
2. Spark shuffles the blobs by bucket (every user lies within one bucket), and one task per bucket
   concatenates its blobs and runs ``work`` on them.

Buckets are a seeded polars hash of ``user_key`` (the same in every task of a run).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from etl.spark_tasks import one_task_each

__all__ = ["per_user_bucket"]

#: Lake event files per user bucket (~370k events each in a generated month): a few million events
#: per bucket task, and several tasks per core.
FILES_PER_BUCKET: Final[int] = 8
_BUCKET_SEED: Final[int] = 11
#: What the file tasks hand to Spark: one row per (file, user bucket), the rows as Arrow IPC.
_BLOBS: Final[T.StructType] = T.StructType(
    [T.StructField("bucket", T.IntegerType(), False), T.StructField("rows", T.BinaryType(), False)]
)
_BLOBS_ARROW: Final[pa.Schema] = pa.schema([("bucket", pa.int32(), False), ("rows", pa.binary(), False)])


def per_user_bucket(
    spark: SparkSession,
    store: Any,
    keys: Sequence[str],
    columns: Sequence[str],
    work: Callable[[pl.DataFrame], pa.Table],
    schema: pa.Schema,
    prepare: Callable[[pa.Table], pl.DataFrame] = pl.from_arrow,
    read_dictionary: Sequence[str] = (),
) -> DataFrame:
    """The rows of ``work(events of one user bucket)`` over every bucket, as one DataFrame of ``schema``.

    ``keys``: Parquet event files in ``store`` with at least ``columns``. ``prepare`` turns each file's
    rows (``read_dictionary`` columns as Arrow dictionaries, the rest plain) into the polars frame that
    is cut by its ``user_key`` column; ``work`` gets whole users, in no particular row order, and
    returns a table of ``schema``.
    """
    buckets = max(int(spark.conf.get("spark.sql.shuffle.partitions")), math.ceil(len(keys) / FILES_PER_BUCKET))
    keys, columns, dictionary = list(keys), list(columns), list(read_dictionary) or None

    def cut(i: int) -> Iterator[pa.RecordBatch]:
        table = pq.read_table(io.BytesIO(store.read_bytes(keys[i])), columns=columns, read_dictionary=dictionary)
        yield from _blobs(prepare(table), buckets)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        by_bucket: dict[int, list[pl.DataFrame]] = {}
        for batch in batches:
            for bucket, blob in zip(batch.column(0).to_pylist(), batch.column(1), strict=True):
                by_bucket.setdefault(bucket, []).append(pl.read_ipc_stream(io.BytesIO(blob.as_buffer())))
        for parts in by_bucket.values():
            yield from work(pl.concat(parts)).to_batches()

    blobs = one_task_each(spark, len(keys), cut, _BLOBS).repartition(buckets, "bucket")
    return blobs.mapInArrow(run, from_arrow_schema(schema))


def _blobs(rows: pl.DataFrame, buckets: int) -> Iterator[pa.RecordBatch]:
    bucket = (pl.col("user_key").hash(seed=_BUCKET_SEED) % buckets).cast(pl.Int32).alias("bucket")
    for (b,), part in rows.with_columns(bucket).partition_by("bucket", include_key=False, as_dict=True).items():
        sink = io.BytesIO()
        part.write_ipc_stream(sink, compression="uncompressed")  # Spark's shuffle compresses
        yield pa.RecordBatch.from_arrays([pa.array([b], pa.int32()), pa.array([sink.getvalue()])], schema=_BLOBS_ARROW)
