"""etl.describe against an independent pandas/numpy recomputation on the same rows."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from etl.contract import EVENT_SCHEMA, EVENT_TYPES, QUARANTINE_SCHEMA
from etl.describe import COUNT_BINS, MISSABLE_COLUMNS, NO_CATEGORY, QUANTILES, describe

pytestmark = pytest.mark.spark

CATEGORIES = [
    "electronics.smartphone",
    "electronics.audio.headphone",
    "appliances.kitchen.washer",
    "computers.notebook",
    "apparel.shoes",
]
BRANDS = ["samsung", "apple", "xiaomi", "bosch", "nike", "lenovo"]


def _events(n: int = 900, seed: int = 7) -> pd.DataFrame:
    """Random events with skewed users/sessions, blanks and nulls where the source has them."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2019, 10, 1)
    times = [start + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 6 * 86400, n)]
    users = rng.zipf(1.6, n) % 60  # a few heavy users, many light ones
    sessions = users * 10 + rng.integers(0, 4, n)
    codes = rng.choice([*CATEGORIES, None, ""], n, p=[0.3, 0.15, 0.15, 0.1, 0.1, 0.15, 0.05])
    brands = rng.choice([*BRANDS, None], n, p=[0.25, 0.2, 0.15, 0.1, 0.05, 0.05, 0.2])
    types = rng.choice(list(EVENT_TYPES), n, p=[0.8, 0.1, 0.04, 0.06])
    prices = np.round(rng.lognormal(4, 1.2, n), 2)
    prices[rng.random(n) < 0.03] = 0.0
    rows = []
    for i in range(n):
        code = codes[i]
        parts = (code.split(".") if code else []) + [None, None, None]
        rows.append(
            {
                "event_time": times[i],
                "event_hour": times[i].hour,
                "event_type": str(types[i]),
                "product_id": int(rng.integers(1000, 1400)),
                "category_id": None if rng.random() < 0.02 else int(2053013555631882655 + (i % 7)),
                "category_code": code,
                "category_l1": parts[0],
                "category_l2": parts[1],
                "category_l3": parts[2],
                "brand": brands[i],
                "price": float(prices[i]),
                "user_key": f"{int(users[i]):064x}",
                "session_key": f"{int(sessions[i]):064x}",
                "source_file": "2019-Oct.csv",
                "event_date": times[i].date(),
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pdf() -> pd.DataFrame:
    return _events()


@pytest.fixture(scope="module")
def side_tables() -> dict[str, pd.DataFrame]:
    reasons = ["bad_price"] * 4 + ["missing_user_id"] * 2 + ["bad_event_time"]
    quarantine = pd.DataFrame(
        {
            "source_file": "2019-Oct.csv",
            "line_number": range(2, 2 + len(reasons)),
            "reason": reasons,
            "raw_line": "redacted",
        }
    )
    duplicates = pd.DataFrame(
        {"source_file": "2019-Oct.csv", "line_number": [50, 51, 52], "duplicate_of_line": [3, 3, 9]}
    )
    return {"quarantine": quarantine, "duplicates": duplicates}


@pytest.fixture(scope="module")
def stats(spark, pdf, side_tables) -> dict:
    events = spark.createDataFrame(pdf, EVENT_SCHEMA)
    quarantine = spark.createDataFrame(side_tables["quarantine"], QUARANTINE_SCHEMA)
    duplicates = spark.createDataFrame(side_tables["duplicates"])
    heavy = pdf["user_key"].value_counts().index[:2].tolist()
    suspicious = spark.createDataFrame(
        pd.DataFrame(
            {"user_key": [*heavy, heavy[0], "f" * 64], "max_events_per_day": [2000, 1500, 1800, 1200]}
        )
    )
    return describe(events, quarantine, duplicates=duplicates, suspicious_users=suspicious, top_n=4) | {
        "_heavy": heavy
    }


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype("string").str.strip() == "")


def test_result_is_json_serializable(stats) -> None:
    text = json.dumps({k: v for k, v in stats.items() if k != "_heavy"})
    assert json.loads(text)["overview"]["events"] == stats["overview"]["events"]


def test_overview_matches_pandas(stats, pdf) -> None:
    o = stats["overview"]
    assert o["events"] == len(pdf)
    assert o["users"] == pdf["user_key"].nunique()
    assert o["sessions"] == pdf["session_key"].nunique()
    assert o["products"] == pdf["product_id"].nunique()
    assert o["first_event"] == pdf["event_time"].min().isoformat()
    assert o["last_event"] == pdf["event_time"].max().isoformat()
    assert o["first_date"] == str(pdf["event_date"].min())
    assert o["last_date"] == str(pdf["event_date"].max())
    assert o["days_with_events"] == pdf["event_date"].nunique()
    assert o["revenue"] == pytest.approx(pdf.loc[pdf.event_type == "purchase", "price"].sum(), abs=0.01)
    assert o["zero_or_negative_price_events"] == int((pdf["price"] <= 0).sum())
    assert stats["event_types"] == {t: int((pdf.event_type == t).sum()) for t in EVENT_TYPES}


def test_missing_rates_match_pandas(stats, pdf) -> None:
    for column in MISSABLE_COLUMNS:
        expected = (
            int(_blank(pdf[column]).sum()) if column != "category_id" else int(pdf[column].isna().sum())
        )
        assert stats["missing"][column]["missing"] == expected, column
        assert stats["missing"][column]["rate"] == pytest.approx(expected / len(pdf))
    assert stats["missing"]["category_code"]["missing"] > 0 and stats["missing"]["brand"]["missing"] > 0


@pytest.mark.parametrize(
    ("section", "key"), [("events_per_user", "user_key"), ("events_per_session", "session_key")]
)
def test_count_distributions_match_pandas(stats, pdf, section, key) -> None:
    counts = pdf.groupby(key).size().to_numpy()
    got = stats[section]
    assert got["n"] == len(counts)
    assert got["mean"] == pytest.approx(counts.mean())
    assert got["max"] == counts.max()
    expected_q = np.quantile(counts, QUANTILES, method="inverted_cdf")
    assert list(got["quantiles"].values()) == pytest.approx(expected_q)
    assert list(got["quantiles"]) == ["p05", "p25", "p50", "p75", "p90", "p95", "p99"]
    edges = [*COUNT_BINS, np.inf]
    expected_hist = [int(((counts >= lo) & (counts < hi)).sum()) for lo, hi in itertools.pairwise(edges)]
    assert [b["count"] for b in got["histogram"]] == expected_hist
    assert sum(expected_hist) == len(counts)
    assert got["histogram"][0]["bin"] == "1" and got["histogram"][2]["bin"] == "3-5"
    assert got["histogram"][-1]["bin"] == "1001+"


def test_funnel_matches_pandas(stats, pdf) -> None:
    f = stats["funnel"]
    buyers = pdf.loc[pdf.event_type == "purchase", "user_key"].nunique()
    carters = pdf.loc[pdf.event_type == "cart", "user_key"].nunique()
    buying_sessions = pdf.loc[pdf.event_type == "purchase", "session_key"].nunique()
    assert (f["users_who_purchased"], f["users_who_carted"]) == (buyers, carters)
    assert f["sessions_with_purchase"] == buying_sessions
    assert f["user_purchase_rate"] == pytest.approx(buyers / pdf["user_key"].nunique())
    assert f["purchases_per_view"] == pytest.approx(
        (pdf.event_type == "purchase").sum() / (pdf.event_type == "view").sum()
    )


@pytest.mark.parametrize(("section", "column"), [("categories", "category_code"), ("brands", "brand")])
def test_top_lists_match_pandas(stats, pdf, section, column) -> None:
    values = pdf[column].where(~_blank(pdf[column]))
    counts = values.value_counts()
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
    got = stats[section]
    assert [(t["name"], t["events"]) for t in got["top"]] == expected
    assert got["distinct"] == values.nunique()
    assert got["missing_events"] == int(values.isna().sum())
    first = got["top"][0]
    rows = pdf[values == first["name"]]
    assert first["purchase"] == int((rows.event_type == "purchase").sum())
    assert first["revenue"] == pytest.approx(rows.loc[rows.event_type == "purchase", "price"].sum(), abs=0.01)
    assert first["share"] == pytest.approx(len(rows) / len(pdf))


def test_price_by_category_matches_pandas(stats, pdf) -> None:
    l1 = pdf["category_l1"].where(~_blank(pdf["category_l1"]), NO_CATEGORY)
    got = stats["price_by_category"]
    sizes = l1.value_counts()
    assert [g["category"] for g in got] == sorted(sizes.index, key=lambda c: (-sizes[c], c))[:4]
    for g in got:
        prices = pdf.loc[l1 == g["category"], "price"].to_numpy()
        assert g["events"] == len(prices)
        assert (g["min"], g["max"]) == (prices.min(), prices.max())
        assert g["mean"] == pytest.approx(prices.mean())
        assert list(g["quantiles"].values()) == pytest.approx(
            np.quantile(prices, QUANTILES, method="inverted_cdf")
        )


def test_daily_volume_matches_pandas(stats, pdf) -> None:
    by_day = pdf.groupby("event_date")
    expected = [
        {
            "date": str(day),
            "events": len(g),
            "users": g["user_key"].nunique(),
            **{t: int((g.event_type == t).sum()) for t in EVENT_TYPES},
        }
        for day, g in by_day
    ]
    got = [{k: d[k] for k in ("date", "events", "users", *EVENT_TYPES)} for d in stats["daily"]]
    assert got == expected
    assert len(got) == 6


def test_quality_side_tables(stats, pdf, side_tables) -> None:
    q = stats["quarantine"]
    assert q["rows"] == 7
    assert q["by_reason"] == {"bad_price": 4, "missing_user_id": 2, "bad_event_time": 1}
    assert list(q["by_reason"]) == ["bad_price", "missing_user_id", "bad_event_time"]  # largest first
    assert q["share_of_valid_and_rejected"] == pytest.approx(7 / (7 + len(pdf)))
    assert stats["duplicates"] == {"rows": 3}
    s = stats["suspicious_users"]
    heavy = stats["_heavy"]
    assert s["users"] == 3  # two heavy users (one listed twice, from two runs) and one without events
    assert s["users_with_events"] == 2
    assert s["events"] == int(pdf["user_key"].isin(heavy).sum())
    assert s["share_of_events"] == pytest.approx(s["events"] / len(pdf))


def test_absent_side_tables_give_none_sections(spark, pdf) -> None:
    small = spark.createDataFrame(pdf.head(40), EVENT_SCHEMA)
    stats = describe(small)
    assert stats["quarantine"] is None and stats["duplicates"] is None and stats["suspicious_users"] is None
    assert stats["overview"]["events"] == 40


def test_empty_events_do_not_crash(spark) -> None:
    stats = describe(spark.createDataFrame([], EVENT_SCHEMA))
    assert stats["overview"]["events"] == 0 and stats["overview"]["first_date"] is None
    assert stats["events_per_user"]["n"] == 0 and stats["events_per_user"]["quantiles"] == {}
    assert stats["daily"] == [] and stats["categories"]["top"] == []
    json.dumps(stats)


def test_no_keys_leave_describe(stats, pdf) -> None:
    text = json.dumps({k: v for k, v in stats.items() if k != "_heavy"})
    for key in pd.concat([pdf["user_key"], pdf["session_key"]]).unique():
        assert key not in text
