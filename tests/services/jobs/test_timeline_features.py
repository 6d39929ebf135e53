"""The features job (the numpy implementation on each timeline bucket, in Spark tasks) equals the retired
Spark columns (etl/aggregates.py + etl/features.py) on the same lakes, every user and column, to 1e-12
(integers exact): a synthetic lake of two runs with a flagged user, and the real REES46 rows ingested
with a later file of returning users, before and after compaction."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.local_features import FEATURES_ARROW
from services.core.catalog import EVENTS, FEATURES, SUSPICIOUS_USERS
from services.core.lake import Lake
from services.core.timelines import backfill_timelines, compact_timelines
from services.jobs.features import run_features
from services.jobs.ingest import ingest_files
from tests.etl.test_features import synthetic_rows
from tests.services.core.test_timelines import later_file
from tests.services.jobs.test_features import commit_run

pytestmark = pytest.mark.spark

TOLERANCE = 1e-12


def _read(lake: Lake, prefix: str) -> pd.DataFrame:
    tables = [pq.read_table(io.BytesIO(lake.store.read_bytes(k))) for k in lake.store.list(prefix) if k.endswith(".parquet")]
    frame = pa.concat_tables(tables).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}.get)
    for col in ("first_event_time", "last_event_time", "last_purchase_time", "as_of"):
        # Spark writes INT96 timestamps (read back naive, UTC wall time); the timelines path writes UTC micros
        when = pd.to_datetime(frame[col])
        frame[col] = (when.dt.tz_localize("UTC") if when.dt.tz is None else when).dt.as_unit("us")
    return frame.sort_values("user_key", ignore_index=True)


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> float:
    """Every column equal (floats within TOLERANCE, nulls in the same places); returns the largest gap."""
    assert list(got.columns) == list(want.columns) == FEATURES_ARROW.names
    assert got["user_key"].tolist() == want["user_key"].tolist()
    worst = 0.0
    for col in want.columns:
        g, w = got[col], want[col]
        assert g.isna().tolist() == w.isna().tolist(), col
        if pd.api.types.is_float_dtype(w):
            gap = np.abs(g.to_numpy(float) - w.to_numpy(float))
            worst = max(worst, float(np.nanmax(gap, initial=0.0)))
            np.testing.assert_allclose(g, w, rtol=TOLERANCE, atol=TOLERANCE, err_msg=col)
        else:
            assert g.tolist() == w.tolist(), col
    return worst


def spark_features(spark, lake: Lake, as_of: datetime | None, out: str) -> None:
    """The retired Spark job's features of the lake's committed events (``finalize(aggregate_events(...))``,
    what ``run_features(full=True)`` published before), written under ``out`` in the lake."""
    from etl.features import compute_features
    from services.core.spark import read_run_dataset

    events, flagged = read_run_dataset(spark, lake, EVENTS), read_run_dataset(spark, lake, SUSPICIOUS_USERS)
    compute_features(events, as_of=as_of, suspicious_users=flagged).write.parquet(str(lake.store.local_path(out)))


def _compare(spark, lake: Lake, as_of: datetime | None = None) -> tuple[float, int]:
    job = run_features(spark, lake, full=True, as_of=as_of)
    got = _read(lake, f"{FEATURES}/{job['version']}")
    spark_features(spark, lake, as_of, "scratch/spark")
    want = _read(lake, "scratch/spark")
    assert job["n_users"] == len(want) == len(got)
    lake.store.delete_prefix("scratch")
    return assert_same(got, want), len(want)


def test_equal_on_a_synthetic_lake_of_two_runs(spark, local_lake) -> None:
    rows = synthetic_rows(150, seed=5)
    cut = datetime(2019, 11, 10, tzinfo=UTC)
    commit_run(spark, local_lake, "r1", [r for r in rows if r[0] < cut], suspicious=["user0007"])
    commit_run(spark, local_lake, "r2", [r for r in rows if r[0] >= cut])
    assert backfill_timelines(spark, local_lake).keys() == {"r1", "r2"}
    gap, users = _compare(spark, local_lake)
    assert users == 150 and gap < TOLERANCE
    _compare(spark, local_lake, as_of=datetime(2019, 12, 20, 6, 30, tzinfo=UTC))


def test_equal_on_the_real_rees46_rows(spark, local_lake, key, rees46_sample, tmp_path) -> None:
    users = pd.read_csv(rees46_sample, dtype=str)["user_id"].drop_duplicates().iloc[:40].tolist()
    assert ingest_files(spark, local_lake, [rees46_sample], key)["status"] == "committed"
    later = later_file(tmp_path / "2019-Nov.csv", [*users, "900000001"])
    assert ingest_files(spark, local_lake, [later], key)["status"] == "committed"
    gap, n = _compare(spark, local_lake)
    assert n > 1000
    compact_timelines(spark, local_lake)  # one file per bucket: the same features
    _compare(spark, local_lake)
    print(f"REES46: {n} users, largest float gap {gap:.3g}")
