"""Ingestion's Spark tasks: one per chunk or bucket, each reading its input from the lake's store and
writing its output files back to it, around the pure rules of :mod:`etl.ingest`.

Spark schedules the chunks over its executors (``local[*]`` or a standalone cluster) through
:func:`services.core.spark_tasks.one_task_each`. Each task reads and writes the store itself (local disk
or S3, through :class:`~services.core.storage.Store`), so the driver and the executors share no
directory. What a task hands back to Spark is small: its counts per outcome and reason, the copies in a
hash bucket, or a bucket's suspicious users. Where each table goes in the run's staging prefix, and in
which file format, is decided here; what the tables hold is decided in :mod:`etl.ingest`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from etl.contract import BOT_EVENTS_PER_DAY
from etl.ingest import (
    COPIES_SCHEMA,
    COUNTS_SCHEMA,
    SUSPICIOUS_SCHEMA,
    classify_chunk,
    copies_in_bucket,
    drop_lines,
    later_copies,
    repointed_duplicates,
    suspicious_users,
)
from etl.lines import DUPLICATE_FILE_SCHEMA, QUARANTINE_FILE_SCHEMA
from etl.timeline import group_part, ipc_bytes, piece_name, read_ipc
from services.core.spark_tasks import one_task_each

__all__ = [
    "TIMELINE_PARTS", "Chunk", "LocalChunk", "bucket_count", "empty_file", "find_copies", "flag_suspicious",
    "parquet_bytes", "resolve_cross_chunk_duplicates", "run_chunks", "write_chunk",
]  # fmt: skip

#: Where the chunk tasks stage their events by timeline bucket group, under the run's prefix.
TIMELINE_PARTS = "timeline_parts"


@dataclass
class LocalChunk:
    """A plain-text piece of an input file on the driver's disk, as the job cuts it."""

    path: Path
    source_file: str
    first_line: int


@dataclass(frozen=True)
class Chunk:
    """A plain-text piece of an input file in the store, and the line number of its first line."""

    key: str
    source_file: str
    first_line: int
    index: int  # unique in the run: names the chunk's output files


def part_name(chunk: int) -> str:
    return f"part-{chunk:05d}.parquet"


def parquet_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    """``table`` as a Parquet file; zstd at level 1 (most of level 3's ratio, at about half the time)."""
    sink = io.BytesIO()
    # no Arrow schema in the file: readers see plain strings where a column was dictionary-encoded
    pq.write_table(table, sink, compression=compression, compression_level=1 if compression == "zstd" else None,
                   store_schema=False)  # fmt: skip
    return sink.getvalue()


def _read_parquet(store: Any, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(store.read_bytes(key)))


def write_chunk(store: Any, prefix: str, chunk: Chunk, key: bytes, buckets: int,
                erased: frozenset[str] = frozenset(), timeline_groups: int = 0) -> pa.Table:  # fmt: skip
    """Classify one chunk (:func:`etl.ingest.classify_chunk`), write its files under ``prefix`` in
    ``store``, and return its counts.

    Files: ``events/event_date=D/part-C.parquet`` per event date, ``quarantine/part-C.parquet`` and
    ``duplicates/part-C.parquet`` when not empty, the row hashes in ``hashes/bucket=B/part-C.parquet``
    for :func:`find_copies`, the user-day counts in ``user_days/bucket=B/part-C.parquet`` for
    :func:`flag_suspicious`; with ``timeline_groups``, the accepted events in
    ``timeline_parts/group=G/part-C.arrow`` per timeline bucket group G.
    Deterministic names, so a retried task overwrites.
    """
    out = classify_chunk(store.read_bytes(chunk.key), key, chunk.source_file, chunk.first_line, chunk.index, erased)
    part = part_name(chunk.index)
    for day, rows in out.events_by_day():
        store.write_bytes(f"{prefix}/events/event_date={day.isoformat()}/{part}", parquet_bytes(rows))
    for name, table in (("quarantine", out.out.quarantine), ("duplicates", out.out.duplicates)):
        if table.num_rows:
            store.write_bytes(f"{prefix}/{name}/{part}", parquet_bytes(table))
    for g, rows in out.timeline_pieces(timeline_groups) if timeline_groups else ():
        store.write_bytes(f"{prefix}/{TIMELINE_PARTS}/{group_part(g, chunk.index)}", ipc_bytes(rows))
    for b, table in out.hash_buckets(buckets):
        store.write_bytes(f"{prefix}/hashes/bucket={b:04d}/{part}", parquet_bytes(table, compression="none"))  # hashes do not compress
    for b, table in out.user_day_buckets(buckets):
        store.write_bytes(f"{prefix}/user_days/bucket={b:04d}/{part}", parquet_bytes(table))
    return out.counts()


def bucket_count(spark: SparkSession) -> int:
    """How many hash buckets a run uses (fixed for the run: every chunk task must use the same)."""
    return 4 * spark.sparkContext.defaultParallelism


def _one_task_each(spark: SparkSession, n: int, fn: Callable[[int], pa.Table], schema: pa.Schema) -> list:
    """The rows of ``fn(i)`` for i in 0..n-1 (a chunk, a bucket), each call in a Spark task of its own."""
    return one_task_each(spark, n, lambda i: fn(i).to_batches(max_chunksize=1 << 20), from_arrow_schema(schema)).collect()


