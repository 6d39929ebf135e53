"""Ingestion's rules over a run's chunks, tables in and tables out (no store, no Spark).

:mod:`services.jobs.ingest_tasks` runs these in Spark tasks, one per chunk or bucket, and reads and
writes the store around them. Each chunk is classified by :func:`etl.lines.classify_batch`; what needs
all chunks at once goes through hash buckets instead of a Spark shuffle (turning one row per line or
per user-day into JVM rows and back cost more than the parsing itself):

- Copies across chunks and files (copies inside a chunk are found by the chunk's classification) are
  found from a 128-bit row hash per accepted line, which each chunk cuts into hash buckets
  (:meth:`ClassifiedChunk.hash_buckets`); one task per bucket reduces them (:func:`copies_in_bucket`).
  So each chunk is read once; only the few chunks holding a copy of a line first seen in another chunk
  are patched (:func:`later_copies`, :func:`drop_lines`, :func:`repointed_duplicates`).
- The bot flag needs each user's events per day over the whole run: each chunk cuts its user-day counts
  into buckets by user (:meth:`ClassifiedChunk.user_day_buckets`), and one task per bucket applies
  :func:`suspicious_users`.
- The run's user timelines: each chunk cuts its accepted events by timeline bucket group
  (:meth:`ClassifiedChunk.timeline_pieces`), patched like the event files when a copy is dropped, so
  the timeline build only sorts each group.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, replace
from datetime import date

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from etl.contract import BOT_EVENTS_PER_DAY
from etl.erasure import ERASED, suppress
from etl.lines import (
    ACCEPTED,
    DUPLICATE,
    DUPLICATE_FILE_SCHEMA,
    EVENT_FILE_SCHEMA,
    QUARANTINED,
    Classified,
    classify_batch,
)
from etl.timeline import BUCKETS, bucket_of, by_group, with_dictionaries

__all__ = [
    "ACCEPTED", "COPIES_SCHEMA", "COUNTS_SCHEMA", "DUPLICATE", "ERASED", "HASHES_SCHEMA", "QUARANTINED",
    "SUSPICIOUS_SCHEMA", "USER_DAYS_SCHEMA", "ClassifiedChunk", "classify_chunk", "copies_in_bucket",
    "drop_lines", "later_copies", "repointed_duplicates", "suspicious_users",
]  # fmt: skip

#: A chunk's lines per outcome and reason: what its task hands back to Spark.
COUNTS_SCHEMA = pa.schema([
    pa.field("chunk", pa.int32(), False), pa.field("outcome", pa.string(), False), ("reason", pa.string()),
    pa.field("n", pa.int64(), False),
])  # fmt: skip
#: The suspicious-users dataset (docs/outputs.md).
SUSPICIOUS_SCHEMA = pa.schema([
    ("user_key", pa.string()), ("max_events_per_day", pa.int64()), ("days_over_limit", pa.int64()),
    ("first_day_over_limit", pa.date32()), ("reason", pa.string()),
])  # fmt: skip
#: A line first seen by more than one chunk: its row hash, the chunk and its line number.
COPIES_SCHEMA = pa.schema([pa.field(c, pa.int64(), False) for c in ("h1", "h2", "chunk", "line")])
#: One accepted line's row hash in a chunk's hash bucket.
HASHES_SCHEMA = pa.schema([("h1", pa.int64()), ("h2", pa.int64()), ("line", pa.int64())])
#: A chunk's accepted events per user and day.
USER_DAYS_SCHEMA = pa.schema([("user_key", pa.string()), ("event_date", pa.date32()), ("events", pa.int64())])


@dataclass(frozen=True)
class ClassifiedChunk:
    """One chunk's classified lines, and the tables cut from them that the run's later steps need.

    Each cut is a generator, so a task writes one table before the next is made (a chunk's events are
    held once, not once per output)."""

    index: int  # unique in the run
    out: Classified  # events already in the shared dictionary encoding (etl.timeline.with_dictionaries)
    erased: int
    key_prefix: np.ndarray  # each event's user key hashed once (below 2**60): timeline and user-day buckets

    def events_by_day(self) -> Iterator[tuple[date, pa.Table]]:
        """The accepted events of each event date, in the event files' columns."""
        events = self.out.events
        for day in pc.unique(events["event_date"]).to_pylist():
            rows = events.filter(pc.equal(events["event_date"], pa.scalar(day, pa.date32())))
            yield day, rows.select(EVENT_FILE_SCHEMA.names)

    def timeline_pieces(self, groups: int) -> Iterator[tuple[int, pa.Table]]:
        """The accepted events cut by timeline bucket group (:func:`etl.timeline.by_group`)."""
        return by_group(self.out.events, groups, self.key_prefix % BUCKETS)

    def hash_buckets(self, buckets: int) -> Iterator[tuple[int, pa.Table]]:
        """Each accepted line's row hash (:data:`HASHES_SCHEMA`), by bucket: first hash mod ``buckets``."""
        hashes = self.out.hashes.view(np.int64)
        bucket = self.out.hashes[:, 0] % np.uint64(buckets)
        lines = self.out.events["line_number"].combine_chunks()
        for b in np.unique(bucket):
            rows = np.flatnonzero(bucket == b)
            yield int(b), pa.table([hashes[rows, 0], hashes[rows, 1], lines.take(rows)], schema=HASHES_SCHEMA)

    def user_day_buckets(self, buckets: int) -> Iterator[tuple[int, pa.Table]]:
        """The accepted events per user and day (:data:`USER_DAYS_SCHEMA`), by the user's timeline bucket
        (:func:`etl.timeline.bucket_of`) mod ``buckets``: every day of a user is in one bucket."""
        events = self.out.events
        # the bucket is the user's, so grouping by it too splits no user-day
        per_day = (events.select(["user_key", "event_date"]).append_column("bucket", pa.array(self.key_prefix % buckets))
                   .group_by(["user_key", "event_date", "bucket"], use_threads=False).aggregate([("user_key", "count")]))  # fmt: skip
        users = per_day["user_key"].combine_chunks().cast(pa.string())
        by_user = pa.table([users, per_day["event_date"], per_day["user_key_count"]], schema=USER_DAYS_SCHEMA)
        bucket = per_day["bucket"].to_numpy()
        for b in np.unique(bucket):
            yield int(b), by_user.take(np.flatnonzero(bucket == b))

    def counts(self) -> pa.Table:
        """The chunk's lines per outcome and reason (:data:`COUNTS_SCHEMA`)."""
        out = self.out
        counts = [(ACCEPTED, None, out.events.num_rows), (DUPLICATE, None, out.duplicates.num_rows),
                  (ERASED, None, self.erased)]  # fmt: skip
        if out.quarantine.num_rows:
            by_reason = out.quarantine.group_by("reason", use_threads=False).aggregate([("reason", "count")])
            counts += list(zip([QUARANTINED] * by_reason.num_rows, by_reason["reason"].to_pylist(),
                               by_reason["reason_count"].to_pylist(), strict=True))  # fmt: skip
        return pa.table({
            "chunk": np.full(len(counts), self.index, np.int32),
            "outcome": [c[0] for c in counts], "reason": [c[1] for c in counts], "n": [c[2] for c in counts],
        }, schema=COUNTS_SCHEMA)  # fmt: skip


