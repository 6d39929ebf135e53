"""Point-in-time examples: no leakage past the cutoff, labels and windows vs independent pandas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.activity import ACTIVITY_NAMES, compute_activity_local
from etl.features import FEATURE_NAMES
from etl.generate import generate
from etl.labels import (
    LABEL,
    NotEnoughData,
    activity_features,
    cutoff_prices,
    training_examples,
    weekly_cutoffs,
)
from etl.lines import read_history
from etl.local_features import raw_to_events
from services.core.storage import LocalStore

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


def _lake_files(ev: pd.DataFrame, root: Path) -> tuple[LocalStore, list[str]]:
    """``ev`` as event files of the lake's layout, cut by row (a user's events span several files)."""
    store, keys = LocalStore(root), []
    shuffled = ev.sample(frac=1.0, random_state=1)
    for i, rows in enumerate(np.array_split(np.arange(len(shuffled)), 5)):
        part = shuffled.iloc[rows]
        key = f"events/run_id=t/part-{i}.parquet"
        table = pa.Table.from_pandas(part, preserve_index=False)
        buf = pa.BufferOutputStream()
        pq.write_table(table.cast(table.schema.set(table.schema.get_field_index("event_time"),
                                                   pa.field("event_time", pa.timestamp("us", tz="UTC")))), buf)  # fmt: skip
        store.write_bytes(key, buf.getvalue().to_pybytes())
        keys.append(key)
    return store, keys


def _spark_events(spark, ev: pd.DataFrame):
    frame = ev.assign(event_time=ev["event_time"].dt.tz_convert(None))
    frame["category_id"] = frame["category_id"].astype(object).where(frame["category_id"].notna(), None)
    return spark.createDataFrame(frame)


def _examples(spark, ev: pd.DataFrame, root: Path, cuts: list[datetime], horizon_days: int = 7) -> pd.DataFrame:
    """training_examples of ``ev`` as the job runs it: prices from Spark, rows from the event files."""
    store, keys = _lake_files(ev, root)
    prices = cutoff_prices(_spark_events(spark, ev), cuts)
    got = training_examples(spark, store, keys, cuts, prices, horizon_days).toPandas()
    return got.sort_values(["cutoff", "user_key"], ignore_index=True)


@pytest.fixture(scope="module")
def examples(spark, events_pd, tmp_path_factory) -> pd.DataFrame:
    return _examples(spark, events_pd, tmp_path_factory.mktemp("lake"), CUTS)


def test_deleting_every_event_after_a_cutoff_leaves_its_features_unchanged(spark, events_pd, examples, tmp_path):
    columns = ["cutoff", *FEATURE_NAMES, *ACTIVITY_NAMES]
    for i, cut in enumerate(CUTS):
        truncated = events_pd.loc[events_pd["event_time"] <= pd.Timestamp(cut)]
        alone = _examples(spark, truncated, tmp_path / str(i), [cut])[columns]
        stacked = examples.loc[examples["cutoff"] == pd.Timestamp(cut).tz_convert(None), columns]
        assert len(alone) > 50
        pd.testing.assert_frame_equal(stacked.reset_index(drop=True), alone, check_exact=False, rtol=1e-12, atol=1e-12)


def test_base_features_at_a_cutoff_are_compute_features_of_the_truncated_events(spark, events_pd, examples):
    from pyspark.sql import functions as F

    from etl.features import compute_features

    for cut in CUTS:
        got = examples.loc[examples["cutoff"] == pd.Timestamp(cut).tz_convert(None)].reset_index(drop=True)
        events = _spark_events(spark, events_pd)
        want = compute_features(events.where(F.col("event_time") <= F.lit(cut)), as_of=cut).toPandas()
        want = want.sort_values("user_key", ignore_index=True)
        pd.testing.assert_frame_equal(got[list(FEATURE_NAMES)], want[list(FEATURE_NAMES)], check_exact=False,
                                      rtol=1e-12, check_dtype=False)  # fmt: skip


def test_population_is_users_with_an_event_at_or_before_the_cutoff(events_pd, examples):
    for cut in CUTS:
        seen = set(events_pd.loc[events_pd["event_time"] <= pd.Timestamp(cut), "user_key"])
        assert set(examples.loc[examples["cutoff"] == pd.Timestamp(cut).tz_convert(None), "user_key"]) == seen


def test_labels_match_an_independent_pandas_computation(events_pd, examples):
    buys = events_pd.loc[events_pd["event_type"] == "purchase"]
    for cut in CUTS:
        c = pd.Timestamp(cut)
        window = buys.loc[(buys["event_time"] > c) & (buys["event_time"] <= c + pd.Timedelta(days=7))]
        seen = set(events_pd.loc[events_pd["event_time"] <= c, "user_key"])
        want = {u: int(u in set(window["user_key"])) for u in seen}
        part = examples.loc[examples["cutoff"] == c.tz_convert(None)]
        assert dict(zip(part["user_key"], part[LABEL], strict=True)) == want
        assert sum(want.values()) > 0


def test_activity_for_scoring_is_the_pandas_twin_on_every_event(spark, events_pd, tmp_path):
    store, keys = _lake_files(events_pd, tmp_path)
    for cut in CUTS[1:]:
        got = activity_features(spark, store, keys, cut).toPandas().drop(columns="cutoff")
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
