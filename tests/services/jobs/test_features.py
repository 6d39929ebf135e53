"""The features job on a real local lake: new committed runs published from the timelines, pointers,
a crash mid-run, an older release's lake, and an end-to-end check of RFM against pandas computed
straight from raw CSV files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from etl.contract import EVENT_SCHEMA
from etl.pseudonymize import pseudonymize
from services.core.catalog import CATEGORY_PRICES, EVENTS, FEATURES, SUSPICIOUS_USERS
from services.jobs import features as features_job
from services.jobs.features import LEGACY_AGGREGATES, features_behind, run_features
from services.jobs.ingest import ingest_files
from tests.etl.test_features import (
    assert_frames_equal,
    features_of,
    pandas_features,
    synthetic_rows,
    to_pandas,
)

pytestmark = pytest.mark.spark

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"


def read_features(lake) -> pa.Table:
    """The current features version as published, read from the lake's store (local disk or S3)."""
    version = lake.current_version(FEATURES)
    keys = [k for k in lake.store.list(f"{FEATURES}/{version}") if k.endswith(".parquet")]
    return pa.concat_tables([pq.read_table(io.BytesIO(lake.store.read_bytes(k))) for k in keys])


def commit_run(spark, lake, run_id, rows, status="committed", suspicious=()):
    """Lay out a run as ingest does (events/event_date=D/run_id=R, flags) and write its summary."""
    staging = lake.staging_dir(run_id)
    df = spark.createDataFrame(rows, EVENT_SCHEMA).withColumn("line_number", F.monotonically_increasing_id())
    df.write.partitionBy("event_date").parquet(str(staging / "events"))
    lake.publish_run_dataset(staging / "events", EVENTS, run_id)
    if suspicious:
        flags = spark.createDataFrame([(u,) for u in suspicious], "user_key string")
        flags.write.parquet(str(staging / "flags"))
        lake.publish_run_dataset(staging / "flags", SUSPICIOUS_USERS, run_id)
    lake.write_run({"run_id": run_id, "status": status})


def test_new_runs_are_published_from_the_timelines_without_rereading_old_events(spark, local_lake):
    rows = synthetic_rows(150, seed=5)
    cut = datetime(2019, 11, 10, tzinfo=UTC)
    first = [r for r in rows if r[0] < cut]
    second = [r for r in rows if r[0] >= cut]
    commit_run(spark, local_lake, "r1", first, suspicious=["user0007"])
    s1 = run_features(spark, local_lake)  # r1 was laid out without timelines: built once, then read
    assert s1["status"] == "published" and s1["new_run_ids"] == ["r1"] and s1["n_events"] == len(first)
    assert s1["backfilled_runs"] == ["r1"]

    # Remove r1's events from the lake: its timelines hold them, the features no longer read events.
    assert local_lake.store.delete_prefix(EVENTS) > 0
    commit_run(spark, local_lake, "r2", second)
    commit_run(spark, local_lake, "r3", rows[:50], status="failed")  # never committed: ignored
    s2 = run_features(spark, local_lake)
    assert s2["new_run_ids"] == ["r2"] and s2["folded_run_ids"] == ["r1", "r2"]
    assert s2["n_events"] == len(rows) and s2["n_suspicious"] == 1

    want = features_of(rows, suspicious={"user0007"})  # every user's events in one bucket, one run
    got = to_pandas(read_features(local_lake))
    assert_frames_equal(got, want)
    independent = pandas_features(rows)
    for col in ("n_events", "frequency", "monetary", "tenure_days", "price_level", "brand_concentration"):
        np.testing.assert_allclose(got[col].astype(float), independent[col].astype(float), rtol=1e-9, atol=1e-12, err_msg=col)
    ptr = local_lake.pointer(FEATURES)
    assert ptr["folded_run_ids"] == ["r1", "r2"] and ptr["n_users"] == 150
    assert ptr["category_prices_version"] == s2["version"] == local_lake.current_version(CATEGORY_PRICES)

    s3 = run_features(spark, local_lake)
    assert s3["status"] == "up_to_date" and s3["version"] == s2["version"]

    # --full recomputes from the timelines (r1's event files are gone, its timelines are not)
    s4 = run_features(spark, local_lake, full=True)
    assert s4["status"] == "published" and s4["n_events"] == len(rows)
    assert s4["folded_run_ids"] == ["r1", "r2"]
    assert_frames_equal(to_pandas(read_features(local_lake)), want)


@pytest.mark.s3
def test_features_on_a_real_s3_lake(spark, s3_lake):
    rows = synthetic_rows(60, seed=9)
    cut = datetime(2019, 11, 1, tzinfo=UTC)
    commit_run(spark, s3_lake, "r1", [r for r in rows if r[0] < cut])
    run_features(spark, s3_lake)
    commit_run(spark, s3_lake, "r2", [r for r in rows if r[0] >= cut])
    s2 = run_features(spark, s3_lake)
    assert s2["new_run_ids"] == ["r2"] and s2["n_events"] == len(rows)
    keys = s3_lake.store.list(f"{FEATURES}/{s2['version']}")
    assert any(k.endswith(".parquet") for k in keys)
    assert_frames_equal(to_pandas(read_features(s3_lake)), features_of(rows))


