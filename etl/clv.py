"""Lifetime value inputs: purchases -> one transaction per user and day -> the RFM summary.

Definitions (the report, docs/lifetime-value.md and the tests use them)
----------------------------------------------------------------------
* A *transaction* is a (user, UTC calendar day) with at least one purchase; its *value* is the sum
  of that day's purchase prices. For REES46 clickstreams that is the day's purchase revenue; for
  order files (``ingest --format online-retail``, one purchase event per order line, price =
  quantity x unit price) it is the day's invoices together. Several purchases or invoices on one day
  are one transaction, as in the published BG/NBD and Gamma-Gamma analyses of CDNOW.
* The customer is *born* on the day of their first transaction (the first purchase, not the first
  visit: the models describe buyers).
* For an observation period ending on day ``end`` (inclusive): ``frequency`` = transactions - 1 (the
  repeat transactions), ``recency`` = days from the first to the last transaction, ``T`` = days from
  the first transaction to ``end``, ``monetary_value`` = the mean value of the repeat transactions (0
  without any; the first purchase is left out, as the Gamma-Gamma model expects), ``revenue`` = the
  value of every transaction.
* A holdout period ``[start, end]`` counts, for customers born before ``start``, their transactions
  (and value) inside it.

The part that grows with the events runs on each user bucket's timeline (:func:`purchase_days`, in
Spark tasks: purchases -> daily transactions, one row per user and purchase day, a few percent of the
events); the per-user summary is a polars group-by on the collected transactions.
"""

from __future__ import annotations

from datetime import date
from typing import Final

import polars as pl
import pyarrow as pa

#: Columns of :func:`rfm_summary`, in order.
RFM_COLUMNS: Final[tuple[str, ...]] = (
    "user_key", "first_purchase", "frequency", "recency", "T", "monetary_value", "revenue",
)  # fmt: skip


#: The timeline columns :func:`purchase_days` reads.
TIMELINE_INPUTS: Final[tuple[str, ...]] = ("user_key", "event_time", "event_type", "price")
#: What :func:`purchase_days` returns.
PURCHASE_DAYS: Final[pa.Schema] = pa.schema(
    [("user_key", pa.string()), ("day", pa.date32()), ("revenue", pa.float64())]
)


def purchase_days(timeline: pa.Table) -> pa.Table:
    """Events (a timeline's :data:`TIMELINE_INPUTS`) -> ``user_key, day, revenue``: one row per user and
    UTC day with a purchase (a missing price counts 0), and one row without a user whose ``day`` is
    the day of the latest event of any kind, so that the caller learns where the observation period
    ends from the same pass (:func:`split_purchase_days`)."""
    events = pl.from_arrow(timeline.select(list(TIMELINE_INPUTS)))
    assert isinstance(events, pl.DataFrame)
    day = pl.col("event_time").dt.convert_time_zone("UTC").dt.date().alias("day")
    days = (
        events.filter(pl.col("event_type").cast(pl.String) == "purchase")
        .group_by(pl.col("user_key").cast(pl.String), day)
        .agg(revenue=pl.col("price").fill_null(0.0).sum())
    )
    last = events.select(pl.lit(None, pl.String).alias("user_key"), day.max(), revenue=pl.lit(0.0))
    return pl.concat([days, last]).to_arrow().cast(PURCHASE_DAYS)


def split_purchase_days(rows: pl.DataFrame) -> tuple[pl.DataFrame, date | None]:
    """:func:`purchase_days`' rows of every bucket -> (the transactions, the lake's last event day)."""
    return rows.filter(pl.col("user_key").is_not_null()), rows.filter(pl.col("user_key").is_null())["day"].max()


def _check(tx: pl.DataFrame) -> None:
    missing = [c for c in ("user_key", "day", "revenue") if c not in tx.columns]
    if missing:
        raise ValueError(
            f"transactions lack column(s) {', '.join(missing)}; they have {', '.join(tx.columns)}"
        )


def rfm_summary(tx: pl.DataFrame, end: date) -> pl.DataFrame:
    """Per customer born by ``end``: the columns of :data:`RFM_COLUMNS` (definitions: module docstring).

    ``tx``: ``user_key, day, revenue`` with at most one row per user and day (:func:`purchase_days`);
    days after ``end`` are ignored.
    """
    _check(tx)
    kept = tx.filter(pl.col("day") <= end)
    per_user = kept.group_by("user_key").agg(
        first_purchase=pl.col("day").min(),
        last=pl.col("day").max(),
        n=pl.len(),
        revenue=pl.col("revenue").sum(),
        first_value=pl.col("revenue").sort_by("day").first(),
    )
    frequency = pl.col("n") - 1
    return per_user.select(
        "user_key",
        "first_purchase",
        frequency.cast(pl.Int64).alias("frequency"),
        (pl.col("last") - pl.col("first_purchase")).dt.total_days().cast(pl.Float64).alias("recency"),
        (pl.lit(end) - pl.col("first_purchase")).dt.total_days().cast(pl.Float64).alias("T"),
        pl.when(frequency > 0)
        .then((pl.col("revenue") - pl.col("first_value")) / frequency)
        .otherwise(0.0)
        .alias("monetary_value"),
        "revenue",
    ).sort("user_key")


def holdout_actuals(tx: pl.DataFrame, start: date, end: date) -> pl.DataFrame:
    """``user_key, holdout_purchases, holdout_revenue`` in ``[start, end]`` for customers born before ``start``.

    Customers born before ``start`` with no transaction in the holdout have 0 and 0.
    """
    _check(tx)
    if end < start:
        raise ValueError(f"the holdout period is empty: it starts {start} and the data end {end}")
    born = tx.filter(pl.col("day") < start).select("user_key").unique()
    inside = (
        tx.filter(pl.col("day").is_between(start, end))
        .group_by("user_key")
        .agg(holdout_purchases=pl.len().cast(pl.Int64), holdout_revenue=pl.col("revenue").sum())
    )
    return (
        born.join(inside, on="user_key", how="left")
        .with_columns(pl.col("holdout_purchases").fill_null(0), pl.col("holdout_revenue").fill_null(0.0))
        .sort("user_key")
    )


__all__ = [
    "PURCHASE_DAYS", "RFM_COLUMNS", "TIMELINE_INPUTS", "holdout_actuals", "purchase_days", "rfm_summary",
    "split_purchase_days",
]  # fmt: skip
