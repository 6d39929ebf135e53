"""Point-in-time examples from timeline buckets: no leakage past the cutoff, labels and windows vs
independent pandas and Spark computations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import etl.labels
from etl.activity import ABSENT, ACTIVITY_NAMES, as_of_micros, compute_activity_local
from etl.features import FEATURE_NAMES
from etl.generate import generate
from etl.labels import (
    EVENT_COLUMNS,
    LABEL,
    NotEnoughData,
    cutoff_prices,
    event_span,
    examples_of_users,
    key_codes,
    price_sums_by_period,
    timeline_activity,
    timeline_examples,
    weekly_cutoffs,
)
from etl.lines import read_history
from etl.local_features import raw_to_events
from etl.timeline import DICTIONARY_COLUMNS, bucket_of

FEATURES_BUT_KEY = [c for c in FEATURE_NAMES if c != "user_key"]
HALF_DAY = 43_200_000_000  # the price sums' grain here: one cutoff is at noon
CUTS = [datetime(2019, 10, 20, tzinfo=UTC), datetime(2019, 10, 27, tzinfo=UTC), datetime(2019, 11, 3, 12, tzinfo=UTC)]


@pytest.fixture(scope="module")
def events_pd(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("gen")
    generate(out, users=250, months=2, seed=5)
    rows = pd.concat([read_history(p).rows for p in sorted(Path(out).glob("*.csv.gz"))], ignore_index=True)
    ev = raw_to_events(rows, key=b"labels-test-key")  # 64-hex-digit keys, as in the lake
    ev["category_id"] = ev["category_id"].astype("float").astype("Int64")
    return ev


def _coded(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the ``user_code`` of its ``user_key``, sorted by it (the examples' order)."""
    codes = key_codes(pa.array(frame["user_key"].to_numpy(dtype=object), pa.string())).to_numpy()
    return frame.assign(user_code=codes).sort_values("user_code", ignore_index=True)


def _buckets(ev: pd.DataFrame, buckets: int = 4) -> list[pa.Table]:
    """``ev`` as timeline buckets as the job's tasks get them (:func:`services.core.timelines.read_bucket`):
    the :data:`EVENT_COLUMNS`, whole users sorted by key and time, text and keys as dictionaries."""
    rows = ev[list(EVENT_COLUMNS)].sort_values(["user_key", "event_time"], kind="stable", ignore_index=True)
    table = pa.Table.from_pandas(rows, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("event_time"), "event_time",
                             table["event_time"].cast(pa.timestamp("us", tz="UTC")))  # fmt: skip
    for name in ["user_key", "session_key", *(c for c in EVENT_COLUMNS if c in DICTIONARY_COLUMNS)]:
        table = table.set_column(table.schema.get_field_index(name), name, table[name].dictionary_encode())
    bucket = bucket_of(table["user_key"], buckets)
    return [table.take(np.flatnonzero(bucket == b)) for b in range(buckets)]


def _examples(ev: pd.DataFrame, cuts: list[datetime], horizon_days: int = 7) -> pd.DataFrame:
    """The examples of ``ev`` as the job builds them: prices and rows from each timeline bucket."""
    prices = cutoff_prices(pa.concat_tables(price_sums_by_period(b, HALF_DAY) for b in _buckets(ev)), cuts, HALF_DAY)
    cut_us = [as_of_micros(c) for c in cuts]
    got = pa.concat_tables([timeline_examples(b, cut_us, horizon_days, prices) for b in _buckets(ev)]).to_pandas()
    for name in got.columns[[isinstance(t, pd.DatetimeTZDtype) for t in got.dtypes]]:
        got[name] = got[name].dt.tz_convert(None).astype("datetime64[ns]")  # as Spark's toPandas gives them
    return got.sort_values(["cutoff", "user_code"], ignore_index=True)


@pytest.fixture(scope="module")
def examples(events_pd) -> pd.DataFrame:
    return _examples(events_pd, CUTS)


def test_deleting_every_event_after_a_cutoff_leaves_its_features_unchanged(events_pd, examples):
    columns = ["cutoff", "user_code", *FEATURES_BUT_KEY, *ACTIVITY_NAMES]
    for cut in CUTS:
        truncated = events_pd.loc[events_pd["event_time"] <= pd.Timestamp(cut)]
        alone = _examples(truncated, [cut])[columns]
        stacked = examples.loc[examples["cutoff"] == pd.Timestamp(cut).tz_convert(None), columns]
        assert len(alone) > 50
        pd.testing.assert_frame_equal(stacked.reset_index(drop=True), alone, check_exact=False, rtol=1e-12, atol=1e-12)


