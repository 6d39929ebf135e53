"""Mergeable per-user aggregates: the incremental half of the per-user features.

Every feature in :mod:`etl.features` is a function of five small tables of sums, counts, minima and
maxima. Those combine by addition (or min/max), so folding a new batch of events costs a scan of the
new events plus a pass over the aggregates, never a re-read of the event history:

``users``      (user_key)                  event counts by type, hour band, weekday, holiday, category
``sessions``   (user_key, session_key)     first/last event time, carts and purchases in the session
``days``       (user_key, day)             events per active UTC day (day = days since 1970-01-01)
``brands``     (user_key, brand)           events per brand (events with a brand only)
``prices``     (user_key, category_id)     count and sum of log(price) (events with price > 0 and a
                                           category id); per-category totals are sums of this table

Each table is declared once (:func:`table_specs`): a key, and per column an expression over events and
the merge operator. The same declaration builds the aggregate of a batch (``op(expression)``) and the
merge of two aggregates (``op(column)``), so the two cannot drift apart.

All calendar quantities are derived from the epoch microseconds of ``event_time``, so they are in UTC
whatever the Spark session time zone is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from etl.contract import CATEGORY_BUCKETS, CATEGORY_L1, HOUR_BANDS

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 86_400_000_000

TABLES: tuple[str, ...] = ("users", "sessions", "days", "brands", "prices")

MergeOp = Callable[[Column], Column]


@dataclass(frozen=True)
class TableSpec:
    """One aggregate table: its keys, an optional row filter, and ``name -> (expression, merge op)``."""

    keys: tuple[str, ...]
    columns: dict[str, tuple[Column, MergeOp]]
    where: Column | None = None


@dataclass(frozen=True)
class Aggregates:
    """The five aggregate tables (see the module docstring); build with :func:`aggregate_events`."""

    users: DataFrame
    sessions: DataFrame
    days: DataFrame
    brands: DataFrame
    prices: DataFrame

    def tables(self) -> dict[str, DataFrame]:
        return {name: getattr(self, name) for name in TABLES}


def _count_if(cond: Column) -> Column:
    return F.when(cond, F.lit(1)).otherwise(F.lit(0))


def event_day(ts: Column) -> Column:
    """Days since 1970-01-01 of a timestamp, in UTC whatever the session time zone."""
    return F.floor(F.unix_micros(ts) / F.lit(US_PER_DAY)).cast("int")


def holiday_start(day: Column) -> Column:
    """First day (days since epoch) of the holiday peak in the year of ``day``.

    The peak starts on the Monday of Black Friday week. Black Friday is the day after the 4th Thursday
    of November, so the Monday is 3 days before that Thursday: with ``w`` the weekday of 1 November
    (Monday = 0), the first Thursday is 1 Nov + (3 - w) mod 7, and the Monday is 18 days after it.
    1970-01-01 was a Thursday, hence weekday(d) = (d + 3) mod 7.
    """
    nov1 = F.unix_date(F.make_date(F.year(F.date_from_unix_date(day)), F.lit(11), F.lit(1)))
    return nov1 + F.lit(18) + F.pmod(F.lit(3) - F.pmod(nov1 + F.lit(3), F.lit(7)), F.lit(7))


def category_bucket(l1: Column) -> Column:
    """``category_l1`` if it is one of :data:`CATEGORY_L1`, else ``"other"``."""
    return F.when(l1.isin(*CATEGORY_L1), l1).otherwise(F.lit("other"))


def table_specs() -> dict[str, TableSpec]:
    """The declaration of every aggregate table (built lazily: Columns need an active session)."""
    ts = F.col("event_time")
    us = F.unix_micros(ts)
    day = event_day(ts)
    hour = F.floor(F.pmod(us, F.lit(US_PER_DAY)) / F.lit(US_PER_HOUR))
    weekday = F.pmod(day + F.lit(3), F.lit(7))  # Monday = 0
    etype = F.col("event_type")
    is_view, is_cart = etype == "view", etype == "cart"
    is_removal, is_purchase = etype == "remove_from_cart", etype == "purchase"
    bucket = category_bucket(F.col("category_l1"))

    users: dict[str, tuple[Column, MergeOp]] = {
        "n_events": (F.lit(1), F.sum),
        "n_views": (_count_if(is_view), F.sum),
        "n_carts": (_count_if(is_cart), F.sum),
        "n_removals": (_count_if(is_removal), F.sum),
        "n_purchases": (_count_if(is_purchase), F.sum),
        "monetary": (F.when(is_purchase, F.col("price")).otherwise(F.lit(0.0)), F.sum),
        "first_event_time": (ts, F.min),
        "last_event_time": (ts, F.max),
        "last_purchase_time": (F.when(is_purchase, ts), F.max),
        "n_weekend": (_count_if(weekday >= 5), F.sum),
        "n_holiday": (_count_if(day >= holiday_start(day)), F.sum),
        **{
            f"n_{band}": (_count_if((hour >= lo) & (hour < hi)), F.sum)
            for band, (lo, hi) in HOUR_BANDS.items()
        },
        **{f"n_cat_{b}": (_count_if(bucket == b), F.sum) for b in CATEGORY_BUCKETS},
    }
    return {
        "users": TableSpec(("user_key",), users),
        "sessions": TableSpec(
            ("user_key", "session_key"),
            {
                "first_time": (ts, F.min),
                "last_time": (ts, F.max),
                "n_events": (F.lit(1), F.sum),
                "n_carts": (_count_if(is_cart), F.sum),
                "n_purchases": (_count_if(is_purchase), F.sum),
            },
        ),
        "days": TableSpec(("user_key", "day"), {"n_events": (F.lit(1), F.sum)}),
        "brands": TableSpec(
            ("user_key", "brand"), {"n_events": (F.lit(1), F.sum)}, where=F.col("brand").isNotNull()
        ),
        "prices": TableSpec(
            ("user_key", "category_id"),
            {"n_priced": (F.lit(1), F.sum), "sum_log_price": (F.log(F.col("price")), F.sum)},
            where=F.col("category_id").isNotNull() & (F.col("price") > 0),
        ),
    }


def _aggregate(events: DataFrame, spec: TableSpec) -> DataFrame:
    rows = events if spec.where is None else events.where(spec.where)
    return rows.groupBy(*spec.keys).agg(*[op(expr).alias(name) for name, (expr, op) in spec.columns.items()])


def _merge(previous: DataFrame, new: DataFrame, spec: TableSpec) -> DataFrame:
    both = previous.unionByName(new)
    merged = [op(F.col(name)).alias(name) for name, (_, op) in spec.columns.items()]
    return both.groupBy(*spec.keys).agg(*merged)


def aggregate_events(events: DataFrame) -> Aggregates:
    """The aggregates of a batch of events (columns of ``etl.contract.EVENT_SCHEMA``)."""
    ev = events.withColumn("day", event_day(F.col("event_time")))
    return Aggregates(**{name: _aggregate(ev, spec) for name, spec in table_specs().items()})


def merge_aggregates(previous: Aggregates, new: Aggregates) -> Aggregates:
    """Combine two aggregates (sums add, minima/maxima combine); cost ~ the size of both."""
    specs = table_specs()
    return Aggregates(
        **{name: _merge(previous.tables()[name], new.tables()[name], specs[name]) for name in TABLES}
    )


def update_aggregates(previous: Aggregates | None, new_events: DataFrame) -> Aggregates:
    """Fold ``new_events`` into ``previous`` (None = start from nothing).

    Reads only the new events and the previous aggregates. Folding the same events twice counts them
    twice: the caller records which batches are folded in (see services.jobs.features).
    """
    batch = aggregate_events(new_events)
    return batch if previous is None else merge_aggregates(previous, batch)
