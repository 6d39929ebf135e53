"""Revenue series for marketing-mix modelling: committed purchases summed per day.

Revenue is the sum of ``price`` over events with ``event_type = purchase`` (an Online Retail order
line ingests as one purchase whose price is quantity x unit price, so the same sum holds for both
feeds). Days are UTC calendar days; :mod:`model.mmm.data` makes them weekly and drops partial weeks.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def daily_revenue(events: DataFrame) -> DataFrame:
    """``(date, revenue, purchases, buyers)`` per event date with at least one purchase, sorted."""
    return (
        events.where(F.col("event_type") == "purchase")
        .groupBy(F.col("event_date").alias("date"))
        .agg(
            F.sum("price").alias("revenue"),
            F.count(F.lit(1)).alias("purchases"),
            F.countDistinct("user_key").alias("buyers"),
        )
        .orderBy("date")
    )


__all__ = ["daily_revenue"]
