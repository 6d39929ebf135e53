"""Experiment metrics from the lake's events, on Spark: what each assigned user did after assignment.

The events are the lake's (tens of millions of rows), so the join and the per-user aggregation run on
Spark; the assignments come in from ``etl.experiments`` (already checked) and the per-user result goes
back to it, one row per user, for the reduction to sufficient statistics.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from etl.experiments import PRE_PREFIX

#: The metrics :func:`window_metrics` computes per assigned user, each with its ``pre_`` covariate.
LAKE_METRICS: tuple[str, ...] = ("purchased", "revenue", "sessions")
#: The pre-period of the CUPED covariates, in days before assignment.
PRE_PERIOD_DAYS = 28


def window_metrics(
    assigned: DataFrame, events: DataFrame, window_seconds: int, pre_days: int = PRE_PERIOD_DAYS
) -> DataFrame:
    """Each assigned user's metrics from their events, as an accepted experiment table.

    ``assigned``: one row per user (``user_key, variant, segment, assigned_at, line_number``).
    ``events``: the lake's events (``user_key, session_key, event_time, event_type, price``); pass them
    pre-filtered to the dates that matter so that partitions are pruned. Per user, over events with
    ``assigned_at <= event_time < assigned_at + window``: ``purchased`` (1 if any purchase), ``revenue``
    (sum of purchase prices), ``sessions`` (distinct sessions with any event); the same over the
    ``pre_days`` before ``assigned_at`` give ``pre_purchased``, ``pre_revenue``, ``pre_sessions``. A user
    without events counts with zeros (intention to treat).
    """
    start = F.col("assigned_at")
    in_window = (F.col("event_time") >= start) & (
        F.col("event_time") < start + F.expr(f"INTERVAL {int(window_seconds)} SECONDS")
    )
    in_pre = (F.col("event_time") >= start - F.expr(f"INTERVAL {int(pre_days)} DAYS")) & (
        F.col("event_time") < start
    )
    is_purchase = F.col("event_type") == "purchase"
    joined = assigned.select("user_key", "assigned_at").join(
        events.select("user_key", "session_key", "event_time", "event_type", "price"), on="user_key", how="inner"
    )
    aggregates = []
    for prefix, period in (("", in_window), (PRE_PREFIX, in_pre)):
        bought = period & is_purchase
        aggregates += [
            F.max(F.when(bought, F.lit(1.0)).otherwise(F.lit(0.0))).alias(f"{prefix}purchased"),
            F.sum(F.when(bought, F.col("price")).otherwise(F.lit(0.0))).alias(f"{prefix}revenue"),
            F.count_distinct(F.when(period, F.col("session_key"))).cast("double").alias(f"{prefix}sessions"),
        ]
    per_user = joined.where(in_window | in_pre).groupBy("user_key").agg(*aggregates)
    values = [*LAKE_METRICS, *(f"{PRE_PREFIX}{m}" for m in LAKE_METRICS)]
    return (
        assigned.join(per_user, on="user_key", how="left")
        .fillna(0.0, subset=values)
        .select("user_key", "variant", "segment", "assigned_at", "line_number", *values)
    )


__all__ = ["LAKE_METRICS", "PRE_PERIOD_DAYS", "window_metrics"]
