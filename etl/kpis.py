"""Daily KPIs of the events lake (Spark): the numbers the dashboard's overview trends over time."""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

KPI_COLUMNS: tuple[str, ...] = (
    "event_date", "active_users", "sessions", "views", "carts", "purchases", "revenue", "conversion_rate",
)  # fmt: skip


def kpi_daily(events: DataFrame | None) -> pd.DataFrame:
    """Per UTC event_date: active users, sessions, events by type, revenue, session conversion rate.

    A session spanning midnight counts on both days; conversion_rate = sessions with a purchase that
    day / sessions that day. One row per day, so the result is small enough to collect.
    """
    cols = list(KPI_COLUMNS)
    if events is None:
        return pd.DataFrame(columns=cols)
    is_purchase = F.col("event_type") == "purchase"
    daily = (
        events.groupBy("event_date")
        .agg(
            F.countDistinct("user_key").alias("active_users"),
            F.countDistinct("session_key").alias("sessions"),
            F.sum((F.col("event_type") == "view").cast("long")).alias("views"),
            F.sum((F.col("event_type") == "cart").cast("long")).alias("carts"),
            F.sum(is_purchase.cast("long")).alias("purchases"),
            F.coalesce(F.sum(F.when(is_purchase, F.col("price"))), F.lit(0.0)).alias("revenue"),
            F.countDistinct(F.when(is_purchase, F.col("session_key"))).alias("_buying_sessions"),
        )
        .withColumn("conversion_rate", F.col("_buying_sessions") / F.col("sessions"))
        .drop("_buying_sessions")
        .orderBy("event_date")
    )
    return daily.toPandas()[cols]


__all__ = ["KPI_COLUMNS", "kpi_daily"]
