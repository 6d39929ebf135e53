"""etl.retention against an independent computation: a plain-Python walk over each user's days with
dateutil's month arithmetic, for every mode, on generated user-days that include users whose start
falls on a period boundary (Mondays, Sundays, the 1st and the 31st of a month)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import date, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dateutil.relativedelta import relativedelta

from etl.retention import (
    BUCKET_FRAME,
    TABLE_COLUMNS,
    USER_DAY_COLUMNS,
    RetentionSpec,
    bucket_counts,
    combine,
    partial_counts,
    retention_table,
)
from etl.retention import user_days as retention_user_days

START, END = date(2020, 1, 1), date(2020, 5, 20)
BOUNDARY_STARTS = [date(2020, 1, 6), date(2020, 1, 5), date(2020, 2, 1), date(2020, 1, 31), date(2020, 3, 31),
                   date(2020, 2, 29), date(2020, 1, 27)]  # fmt: skip


def user_days(seed: int, users: int = 250) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    cats = ["electronics", "apparel", None]
    for u in range(users):
        start = BOUNDARY_STARTS[u] if u < len(BOUNDARY_STARTS) else START + timedelta(days=int(rng.integers(0, 120)))
        offsets = {0} | {int(d) for d in rng.geometric(0.05, rng.integers(0, 8)) if d < 200}
        if u < len(BOUNDARY_STARTS):  # returns exactly one week, one month and 31 days later
            offsets |= {7, 31, (start + relativedelta(months=1) - start).days}
        for off in sorted(offsets):
            day = start + timedelta(days=off)
            if day > END:
                continue
            purchases = int(rng.random() < 0.3)
            rows.append((f"u{u:03d}", day, int(rng.integers(1, 5)), purchases,
                         float(rng.gamma(2, 30)) if purchases else 0.0, cats[u % 3], cats[(u + 1) % 3] if purchases else None))
    return pl.DataFrame(rows, orient="row", schema={
        "user_key": pl.String, "day": pl.Date, "events": pl.Int64, "purchases": pl.Int64, "revenue": pl.Float64,
        "first_category": pl.String, "first_purchase_category": pl.String})  # fmt: skip


def _monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


def period_of(start: date, day: date, period: str, calendar: bool) -> int:
    if period == "day":
        return (day - start).days
    if period == "week":
        return (_monday(day) - _monday(start)).days // 7 if calendar else (day - start).days // 7
    if calendar:
        return (day.year - start.year) * 12 + day.month - start.month
    n = 0
    while start + relativedelta(months=n + 1) <= day:  # relativedelta clamps to the month's end, from the start
        n += 1
    return n


def period_end(start: date, n: int, period: str, calendar: bool) -> date:
    if period == "day":
        return start + timedelta(days=n)
    if period == "week":
        base = _monday(start) if calendar else start
        return base + timedelta(days=7 * (n + 1) - 1)
    base = start.replace(day=1) if calendar else start
    return base + relativedelta(months=n + 1) - timedelta(days=1)


def expected(days: pl.DataFrame, spec: RetentionSpec, segments: dict[str, str]) -> dict:
    by_user = defaultdict(list)
    for r in days.sort("user_key", "day").iter_rows(named=True):
        by_user[r["user_key"]].append(r)
    cohorts: dict = defaultdict(lambda: {"size": 0, "latest": None, "users": defaultdict(int), "revenue": defaultdict(float)})
    for user, rows in by_user.items():
        kind_rows = [r for r in rows if (r["purchases"] > 0 if spec.cohort_event == "purchase" else True)]
        if not kind_rows:
            continue
        start = kind_rows[0]["day"]
        cohort = _monday(start) if spec.cohort == "week" else start.replace(day=1)
        cat = kind_rows[0]["first_purchase_category" if spec.cohort_event == "purchase" else "first_category"]
        group = {None: "all", "category": cat or "(none)", "acquisition-month": str(start.replace(day=1)),
                 "segment": segments.get(user, "(unsegmented)")}[spec.by]
        c = cohorts[(group, cohort)]
        c["size"] += 1
        c["latest"] = max(c["latest"] or start, start)
        periods = set()
        for r in rows:
            if r["day"] < start:
                continue
            n = period_of(start, r["day"], spec.period, spec.calendar)
            c["revenue"][n] += r["revenue"]
            if r["purchases"] > 0 or spec.event == "any":
                periods.add(n)
        if spec.mode == "unbounded" and periods:
            periods = set(range(max(periods) + 1))
        for n in periods:
            c["users"][n] += 1
    out = {}
    for (group, cohort), c in cohorts.items():
        for n in range(period_of(cohort, END, spec.period, spec.calendar) + 1):
            out[(group, cohort, n)] = (c["size"], c["users"][n], c["users"][n] / c["size"], c["revenue"][n] / c["size"],
                                       period_end(c["latest"], n, spec.period, spec.calendar) <= END)  # fmt: skip
    return out


MODES = list(itertools.product(["week", "month"], ["any", "purchase"], ["day", "week", "month"],
                               ["n-period", "unbounded"], ["any", "purchase"], [False, True]))  # fmt: skip


@pytest.mark.parametrize(("cohort", "cohort_event", "period", "mode", "event", "calendar"), MODES)
def test_every_mode_matches_the_walk(cohort, cohort_event, period, mode, event, calendar):
    days = user_days(seed=len(MODES))
    spec = RetentionSpec(cohort, cohort_event, period, mode, event, calendar)
    got = {(r["group"], r["cohort"], r["period"]): (r["size"], r["users"], r["rate"], r["revenue"], r["complete"])
           for r in retention_table(days, spec, END).iter_rows(named=True)}  # fmt: skip
    want = expected(days, spec, {})
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert g[:2] == w[:2] and g[4] == w[4], key
        assert g[2] == pytest.approx(w[2], rel=1e-12) and g[3] == pytest.approx(w[3], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("by", ["segment", "category", "acquisition-month"])
def test_breakdowns_match_the_walk(by):
    days = user_days(seed=7)
    users = sorted(days["user_key"].unique())
    segments = {u: ["A", "B"][i % 2] for i, u in enumerate(users[: len(users) * 3 // 4])}
    spec = RetentionSpec(by=by, cohort_event="purchase" if by == "category" else "any")
    seg = pl.DataFrame({"user_key": list(segments), "segment": list(segments.values())})
    got = {(r["group"], r["cohort"], r["period"]): (r["size"], r["users"])
           for r in retention_table(days, spec, END, seg).iter_rows(named=True)}  # fmt: skip
    want = {k: v[:2] for k, v in expected(days, spec, segments).items()}
    assert got == want
    assert len({k[0] for k in got}) >= 2


def test_boundary_starts_by_hand():
    days = pl.DataFrame({"user_key": ["a", "a", "a", "b", "b"],
                         "day": [date(2020, 1, 5), date(2020, 1, 6), date(2020, 1, 12), date(2020, 1, 31), date(2020, 2, 29)],
                         "events": [1] * 5, "purchases": [0] * 5, "revenue": [0.0] * 5, "first_category": ["x"] * 5,
                         "first_purchase_category": [None] * 5})  # fmt: skip
    rolling = retention_table(days, RetentionSpec(), date(2020, 3, 1))
    assert rolling.columns == list(TABLE_COLUMNS)
    cal = retention_table(days, RetentionSpec(calendar=True), date(2020, 3, 1))
    # a starts on Sunday 2020-01-05 (cohort week of Monday 2019-12-30): Monday is calendar week 1 but
    # rolling week 0; the next Sunday is rolling week 1 and calendar week 1
    a_roll = rolling.filter(pl.col("cohort") == date(2019, 12, 30)).select("period", "users").rows()
    a_cal = cal.filter(pl.col("cohort") == date(2019, 12, 30)).select("period", "users").rows()
    assert a_roll[:3] == [(0, 1), (1, 1), (2, 0)]
    assert a_cal[:3] == [(0, 1), (1, 1), (2, 0)]
    months = retention_table(days, RetentionSpec(cohort="month", period="month"), date(2020, 3, 1))
    b = months.filter(pl.col("cohort") == date(2020, 1, 1)).select("period", "users").rows()
    assert b[:2] == [(0, 2), (1, 1)]  # Jan 31 -> Feb 29 is b's first monthly anniversary


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown period 'year'"):
        RetentionSpec(period="year")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown breakdown"):
        RetentionSpec(by="brand")  # type: ignore[arg-type]


@pytest.mark.parametrize(("spec", "by"), [(RetentionSpec(), None), (RetentionSpec(mode="unbounded", event="purchase",
                                          cohort="month", period="month"), None),
                                          (RetentionSpec(cohort_event="purchase", calendar=True), "category")])  # fmt: skip
def test_shares_of_disjoint_users_add_up_to_the_whole(spec, by):
    """The job counts each user bucket's share in its own task: three shares combined give the table
    of all users at once (sizes, users, revenue and the ``complete`` flag from the latest start)."""
    days = user_days(seed=11)
    spec = RetentionSpec(**{**spec.__dict__, "by": by})
    thirds = days.with_columns(part=pl.col("user_key").str.slice(1).cast(pl.Int64) % 3)
    shares = pl.concat([partial_counts(p.drop("part"), spec) for _, p in thirds.group_by("part")])
    whole = retention_table(days, spec, END)
    combined = combine(shares, spec, END)
    assert combined.drop("revenue").equals(whole.drop("revenue"))
    assert combined["revenue"].to_list() == pytest.approx(whole["revenue"].to_list(), rel=1e-12)
    assert whole["users"].sum() > 0 and not whole["complete"].all()


def test_user_days_of_a_timeline_match_pandas():
    """user_days on a timeline (sorted by user and time, dictionary-encoded text, UTC times) against a
    pandas reduction: per user and UTC day the events, purchases, revenue and first categories."""
    rng = np.random.default_rng(4)
    n = 400
    times = pd.Timestamp("2020-01-31 20:00", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 5 * 86400, n)), "s")
    frame = pd.DataFrame({
        "user_key": rng.choice(["k1", "k2", "k3", "k4"], n), "event_time": times,
        "event_type": rng.choice(["view", "cart", "purchase"], n, p=[0.6, 0.2, 0.2]),
        "price": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2, 20, n).round(2)),
        "category_l1": rng.choice(["apparel", "electronics", None], n),
    }).sort_values(["user_key", "event_time"], kind="stable")  # fmt: skip
    timeline = pa.Table.from_pandas(frame, preserve_index=False)
    timeline = timeline.set_column(2, "event_type", pc.dictionary_encode(timeline["event_type"]))
    got = retention_user_days(timeline)
    assert got.columns == list(USER_DAY_COLUMNS)
    assert retention_user_days(timeline, categories=False).equals(
        got.drop("first_category", "first_purchase_category"))  # what the views without the category breakdown read
    frame["day"] = frame["event_time"].dt.date
    buy = frame[frame["event_type"] == "purchase"]
    g = frame.groupby(["user_key", "day"], sort=False)
    want = pd.DataFrame({
        "events": g.size(), "purchases": g["event_type"].apply(lambda s: int((s == "purchase").sum())),
        "revenue": buy.groupby(["user_key", "day"])["price"].apply(lambda s: s.fillna(0).sum()),
        "first_category": g["category_l1"].agg(lambda s: s.iloc[0]),  # the earliest event's, null or not
        "first_purchase_category": buy.groupby(["user_key", "day"])["category_l1"].agg(lambda s: s.iloc[0]),
    }).reset_index()  # fmt: skip
    want["revenue"] = want["revenue"].fillna(0.0)
    assert len(got) == len(want) == frame.groupby(["user_key", "day"]).ngroups
    mine = got.to_pandas().set_index(["user_key", "day"]).sort_index()
    theirs = want.set_index(["user_key", "day"]).sort_index()
    assert mine["events"].tolist() == theirs["events"].tolist()
    assert mine["purchases"].tolist() == theirs["purchases"].tolist()
    assert mine["revenue"].tolist() == pytest.approx(theirs["revenue"].tolist(), rel=1e-12)
    assert mine["first_category"].fillna("-").tolist() == theirs["first_category"].fillna("-").tolist()
    assert mine["first_purchase_category"].fillna("-").tolist() == theirs["first_purchase_category"].fillna("-").tolist()


def test_bucket_counts_name_each_view_and_carry_the_last_day():
    """A bucket without any purchase has no first-purchase cohort, yet its last day still reaches the driver."""
    timeline = pa.table({"user_key": ["a", "a", "b"], "event_time": pa.array(
        [pd.Timestamp("2020-01-06 10:00", tz="UTC"), pd.Timestamp("2020-01-20 23:59", tz="UTC"),
         pd.Timestamp("2020-01-09", tz="UTC")]), "event_type": ["view", "cart", "view"],
        "price": [1.0, 2.0, 3.0], "category_l1": ["x", None, "y"]})  # fmt: skip
    out = bucket_counts(timeline, {"overall": RetentionSpec(), "buyers": RetentionSpec(cohort_event="purchase")})
    assert out.columns == BUCKET_FRAME.columns
    assert set(out["view"].drop_nulls()) == {"overall"}
    assert out["last_day"].unique().to_list() == [date(2020, 1, 20)]
    table = combine(out.filter(pl.col("view") == "overall"), RetentionSpec(), date(2020, 1, 20))
    assert table.select("period", "users").rows() == [(0, 2), (1, 0), (2, 1)]  # a returns 14 days later: week 2
    assert bucket_counts(timeline.slice(0, 0), {"overall": RetentionSpec()}).height == 0
    # keys read as dictionaries, in chunks with their own dictionaries (user a spans two): the same counts
    keys = pa.chunked_array([pc.dictionary_encode(pa.array(["a"])), pc.dictionary_encode(pa.array(["a", "b"]))])
    views = {"overall": RetentionSpec(), "by segment": RetentionSpec(by="segment")}
    segments = pl.DataFrame({"user_key": ["a"], "segment": ["loyal"]})
    by_dictionary, by_text = (bucket_counts(t, views, segments).sort(pl.all(), nulls_last=True)
                              for t in (timeline.set_column(0, "user_key", keys), timeline))  # fmt: skip
    assert by_dictionary.equals(by_text)
    assert by_text.filter(pl.col("group") == "loyal")["users"].to_list() == [1, 1, 1]  # a: size, weeks 0 and 2
