"""Users as integer codes in a timeline (etl.timeline: each user's events are consecutive rows), so
per-user code joins and groups on small integers instead of 64-character keys.

The one rule for "which user is this row": the funnel's walk, the point-in-time traits
(model.scoring), retention's counts and the first-n features all number a bucket's users this way.
Keys read as dictionaries (unique values per chunk, as Parquet's and the timeline pieces' are) are
compared by index within a chunk and by value only across chunks: no strings compared row by row.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa


def user_runs(keys: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(each row's user as a number 0, 1, ... in order of appearance: its run of equal keys; whether the
    row is its user's first), for keys whose equal values are consecutive (a timeline's user keys,
    plain text or dictionaries). A key that comes back after another is a new run."""
    chunks = [c for c in (keys.chunks if isinstance(keys, pa.ChunkedArray) else [keys]) if len(c)]
    if not chunks:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    if pa.types.is_dictionary(chunks[0].type):
        parts, last = [], None
        for chunk in chunks:
            codes = chunk.indices.to_numpy()
            first = chunk.dictionary[int(codes[0])].as_py()
            parts.append(np.r_[first != last, codes[1:] != codes[:-1]])
            last = chunk.dictionary[int(codes[-1])].as_py()
        starts = np.concatenate(parts)
        return np.cumsum(starts) - 1, starts
    number = pl.Series(pa.chunked_array(chunks)).rle_id().to_numpy().astype(np.int64)
    return number, np.r_[True, number[1:] != number[:-1]]


__all__ = ["user_runs"]
