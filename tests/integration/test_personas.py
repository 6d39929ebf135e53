"""Quality bar: generated feed -> ingest -> features -> train -> score recovers the hidden personas.

Also recomputes RFM of a sample of users with pandas straight from the raw CSV files.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from services.core.readers import read_features as read_features_pandas
from services.core.readers import read_segments
from services.jobs.segmentation import TrainConfig, train, truth_ari

pytestmark = pytest.mark.spark

USERS = 3_000
CONFIG = TrainConfig(n_bootstrap=3, sample_size=20_000)


@pytest.fixture(scope="module")
def pipeline(spark, tmp_path_factory):
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.features import run_features
    from services.jobs.ingest import ingest_files
    from tests.conftest import TEST_KEY

    root = tmp_path_factory.mktemp("personas")
    generate(root / "raw", users=USERS, start=date(2019, 10, 1), months=3, seed=7)
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=TEST_KEY)
    lake = open_lake(settings)
    ingest_files(spark, lake, sorted((root / "raw").glob("*.csv.gz")), settings.key_bytes)
    run_features(spark, lake)
    result = train(spark, lake, CONFIG, truth_csv=root / "raw" / "_truth" / "users.csv", key=settings.key_bytes)
    return {"root": root, "lake": lake, "key": settings.key_bytes, "result": result}


def test_segments_recover_the_personas(pipeline):
    seg = read_segments(pipeline["lake"])
    figures = truth_ari(seg, pipeline["root"] / "raw" / "_truth" / "users.csv", pipeline["key"])
    coverage = figures["users_scored"] / len(seg)
    print(f"\nARI vs personas {figures['ari']:.3f} on {figures['users_scored']:,} scored users "
          f"({coverage:.0%} of {len(seg):,}); threshold {pipeline['result']['min_events']} events")  # fmt: skip
    assert figures["ari"] >= 0.6
    assert figures["ari"] == pytest.approx(pipeline["result"]["ari_vs_truth"], abs=0.05)
    assert coverage >= 0.3


def test_rfm_of_a_sample_matches_pandas_on_the_raw_csv(pipeline):
    from etl.pseudonymize import pseudonymize

    raw = pd.concat(pd.read_csv(p, dtype={"user_id": str}) for p in sorted((pipeline["root"] / "raw").glob("*.csv.gz")))
    raw["ts"] = pd.to_datetime(raw["event_time"].str.slice(0, 19), utc=True)
    rng = np.random.default_rng(0)
    sample = rng.choice(raw["user_id"].unique(), size=200, replace=False)
    as_of = raw["ts"].max()
    feats, _ = read_features_pandas(pipeline["lake"])
    feats = feats.set_index("user_key")
    day = pd.Timedelta(days=1)
    checked = 0
    for uid in sample:
        ev = raw.loc[raw["user_id"] == uid]
        buys = ev.loc[ev["event_type"] == "purchase"]
        row = feats.loc[pseudonymize(uid, pipeline["key"])]
        assert row["frequency"] == buys["user_session"].nunique()
        assert row["monetary"] == pytest.approx(buys["price"].sum(), rel=1e-9, abs=1e-9)
        expected_recency = (as_of - buys["ts"].max()) // day if len(buys) else None
        if expected_recency is None:
            assert pd.isna(row["recency_days"])
        else:
            assert row["recency_days"] == expected_recency
        assert row["tenure_days"] == (as_of - ev["ts"].min()) // day
        checked += 1
    assert checked == 200