def classify_chunk(data: bytes, key: bytes, source_file: str, first_line: int, index: int,
                   erased: Set[str] = frozenset()) -> ClassifiedChunk:  # fmt: skip
    """Classify a chunk's bytes (its first line is ``first_line`` of ``source_file``), without the lines
    of people in ``erased`` (digests of their keys, :mod:`etl.erasure`), counted as
    :data:`~etl.erasure.ERASED`. The event files and the timeline pieces share one dictionary encoding."""
    out, n_erased = suppress(classify_batch(data, key, source_file, first_line), erased)
    out = replace(out, events=with_dictionaries(out.events))
    return ClassifiedChunk(index, out, n_erased, bucket_of(out.events["user_key"], 1 << 60))


def copies_in_bucket(parts: Iterable[tuple[int, pa.Table]]) -> pa.Table:
    """``(h1, h2, chunk, line)`` of every line that more than one chunk accepted, from one hash bucket's
    ``(chunk, hashes)`` parts (:meth:`ClassifiedChunk.hash_buckets`): the shuffle of the row hashes,
    vectorized."""
    frames = [pl.from_arrow(t).with_columns(chunk=pl.lit(chunk, pl.Int64)) for chunk, t in parts]
    if not frames:
        return pa.table({c: pa.array([], pa.int64()) for c in COPIES_SCHEMA.names})
    frame = pl.concat(frames)
    repeated = frame.group_by("h1", "h2").len().filter(pl.col("len") > 1).select("h1", "h2")
    return frame.join(repeated, on=["h1", "h2"]).select("h1", "h2", "chunk", "line").to_arrow()


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


def later_copies(copies: Iterable[tuple[int, int, int, int]], source_files: Mapping[int, str]) -> dict[int, dict[int, int]]:
    """chunk -> {line: line of the first copy} for the later copies of each line several chunks
    accepted (``copies``: :func:`copies_in_bucket` rows; ``source_files``: chunk -> its file).

    First = smallest source file name, then line, as inside a chunk.
    """
    groups: dict[tuple[int, int], list[tuple[str, int, int]]] = {}
    for h1, h2, chunk, line in copies:
        groups.setdefault((h1, h2), []).append((source_files[chunk], line, chunk))
    moved: dict[int, dict[int, int]] = {}
    for members in groups.values():
        members.sort()
        _, first_line, _ = members[0]
        for _, line, chunk in members[1:]:
            moved.setdefault(chunk, {})[line] = first_line
    return moved


def drop_lines(table: pa.Table, lines: Iterable[int]) -> pa.Table:
    """``table`` (event rows or staged timeline rows) without the rows of ``lines``."""
    dropped = pa.array(sorted(lines), pa.int64())
    return table.filter(pc.invert(pc.is_in(table["line_number"], dropped)))


def repointed_duplicates(old: pa.Table, source_file: str, lines: Mapping[int, int]) -> pa.Table:
    """A chunk's duplicates (``old``, :data:`~etl.lines.DUPLICATE_FILE_SCHEMA`) once its ``lines``
    (line -> line of the first copy, :func:`later_copies`) are duplicates too, sorted by line."""
    # copies inside the chunk pointed at the chunk's own first copy, now a duplicate itself
    target = np.array([lines.get(v, v) for v in old["duplicate_of_line"].to_pylist()], np.int64)
    new = pa.table({
        "source_file": [source_file] * len(lines), "line_number": pa.array(list(lines), pa.int64()),
        "duplicate_of_line": pa.array(list(lines.values()), pa.int64()),
    }, schema=DUPLICATE_FILE_SCHEMA)  # fmt: skip
    patched = pa.concat_tables([old.set_column(2, "duplicate_of_line", pa.array(target, pa.int64())), new])
    return patched.sort_by("line_number")
