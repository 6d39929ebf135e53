"""The features job (the numpy implementation on each timeline bucket, in Spark tasks) equals one call of
the same implementation on all the lake's committed events read from their event files, every user and
column, to 1e-12 (integers exact), and an independent pandas computation on the columns it covers: a
synthetic lake of two runs with a flagged user, and the real REES46 rows ingested with a later file of
returning users, before and after compaction.

Until the Spark column version (etl/aggregates.py + the Spark half of etl/features.py) was retired, this
test compared the job with it on the same lakes (also to 1e-12; figures in benchmarks/results/features.md)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.contract import EVENT_COLUMNS
from etl.local_features import FEATURES_ARROW, compute_features_local
from services.core.catalog import EVENTS, FEATURES, SUSPICIOUS_USERS
from services.core.lake import Lake
from services.core.timelines import backfill_timelines, compact_timelines
from services.jobs.features import run_features
from services.jobs.ingest import ingest_files
from tests.etl.test_features import pandas_features, synthetic_rows
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


def events_features(lake: Lake, as_of: datetime | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every column by compute_features_local on all committed events at once, pandas_features' columns)
    of the lake's event files, read by pyarrow (no timelines, no buckets, no Spark)."""
    root = lake.store.local_path("")
    events = pa.concat_tables([pq.read_table(root / k) for k in lake.committed_files(EVENTS)]).to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype()}.get)  # 19-digit category ids stay exact
    events["event_time"] = pd.to_datetime(events["event_time"], utc=True)
    flagged = pa.concat_tables([pq.read_table(root / k) for k in lake.committed_files(SUSPICIOUS_USERS)]
                               or [pa.table({"user_key": pa.array([], pa.string())})])["user_key"].to_pylist()  # fmt: skip
    local = compute_features_local(events, as_of=as_of, suspicious_users=flagged)
    for col in ("first_event_time", "last_event_time", "last_purchase_time", "as_of"):
        local[col] = local[col].dt.as_unit("us")
    local["recency_days"] = local["recency_days"].astype("Int32")
    rows = list(events.reindex(columns=list(EVENT_COLUMNS)).itertuples(index=False, name=None))
    return local.sort_values("user_key", ignore_index=True), pandas_features(rows)


def _compare(lake: Lake, job: dict, as_of: datetime | None = None) -> tuple[float, int]:
    got = _read(lake, f"{FEATURES}/{job['version']}")
    want, independent = events_features(lake, as_of)
    assert job["n_users"] == len(want) == len(got)
    gap = assert_same(got, want)
    if as_of is None:  # pandas_features measures at the latest event
        by_user = got.set_index("user_key")
        for col in ("n_events", "n_sessions", "frequency", "monetary", "recency_days", "tenure_days", "price_level",
                    "median_session_duration_s", "cart_abandonment_rate", "brand_concentration"):  # fmt: skip
            np.testing.assert_allclose(by_user[col].astype(float), independent[col].astype(float), rtol=1e-9, atol=1e-12,
                                       err_msg=col)  # fmt: skip
    return gap, len(want)


def _run(spark, lake: Lake, as_of: datetime | None = None) -> tuple[float, int]:
    return _compare(lake, run_features(spark, lake, full=True, as_of=as_of), as_of)


def test_equal_on_a_synthetic_lake_of_two_runs(spark, local_lake) -> None:
    rows = synthetic_rows(150, seed=5)
    cut = datetime(2019, 11, 10, tzinfo=UTC)
    commit_run(spark, local_lake, "r1", [r for r in rows if r[0] < cut], suspicious=["user0007"])
    commit_run(spark, local_lake, "r2", [r for r in rows if r[0] >= cut])
    assert backfill_timelines(spark, local_lake).keys() == {"r1", "r2"}
    gap, users = _run(spark, local_lake)
    assert users == 150 and gap < TOLERANCE
    _run(spark, local_lake, as_of=datetime(2019, 12, 20, 6, 30, tzinfo=UTC))


def test_equal_on_the_real_rees46_rows(spark, local_lake, key, rees46_sample, tmp_path) -> None:
    users = pd.read_csv(rees46_sample, dtype=str)["user_id"].drop_duplicates().iloc[:40].tolist()
    assert ingest_files(spark, local_lake, [rees46_sample], key)["status"] == "committed"
    later = later_file(tmp_path / "2019-Nov.csv", [*users, "900000001"])
    assert ingest_files(spark, local_lake, [later], key)["status"] == "committed"
    gap, n = _run(spark, local_lake)
    assert n > 1000
    compact_timelines(spark, local_lake)  # one file per bucket: the same features
    _run(spark, local_lake)
    print(f"REES46: {n} users, largest float gap {gap:.3g}")
