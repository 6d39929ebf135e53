"""Ingestion on Spark: one task per chunk, each vectorized on Arrow by :func:`etl.lines.classify_batch`.

Spark schedules the chunks over its executors (``local[*]`` or a standalone cluster) with
``mapInArrow``. Each task reads its chunk from the lake's store and writes its output files to the
store itself (local disk or S3, through :class:`~services.core.storage.Store`), so the driver and the
executors share no directory. What a task hands back to Spark is small: its counts per outcome and
reason.

What needs all chunks at once goes through the store in buckets instead of through a Spark shuffle
(turning one row per line or per user-day into JVM rows and back cost more than the parsing itself):

- Copies across chunks and files (copies inside a chunk are found in the task) are found from a
  128-bit row hash per accepted line, which each task writes in hash buckets; one task per bucket then
  reduces them (:func:`find_copies`). So each chunk is read once; only the few chunks holding a copy
  of a line first seen in another chunk have their files patched (:func:`resolve_cross_chunk_duplicates`).
- The bot flag needs each user's events per day over the whole run: each task writes its user-day
  counts bucketed by user, and one task per bucket applies :func:`suspicious_users` (:func:`flag_suspicious`).
- The run's user timelines: each task stages its accepted events cut by timeline bucket group
  (:func:`etl.timeline.by_group`), patched like the event files when a copy is dropped, so the
  timeline build only sorts each group (``services.core.timelines.sort_groups``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from etl.contract import BOT_EVENTS_PER_DAY
from etl.erasure import ERASED, suppress
from etl.lines import (
    ACCEPTED,
    DUPLICATE,
    DUPLICATE_FILE_SCHEMA,
    EVENT_FILE_SCHEMA,
    QUARANTINE_FILE_SCHEMA,
    QUARANTINED,
    classify_batch,
)
from etl.spark_tasks import one_task_each
from etl.timeline import (
    BUCKETS,
    bucket_of,
    by_group,
    group_part,
    ipc_bytes,
    piece_name,
    read_ipc,
    with_dictionaries,
)

__all__ = [
    "ACCEPTED", "DUPLICATE", "ERASED", "QUARANTINED", "SUSPICIOUS_SCHEMA", "TIMELINE_PARTS", "Chunk", "LocalChunk", "bucket_count",
    "find_copies", "flag_suspicious", "resolve_cross_chunk_duplicates", "run_chunks", "suspicious_users",
]  # fmt: skip

#: What a chunk task returns to Spark: its lines per outcome and reason.
TASK_SCHEMA = T.StructType([
    T.StructField("chunk", T.IntegerType(), False), T.StructField("outcome", T.StringType(), False),
    T.StructField("reason", T.StringType()), T.StructField("n", T.LongType(), False),
])  # fmt: skip
_TASK_ARROW = pa.schema([("chunk", pa.int32()), ("outcome", pa.string()), ("reason", pa.string()), ("n", pa.int64())])
#: The suspicious-users dataset (docs/outputs.md), as the bot-flag tasks return it.
SUSPICIOUS_SCHEMA = pa.schema([
    ("user_key", pa.string()), ("max_events_per_day", pa.int64()), ("days_over_limit", pa.int64()),
    ("first_day_over_limit", pa.date32()), ("reason", pa.string()),
])  # fmt: skip
_SUSPICIOUS_SPARK = T.StructType([
    T.StructField("user_key", T.StringType()), T.StructField("max_events_per_day", T.LongType()),
    T.StructField("days_over_limit", T.LongType()), T.StructField("first_day_over_limit", T.DateType()),
    T.StructField("reason", T.StringType()),
])  # fmt: skip
#: A line first seen by more than one chunk: what the copy-finding tasks return.
COPY_SCHEMA = T.StructType([T.StructField(c, T.LongType(), False) for c in ("h1", "h2", "chunk", "line")])
_HASHES = pa.schema([("h1", pa.int64()), ("h2", pa.int64()), ("line", pa.int64())])
#: Where the chunk tasks stage their events by timeline bucket group, under the run's prefix.
TIMELINE_PARTS = "timeline_parts"
_USER_DAYS = pa.schema([("user_key", pa.string()), ("event_date", pa.date32()), ("events", pa.int64())])


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


def write_chunk(store: Any, prefix: str, chunk: Chunk, key: bytes, buckets: int,
                erased: frozenset[str] = frozenset(), timeline_groups: int = 0) -> pa.Table:  # fmt: skip
    """Classify one chunk, write its files under ``prefix`` in ``store``, and return its counts.

    Files: ``events/event_date=D/part-C.parquet`` per event date, ``quarantine/part-C.parquet`` and
    ``duplicates/part-C.parquet`` when not empty, the row hash of each accepted line in
    ``hashes/bucket=B/part-C.parquet`` (B = first hash mod ``buckets``) for :func:`find_copies`, and
    the accepted events per user and day in ``user_days/bucket=B/part-C.parquet`` (B = the user's
    timeline bucket, :func:`etl.timeline.bucket_of`, mod ``buckets``) for :func:`flag_suspicious`; with
    ``timeline_groups``, the accepted events in ``timeline_parts/group=G/part-C.arrow`` per timeline
    bucket group G. Each event's key is hashed once, for both.
    Deterministic names, so a retried task overwrites. Lines of people in ``erased`` (digests of their
    keys, :mod:`etl.erasure`) are dropped and counted as :data:`~etl.erasure.ERASED`.
    """
    out, n_erased = suppress(classify_batch(store.read_bytes(chunk.key), key, chunk.source_file, chunk.first_line),
                             erased)  # fmt: skip
    events = with_dictionaries(out.events)  # the event files and the staged pieces share one encoding
    days = pc.unique(events["event_date"]).to_pylist()
    for day in days:
        rows = events.filter(pc.equal(events["event_date"], pa.scalar(day, pa.date32())))
        store.write_bytes(f"{prefix}/events/event_date={day.isoformat()}/{part_name(chunk.index)}",
                          parquet_bytes(rows.select(EVENT_FILE_SCHEMA.names)))
    for name, table in (("quarantine", out.quarantine), ("duplicates", out.duplicates)):
        if table.num_rows:
            store.write_bytes(f"{prefix}/{name}/{part_name(chunk.index)}", parquet_bytes(table))

    # each key hashed once: its prefix (below 2**60) serves the timeline buckets and the run's user-day buckets
    key_prefix = bucket_of(events["user_key"], 1 << 60)
    for g, rows in by_group(events, timeline_groups, key_prefix % BUCKETS) if timeline_groups else ():
        store.write_bytes(f"{prefix}/{TIMELINE_PARTS}/{group_part(g, chunk.index)}", ipc_bytes(rows))

    hashes = out.hashes.view(np.int64)
    bucket = out.hashes[:, 0] % np.uint64(buckets)
    lines = events["line_number"].combine_chunks()
    for b in np.unique(bucket):
        rows = np.flatnonzero(bucket == b)
        table = pa.table([hashes[rows, 0], hashes[rows, 1], lines.take(rows)], schema=_HASHES)
        store.write_bytes(f"{prefix}/hashes/bucket={b:04d}/{part_name(chunk.index)}",
                          parquet_bytes(table, compression="none"))  # hashes do not compress

    # the bucket is the user's, so grouping by it too splits no user-day
    per_day = (events.select(["user_key", "event_date"]).append_column("bucket", pa.array(key_prefix % buckets))
               .group_by(["user_key", "event_date", "bucket"], use_threads=False).aggregate([("user_key", "count")]))
    users = per_day["user_key"].combine_chunks().cast(pa.string())
    by_user = pa.table([users, per_day["event_date"], per_day["user_key_count"]], schema=_USER_DAYS)
    bucket = per_day["bucket"].to_numpy()
    for b in np.unique(bucket):
        store.write_bytes(f"{prefix}/user_days/bucket={b:04d}/{part_name(chunk.index)}",
                          parquet_bytes(by_user.take(np.flatnonzero(bucket == b))))

    counts = [(ACCEPTED, None, events.num_rows), (DUPLICATE, None, out.duplicates.num_rows), (ERASED, None, n_erased)]
    if out.quarantine.num_rows:
        by_reason = out.quarantine.group_by("reason", use_threads=False).aggregate([("reason", "count")])
        counts += list(zip([QUARANTINED] * by_reason.num_rows, by_reason["reason"].to_pylist(),
                           by_reason["reason_count"].to_pylist(), strict=True))  # fmt: skip
    return pa.table({
        "chunk": np.full(len(counts), chunk.index, np.int32),
        "outcome": [c[0] for c in counts], "reason": [c[1] for c in counts], "n": [c[2] for c in counts],
    }, schema=_TASK_ARROW)  # fmt: skip


def _read_parts(store: Any, keys: list[str]) -> list[tuple[str, pa.Table]]:
    return [(k, pq.read_table(io.BytesIO(store.read_bytes(k)))) for k in keys]


def copies_in_bucket(store: Any, prefix: str, bucket: int) -> pa.Table:
    """``(h1, h2, chunk, line)`` of every line whose hash, in one bucket, more than one chunk accepted."""
    parts = store.list(f"{prefix}/hashes/bucket={bucket:04d}")
    if not parts:
        return pa.table({c: pa.array([], pa.int64()) for c in ("h1", "h2", "chunk", "line")})
    frame = pl.concat([
        pl.from_arrow(t).with_columns(chunk=pl.lit(int(k.rsplit("part-", 1)[1].split(".")[0]), pl.Int64))
        for k, t in _read_parts(store, parts)
    ])  # fmt: skip
    repeated = frame.group_by("h1", "h2").len().filter(pl.col("len") > 1).select("h1", "h2")
    return frame.join(repeated, on=["h1", "h2"]).select("h1", "h2", "chunk", "line").to_arrow()


def bucket_count(spark: SparkSession) -> int:
    """How many hash buckets a run uses (fixed for the run: every chunk task must use the same)."""
    return 4 * spark.sparkContext.defaultParallelism


def _one_task_each(spark: SparkSession, n: int, fn: Callable[[int], pa.Table], schema: T.StructType) -> list:
    """The rows of ``fn(i)`` for i in 0..n-1 (a chunk, a bucket), each call in a Spark task of its own."""
    return one_task_each(spark, n, lambda i: fn(i).to_batches(max_chunksize=1 << 20), schema).collect()


def run_chunks(spark: SparkSession, store: Any, prefix: str, chunks: list[Chunk], key: bytes, buckets: int,
               erased: frozenset[str] = frozenset(), timeline_groups: int = 0) -> dict[tuple[int, str, str | None], int]:  # fmt: skip
    """Run one task per chunk (see :func:`write_chunk`); return ``(chunk, outcome, reason) -> lines``."""
    rows = _one_task_each(
        spark, len(chunks), lambda i: write_chunk(store, prefix, chunks[i], key, buckets, erased, timeline_groups),
        TASK_SCHEMA,
    )  # fmt: skip
    return {(r["chunk"], r["outcome"], r["reason"]): r["n"] for r in rows}


def find_copies(spark: SparkSession, store: Any, prefix: str, buckets: int) -> list[tuple[int, int, int, int]]:
    """``(h1, h2, chunk, line)`` of the lines that more than one chunk accepted: one task per bucket.

    A bucket's files are read by one task and reduced with polars: the shuffle of the row hashes,
    vectorized.
    """
    return [tuple(r) for r in _one_task_each(spark, buckets, lambda b: copies_in_bucket(store, prefix, b), COPY_SCHEMA)]


def suspicious_users(per_day: pl.DataFrame, max_events_per_day: int = BOT_EVENTS_PER_DAY) -> pa.Table:
    """Users with bot-like volume: more than ``max_events_per_day`` events on some day.

    ``per_day``: ``user_key, event_date, events``, where a user-day may come in several parts (one per
    chunk); they are summed. Users are flagged, not dropped: later stages decide whether to exclude
    them. Sorted by user key, in :data:`SUSPICIOUS_SCHEMA`.
    """
    over = (
        per_day.group_by("user_key", "event_date")
        .agg(pl.col("events").sum())
        .filter(pl.col("events") > max_events_per_day)
    )
    flags = over.group_by("user_key").agg(
        pl.col("events").max().alias("max_events_per_day"),
        pl.len().alias("days_over_limit"),
        pl.col("event_date").min().alias("first_day_over_limit"),
    )
    reason = pl.lit(f"more than {max_events_per_day} events in a day")
    return flags.with_columns(reason.alias("reason")).sort("user_key").to_arrow().cast(SUSPICIOUS_SCHEMA)


def flag_suspicious(spark: SparkSession, store: Any, prefix: str, buckets: int,
                    max_events_per_day: int = BOT_EVENTS_PER_DAY) -> pa.Table:  # fmt: skip
    """:func:`suspicious_users` of the run, from the user-day counts the chunk tasks wrote: one task per
    bucket (every day of a user is in the user's bucket)."""

    def in_bucket(bucket: int) -> pa.Table:
        parts = store.list(f"{prefix}/user_days/bucket={bucket:04d}")
        if not parts:
            return SUSPICIOUS_SCHEMA.empty_table()
        return suspicious_users(pl.concat([pl.from_arrow(t) for _, t in _read_parts(store, parts)]), max_events_per_day)

    rows = _one_task_each(spark, buckets, in_bucket, _SUSPICIOUS_SPARK)
    return pa.Table.from_pylist([r.asDict() for r in rows], SUSPICIOUS_SCHEMA).sort_by("user_key")


def resolve_cross_chunk_duplicates(
    store: Any, prefix: str, chunks: list[Chunk], copies: list[tuple[int, int, int, int]]
) -> dict[int, int]:
    """Turn the later copies of a line accepted by several chunks into duplicates of its first copy.

    First = smallest source file name, then line, as inside a chunk. Rewrites only the files of the
    chunks that hold such a copy; returns chunk -> lines moved from accepted to duplicate.
    """
    by_index = {c.index: c for c in chunks}
    groups: dict[tuple[int, int], list[tuple[str, int, int]]] = {}
    for h1, h2, chunk, line in copies:
        groups.setdefault((h1, h2), []).append((by_index[chunk].source_file, line, chunk))
    moved: dict[int, dict[int, int]] = {}  # chunk -> {line: line of the first copy}
    for members in groups.values():
        members.sort()
        _, first_line, _ = members[0]
        for _, line, chunk in members[1:]:
            moved.setdefault(chunk, {})[line] = first_line
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
    dropped = pa.array(sorted(lines), pa.int64())
    for key in events:
        if key.endswith(f"/{part}"):
            _drop_lines(store, key, dropped, lambda data: pq.read_table(io.BytesIO(data)), parquet_bytes)
    for key in staged:
        if key.endswith(piece):
            _drop_lines(store, key, dropped, read_ipc, ipc_bytes)
    dup_key = f"{prefix}/duplicates/{part}"
    old = (pq.read_table(io.BytesIO(store.read_bytes(dup_key))) if store.exists(dup_key)
           else DUPLICATE_FILE_SCHEMA.empty_table())  # fmt: skip
    # copies inside the chunk pointed at the chunk's own first copy, now a duplicate itself
    target = np.array([lines.get(v, v) for v in old["duplicate_of_line"].to_pylist()], np.int64)
    new = pa.table({
        "source_file": [chunk.source_file] * len(lines), "line_number": pa.array(list(lines), pa.int64()),
        "duplicate_of_line": pa.array(list(lines.values()), pa.int64()),
    }, schema=DUPLICATE_FILE_SCHEMA)  # fmt: skip
    patched = pa.concat_tables([old.set_column(2, "duplicate_of_line", pa.array(target, pa.int64())), new])
    store.write_bytes(dup_key, parquet_bytes(patched.sort_by("line_number")))


def _drop_lines(store: Any, key: str, dropped: pa.Array, read: Callable[[bytes], pa.Table],
                encode: Callable[[pa.Table], bytes]) -> None:  # fmt: skip
    table = read(store.read_bytes(key))
    kept = table.filter(pc.invert(pc.is_in(table["line_number"], dropped)))
    if kept.num_rows == 0:  # so the run's event dates stay exactly those of its events
        store.delete_prefix(key)
    elif kept.num_rows != table.num_rows:
        store.write_bytes(key, encode(kept))


def empty_file(name: str) -> bytes:
    """An empty Parquet file of a run-scoped dataset, so a run with no rejects still has its schema."""
    schema = {"quarantine": QUARANTINE_FILE_SCHEMA, "duplicates": DUPLICATE_FILE_SCHEMA}[name]
    return parquet_bytes(schema.empty_table())
