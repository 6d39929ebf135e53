"""Per-user features, computed as the features job computes them (etl.local_features.timeline_features on
a timeline bucket): exact values on tiny histories, an independent pandas recomputation on a few hundred
synthetic users, the first-n study's truncations, and a bucket merged from two runs equal to one run."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from etl.contract import CATEGORY_L1, EVENT_COLUMNS
from etl.features import FEATURE_NAMES, FEATURES, render_markdown
from etl.lines import EVENT_FILE_SCHEMA
from etl.local_features import first_n_features, reference_means, timeline_features
from etl.timeline import merge_timelines, to_timeline

DOCS = Path(__file__).resolve().parents[2] / "docs" / "features.md"
TIME_COLS = [f.name for f in FEATURES if f.dtype == "timestamp"]


def ev(user, session, when, etype="view", price=10.0, l1=None, brand=None, category_id=1, product_id=1):
    """One row of EVENT_SCHEMA (aware UTC datetimes, so the session time zone cannot shift them)."""
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    code = f"{l1}.x" if l1 else None
    return (
        when,
        when.hour,
        etype,
        product_id,
        category_id,
        code,
        l1,
        "x" if l1 else None,
        None,
        brand,
        float(price),
        user,
        session,
        "test.csv",
        when.date(),
    )


def to_pandas(df) -> pd.DataFrame:
    """Collect features with timestamps as epoch microseconds (no time-zone conversion on the way): a
    Spark frame (the published features read by Spark) or an Arrow table."""
    if isinstance(df, pa.Table):
        cols = {c: df[c].cast(pa.int64()) if c in TIME_COLS else df[c] for c in df.column_names}
        return pa.table(cols).to_pandas().set_index("user_key").sort_index()
    from pyspark.sql import functions as F

    cols = [F.unix_micros(c).alias(c) if c in TIME_COLS else F.col(c) for c in df.columns]
    return df.select(*cols).toPandas().set_index("user_key").sort_index()


def timeline(rows: list[tuple]) -> pa.Table:
    """Rows of :func:`ev` as one timeline bucket, as ingest writes it (line numbers in row order)."""
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).drop(columns=["event_date"])
    frame["line_number"] = np.arange(len(frame))
    return to_timeline(pa.Table.from_pandas(frame, schema=EVENT_FILE_SCHEMA, preserve_index=False))


def features_of(rows: list[tuple], as_of=None, suspicious=(), reference=None) -> pd.DataFrame:
    """The features job's computation on ``rows`` (one bucket holding every user), as :func:`to_pandas`."""
    return to_pandas(timeline_features(timeline(rows), as_of, reference, suspicious))


# -- exact values on a tiny frame --------------------------------------------------------------------------


@pytest.fixture
def tiny():
    t = datetime(2019, 11, 22, 23, 0, 0)  # a Friday, 23:00 UTC
    rows = [
        # user a: session s1 on Friday night (view, cart, purchase), session s2 Monday 25 Nov (holiday)
        ev("a", "s1", t, "view", 100.0, "electronics", "apple", category_id=1),
        ev("a", "s1", t + timedelta(minutes=10), "cart", 100.0, "electronics", "apple", category_id=1),
        ev("a", "s1", t + timedelta(minutes=30), "purchase", 100.0, "electronics", "apple", category_id=1),
        ev("a", "s2", datetime(2019, 11, 25, 8, 0), "view", 50.0, "apparel", "nike", category_id=2),
        # user b: one session with a cart and a removal, no purchase; Saturday afternoon
        ev("b", "s3", datetime(2019, 11, 23, 14, 0), "view", 400.0, "electronics", "apple", category_id=1),
        ev("b", "s3", datetime(2019, 11, 23, 14, 0, 20), "cart", 400.0, "electronics", None, category_id=1),
        ev("b", "s3", datetime(2019, 11, 23, 14, 1), "remove_from_cart", 400.0, None, None, category_id=None),
    ]
    return rows