def run_chunks(spark: SparkSession, store: Any, prefix: str, chunks: list[Chunk], key: bytes, buckets: int,
               erased: frozenset[str] = frozenset(), timeline_groups: int = 0) -> dict[tuple[int, str, str | None], int]:  # fmt: skip
    """Run one task per chunk (see :func:`write_chunk`); return ``(chunk, outcome, reason) -> lines``."""
    rows = _one_task_each(
        spark, len(chunks), lambda i: write_chunk(store, prefix, chunks[i], key, buckets, erased, timeline_groups),
        COUNTS_SCHEMA,
    )  # fmt: skip
    return {(r["chunk"], r["outcome"], r["reason"]): r["n"] for r in rows}


def find_copies(spark: SparkSession, store: Any, prefix: str, buckets: int) -> list[tuple[int, int, int, int]]:
    """``(h1, h2, chunk, line)`` of the lines that more than one chunk accepted: one task per hash bucket,
    which reads the bucket's files (:func:`etl.ingest.copies_in_bucket`)."""

    def in_bucket(bucket: int) -> pa.Table:
        parts = store.list(f"{prefix}/hashes/bucket={bucket:04d}")
        return copies_in_bucket((int(k.rsplit("part-", 1)[1].split(".")[0]), _read_parquet(store, k)) for k in parts)

    return [tuple(r) for r in _one_task_each(spark, buckets, in_bucket, COPIES_SCHEMA)]


def flag_suspicious(spark: SparkSession, store: Any, prefix: str, buckets: int,
                    max_events_per_day: int = BOT_EVENTS_PER_DAY) -> pa.Table:  # fmt: skip
    """:func:`etl.ingest.suspicious_users` of the run, from the user-day counts the chunk tasks wrote: one
    task per bucket (every day of a user is in the user's bucket)."""

    def in_bucket(bucket: int) -> pa.Table:
        parts = store.list(f"{prefix}/user_days/bucket={bucket:04d}")
        if not parts:
            return SUSPICIOUS_SCHEMA.empty_table()
        return suspicious_users(pl.concat([pl.from_arrow(_read_parquet(store, k)) for k in parts]), max_events_per_day)

    rows = _one_task_each(spark, buckets, in_bucket, SUSPICIOUS_SCHEMA)
    return pa.Table.from_pylist([r.asDict() for r in rows], SUSPICIOUS_SCHEMA).sort_by("user_key")


def resolve_cross_chunk_duplicates(
    store: Any, prefix: str, chunks: list[Chunk], copies: list[tuple[int, int, int, int]]
) -> dict[int, int]:
    """Turn the later copies of a line accepted by several chunks into duplicates of its first copy
    (:func:`etl.ingest.later_copies`). Rewrites only the files of the chunks that hold such a copy;
    returns chunk -> lines moved from accepted to duplicate."""
    by_index = {c.index: c for c in chunks}
    moved = later_copies(copies, {c.index: c.source_file for c in chunks})
    # each listing once, not once per patched chunk
    events = store.list(f"{prefix}/events") if moved else []
    staged = store.list(f"{prefix}/{TIMELINE_PARTS}") if moved else []
    for chunk, lines in moved.items():
        _patch_chunk(store, prefix, by_index[chunk], lines, events, staged)
    return {chunk: len(lines) for chunk, lines in moved.items()}


def _patch_chunk(store: Any, prefix: str, chunk: Chunk, lines: dict[int, int], events: list[str],
                 staged: list[str]) -> None:  # fmt: skip
    """Drop ``lines`` from the chunk's event files (of ``events``) and staged timeline pieces (of
    ``staged``: one per group), and record them as duplicates."""
    part, piece = part_name(chunk.index), f"/{piece_name(chunk.index)}"
    for key in events:
        if key.endswith(f"/{part}"):
            _drop_lines(store, key, lines, lambda data: pq.read_table(io.BytesIO(data)), parquet_bytes)
    for key in staged:
        if key.endswith(piece):
            _drop_lines(store, key, lines, read_ipc, ipc_bytes)
    dup_key = f"{prefix}/duplicates/{part}"
    old = _read_parquet(store, dup_key) if store.exists(dup_key) else DUPLICATE_FILE_SCHEMA.empty_table()
    store.write_bytes(dup_key, parquet_bytes(repointed_duplicates(old, chunk.source_file, lines)))


def _drop_lines(store: Any, key: str, lines: dict[int, int], read: Callable[[bytes], pa.Table],
                encode: Callable[[pa.Table], bytes]) -> None:  # fmt: skip
    table = read(store.read_bytes(key))
    kept = drop_lines(table, lines)
    if kept.num_rows == 0:  # so the run's event dates stay exactly those of its events
        store.delete_prefix(key)
    elif kept.num_rows != table.num_rows:
        store.write_bytes(key, encode(kept))


def empty_file(name: str) -> bytes:
    """An empty Parquet file of a run-scoped dataset, so a run with no rejects still has its schema."""
    schema = {"quarantine": QUARANTINE_FILE_SCHEMA, "duplicates": DUPLICATE_FILE_SCHEMA}[name]
    return parquet_bytes(schema.empty_table())
