"""Per-user work over event files on real Spark: whole users per task, collected or through the store."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.user_buckets import per_user_bucket, read_stored
from services.core.storage import LocalStore

pytestmark = pytest.mark.spark

OUT = pa.schema([("user_key", pa.string()), ("events", pa.int64()), ("spend", pa.float64())])


def _per_user(ev: pl.DataFrame) -> pa.Table:
    g = ev.group_by("user_key").agg(events=pl.len().cast(pl.Int64), spend=pl.col("price").sum())
    return g.to_arrow().cast(OUT)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[LocalStore, list[str], pd.DataFrame]:
    """600 rows of 40 users cut by row into 6 files: every user's rows span several files."""
    rng = np.random.default_rng(3)
    ev = pd.DataFrame({"user_key": [f"u{i:02d}" for i in rng.integers(0, 40, 600)], "price": rng.random(600)})
    store, keys = LocalStore(tmp_path_factory.mktemp("buckets")), []
    for i, part in enumerate(np.array_split(ev, 6)):
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), sink)
        keys.append(f"events/part-{i}.parquet")
        store.write_bytes(keys[-1], sink.getvalue())
    want = ev.groupby("user_key").agg(events=("price", "size"), spend=("price", "sum")).reset_index()
    return store, keys, want


def _check(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.sort_values("user_key", ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, check_dtype=False)


def test_every_user_is_worked_on_whole_once(spark, files):
    store, keys, want = files
    _check(per_user_bucket(spark, store, keys, ["user_key", "price"], _per_user, OUT).toPandas(), want)


def test_a_result_through_the_store_is_the_collected_one_and_checked(spark, files):
    store, keys, want = files
    written = per_user_bucket(spark, store, keys, ["user_key", "price"], _per_user, OUT, to_store="tmp/run").collect()
    _check(read_stored(store, written, OUT).to_pandas(), want)
    assert sum(r["rows"] for r in written) == len(want)
    assert sorted(store.list("tmp/run")) == sorted(r["key"] for r in written)
    assert all(r["key"].startswith("tmp/run/bucket-") and r["key"].endswith(".arrow") for r in written)

    short = [(key, rows + 1) if i == 0 else (key, rows) for i, (key, rows) in enumerate(written)]
    with pytest.raises(RuntimeError, match="rows where its task wrote"):
        read_stored(store, short, OUT)
    assert read_stored(store, [], OUT).num_rows == 0
