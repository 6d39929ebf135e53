"""The features job on a real local lake: incremental folds of committed runs, pointers, and an
end-to-end check of RFM against pandas computed straight from raw CSV files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from etl.contract import EVENT_SCHEMA
from etl.features import compute_features
from etl.pseudonymize import pseudonymize
from services.core.catalog import AGGREGATES, EVENTS, FEATURES, SUSPICIOUS_USERS
from services.jobs.features import read_features, run_features
from services.jobs.ingest import ingest_files
from tests.etl.test_features import assert_frames_equal, synthetic_rows, to_pandas

pytestmark = pytest.mark.spark

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"


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


def test_new_runs_are_folded_without_rereading_old_events(spark, local_lake):
    rows = synthetic_rows(150, seed=5)
    cut = datetime(2019, 11, 10, tzinfo=UTC)
    first = [r for r in rows if r[0] < cut]
    second = [r for r in rows if r[0] >= cut]
    commit_run(spark, local_lake, "r1", first, suspicious=["user0007"])
    s1 = run_features(spark, local_lake)
    assert s1["status"] == "published" and s1["new_run_ids"] == ["r1"] and s1["new_events"] == len(first)

    # Remove r1's events from the lake: a correct incremental fold no longer needs them.
    assert local_lake.store.delete_prefix(EVENTS) > 0
    commit_run(spark, local_lake, "r2", second)
    commit_run(spark, local_lake, "r3", rows[:50], status="failed")  # never committed: ignored
    s2 = run_features(spark, local_lake)
    assert s2["new_run_ids"] == ["r2"] and s2["folded_run_ids"] == ["r1", "r2"]
    assert s2["new_events"] == len(second) and s2["n_events"] == len(rows) and s2["n_suspicious"] == 1

    flagged = spark.createDataFrame([("user0007",)], "user_key string")
    want = to_pandas(compute_features(spark.createDataFrame(rows, EVENT_SCHEMA), suspicious_users=flagged))
    assert_frames_equal(to_pandas(read_features(spark, local_lake)), want)
    assert local_lake.pointer(AGGREGATES)["folded_run_ids"] == ["r1", "r2"]
    assert local_lake.pointer(FEATURES)["aggregates_version"] == s2["aggregates_version"] == s2["version"]
    assert local_lake.pointer(FEATURES)["n_users"] == 150

    s3 = run_features(spark, local_lake)
    assert s3["status"] == "up_to_date" and s3["version"] == s2["version"]

    # --full re-reads every committed run from the lake; r1's files are gone, so only r2 counts.
    s4 = run_features(spark, local_lake, full=True)
    assert s4["status"] == "published" and s4["n_events"] == len(second)
    assert s4["folded_run_ids"] == ["r1", "r2"]
    want_r2 = to_pandas(
        compute_features(spark.createDataFrame(second, EVENT_SCHEMA), suspicious_users=flagged)
    )
    assert_frames_equal(to_pandas(read_features(spark, local_lake)), want_r2)


@pytest.mark.s3
def test_incremental_folds_on_a_real_s3_lake(spark, s3_lake):
    rows = synthetic_rows(60, seed=9)
    cut = datetime(2019, 11, 1, tzinfo=UTC)
    commit_run(spark, s3_lake, "r1", [r for r in rows if r[0] < cut])
    run_features(spark, s3_lake)
    commit_run(spark, s3_lake, "r2", [r for r in rows if r[0] >= cut])
    s2 = run_features(spark, s3_lake)
    assert s2["new_run_ids"] == ["r2"] and s2["n_events"] == len(rows)
    keys = s3_lake.store.list(f"{FEATURES}/{s2['version']}")
    assert any(k.endswith(".parquet") for k in keys)
    want = to_pandas(compute_features(spark.createDataFrame(rows, EVENT_SCHEMA)))
    assert_frames_equal(to_pandas(read_features(spark, s3_lake)), want)


def test_features_after_a_crash_between_pointers_are_refinalized(spark, local_lake):
    commit_run(spark, local_lake, "r1", synthetic_rows(20, seed=1))
    s1 = run_features(spark, local_lake)
    # Simulate a crash after the aggregates pointer moved but before the features pointer did.
    ptr = local_lake.pointer(FEATURES)
    local_lake.write_json(f"{FEATURES}/_current.json", {**ptr, "aggregates_version": "older"})
    s2 = run_features(spark, local_lake)
    assert (
        s2["status"] == "published" and s2["new_run_ids"] == [] and s2["aggregates_version"] == s1["version"]
    )
    assert local_lake.pointer(FEATURES)["aggregates_version"] == s1["version"]


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

    got = to_pandas(read_features(spark, local_lake))
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