def test_tiny_frame_gives_hand_computed_values(tiny):
    got = features_of(tiny, suspicious={"b"})
    assert list(got.reset_index().columns) == list(FEATURE_NAMES)
    a, b = got.loc["a"], got.loc["b"]
    as_of = datetime(2019, 11, 25, 8, 0, tzinfo=UTC)  # latest event in the frame
    assert a.as_of == b.as_of == int(as_of.timestamp() * 1e6)

    assert (a.n_events, a.n_sessions, a.active_days, a.frequency, a.n_purchases) == (4, 2, 2, 1, 1)
    assert a.monetary == 100.0
    # last purchase 2019-11-22 23:30 -> as-of 2019-11-25 08:00 is 2 days 8.5 hours
    assert a.recency_days == 2 and a.tenure_days == 2
    assert a.median_session_duration_s == (30 * 60 + 0) / 2  # sessions of 1800 s and 0 s
    assert a.mean_days_between_visits == 3.0  # active days 22 and 25 Nov
    assert a.view_to_cart_rate == 0.5 and a.cart_to_purchase_rate == 1.0
    assert a.cart_abandonment_rate == 0.0 and a.removal_rate == 0.0
    assert a.share_electronics == 0.75 and a.share_apparel == 0.25 and a.share_other == 0.0
    assert a.category_diversity == 2
    assert a.category_entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert a.brand_concentration == pytest.approx(0.75**2 + 0.25**2)
    # category 1 mean ln price over a's 3 events and b's 2 = (3 ln100 + 2 ln400) / 5; category 2 only a
    m1 = (3 * math.log(100) + 2 * math.log(400)) / 5
    assert a.price_level == pytest.approx((3 * (math.log(100) - m1) + 0.0) / 4, abs=1e-12)
    assert b.price_level == pytest.approx(math.log(400) - m1, abs=1e-12)
    # Friday 23:00-23:30 x3 (evening), Monday 08:00 (morning); no weekend; holiday = 25 Nov only
    assert (a.evening_share, a.morning_share, a.night_share, a.weekend_share) == (0.75, 0.25, 0.0, 0.0)
    assert a.holiday_share == 0.25  # 2019: Black Friday 29 Nov, holiday peak from Monday 25 Nov
    assert not a.is_suspicious

    assert (b.n_events, b.n_sessions, b.frequency, b.monetary) == (3, 1, 0, 0.0)
    assert pd.isna(b.recency_days) and b.tenure_days == 1  # 23 Nov 14:00 -> 25 Nov 08:00
    assert b.median_session_duration_s == 60.0
    assert pd.isna(b.mean_days_between_visits)
    assert b.cart_abandonment_rate == 1.0 and b.removal_rate == 1.0
    assert b.cart_to_purchase_rate == 0.0
    assert b.share_other == pytest.approx(1 / 3) and b.category_diversity == 1
    assert b.brand_concentration == 1.0 and b.weekend_share == 1.0 and b.afternoon_share == 1.0
    assert b.is_suspicious


def test_zero_denominators_are_null():
    got = features_of([ev("u", "s", datetime(2019, 10, 1), "purchase", 0.0)]).loc["u"]
    assert pd.isna(got.view_to_cart_rate) and pd.isna(got.cart_to_purchase_rate)
    assert pd.isna(got.cart_abandonment_rate) and pd.isna(got.removal_rate)
    assert pd.isna(got.brand_concentration) and pd.isna(got.price_level)  # no brand, price 0
    assert got.recency_days == 0 and got.frequency == 1


def test_as_of_options(tiny):
    fixed = features_of(tiny, as_of="2019-12-01T00:00:00")
    assert fixed.loc["a", "recency_days"] == 8  # 22 Nov 23:30 -> 1 Dec 00:00 = 8 days 30 min
    assert fixed.loc["b", "tenure_days"] == 7
    per_user = features_of(tiny, as_of="last_event")
    assert (per_user["as_of"] == per_user["last_event_time"]).all()
    assert per_user.loc["a", "recency_days"] == 2 and per_user.loc["b", "tenure_days"] == 0


