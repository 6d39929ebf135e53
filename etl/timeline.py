"""User timelines: a user bucket's accepted events, sorted by user and time, text dictionary-encoded.

Tables in, tables out (no storage: :mod:`services.core.timelines` reads and writes them). A timeline
table has the event files' columns (:data:`etl.lines.EVENT_FILE_SCHEMA` without the derivable
``event_hour``), with every low-cardinality text column an Arrow dictionary, sorted by
:data:`ORDER` (user, time, then the event's file and line: unique, so the order is total and a
re-sort of sorted pieces is deterministic). Every event of a user lies in one bucket, so a per-user
computation reads one bucket and sees whole users in time order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from etl.lines import EVENT_FILE_SCHEMA

__all__ = ["DICTIONARY_COLUMNS", "ORDER", "TIMELINE_SCHEMA", "USER_KEY", "merge_timelines", "sort_indices", "to_timeline"]

#: The column that names a person: buckets are cut by it, erasure finds a person by it.
USER_KEY: Final[str] = "user_key"
#: The sort order of a timeline (unique per accepted event).
ORDER: Final[tuple[str, ...]] = (USER_KEY, "event_time", "source_file", "line_number")
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
    keys = pa.table({c: _plain(table[c]) for c in ORDER})
    return pc.sort_indices(keys, [(c, "ascending") for c in ORDER])


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