def test_a_crash_mid_run_leaves_the_previous_version_current(spark, local_lake, monkeypatch):
    commit_run(spark, local_lake, "r1", synthetic_rows(20, seed=1))
    s1 = run_features(spark, local_lake)
    commit_run(spark, local_lake, "r2", synthetic_rows(30, seed=2))

    def crash(*_args):
        raise RuntimeError("killed after the tasks wrote their files")

    monkeypatch.setattr(features_job, "_stats", crash)
    with pytest.raises(RuntimeError, match="killed"):
        run_features(spark, local_lake)
    assert local_lake.current_version(FEATURES) == local_lake.current_version(CATEGORY_PRICES) == s1["version"]
    assert {k.split("/")[1] for k in local_lake.store.list(FEATURES)} == {s1["version"], "_current.json"}
    monkeypatch.undo()
    s2 = run_features(spark, local_lake)
    assert s2["status"] == "published" and s2["new_run_ids"] == ["r2"] and s2["n_users"] == 30  # the same user names


def test_an_older_release_s_aggregates_are_removed(spark, local_lake):
    """A lake written before features came from timelines holds aggregates/ (user keys inside) and no
    timelines: the features stage is due, builds the timelines, and deletes aggregates/ whole."""
    commit_run(spark, local_lake, "r1", synthetic_rows(20, seed=1))
    run_features(spark, local_lake)
    legacy = local_lake.store.local_path(LEGACY_AGGREGATES) / "v1" / "users"
    legacy.mkdir(parents=True)
    pd.DataFrame({"user_key": ["user0001"], "n_events": [3]}).to_parquet(legacy / "part-0.parquet")
    local_lake.write_json(f"{LEGACY_AGGREGATES}/_current.json", {"version": "v1", "folded_run_ids": ["r1"]})
    assert features_behind(local_lake) == (True, "features of an older release (aggregates/ to remove)")
    s = run_features(spark, local_lake)
    assert s["status"] == "published" and s["legacy_aggregates_files_removed"] == 2
    assert local_lake.store.list(LEGACY_AGGREGATES) == [] and features_behind(local_lake) == (False, "up to date")


def test_an_empty_lake_is_a_clear_error(spark, local_lake):
    with pytest.raises(ValueError, match="shoplens ingest"):
        run_features(spark, local_lake)


# -- end to end: raw CSV -> ingest -> shoplens features -> RFM equals pandas on the raw files ---------------


def synthetic_csv(path, raw_users, seed=3):
    """A later file (Nov-Dec 2019) whose users partly overlap the real sample's users."""
    rng = np.random.default_rng(seed)
    start = datetime(2019, 11, 1)
    lines = []
    for i, user in enumerate(raw_users):
        for s in range(int(rng.integers(1, 4))):
            t = start + timedelta(seconds=int(rng.integers(0, 50 * 86400)))
            for _ in range(int(rng.integers(1, 8))):
                t += timedelta(seconds=int(rng.integers(1, 600)))
                etype = rng.choice(["view", "view", "cart", "purchase"])
                price = f"{rng.lognormal(4, 1):.2f}"
                lines.append(
                    f"{t:%Y-%m-%d %H:%M:%S} UTC,{etype},{1000 + i},2053013555631882655,"
                    f"electronics.smartphone,apple,{price},{user},sess-{user}-{s}\n"
                )
    path.write_text(HEADER + "".join(lines))
    return path


def pandas_rfm(paths, key) -> pd.DataFrame:
    raw = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False).drop_duplicates() for p in paths])
    raw["ts"] = pd.to_datetime(raw["event_time"], format="%Y-%m-%d %H:%M:%S UTC", utc=True)
    raw["price"] = raw["price"].astype(float)
    raw["user_key"] = [pseudonymize(u, key) for u in raw["user_id"]]
    as_of = raw["ts"].max()
    buys = raw[raw.event_type == "purchase"]
    out = pd.DataFrame(index=sorted(raw["user_key"].unique()))
    out["n_events"] = raw.groupby("user_key").size()
    out["frequency"] = buys.groupby("user_key")["user_session"].nunique().reindex(out.index).fillna(0)
    out["monetary"] = buys.groupby("user_key")["price"].sum().reindex(out.index).fillna(0.0)
    last_buy = buys.groupby("user_key")["ts"].max().reindex(out.index)
    out["recency_days"] = np.floor((as_of - last_buy).dt.total_seconds() / 86400)
    out["tenure_days"] = np.floor((as_of - raw.groupby("user_key")["ts"].min()).dt.total_seconds() / 86400)
    return out


def test_end_to_end_rfm_matches_pandas_on_the_raw_files(
    spark, local_lake, settings, cli_env, key, rees46_sample, tmp_path
):
    real_users = pd.read_csv(rees46_sample, dtype=str)["user_id"].drop_duplicates()
    later = synthetic_csv(tmp_path / "2019-Nov.csv", [*real_users.iloc[:40], "900000001", "900000002"])
    assert ingest_files(spark, local_lake, [rees46_sample], key)["status"] == "committed"

    env = {**os.environ, **cli_env}
    done = subprocess.run(
        [sys.executable, "-m", "services", "features", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)
    assert first["status"] == "published" and len(first["new_run_ids"]) == 1

    assert ingest_files(spark, local_lake, [later], key)["status"] == "committed"
    second = run_features(spark, local_lake)
    assert second["new_run_ids"] != first["new_run_ids"] and len(second["folded_run_ids"]) == 2

    got = to_pandas(read_features(local_lake))
    want = pandas_rfm([rees46_sample, later], key)
    assert list(got.index) == list(want.index)
    assert (want["frequency"] > 0).sum() > 40  # real purchases and synthetic ones
    for col in want.columns:
        exact = col != "monetary"
        pd.testing.assert_series_equal(
            got[col].astype(float),
            want[col].astype(float),
            check_names=False,
            check_exact=exact,
            rtol=1e-9,
            obj=col,
        )
    real_ids = set(real_users)
    published = (Path(settings.lake) / FEATURES).rglob("*.parquet")
    assert not any(uid.encode() in p.read_bytes() for p in published for uid in list(real_ids)[:50])