def test_holiday_window_follows_black_friday():
    """Thanksgiving is the 4th Thursday of November; the peak starts the Monday before Black Friday."""
    rows = []
    for year in range(2015, 2031):
        nov = [date(year, 11, d) for d in range(1, 31)]
        black_friday = [d for d in nov if d.weekday() == 3][3] + timedelta(days=1)
        start = black_friday - timedelta(days=4)
        for d, inside in ((start - timedelta(days=1), 0), (start, 1), (date(year, 12, 31), 1)):
            when = datetime(d.year, d.month, d.day, 12, tzinfo=UTC)
            rows.append(ev(f"{d}-{inside}", "s", when))
    got = features_of(rows)
    expected = pd.Series({r[11]: float(r[11].endswith("-1")) for r in rows}).sort_index()
    pd.testing.assert_series_equal(got["holiday_share"], expected, check_names=False)


# -- an independent pandas recomputation on synthetic users ----------------------------------------------


def synthetic_rows(n_users: int = 300, seed: int = 7) -> list[tuple]:
    rng = np.random.default_rng(seed)
    l1s = [*CATEGORY_L1[:6], "unknowncat", None]
    brands = ["apple", "samsung", "xiaomi", None]
    start = datetime(2019, 10, 1, tzinfo=UTC)
    rows = []
    for u in range(n_users):
        for s in range(int(rng.integers(1, 6))):
            t = start + timedelta(seconds=int(rng.integers(0, 92 * 86400)))
            for _ in range(int(rng.integers(1, 12))):
                t = t + timedelta(seconds=int(rng.integers(0, 900)), microseconds=int(rng.integers(0, 10**6)))
                etype = rng.choice(["view", "view", "view", "cart", "remove_from_cart", "purchase"])
                cat = int(rng.integers(0, 6))
                price = 0.0 if rng.random() < 0.03 else round(float(rng.lognormal(4 + cat / 3, 0.7)), 2)
                rows.append(
                    ev(
                        f"user{u:04d}",
                        f"u{u}s{s}",
                        t,
                        str(etype),
                        price,
                        l1s[cat if rng.random() < 0.8 else 7],
                        brands[int(rng.integers(0, 4))],
                        category_id=None if cat == 5 else cat,
                    )
                )
    return rows


