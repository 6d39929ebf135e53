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
    "BUCKET", "BUCKETS", "DICTIONARY_COLUMNS", "KEY_COLUMNS", "ORDER", "TIMELINE_SCHEMA", "USER_KEY", "bucket_of", "by_group",
    "group_part", "ipc_bytes", "merge_timelines", "piece_name", "plain", "read_ipc", "sort_indices", "timelines_by_bucket",
    "to_timeline", "with_dictionaries",
]  # fmt: skip

#: The column that names a person: buckets are cut by it, erasure finds a person by it.
USER_KEY: Final[str] = "user_key"
#: User buckets of the lake's timelines, fixed for the lake's life (a user must stay in one bucket).
#: 64: a generated 43.8M-event month gives ~0.7M events per bucket, a few tens of MB in memory.
BUCKETS: Final[int] = 64
#: The sort order of a timeline (unique per accepted event).
#: The 64-character pseudonymous keys. A timeline file stores them as Parquet dictionaries, so a per-user
#: job reading them as dictionaries (``run_on_buckets(dictionary=KEY_COLUMNS)``) decodes each key once.
KEY_COLUMNS: Final[tuple[str, ...]] = (USER_KEY, "session_key")
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
    return _ordered(events, sort_indices(events))


def timelines_by_bucket(events: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    """Each bucket's timeline from staged events (the :data:`BUCKET` column, :func:`by_group`): one sort
    of them all by bucket, then the timeline order, and one take, cut at the buckets' boundaries (a
    take per bucket before the sort copied every column twice)."""
    bucket = _one_array(events[BUCKET]).to_numpy(zero_copy_only=False)
    order = pc.sort_indices(pa.table({BUCKET: bucket, **_sort_keys(events)}),
                            [(c, "ascending") for c in (BUCKET, *ORDER)])  # fmt: skip
    ordered = _ordered(events, order, compact=False)
    sorted_bucket = bucket[order.to_numpy()]
    starts = np.flatnonzero(np.r_[True, sorted_bucket[1:] != sorted_bucket[:-1]]) if len(bucket) else []
    ends = [*starts[1:], len(bucket)]
    for start, end in zip(starts, ends, strict=True):
        piece = ordered.slice(start, end - start)
        columns = [_first_seen(_one_array(piece[f.name])) if f.name in DICTIONARY_COLUMNS
                   else _one_array(piece[f.name]) for f in TIMELINE_SCHEMA]  # fmt: skip
        yield int(sorted_bucket[start]), pa.Table.from_arrays(columns, schema=TIMELINE_SCHEMA)


def _ordered(events: pa.Table, order: pa.Array, compact: bool = True) -> pa.Table:
    """``events`` taken in ``order`` as :data:`TIMELINE_SCHEMA`: text is dictionary-encoded before the
    take (indices move, not strings), the user and session keys decoded after it. With ``compact``,
    each dictionary holds only its used values, in order of first use (what encoding the sorted
    column would give)."""
    columns = []
    for f in TIMELINE_SCHEMA:
        column = _one_array(events[f.name])
        if f.name in DICTIONARY_COLUMNS:
            taken = _encoded(column).take(order)
            columns.append(_first_seen(taken) if compact else taken.cast(_DICT))
        else:
            columns.append(column.take(order).cast(f.type))
    return pa.Table.from_arrays(columns, schema=TIMELINE_SCHEMA)


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    """A column as one array. Arrow's concatenation unifies differing dictionaries itself and keeps a
    shared one as it is; unifying first would hash every value again on each call (the sort step's
    largest cost: benchmarks/results/timeline_sort.md)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _encoded(column: pa.Array) -> pa.DictionaryArray:
    return column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)


def _first_seen(column: pa.DictionaryArray) -> pa.DictionaryArray:
    """``column`` with a dictionary of only its used values, in order of first use, int32 indices."""
    indices = column.indices
    used = pc.unique(indices).drop_null().to_numpy()  # in order of first occurrence
    remap = np.zeros(len(column.dictionary) + 1, np.int32)  # + 1: an all-null column's empty dictionary
    remap[used] = np.arange(len(used), dtype=np.int32)
    codes = pc.fill_null(indices, 0).to_numpy()
    mask = None if indices.null_count == 0 else pc.is_null(indices).to_numpy(zero_copy_only=False)
    return pa.DictionaryArray.from_arrays(pa.array(remap[codes], pa.int32(), mask=mask),
                                          column.dictionary.take(pa.array(used, pa.int64())).cast(pa.string()))


def sort_indices(table: pa.Table) -> pa.Array:
    """The permutation putting ``table`` (with the :data:`ORDER` columns, text plain or dictionary) in
    timeline order. Text is compared through ranks: each distinct value is ranked once and the rows
    are sorted on integers (sorting the decoded strings was most of a timeline build)."""
    return pc.sort_indices(pa.table(_sort_keys(table)), [(c, "ascending") for c in ORDER])


def _sort_keys(table: pa.Table) -> dict[str, pa.Array | np.ndarray]:
    return {c: _rank(_one_array(table[c])) for c in ORDER}


def _rank(column: pa.Array) -> pa.Array | np.ndarray:
    """A text column as each value's rank among its distinct values (nulls last, as Arrow sorts
    them); any other column as it is."""
    if not (pa.types.is_dictionary(column.type) or pa.types.is_string(column.type)
            or pa.types.is_large_string(column.type)):  # fmt: skip
        return column
    encoded = _encoded(column)
    n = len(encoded.dictionary)
    # dense: a value listed twice in a dictionary gets one rank, so its rows still sort by time
    rank = np.append(pc.rank(encoded.dictionary, "ascending", tiebreaker="dense").to_numpy().astype(np.int64), n + 1)
    return rank[pc.fill_null(encoded.indices, n).to_numpy()]


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
    they come (a dictionary stays one: decoding the keys here cost more than the group's sort; each
    group's dictionaries hold only its own values, not the whole chunk's keys once per group), plus
    each event's bucket (column :data:`BUCKET`, so the group's sort does not hash the keys again):
    what a timeline build sorts, one task per group. ``bucket``: the events' :func:`bucket_of`, if the
    caller has it already."""
    bucket = bucket_of(events[USER_KEY]) if bucket is None else bucket
    rows = events.select(TIMELINE_SCHEMA.names).append_column(BUCKET, pa.array(bucket.astype(np.int16)))
    group = bucket * groups // BUCKETS
    for g in np.unique(group):
        part = rows.take(np.flatnonzero(group == g))
        yield int(g), pa.table([_first_seen(_one_array(part[c])) if pa.types.is_dictionary(part[c].type)
                                else part[c] for c in part.schema.names], names=part.schema.names)  # fmt: skip


def with_dictionaries(events: pa.Table) -> pa.Table:
    """``events`` with its :data:`DICTIONARY_COLUMNS` dictionary-encoded (once per ingest chunk: the
    event files' writer and the staged timeline pieces then take indices, not strings)."""
    for c in DICTIONARY_COLUMNS:
        if c in events.schema.names and not pa.types.is_dictionary(events.schema.field(c).type):
            events = events.set_column(events.schema.get_field_index(c), c, pc.dictionary_encode(events[c]))
    return events


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