def test_base_features_at_a_cutoff_are_compute_features_of_the_truncated_events(events_pd, examples):
    from etl.local_features import compute_features_local

    for cut in CUTS:
        got = examples.loc[examples["cutoff"] == pd.Timestamp(cut).tz_convert(None)].reset_index(drop=True)
        local = compute_features_local(events_pd.loc[events_pd["event_time"] <= pd.Timestamp(cut)], as_of=cut)
        times = {c: local[c].dt.tz_convert(None) for c in ("first_event_time", "last_event_time", "last_purchase_time", "as_of")}
        want = _coded(local.assign(**times, recency_days=local["recency_days"].astype(float)))
        columns = ["user_code", *FEATURES_BUT_KEY]
        pd.testing.assert_frame_equal(got[columns], want[columns], check_exact=False, rtol=1e-12, check_dtype=False)


def test_population_is_users_with_an_event_at_or_before_the_cutoff(events_pd, examples):
    for cut in CUTS:
        seen = set(_coded(events_pd.loc[events_pd["event_time"] <= pd.Timestamp(cut)])["user_code"])
        assert set(examples.loc[examples["cutoff"] == pd.Timestamp(cut).tz_convert(None), "user_code"]) == seen


def test_labels_match_an_independent_pandas_computation(events_pd, examples):
    coded = _coded(events_pd)
    buys = coded.loc[coded["event_type"] == "purchase"]
    for cut in CUTS:
        c = pd.Timestamp(cut)
        window = buys.loc[(buys["event_time"] > c) & (buys["event_time"] <= c + pd.Timedelta(days=7))]
        seen = set(coded.loc[coded["event_time"] <= c, "user_code"])
        want = {u: int(u in set(window["user_code"])) for u in seen}
        part = examples.loc[examples["cutoff"] == c.tz_convert(None)]
        assert dict(zip(part["user_code"], part[LABEL], strict=True)) == want
        assert sum(want.values()) > 0


def test_price_sums_give_the_event_span_and_each_cutoffs_category_means_as_pandas_does(events_pd):
    """One pass over the buckets, summed per day: the span of every event, and at each midnight cutoff
    (an event exactly at a midnight counts for that cutoff) the mean ln(price) of the priced events
    at or before it, per category, computed here directly from the events."""
    ev = events_pd.copy()
    midnight = pd.Timestamp("2019-10-27", tz="UTC")
    ev.loc[ev.index[ev["price"] > 0][0], ["event_time", "category_id"]] = [midnight, 4242]  # on the cutoff
    sums = pa.concat_tables(price_sums_by_period(b) for b in _buckets(ev))
    assert event_span(sums) == (ev["event_time"].min().to_pydatetime(), ev["event_time"].max().to_pydatetime())
    cuts = [datetime(2019, 10, 20, tzinfo=UTC), midnight.to_pydatetime()]
    got = cutoff_prices(sums, cuts)
    priced = ev.loc[(ev["price"] > 0) & ev["category_id"].notna()]
    for cut in cuts:
        before = priced.loc[priced["event_time"] <= pd.Timestamp(cut)]
        want = np.log(before["price"]).groupby(before["category_id"].astype("int64")).mean()
        pd.testing.assert_series_equal(got[as_of_micros(cut)].sort_index(), want.sort_index(), check_names=False,
                                       check_index_type=False, rtol=1e-12)  # fmt: skip
    assert 4242 in got[as_of_micros(midnight)].index and 4242 not in got[as_of_micros(cuts[0])].index
    with pytest.raises(ValueError, match="not on the"):
        cutoff_prices(sums, [datetime(2019, 11, 3, 12, tzinfo=UTC)])


def test_activity_for_scoring_is_the_pandas_twin_on_every_event(events_pd):
    buckets = _buckets(events_pd)
    for cut in CUTS[1:]:
        got = pa.concat_tables([timeline_activity(b, cut) for b in buckets]).to_pandas()
        got = got.sort_values("user_code", ignore_index=True)
        want = _coded(compute_activity_local(events_pd, as_of=cut))
        # a user with no event in the lookback has no row: the scores give it ABSENT
        want = want.loc[want["events_28d"] > 0].reset_index(drop=True)
        assert len(want) > 50 and (got["cutoff"] == pd.Timestamp(cut)).all()
        columns = ["user_code", *ACTIVITY_NAMES]
        pd.testing.assert_frame_equal(got[columns], want[columns], check_exact=False, rtol=1e-9, check_dtype=False)


