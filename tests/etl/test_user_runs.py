"""etl.user_runs numbers a timeline's users: against pandas' run numbering of the decoded keys, for
plain keys and for dictionaries that differ per chunk (a user's rows spanning two chunks stay one run;
a key that comes back after another is a new run)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from etl.user_runs import user_runs

KEYS = ["a", "a", "b", "c", "c", "c", "a", "d", "d"]  # "a" comes back: a new run


def _expected(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    s = pd.Series(keys)
    starts = (s != s.shift()).to_numpy()
    return starts.cumsum() - 1, starts


def _check(keys: pa.Array | pa.ChunkedArray) -> None:
    numbers, starts = user_runs(keys)
    want_numbers, want_starts = _expected(keys.to_pylist())
    np.testing.assert_array_equal(numbers, want_numbers)
    np.testing.assert_array_equal(starts, want_starts)


def test_plain_keys_one_chunk_and_many():
    _check(pa.array(KEYS))
    _check(pa.chunked_array([pa.array(KEYS[:4]), pa.array([], pa.string()), pa.array(KEYS[4:])]))


def test_dictionaries_differing_per_chunk_are_compared_by_value_across_chunks():
    # chunk 1 ends inside "c"'s run and chunk 2 codes "c" differently: still one run
    first = pa.DictionaryArray.from_arrays(pa.array([0, 0, 1, 2, 2], pa.int32()), pa.array(["a", "b", "c"]))
    second = pa.DictionaryArray.from_arrays(pa.array([1, 0, 2, 2], pa.int32()), pa.array(["a", "c", "d"]))
    keys = pa.chunked_array([first, second])
    assert keys.to_pylist() == KEYS[:5] + KEYS[5:]
    _check(keys)
    numbers, _starts = user_runs(keys)
    assert numbers.tolist() == [0, 0, 1, 2, 2, 2, 3, 4, 4]  # the independent count, by hand
    # a chunk boundary between two users starts a new run even where the codes happen to match
    _check(pa.chunked_array([pa.array(["a", "a"]).dictionary_encode(), pa.array(["b"]).dictionary_encode()]))


def test_no_rows():
    numbers, starts = user_runs(pa.chunked_array([], pa.string()))
    assert len(numbers) == len(starts) == 0
