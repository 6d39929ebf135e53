"""The per-file key index (services/jobs/erasure_index.py): an erasure opens only the files that hold
the person, and the index can never hide one.

No Spark: small Parquet files written with pyarrow into a local lake. Which file holds whom is computed
independently by reading every file whole with pandas.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.erasure import key_digest
from etl.pseudonymize import pseudonymize
from services.core import erasure_ledger
from services.core.catalog import DATASETS, EVENTS, FEATURES, QUARANTINE
from services.core.lake import Lake
from services.core.storage import LocalStore
from services.jobs.erasure import run_erasure
from services.jobs.erasure_index import (
    INDEX_ROOT,
    KeyIndex,
    data_files,
    refresh,
    refresh_due,
    table_fingerprints,
    wanted,
)
from tests.conftest import TEST_KEY
from tests.erasure_scan import scan_tree

KEY = TEST_KEY.encode()


def _key(i: int) -> str:
    return pseudonymize(str(512_000_000 + i), KEY)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """Ten events files (users spread over a few files each), a features version, a quarantine file."""
    lk = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    root = tmp_path / "lake"
    for f in range(10):
        users = [(f * 7 + j) % 40 for j in range(12)]
        table = pa.table({"user_key": [_key(u) for u in users], "source_file": ["a.csv"] * 12,
                          "line_number": list(range(f * 12, f * 12 + 12)), "price": [1.0] * 12})  # fmt: skip
        path = root / EVENTS / f"event_date=2019-11-{f + 1:02d}" / "run_id=r1" / "part-0.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(table, path)
    (root / FEATURES / "v1").mkdir(parents=True)
    pq.write_table(pa.table({"user_key": [_key(u) for u in range(40)], "n": list(range(40))}),
                   root / FEATURES / "v1" / "part-0.parquet")  # fmt: skip
    (root / QUARANTINE / "run_id=r1").mkdir(parents=True)
    pq.write_table(pa.table({"raw_line": [f"x,{_key(3)},y", "no key here"], "reason": ["bad", "bad"]}),
                   root / QUARANTINE / "run_id=r1" / "part-0.parquet")  # fmt: skip
    return lk


def _holding(lake: Lake, dataset: str, key: str) -> set[str]:
    """The files of a dataset that hold ``key`` anywhere in any string column (pandas, whole files)."""
    out = set()
    for info in data_files(lake, DATASETS[dataset]):
        df = pd.read_parquet(lake.store.local_path(info.key))
        if any(df[c].astype(str).str.contains(key, regex=False).any() for c in df.columns if df[c].dtype == object):
            out.add(info.key)
    return out


def test_the_index_finds_exactly_the_files_that_hold_a_person(lake: Lake) -> None:
    assert refresh_due(lake)[0]
    assert refresh(lake) == {"files": 12, "indexed": 12, "removed": 0}
    assert refresh_due(lake) == (False, "every file indexed")
    index = KeyIndex(lake)
    for user in (3, 17, 39):
        want = wanted([key_digest(_key(user))])
        for name in (EVENTS, FEATURES, QUARANTINE):
            got = set(index.candidates(DATASETS[name], data_files(lake, DATASETS[name]), want))
            assert got == _holding(lake, name, _key(user)), (user, name)
    assert index.built == 0  # every answer came from the index files, none from the data
    found = scan_tree(Path(lake.store.uri), [_key(3)])
    assert found and [f for f in found if f"/{INDEX_ROOT}/" in f] == []  # the index holds no key


def test_a_replaced_file_is_indexed_again_and_never_trusted_stale(lake: Lake) -> None:
    refresh(lake)
    target = _key(3)
    (victim,) = [i.key for i in data_files(lake, DATASETS[EVENTS]) if "2019-11-05" in i.key]
    assert victim not in _holding(lake, EVENTS, target)
    path = lake.store.local_path(victim)
    table = pq.read_table(path)
    pq.write_table(table.set_column(0, "user_key", pa.array([target] * table.num_rows)), path)
    os.utime(path, (1, 1))  # another time than the one the index recorded, whatever the size
    index = KeyIndex(lake)
    hits = index.candidates(DATASETS[EVENTS], data_files(lake, DATASETS[EVENTS]), wanted([key_digest(target)]))
    assert victim in hits and index.built == 1


def test_an_erasure_opens_only_the_files_that_hold_the_person_and_reindexes_them(lake: Lake) -> None:
    refresh(lake)
    target = _key(3)
    events_with = _holding(lake, EVENTS, target)
    assert 0 < len(events_with) < 10
    erasure_ledger.record(lake, [key_digest(target)], "key")
    out = run_erasure(lake, KEY)
    assert out["files_opened"][EVENTS] == len(events_with) and out["events_files"] == 10
    assert out["events_files_rewritten"] == len(events_with)
    assert out["files_opened"][FEATURES] == 1 and out["rows_removed"][QUARANTINE] == 1
    assert scan_tree(Path(lake.store.uri), [target]) == []
    # the rewritten files' indexes no longer hold the person, and are valid (nothing read again)
    index = KeyIndex(lake)
    for name in (EVENTS, FEATURES, QUARANTINE):
        d = DATASETS[name]
        assert index.candidates(d, data_files(lake, d), wanted([key_digest(target)])) == []
    assert index.built == 0
    for name in (EVENTS, FEATURES, QUARANTINE):  # each index equals one built afresh from the file
        d = DATASETS[name]
        for info in data_files(lake, d):
            cols = [c for c in d.user_keys if c in pq.read_schema(lake.store.local_path(info.key)).names]
            fresh = table_fingerprints(pq.read_table(lake.store.local_path(info.key), columns=cols), d, {})
            assert np.array_equal(index.of(d, info), fresh)
    # a file deleted later (retention): its entry goes with the next refresh
    lake.store.delete_prefix(f"{FEATURES}/v1")
    assert refresh_due(lake) == (True, "1 index entries of deleted files")
    assert refresh(lake)["removed"] == 1