def test_examples_of_a_bucket_in_slices_of_whole_users_are_those_of_all_its_events_at_once(events_pd, monkeypatch):
    """The tasks cut a bucket into slices of about CHUNK_EVENTS events (never through a user); the rows
    are those of every event of every user in one call."""
    cut_us = [as_of_micros(c) for c in CUTS]
    prices = {c: pd.Series(dtype=float) for c in cut_us}
    whole = pl.from_pandas(events_pd[list(EVENT_COLUMNS)]).with_columns(
        user_key=pl.Series(key_codes(pa.array(events_pd["user_key"].to_numpy(dtype=object), pa.string()))),
        session_key=pl.Series(key_codes(pa.array(events_pd["session_key"].to_numpy(dtype=object), pa.string()))),
    )
    want = examples_of_users(whole, cut_us, 7, prices).to_pandas().sort_values(["cutoff", "user_code"], ignore_index=True)
    (bucket,) = _buckets(events_pd, buckets=1)
    monkeypatch.setattr(etl.labels, "CHUNK_EVENTS", 300)
    got = timeline_examples(bucket, cut_us, 7, prices).to_pandas()
    assert bucket.num_rows > 20 * 300
    pd.testing.assert_frame_equal(got.sort_values(["cutoff", "user_code"], ignore_index=True), want)
    assert timeline_examples(bucket.slice(0, 0), cut_us, 7, prices).num_rows == 0


def test_narrowed_columns_are_the_float64_values_rounded_to_float32(events_pd):
    rows = pl.from_pandas(events_pd[list(EVENT_COLUMNS)]).with_columns(
        user_key=pl.Series(key_codes(pa.array(events_pd["user_key"].to_numpy(dtype=object), pa.string()))),
        session_key=pl.Series(key_codes(pa.array(events_pd["session_key"].to_numpy(dtype=object), pa.string()))),
    )
    cuts = [as_of_micros(c) for c in CUTS]
    prices = {c: pd.Series(dtype=float) for c in cuts}  # no category reference: price_level null
    wide = examples_of_users(rows, cuts, 7, prices).to_pandas()
    narrow = ["recency_days", "monetary", "days_since_last_cart", "events_7d"]  # int with nulls, doubles, a count
    thin = examples_of_users(rows, cuts, 7, prices, narrow=narrow).to_pandas()
    assert all(thin[c].dtype == np.float32 for c in narrow) and wide["recency_days"].isna().any()
    for c in narrow:
        want = wide[c].to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)
        np.testing.assert_array_equal(thin[c].to_numpy(), want)
    pd.testing.assert_frame_equal(thin.drop(columns=narrow), wide.drop(columns=narrow))


def test_key_codes_are_the_first_16_hex_digits_as_a_signed_64_bit_integer():
    keys = ["0" * 15 + "1" + "a" * 48, "f" * 64, "8" + "0" * 63, "0" * 15 + "1" + "b" * 48]
    assert key_codes(pa.array(keys)).to_pylist() == [1, -1, -(2**63), 1]  # the tail is not read
    assert key_codes(pa.array(keys).dictionary_encode()).to_pylist() == [1, -1, -(2**63), 1]
    with pytest.raises(pl.exceptions.ComputeError, match="invalid digit"):
        key_codes(pa.array(["not-a-hex-digest-at-all"]))


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
    # b exists at as_of but has nothing in the 28-day lookback: ABSENT, nothing older is read
    assert np.isnan(a.loc["b", "days_since_last_event"])
    pd.testing.assert_series_equal(a.loc["b", list(ABSENT)].astype(float), pd.Series(ABSENT), check_names=False)
    assert a.loc["a", "days_since_last_event"] == 0.0


def test_weekly_cutoffs_end_at_the_last_complete_label_window():
    c = weekly_cutoffs(datetime(2019, 10, 1), datetime(2019, 11, 30, 23, 59), horizon_days=7, n_train=4)
    assert c.validation == datetime(2019, 11, 23, tzinfo=UTC)
    assert c.validation + timedelta(days=7) <= datetime(2019, 11, 30, 23, 59, tzinfo=UTC)
    assert c.train == tuple(datetime(2019, 11, 23, tzinfo=UTC) - timedelta(days=7 * k) for k in (4, 3, 2, 1))


def test_too_little_history_is_a_clear_error():
    with pytest.raises(NotEnoughData, match="at least two are needed"):
        weekly_cutoffs(datetime(2019, 10, 1), datetime(2019, 10, 18), horizon_days=7)
