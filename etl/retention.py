"""Retention cohorts: who comes back, period after period, and what they spend.

Definitions (the report, docs/retention.md and the tests use them)
-----------------------------------------------------------------
Everything is counted in whole UTC days (an event's day is its ``event_date``).

* A user's *start* is the day of their first event of the cohort kind: any event (``cohort_event=any``,
  "first seen") or their first purchase (``purchase``). Users without such an event are in no cohort.
* Their *cohort* is the calendar week (Monday to Sunday, named by its Monday) or calendar month (named
  by its first day) holding the start.
* Period n of a user, ``rolling`` (default): the days ``[start + n*L, start + (n+1)*L)`` with L = 1 day
  or 7 days; for months, from the n-th monthly anniversary of the start to the next (an anniversary
  past a month's end falls on its last day: Jan 31 -> Feb 29 -> Mar 31). ``calendar``: the n-th
  calendar day, week (Monday-based) or month after the one holding the start; period 0 is the rest of
  that calendar period.
* A member is *returning* in period n when they have an event of the chosen kind (``event=any`` or
  ``purchase``) in it. ``n-period`` mode counts the members returning in period n; ``unbounded`` the
  members returning in period n or any later period (so it never increases with n).
* ``rate`` = users / cohort size; ``revenue`` = the members' purchase revenue in period n (in both
  modes) divided by the cohort size.
* Period n of a cohort is listed when its first member could have reached it by the last day of data
  (cohort day + n periods <= end); ``complete`` says whether every member's period n has ended by then.
* Breakdowns split every cohort: ``segment`` (current segment), ``category`` (category_l1 of the
  earliest event of the start day of the cohort kind; ``(none)`` without one) and
  ``acquisition-month`` (the month of the start).

Every count is a sum over users, so it is computed per user bucket of the lake's timelines (each a
Spark task: :func:`bucket_counts` reduces the bucket's events to one row per user and active day,
:func:`user_days`, and counts that bucket's share, :func:`partial_counts`) and the driver adds the
shares (:func:`combine`). All polars; :func:`retention_table` is one share combined.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final, Literal, get_args

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from etl.user_runs import user_runs

Cohort = Literal["week", "month"]
CohortEvent = Literal["any", "purchase"]
Period = Literal["day", "week", "month"]
Mode = Literal["n-period", "unbounded"]
Event = Literal["any", "purchase"]
By = Literal["segment", "category", "acquisition-month"]

NO_CATEGORY: Final[str] = "(none)"
NO_SEGMENT: Final[str] = "(unsegmented)"
#: Columns of :func:`user_days`.
USER_DAY_COLUMNS: Final[tuple[str, ...]] = (
    "user_key", "day", "events", "purchases", "revenue", "first_category", "first_purchase_category",
)  # fmt: skip
#: The user-day columns only the category breakdown reads (:func:`user_days` ``categories``).
_CATEGORIES: Final[tuple[str, ...]] = ("first_category", "first_purchase_category")
_COUNTED: Final[tuple[str, ...]] = tuple(c for c in USER_DAY_COLUMNS if c not in _CATEGORIES)
#: Columns of :func:`partial_counts` (a share of the counts; see there).
PARTIAL_SCHEMA: Final[dict[str, pl.DataType]] = {
    "group": pl.String(), "cohort": pl.Date(), "period": pl.Int64(), "users": pl.Int64(), "revenue": pl.Float64(),
    "latest": pl.Date(),
}  # fmt: skip
PARTIAL_COLUMNS: Final[tuple[str, ...]] = tuple(PARTIAL_SCHEMA)
#: The frame of :func:`bucket_counts` (empty).
BUCKET_FRAME: Final[pl.DataFrame] = pl.DataFrame(schema={"view": pl.String(), **PARTIAL_SCHEMA, "last_day": pl.Date()})
#: Columns of :func:`retention_table`.
TABLE_COLUMNS: Final[tuple[str, ...]] = (
    "group", "cohort", "size", "period", "users", "rate", "revenue", "complete",
)  # fmt: skip


@dataclass(frozen=True)
class RetentionSpec:
    """What to count (the defaults are ``shoplens retention``'s)."""

    cohort: Cohort = "week"
    cohort_event: CohortEvent = "any"
    period: Period = "week"
    mode: Mode = "n-period"
    event: Event = "any"
    calendar: bool = False
    by: By | None = None

    def __post_init__(self) -> None:
        for name, kind in (("cohort", Cohort), ("cohort_event", CohortEvent), ("period", Period), ("mode", Mode),
                           ("event", Event)):  # fmt: skip
            value = getattr(self, name)
            if value not in get_args(kind):
                raise ValueError(
                    f"unknown {name.replace('_', '-')} {value!r}; use one of {', '.join(get_args(kind))}"
                )
        if self.by is not None and self.by not in get_args(By):
            raise ValueError(f"unknown breakdown {self.by!r}; use one of {', '.join(get_args(By))}")

    def to_dict(self) -> dict[str, object]:
        return {"cohort": self.cohort, "cohort_event": self.cohort_event, "period": self.period, "mode": self.mode,
                "event": self.event, "periods": "calendar" if self.calendar else "rolling", "by": self.by}  # fmt: skip


def user_days(timeline: pa.Table | pl.DataFrame, categories: bool = True) -> pl.DataFrame:
    """A user bucket's timeline (:mod:`etl.timeline`: sorted by user and time, UTC times) -> one row
    per user and UTC day with any event, in that order: the columns of :data:`USER_DAY_COLUMNS`
    (without the two category columns unless ``categories``: only the category breakdown reads them).

    ``first_category`` is the category_l1 of the day's earliest event, ``first_purchase_category``
    that of its earliest purchase (null without one). A user's day is a run of consecutive rows in a
    timeline, so everything is array arithmetic over the runs' first rows: no hashing, no sort, and no
    polars frame of the timeline (converting its dictionaries cost more than the counting). Purchases
    are a few percent of the events, so their sums are taken over the purchase rows alone.
    """
    table = timeline.to_arrow() if isinstance(timeline, pl.DataFrame) else timeline
    names = USER_DAY_COLUMNS if categories else _COUNTED
    n = table.num_rows
    user = pl.Series(table["user_key"])
    if n == 0:
        return pl.DataFrame({"user_key": user, "day": pl.Series([], dtype=pl.Date)}).with_columns(
            pl.lit(0, pl.Int64).alias("events"), pl.lit(0, pl.Int64).alias("purchases"),
            pl.lit(0.0).alias("revenue"), pl.lit(None, pl.String).alias("first_category"),
            pl.lit(None, pl.String).alias("first_purchase_category")).select(names)  # fmt: skip
    day = _utc_days(table["event_time"])
    starts = np.flatnonzero((user != user.shift()).fill_null(True).to_numpy() | np.r_[True, day[1:] != day[:-1]])
    bought = np.flatnonzero(_equals(table["event_type"], "purchase"))
    run = np.searchsorted(starts, bought, side="right") - 1  # the user-day of each purchase
    price = pc.fill_null(table["price"], 0.0).to_numpy()
    out = {
        "user_key": user.gather(starts), "day": pl.Series(day[starts]).cast(pl.Date),
        "events": np.diff(np.append(starts, n)).astype(np.int64),
        "purchases": np.bincount(run, minlength=len(starts)).astype(np.int64),
        "revenue": np.bincount(run, weights=price[bought], minlength=len(starts)),
    }  # fmt: skip
    if categories:
        first_bought = np.full(len(starts), n)  # n: no purchase that day
        lead = np.r_[True, run[1:] != run[:-1]] if len(run) else np.zeros(0, bool)
        first_bought[run[lead]] = bought[lead]
        category = table["category_l1"]
        out["first_category"] = _text(category.take(starts))
        out["first_purchase_category"] = _text(category.take(pa.array(np.minimum(first_bought, n - 1),
                                                                        mask=first_bought == n)))  # fmt: skip
    return pl.DataFrame(out)


#: Clock units per day of an Arrow timestamp.
_PER_DAY: Final[dict[str, int]] = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def _utc_days(times: pa.ChunkedArray) -> np.ndarray:
    """Each time's UTC day as days since 1970-01-01 (Arrow stores UTC instants: a floor division)."""
    if times.null_count:
        raise ValueError("a timeline holds events without a time")
    ticks = times.combine_chunks()
    return np.floor_divide(ticks.view(pa.int64()).to_numpy(), _PER_DAY[ticks.type.unit]).astype(np.int32)


def _equals(column: pa.ChunkedArray, value: str) -> np.ndarray:
    """The rows holding ``value`` (null: no); a dictionary column compares its indices, not its text."""
    parts = [np.zeros(0, bool)]
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            codes = np.flatnonzero(pc.fill_null(pc.equal(chunk.dictionary, value), False).to_numpy(zero_copy_only=False))
            parts.append(np.isin(pc.fill_null(chunk.indices, -1).to_numpy(), codes))
        else:
            parts.append(pc.fill_null(pc.equal(chunk, value), False).to_numpy(zero_copy_only=False))
    return np.concatenate(parts)


def _text(values: pa.ChunkedArray | pa.Array) -> pl.Series:
    """Text (plain or a dictionary) as a polars string column."""
    return pl.Series(values).cast(pl.String)


def _week_start(day: pl.Expr) -> pl.Expr:
    return day.dt.truncate("1w")  # polars weeks start on Monday


def _month_index(day: pl.Expr) -> pl.Expr:
    return day.dt.year().cast(pl.Int64) * 12 + day.dt.month().cast(pl.Int64) - 1


def _rolling_months(start: pl.Expr, day: pl.Expr) -> pl.Expr:
    """Whole monthly anniversaries of ``start`` on or before ``day`` (anniversaries clamp to month ends)."""
    k = _month_index(day) - _month_index(start)
    anniversary = start.dt.offset_by(pl.format("{}mo", k))
    return pl.when(day < anniversary).then(k - 1).otherwise(k)


def period_index(start: pl.Expr, day: pl.Expr, period: Period, calendar: bool) -> pl.Expr:
    """The period (0, 1, ...) of ``day`` for a user who started on ``start`` (module docstring)."""
    days = (day - start).dt.total_days()
    if period == "day":
        return days
    if period == "week":
        if calendar:
            return (_week_start(day) - _week_start(start)).dt.total_days() // 7
        return days // 7
    return _month_index(day) - _month_index(start) if calendar else _rolling_months(start, day)


def _period_start(cohort_day: pl.Expr, n: pl.Expr, period: Period, calendar: bool) -> pl.Expr:
    """First day of period ``n`` of the cohort's earliest possible member (whose start is the cohort day)."""
    if period == "day":
        return cohort_day + pl.duration(days=n)
    if period == "week":
        return (_week_start(cohort_day) if calendar else cohort_day) + pl.duration(weeks=n)
    base = cohort_day.dt.month_start() if calendar else cohort_day
    return base.dt.offset_by(pl.format("{}mo", n))


def _period_end(start: pl.Expr, n: pl.Expr, period: Period, calendar: bool) -> pl.Expr:
    """Last day of period ``n`` of a member who started on ``start``."""
    return _period_start(start, n + 1, period, calendar) - pl.duration(days=1)


def members(days: pl.DataFrame, spec: RetentionSpec, segments: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per cohort member: ``user_key, start, cohort, group``."""
    kind = pl.col("events") > 0 if spec.cohort_event == "any" else pl.col("purchases") > 0
    category = "first_category" if spec.cohort_event == "any" else "first_purchase_category"
    first_category = [pl.col(category).sort_by("day").first().alias("category")] if spec.by == "category" else []
    first = days.filter(kind).group_by("user_key").agg(pl.col("day").min().alias("start"), *first_category)
    cohort = _week_start(pl.col("start")) if spec.cohort == "week" else pl.col("start").dt.month_start()
    out = first.with_columns(cohort.alias("cohort"))
    if spec.by is None:
        group = pl.lit("all")
    elif spec.by == "category":
        group = pl.col("category").fill_null(NO_CATEGORY)
    elif spec.by == "acquisition-month":
        group = pl.col("start").dt.month_start().cast(pl.String)
    else:
        if segments is None:
            out = out.with_columns(segment=pl.lit(None, pl.String))
        else:
            out = out.join(segments.select("user_key", "segment"), on="user_key", how="left")
        group = pl.col("segment").fill_null(NO_SEGMENT)
    return out.select("user_key", "start", "cohort", group.alias("group"))


def partial_counts(days: pl.DataFrame, spec: RetentionSpec, segments: pl.DataFrame | None = None) -> pl.DataFrame:
    """Some users' share of the retention (the columns of :data:`PARTIAL_COLUMNS`): per (group, cohort),
    a size row (``period`` null, ``users`` = members, ``latest`` = their latest start); per (group,
    cohort, period) the members returning and their revenue. Every count is a sum over users, so the
    shares of disjoint sets of users (the lake's user buckets) add up: :func:`combine`."""
    needed = USER_DAY_COLUMNS if spec.by == "category" else _COUNTED
    missing = [c for c in needed if c not in days.columns]
    if missing:
        raise ValueError(f"user days lack column(s) {', '.join(missing)}")
    if days["user_key"].is_sorted():  # a timeline's user days: polars groups and joins them by merging
        days = days.with_columns(pl.col("user_key").set_sorted())
    who = members(days, spec, segments)
    kind = pl.col("events") > 0 if spec.event == "any" else pl.col("purchases") > 0
    active = (days.join(who, on="user_key", how="inner").filter(pl.col("day") >= pl.col("start"))
              .with_columns(period_index(pl.col("start"), pl.col("day"), spec.period, spec.calendar).alias("period")))  # fmt: skip
    keys = ["group", "cohort", "period"]  # active rows carry their member's group and cohort
    if spec.mode == "n-period":  # the distinct members returning in each period, and everyone's revenue
        counts = active.group_by(keys).agg(pl.col("user_key").filter(kind).n_unique().cast(pl.Int64).alias("users"),
                                           pl.col("revenue").sum())  # fmt: skip
    else:  # returning in n or later: every period up to the member's last one
        last = active.filter(kind).group_by("user_key", "group", "cohort").agg(pl.col("period").max().alias("last"))
        users = (last.select("group", "cohort", pl.int_ranges(0, pl.col("last") + 1).alias("period")).explode("period")
                 .group_by(keys).agg(pl.len().cast(pl.Int64).alias("users")))  # fmt: skip
        counts = users.join(active.group_by(keys).agg(pl.col("revenue").sum()), on=keys, how="full", coalesce=True)
    sizes = who.group_by("group", "cohort").agg(pl.len().cast(pl.Int64).alias("users"),
                                                pl.col("start").max().alias("latest"))  # fmt: skip
    return pl.concat([
        sizes.select("group", "cohort", pl.lit(None, pl.Int64).alias("period"), "users",
                     pl.lit(None, pl.Float64).alias("revenue"), "latest"),
        counts.select("group", "cohort", pl.col("period").cast(pl.Int64), pl.col("users").fill_null(0),
                      pl.col("revenue").fill_null(0.0), pl.lit(None, pl.Date).alias("latest")),
    ])  # fmt: skip


def combine(partials: pl.DataFrame, spec: RetentionSpec, end: date) -> pl.DataFrame:
    """The retention of every cohort (and group) from the :func:`partial_counts` of disjoint sets of
    users: the columns of :data:`TABLE_COLUMNS`, one row per (group, cohort, period) listed (module
    docstring), sorted."""
    keys = ["group", "cohort", "period"]
    sums = partials.group_by(keys).agg(pl.col("users").sum(), pl.col("revenue").sum(), pl.col("latest").max())
    sizes = sums.filter(pl.col("period").is_null()).select("group", "cohort", pl.col("users").alias("size"), "latest")
    counts = sums.filter(pl.col("period").is_not_null()).select(*keys, "users", "revenue")
    grid = _grid(sizes.select("group", "cohort", "size"), spec, end)
    table = (grid.join(counts, on=keys, how="left")
             .join(sizes.select("group", "cohort", "latest"), on=["group", "cohort"], how="left")
             .with_columns(pl.col("users").fill_null(0).cast(pl.Int64), pl.col("revenue").fill_null(0.0)))  # fmt: skip
    complete = _period_end(pl.col("latest"), pl.col("period"), spec.period, spec.calendar) <= end
    return table.select(
        "group", "cohort", pl.col("size").cast(pl.Int64), pl.col("period").cast(pl.Int64), "users",
        (pl.col("users") / pl.col("size")).alias("rate"), (pl.col("revenue") / pl.col("size")).alias("revenue"),
        complete.alias("complete"),
    ).sort("group", "cohort", "period")  # fmt: skip


def retention_table(days: pl.DataFrame, spec: RetentionSpec, end: date,
                    segments: pl.DataFrame | None = None) -> pl.DataFrame:  # fmt: skip
    """The retention of every cohort (and group) of these users: :func:`combine` of their one share."""
    return combine(partial_counts(days, spec, segments), spec, end)


def bucket_counts(timeline: pa.Table, specs: dict[str, RetentionSpec],
                  segments: pl.DataFrame | None = None) -> pl.DataFrame:  # fmt: skip
    """One user bucket's :func:`partial_counts` for each named spec (column ``view``): :data:`BUCKET_FRAME`.

    Every row carries the bucket's last event day (``last_day``: the lake's last day is the latest of
    them), and one more row, ``view`` null, carries only that, so a bucket without cohort members (no
    purchase, say) still counts for the lake's last day. The users are counted by number (their run
    in the timeline) rather than by key: joins on integers, not on 64-character strings.
    """
    if timeline.num_rows == 0:
        return BUCKET_FRAME.clear()
    numbers, first_rows = user_runs(timeline["user_key"])
    number = pl.Series(numbers, dtype=pl.UInt32)
    if segments is not None:
        starts = np.flatnonzero(first_rows)  # each user's first row
        first = pl.DataFrame({"user_key": pl.Series(timeline["user_key"].take(pa.array(starts))).cast(pl.String),
                              "number": number.gather(starts)})  # fmt: skip
        segments = segments.join(first, on="user_key").select(pl.col("number").alias("user_key"), "segment")
    numbered = timeline.set_column(timeline.schema.get_field_index("user_key"), "user_key", number.to_arrow())
    days = user_days(numbered, categories=any(spec.by == "category" for spec in specs.values()))
    last_day = pl.lit(days["day"].max(), pl.Date).alias("last_day")
    parts = [partial_counts(days, spec, segments).select(pl.lit(name, pl.String).alias("view"), *PARTIAL_COLUMNS)
             for name, spec in specs.items()]  # fmt: skip
    return pl.concat([*parts, BUCKET_FRAME.drop("last_day").clear(n=1)]).with_columns(last_day)


def _grid(sizes: pl.DataFrame, spec: RetentionSpec, end: date) -> pl.DataFrame:
    """Every (group, cohort, period) whose period could have begun by ``end`` for the cohort's first day."""
    if sizes.height == 0:
        return sizes.with_columns(period=pl.lit(0, pl.Int64)).head(0)
    cohort_day = pl.col("cohort")
    span = period_index(cohort_day, pl.lit(end), spec.period, spec.calendar)
    # rolling periods of a monthly or weekly cohort are measured from each member's start; the earliest
    # possible start is the cohort's first day, so its period count bounds them all
    return (sizes.with_columns(span.alias("last"))
            .with_columns(pl.int_ranges(0, pl.col("last") + 1).alias("period")).explode("period")
            .drop("last").with_columns(pl.col("period").cast(pl.Int64)))  # fmt: skip


__all__ = [
    "BUCKET_FRAME",
    "NO_CATEGORY",
    "NO_SEGMENT",
    "PARTIAL_COLUMNS",
    "TABLE_COLUMNS",
    "USER_DAY_COLUMNS",
    "RetentionSpec",
    "bucket_counts",
    "combine",
    "members",
    "partial_counts",
    "period_index",
    "retention_table",
    "user_days",
]
