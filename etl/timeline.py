"""User timelines: a user bucket's accepted events, sorted by user and time, text dictionary-encoded.

Tables in, tables out (no storage: :mod:`services.core.timelines` reads and writes them). A timeline
table has the event files' columns (:data:`etl.lines.EVENT_FILE_SCHEMA` without the derivable
``event_hour``), with every low-cardinality text column an Arrow dictionary, sorted by
:data:`ORDER` (user, time, then the event's file and line: unique, so the order is total and a
re-sort of sorted pieces is deterministic). Every event of a user lies in one bucket, so a per-user
computation reads one bucket and sees whole users in time order.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from etl.lines import EVENT_FILE_SCHEMA

__all__ = [
    "BUCKET", "BUCKETS", "DICTIONARY_COLUMNS", "ORDER", "TIMELINE_SCHEMA", "USER_KEY", "bucket_of", "by_group",
    "group_part", "ipc_bytes", "merge_timelines", "piece_name", "plain", "read_ipc", "sort_indices", "to_timeline",
]  # fmt: skip

#: The column that names a person: buckets are cut by it, erasure finds a person by it.
USER_KEY: Final[str] = "user_key"
#: User buckets of the lake's timelines, fixed for the lake's life (a user must stay in one bucket).
#: 64: a generated 43.8M-event month gives ~0.7M events per bucket, a few tens of MB in memory.
BUCKETS: Final[int] = 64
#: The sort order of a timeline (unique per accepted event).
ORDER: Final[tuple[str, ...]] = (USER_KEY, "event_time", "source_file", "line_number")
#: The bucket of each staged event (:func:`by_group`); not a timeline column.
BUCKET: Final[str] = "bucket"
#: Text columns with few distinct values, stored as dictionaries (in memory and in Parquet).
DICTIONARY_COLUMNS: Final[tuple[str, ...]] = (
    "event_type", "category_code", "category_l1", "category_l2", "category_l3", "brand", "source_file",
)  # fmt: skip
_DICT = pa.dictionary(pa.int32(), pa.string())
TIMELINE_SCHEMA: Final[pa.Schema] = pa.schema(
    [pa.field(f.name, _DICT if f.name in DICTIONARY_COLUMNS else f.type) for f in EVENT_FILE_SCHEMA
     if f.name != "event_hour"]
)  # fmt: skip


def to_timeline(events: pa.Table) -> pa.Table:
    """Events (at least the columns of :data:`TIMELINE_SCHEMA`, text plain or dictionary) as a timeline."""
    plain = pa.table({
        f.name: _plain(events[f.name]) if f.name in DICTIONARY_COLUMNS else events[f.name].cast(f.type)
        for f in TIMELINE_SCHEMA
    })  # fmt: skip
    ordered = plain.take(sort_indices(plain))
    columns = [pc.dictionary_encode(ordered[f.name].combine_chunks()).cast(_DICT) if f.name in DICTIONARY_COLUMNS
               else ordered[f.name].combine_chunks() for f in TIMELINE_SCHEMA]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=TIMELINE_SCHEMA)


def sort_indices(table: pa.Table) -> pa.Array:
    """The permutation putting ``table`` (with the :data:`ORDER` columns, text plain or dictionary) in
    timeline order (Arrow sorts no dictionaries: their values are compared)."""
    return pc.sort_indices(plain(table, ORDER), [(c, "ascending") for c in ORDER])


def plain(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """``columns`` of ``table`` with every dictionary decoded to its values (what per-user code that
    compares or sorts text wants)."""
    return pa.table({c: _plain(table[c]) for c in columns})


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column.cast(pa.string()) if pa.types.is_dictionary(column.type) else column


def merge_timelines(parts: Sequence[pa.Table]) -> pa.Table:
    """Sorted timeline pieces of one bucket (one per ingestion run, or a compacted one) as one timeline.

    A user's events may lie in several pieces (a user comes back in a later run), so the pieces are
    re-sorted, not concatenated; dictionaries are unified first.
    """
    if not parts:
        return TIMELINE_SCHEMA.empty_table()
    if len(parts) == 1:
        return parts[0]
    return to_timeline(pa.concat_tables([p.select(TIMELINE_SCHEMA.names) for p in parts]).unify_dictionaries())


def bucket_of(user_keys: pa.Array | pa.ChunkedArray, buckets: int = BUCKETS) -> np.ndarray:
    """Each user's bucket: the first 15 hex digits of its HMAC pseudonym mod ``buckets`` (uniform, and
    the same in every run and every library version); a key that is not hex (hand-made test keys)
    falls back to its CRC-32. The one rule: ingestion's per-user files and the timelines use it."""
    keys = pl.Series(user_keys).cast(pl.String)
    prefix = keys.str.slice(0, 15).str.to_integer(base=16, strict=False)
    missing = prefix.is_null().to_numpy()
    out = prefix.fill_null(0).to_numpy().astype(np.int64)
    if missing.any():
        out[missing] = [zlib.crc32(v.encode()) for v in keys.filter(pl.Series(missing)).to_list()]
    return out % buckets


def by_group(events: pa.Table, groups: int, bucket: np.ndarray | None = None) -> Iterator[tuple[int, pa.Table]]:
    """Events (at least the :data:`TIMELINE_SCHEMA` columns) cut into ``groups`` groups of consecutive
    buckets (bucket ``b`` is in group ``b * groups // BUCKETS``), the timeline's columns only, as
    they come (a dictionary stays one: decoding the keys here cost more than the group's sort), plus
    each event's bucket (column :data:`BUCKET`, so the group's sort does not hash the keys again):
    what a timeline build sorts, one task per group. ``bucket``: the events' :func:`bucket_of`, if the
    caller has it already."""
    bucket = bucket_of(events[USER_KEY]) if bucket is None else bucket
    rows = events.select(TIMELINE_SCHEMA.names).append_column(BUCKET, pa.array(bucket.astype(np.int16)))
    group = bucket * groups // BUCKETS
    for g in np.unique(group):
        yield int(g), rows.take(np.flatnonzero(group == g))


def piece_name(part: int) -> str:
    """The file name of a staged piece from task (or chunk) ``part``, in every group's directory."""
    return f"part-{part:05d}.arrow"


def group_part(group: int, part: int) -> str:
    """Where a group's piece from task (or chunk) ``part`` is staged, under a build's scratch prefix."""
    return f"group={group:04d}/{piece_name(part)}"


def ipc_bytes(table: pa.Table) -> bytes:
    """A staged piece as an Arrow IPC file (read back with :func:`read_ipc`; no encoding to undo), its
    buffers LZ4-compressed: a third of the bytes (a staged event was ~260 bytes plain, the month's
    pieces 4.5 GB on disk), written and read in less CPU time than the plain buffers' copies."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=_STAGED) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


_STAGED: Final[pa.ipc.IpcWriteOptions] = pa.ipc.IpcWriteOptions(compression="lz4")


def read_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_file(pa.BufferReader(data)).read_all()