def pandas_features(rows: list[tuple]) -> pd.DataFrame:
    """Straightforward event-level pandas, sharing no code with etl.local_features."""
    cols = list(EVENT_COLUMNS)
    e = pd.DataFrame(rows, columns=cols)
    e["ts"] = pd.to_datetime(e["event_time"], utc=True)
    as_of = e["ts"].max()
    g = e.groupby("user_key")
    out = pd.DataFrame(index=sorted(e["user_key"].unique()))
    out["n_events"] = g.size()
    out["n_sessions"] = g["session_key"].nunique()
    out["active_days"] = g["ts"].agg(lambda s: s.dt.date.nunique())
    buys = e[e.event_type == "purchase"]
    out["frequency"] = buys.groupby("user_key")["session_key"].nunique().reindex(out.index).fillna(0)
    out["monetary"] = buys.groupby("user_key")["price"].sum().reindex(out.index).fillna(0.0)
    last_buy = buys.groupby("user_key")["ts"].max().reindex(out.index)
    out["recency_days"] = np.floor((as_of - last_buy).dt.total_seconds() / 86400)
    out["tenure_days"] = np.floor((as_of - g["ts"].min()).dt.total_seconds() / 86400)
    dur = e.groupby(["user_key", "session_key"])["ts"].agg(lambda s: (s.max() - s.min()).total_seconds())
    out["median_session_duration_s"] = dur.groupby(level=0).median()

    def gaps(s):
        days = sorted(set(s.dt.date))
        return np.mean([(b - a).days for a, b in itertools.pairwise(days)]) if len(days) > 1 else np.nan

    out["mean_days_between_visits"] = g["ts"].agg(gaps)
    counts = e.pivot_table(index="user_key", columns="event_type", aggfunc="size", fill_value=0)
    counts = counts.reindex(columns=["view", "cart", "remove_from_cart", "purchase"], fill_value=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["view_to_cart_rate"] = (counts["cart"] / counts["view"]).where(counts["view"] > 0)
        out["cart_to_purchase_rate"] = (counts["purchase"] / counts["cart"]).where(counts["cart"] > 0)
    sess = e.groupby(["user_key", "session_key"])["event_type"].agg(
        lambda s: ("cart" in set(s), "purchase" in set(s))
    )
    carted = sess[[c for c, _ in sess]]
    abandoned = carted[[not p for _, p in carted]]
    out["cart_abandonment_rate"] = (
        abandoned.groupby(level=0).size().reindex(out.index).fillna(0) / carted.groupby(level=0).size()
    )
    bucket = e["category_l1"].where(e["category_l1"].isin(CATEGORY_L1), "other")
    out["share_other"] = (bucket == "other").groupby(e["user_key"]).mean()
    out["share_computers"] = (bucket == "computers").groupby(e["user_key"]).mean()
    out["category_diversity"] = (
        bucket[bucket != "other"].groupby(e["user_key"]).nunique().reindex(out.index).fillna(0)
    )
    branded = e[e.brand.notna()]
    shares = branded.groupby(["user_key", "brand"]).size() / branded.groupby("user_key").size()
    out["brand_concentration"] = (shares**2).groupby(level=0).sum()
    priced = e[(e.price > 0) & e.category_id.notna()].copy()
    priced["lp"] = np.log(priced["price"])
    priced["rel"] = priced["lp"] - priced.groupby("category_id")["lp"].transform("mean")
    out["price_level"] = priced.groupby("user_key")["rel"].mean()
    out["weekend_share"] = (e["ts"].dt.weekday >= 5).groupby(e["user_key"]).mean()
    out["evening_share"] = (e["ts"].dt.hour >= 18).groupby(e["user_key"]).mean()
    out["night_share"] = (e["ts"].dt.hour < 6).groupby(e["user_key"]).mean()
    return out


def test_features_match_an_independent_pandas_recomputation():
    rows = synthetic_rows()
    got = features_of(rows)
    want = pandas_features(rows)
    assert list(got.index) == list(want.index) and len(got) == 300
    for col in want.columns:
        exact = col in {
            "n_events",
            "n_sessions",
            "active_days",
            "frequency",
            "recency_days",
            "tenure_days",
            "category_diversity",
        }
        pd.testing.assert_series_equal(
            got[col].astype(float),
            want[col].astype(float),
            check_names=False,
            check_exact=exact,
            rtol=1e-9,
            atol=1e-9,
            obj=col,
        )
    assert got["recency_days"].isna().sum() == want["recency_days"].isna().sum() > 0


def test_first_n_events_with_per_user_as_of_and_lake_price_reference():
    """The threshold-study recipe: first n events, as-of the last included event, lake-wide prices."""
    rows = synthetic_rows(120, seed=21)
    e = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    e["ts"] = pd.to_datetime(e["event_time"], utc=True)
    priced = e[(e.price > 0) & e.category_id.notna()].copy()
    priced["lp"] = np.log(priced["price"])
    lake_mean = priced.groupby("category_id")["lp"].mean()
    study = first_n_features(timeline(rows), [5], category_reference=reference_means(lake_mean))
    assert set(study["n"].to_pylist()) == {5}
    got = to_pandas(study.drop_columns(["n"]))
    head = (
        e.sort_values(["user_key", "ts", "event_type", "product_id", "session_key"])
        .groupby("user_key")
        .head(5)
    )
    g = head.groupby("user_key")
    assert got["n_events"].tolist() == g.size().sort_index().tolist()
    tenure = np.floor((g["ts"].max() - g["ts"].min()).dt.total_seconds() / 86400).sort_index()
    np.testing.assert_array_equal(got["tenure_days"].to_numpy(), tenure.to_numpy())
    hp = head[(head.price > 0) & head.category_id.notna()]
    level = (np.log(hp["price"]) - hp["category_id"].map(lake_mean)).groupby(hp["user_key"]).mean()
    np.testing.assert_allclose(got["price_level"].dropna(), level.sort_index(), rtol=1e-9, atol=1e-12)
    assert got["price_level"].notna().sum() == len(level) > 100


def test_first_n_features_take_each_of_a_users_first_events_for_every_n():
    """One call for the whole grid gives, per n, exactly the features of each user's first n events
    (pandas head(n) in time order with the study's tie-breaks); users may be restricted."""
    rows = synthetic_rows(60, seed=5)
    e = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    e["ts"] = pd.to_datetime(e["event_time"], utc=True)
    ordered = e.sort_values(["user_key", "ts", "event_type", "product_id", "session_key"])
    keep = sorted(e["user_key"].unique())[::2]
    got = first_n_features(timeline(rows), [20, 3, 8], users=keep).to_pandas()
    assert got["n"].tolist() == sorted(got["n"].tolist()) and set(got["user_key"]) == set(keep)
    for n in (3, 8, 20):
        head = ordered[ordered["user_key"].isin(keep)].groupby("user_key").head(n).groupby("user_key")
        part = got.loc[got["n"] == n].set_index("user_key").sort_index()
        assert part["n_events"].tolist() == head.size().sort_index().tolist()
        assert (part["first_event_time"] == head["ts"].min().sort_index()).all()
        assert (part["last_event_time"] == head["ts"].max().sort_index()).all()
        assert (part["as_of"] == part["last_event_time"]).all()
        buys = head.apply(lambda g: g.loc[g["event_type"] == "purchase", "price"].sum(), include_groups=False)
        np.testing.assert_allclose(part["monetary"], buys.sort_index(), rtol=1e-12)
    assert (got["n"] == 20).sum() == (got["n"] == 3).sum() == len(keep)  # every user at every n
    assert got.loc[got["n"] == 20, "n_events"].sum() > got.loc[got["n"] == 3, "n_events"].sum()


# -- incremental equals full ---------------------------------------------------------------------------------


def assert_frames_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns) and list(got.index) == list(want.index)
    for col in want.columns:
        if pd.api.types.is_float_dtype(want[col]):
            np.testing.assert_allclose(got[col], want[col], rtol=1e-9, atol=1e-9, err_msg=col)
        else:
            pd.testing.assert_series_equal(got[col], want[col], check_exact=True, obj=col)


