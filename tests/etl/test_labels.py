"""Point-in-time examples: no leakage past the cutoff, labels and windows vs independent pandas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl.activity import ACTIVITY_NAMES, compute_activity_local
from etl.generate import generate
from etl.labels import (
    NotEnoughData,
    activity_features,
    cutoff_features,
    cutoff_table,
    purchase_labels,
    training_examples,
    weekly_cutoffs,
)
from etl.lines import read_history
from etl.local_features import raw_to_events

pytestmark = pytest.mark.spark
CUTS = [datetime(2019, 10, 20, tzinfo=UTC), datetime(2019, 10, 27, tzinfo=UTC), datetime(2019, 11, 3, 12, tzinfo=UTC)]


@pytest.fixture(scope="module")
def events_pd(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("gen")
    generate(out, users=250, months=2, seed=5)
    rows = pd.concat([read_history(p).rows for p in sorted(Path(out).glob("*.csv.gz"))], ignore_index=True)
    ev = raw_to_events(rows)
    ev["category_id"] = ev["category_id"].astype("float").astype("Int64")
    return ev


@pytest.fixture(scope="module")
def events(spark, events_pd):
    frame = events_pd.assign(event_time=events_pd["event_time"].dt.tz_convert(None))
    frame["category_id"] = frame["category_id"].astype(object).where(frame["category_id"].notna(), None)
    return spark.createDataFrame(frame).cache()


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["cutoff", "user_key"], ignore_index=True)


def test_deleting_every_event_after_a_cutoff_leaves_its_features_unchanged(spark, events):
    from pyspark.sql import functions as F

    full = _sorted(cutoff_features(events, cutoff_table(spark, CUTS)).toPandas())
    for cut in CUTS:
        truncated = events.where(F.col("event_time") <= F.lit(cut))
        alone = _sorted(cutoff_features(truncated, cutoff_table(spark, [cut])).toPandas())
        stacked = full.loc[full["cutoff"] == pd.Timestamp(cut).tz_convert(None)].reset_index(drop=True)
        assert len(alone) > 50
        pd.testing.assert_frame_equal(stacked, alone, check_exact=False, rtol=1e-12, atol=1e-12)


def test_base_features_at_a_cutoff_are_compute_features_of_the_truncated_events(spark, events):
    from pyspark.sql import functions as F

    from etl.features import FEATURE_NAMES, compute_features

    cut = CUTS[1]
    got = cutoff_features(events, cutoff_table(spark, [cut])).toPandas().sort_values("user_key", ignore_index=True)
    want = compute_features(events.where(F.col("event_time") <= F.lit(cut)), as_of=cut).toPandas()
    want = want.sort_values("user_key", ignore_index=True)
    pd.testing.assert_frame_equal(got[list(FEATURE_NAMES)], want[list(FEATURE_NAMES)], check_exact=False, rtol=1e-12)


def test_population_is_users_with_an_event_at_or_before_the_cutoff(spark, events, events_pd):
    got = cutoff_features(events, cutoff_table(spark, CUTS)).toPandas()
    for cut in CUTS:
        seen = set(events_pd.loc[events_pd["event_time"] <= pd.Timestamp(cut), "user_key"])
        assert set(got.loc[got["cutoff"] == pd.Timestamp(cut).tz_convert(None), "user_key"]) == seen


def test_labels_match_an_independent_pandas_computation(spark, events, events_pd):
    got = training_examples(events, cutoff_table(spark, CUTS), horizon_days=7).toPandas()
    buys = events_pd.loc[events_pd["event_type"] == "purchase"]
    for cut in CUTS:
        c = pd.Timestamp(cut)
        window = buys.loc[(buys["event_time"] > c) & (buys["event_time"] <= c + pd.Timedelta(days=7))]
        seen = set(events_pd.loc[events_pd["event_time"] <= c, "user_key"])
        want = {u: int(u in set(window["user_key"])) for u in seen}
        part = got.loc[got["cutoff"] == c.tz_convert(None)]
        assert dict(zip(part["user_key"], part["label"], strict=True)) == want
        assert sum(want.values()) > 0
    # purchase_labels alone also lists buyers first seen after the cutoff (the join drops them)
    labels = purchase_labels(events, cutoff_table(spark, CUTS[:1]), 7).toPandas()
    assert set(labels["label"]) == {1}


def test_activity_windows_spark_equal_the_pandas_twin(spark, events, events_pd):
    for cut in CUTS[1:]:
        got = activity_features(events, cutoff_table(spark, [cut])).toPandas().drop(columns="cutoff")
        got = got.sort_values("user_key", ignore_index=True)
        want = compute_activity_local(events_pd, as_of=cut)
        pd.testing.assert_frame_equal(got[["user_key", *ACTIVITY_NAMES]], want, check_exact=False, rtol=1e-9,
                                      check_dtype=False)  # fmt: skip


def test_activity_windows_by_hand():
    t0 = datetime(2019, 10, 10, 12, tzinfo=UTC)
    ev = pd.DataFrame({
        "user_key": ["a"] * 5 + ["b"],
        "session_key": ["s1", "s1", "s2", "s3", "s4", "s9"],
        "event_time": [t0 - timedelta(days=27, hours=23), t0 - timedelta(days=5), t0 - timedelta(hours=2), t0,
                       t0 + timedelta(hours=1), t0 - timedelta(days=28)],
        "event_type": ["purchase", "cart", "view", "cart", "purchase", "view"],
        "price": [10.0, 5.0, 1.0, 2.0, 99.0, 1.0],
    })  # fmt: skip
    a = compute_activity_local(ev, as_of=t0).set_index("user_key")
    assert a.loc["a", "events_1d"] == 2 and a.loc["a", "events_7d"] == 3 and a.loc["a", "events_28d"] == 4
    assert a.loc["a", "carts_1d"] == 1 and a.loc["a", "purchases_28d"] == 1 and a.loc["a", "purchases_7d"] == 0
    assert a.loc["a", "sessions_1d"] == 2 and a.loc["a", "sessions_28d"] == 3  # s1 has events 27.9 and 5 days back
    assert a.loc["a", "spend_28d"] == 10.0  # the purchase after as_of is never read
    assert a.loc["a", "days_since_last_cart"] == 0.0
    assert a.loc["a", "days_since_last_purchase"] == pytest.approx(27 + 23 / 24)
    assert a.loc["b", "events_28d"] == 0  # exactly 28 days before: outside (as_of - 28 days, as_of]
    assert np.isnan(a.loc["b", "days_since_last_cart"])


def test_weekly_cutoffs_end_at_the_last_complete_label_window():
    c = weekly_cutoffs(datetime(2019, 10, 1), datetime(2019, 11, 30, 23, 59), horizon_days=7, n_train=4)
    assert c.validation == datetime(2019, 11, 23, tzinfo=UTC)
    assert c.validation + timedelta(days=7) <= datetime(2019, 11, 30, 23, 59, tzinfo=UTC)
    assert c.train == tuple(datetime(2019, 11, 23, tzinfo=UTC) - timedelta(days=7 * k) for k in (4, 3, 2, 1))


def test_too_little_history_is_a_clear_error():
    with pytest.raises(NotEnoughData, match="at least two are needed"):
        weekly_cutoffs(datetime(2019, 10, 1), datetime(2019, 10, 18), horizon_days=7)
