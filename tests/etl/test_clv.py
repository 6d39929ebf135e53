"""The RFM summary and holdout counts of etl.clv against a plain-Python walk over each customer's days."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from etl.clv import RFM_COLUMNS, holdout_actuals, rfm_summary

START = date(2020, 1, 1)


def transactions(seed: int, users: int = 300, days: int = 120) -> pl.DataFrame:
    """One row per user and purchase day (values include 0: a free order still counts as a transaction)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        n = 1 + rng.geometric(0.4)
        for d in sorted(set(rng.integers(0, days, n).tolist())):
            rows.append((f"u{u:04d}", START + timedelta(days=d), float(rng.choice([0.0, *rng.gamma(2, 20, 5)]))))
    return pl.DataFrame(rows, schema={"user_key": pl.String, "day": pl.Date, "revenue": pl.Float64}, orient="row")


def walk(tx: pl.DataFrame, end: date) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for user, day, value in sorted(tx.iter_rows()):
        if day > end:
            continue
        out.setdefault(user, {"days": [], "values": []})
        out[user]["days"].append(day)
        out[user]["values"].append(value)
    return {u: {"first_purchase": d["days"][0], "frequency": len(d["days"]) - 1,
                "recency": float((d["days"][-1] - d["days"][0]).days), "T": float((end - d["days"][0]).days),
                "monetary_value": float(np.mean(d["values"][1:])) if len(d["days"]) > 1 else 0.0,
                "revenue": float(sum(d["values"]))} for u, d in out.items()}  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2])
def test_rfm_summary_matches_a_walk_over_each_customer(seed):
    tx = transactions(seed)
    end = START + timedelta(days=70)  # purchases after it are ignored; customers born on it have T = 0
    tx = pl.concat([tx, pl.DataFrame({"user_key": ["born_last_day"], "day": [end], "revenue": [5.0]})])
    summary = rfm_summary(tx, end)
    assert summary.columns == list(RFM_COLUMNS)
    got = {r["user_key"]: r for r in summary.iter_rows(named=True)}
    want = walk(tx, end)
    assert set(got) == set(want)
    for user, w in want.items():
        g = got[user]
        assert g["first_purchase"] == w["first_purchase"] and g["frequency"] == w["frequency"], user
        for col in ("recency", "T", "monetary_value", "revenue"):
            assert g[col] == pytest.approx(w[col], rel=1e-12), (user, col)
    assert got["born_last_day"]["T"] == 0 and got["born_last_day"]["frequency"] == 0


def test_holdout_counts_only_customers_born_before_it():
    tx = transactions(3)
    start, end = START + timedelta(days=60), START + timedelta(days=119)
    got = {r["user_key"]: r for r in holdout_actuals(tx, start, end).iter_rows(named=True)}
    born = {u for u, d, _ in tx.iter_rows() if d < start}
    assert set(got) == born
    for user in born:
        inside = [(d, v) for u, d, v in tx.iter_rows() if u == user and start <= d <= end]
        assert got[user]["holdout_purchases"] == len(inside)
        assert got[user]["holdout_revenue"] == pytest.approx(sum(v for _, v in inside), abs=1e-9)
    with pytest.raises(ValueError, match="holdout period is empty"):
        holdout_actuals(tx, end, start)


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"lack column.*revenue"):
        rfm_summary(pl.DataFrame({"user_key": ["a"], "day": [START]}), START)


def test_purchase_days_of_a_timeline_match_pandas() -> None:
    """One row per user and UTC day with a purchase (two purchases a second apart across midnight are
    two days; a missing price counts 0), and the last event of any kind names the period's end."""
    import pandas as pd
    import pyarrow as pa

    from etl.clv import purchase_days, split_purchase_days

    times = ["2019-10-01 10:00:00", "2019-10-01 23:59:59", "2019-10-02 00:00:00", "2019-10-02 08:00:00",
             "2019-10-01 12:00:00", "2019-10-01 12:00:05", "2019-10-05 09:00:00", "2019-10-07 18:30:00"]  # fmt: skip
    events = pd.DataFrame({
        "user_key": ["a", "a", "a", "a", "b", "b", "b", "c"],
        "event_time": pd.to_datetime(times, utc=True),
        "event_type": ["purchase", "purchase", "purchase", "view", "purchase", "purchase", "cart", "view"],
        "price": [10.0, 2.5, None, 99.0, 1.0, 4.0, 7.0, 3.0],
    })  # fmt: skip
    timeline = pa.Table.from_pandas(events, preserve_index=False)
    timeline = timeline.set_column(0, "user_key", timeline["user_key"].dictionary_encode())
    timeline = timeline.set_column(2, "event_type", timeline["event_type"].dictionary_encode())
    tx, end = split_purchase_days(pl.from_arrow(purchase_days(timeline)))
    p = events[events["event_type"] == "purchase"].assign(day=lambda d: d["event_time"].dt.date,
                                                           price=lambda d: d["price"].fillna(0.0))  # fmt: skip
    want = p.groupby(["user_key", "day"], as_index=False)["price"].sum().rename(columns={"price": "revenue"})
    got = tx.sort(["user_key", "day"])
    assert got["user_key"].to_list() == want["user_key"].tolist() == ["a", "a", "b"]
    assert got["day"].to_list() == want["day"].tolist()
    assert got["revenue"].to_list() == want["revenue"].tolist() == [12.5, 0.0, 5.0]
    assert end == date(2019, 10, 7)