@pytest.mark.parametrize("split", ["by_time", "random_rows"])
def test_a_bucket_merged_from_two_runs_equals_one_run(split):
    """Sessions and days straddle the runs in both splits (a lake's bucket is its runs' timelines merged
    on read); every column of every user must match the features of all events in one timeline."""
    rows = synthetic_rows(200, seed=11)
    if split == "by_time":
        cut = datetime(2019, 11, 15, tzinfo=UTC)
        first, second = [r for r in rows if r[0] < cut], [r for r in rows if r[0] >= cut]
    else:
        pick = np.random.default_rng(3).random(len(rows)) < 0.5
        first, second = [r for r, p in zip(rows, pick, strict=True) if p], [r for r, p in zip(rows, pick, strict=True) if not p]
    assert first and second
    flagged = {"user0003", "user0042"}
    merged = merge_timelines([timeline(first), timeline(second)])
    incremental = to_pandas(timeline_features(merged, suspicious_users=flagged))
    full = features_of(rows, suspicious=flagged)
    assert len(full) == 200 and full["is_suspicious"].sum() == 2
    assert_frames_equal(incremental, full)


def test_columns_promised_to_the_model_are_all_there():
    promised = [
        "user_key",
        "n_events",
        "n_sessions",
        "active_days",
        "events_per_session",
        "median_session_duration_s",
        "mean_days_between_visits",
        "frequency",
        "monetary",
        "recency_days",
        "tenure_days",
        "n_views",
        "n_carts",
        "n_removals",
        "n_purchases",
        "view_to_cart_rate",
        "cart_to_purchase_rate",
        "cart_abandonment_rate",
        "removal_rate",
        "category_diversity",
        "brand_concentration",
        "price_level",
        "weekend_share",
        "night_share",
        "morning_share",
        "afternoon_share",
        "evening_share",
        "holiday_share",
        "first_event_time",
        "last_event_time",
        "as_of",
        "is_suspicious",
    ] + [f"share_{c}" for c in (*CATEGORY_L1, "other")]
    assert set(promised) <= set(FEATURE_NAMES)


def test_docs_are_generated_from_the_registry():
    assert DOCS.read_text() == render_markdown(), "regenerate: python -m etl.features > docs/features.md"
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
