"""Experiment tables on Spark: validate one-row-per-user rows and reduce them to sufficient statistics.

Input: ``user_id``, ``variant``, metric columns, optionally ``segment``, ``assigned_at`` and
``pre_<metric>`` covariates, plus the ``line_number`` the reader adds (file order). Values may be
typed (Parquet) or text (CSV): ``true``/``false`` read as 1/0, anything else must parse as a finite
number.

1. :func:`classify_experiment` pseudonymizes ``user_id`` on read (the raw id leaves no output) and
   gives every row a rejection reason or null, checked in the order of :data:`REJECT_REASONS`:
   no user id; no variant; the user appears in two variants (all their rows go); a value does not
   parse; a repeat of the user's row in the same variant (the first valid row in file order stays).
2. :func:`sufficient_statistics` reduces accepted rows to n, Σy, Σy² (and Σx, Σx², Σxy for a covariate
   x) per variant, optionally per segment and assignment day: the rows of
   :func:`model.experiments.metric_inputs_from_records`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from etl.local_experiments import (
    BOOLEAN_TOKENS,
    NO_SEGMENT,
    PRE_PREFIX,
    REJECT_REASONS,
    RESERVED_COLUMNS,
    STAT_COLUMNS,
    Breakdown,
    ExperimentSchemaError,
    RejectReason,
    check_columns,
    covariate_columns,
    metric_columns,
)
from etl.pseudonymize import pseudonymize_col

# The rules themselves (reasons and their order, reserved columns, boolean tokens) are stated once,
# Spark-free, in etl.local_experiments; the pandas twin there applies the same rules to small uploads.


def _blank_to_null(c: Column) -> Column:
    text = F.trim(c.cast("string"))
    return F.when(text != "", text)


def _number(c: Column) -> Column:
    """A value as a double: true/false as 1/0, else the parsed number; null when it does not parse."""
    text = F.lower(F.trim(c.cast("string")))
    parsed = text.try_cast("double")
    for token, value in BOOLEAN_TOKENS.items():
        parsed = F.when(text == token, F.lit(value)).otherwise(parsed)
    is_finite = ~F.isnan(parsed) & (F.abs(parsed) != F.lit(float("inf")))
    return F.when(is_finite, parsed)


def classify_experiment(rows: DataFrame, metrics: Sequence[str], key: bytes) -> DataFrame:
    """Every input row once, pseudonymized and parsed, with ``reason`` null when it is accepted.

    Output columns: ``user_key, variant, segment, assigned_at, line_number``, the metrics and their
    present covariates as doubles, and ``reason``. Every metric and covariate cell must hold a number
    (a blank one is unparseable); a blank ``assigned_at`` is allowed (null), a non-ISO one is not.
    """
    covariates = covariate_columns(rows.columns, metrics)
    check_columns(rows.columns, metrics)
    has = set(rows.columns)
    values = [*metrics, *covariates]
    raw_time = _blank_to_null(F.col("assigned_at")) if "assigned_at" in has else F.lit(None).cast("string")
    segment = (
        F.coalesce(_blank_to_null(F.col("segment")), F.lit(NO_SEGMENT))
        if "segment" in has
        else F.lit(NO_SEGMENT)
    )

    parsed = rows.select(
        pseudonymize_col(_blank_to_null(F.col("user_id")), key).alias("user_key"),
        _blank_to_null(F.col("variant")).alias("variant"),
        segment.alias("segment"),
        raw_time.alias("_raw_time"),
        raw_time.try_cast("timestamp").alias("assigned_at"),
        F.col("line_number").cast("long").alias("line_number"),
        *[_number(F.col(c)).alias(c) for c in values],
    )
    user = Window.partitionBy("user_key")
    in_two_variants = F.min("variant").over(user) != F.max("variant").over(user)
    # a blank value cell is as unusable as an unparseable one: Spark's sums would skip it silently
    unparseable = F.col("_raw_time").isNotNull() & F.col("assigned_at").isNull()
    for c in values:
        unparseable = unparseable | F.col(c).isNull()
    row_reason = (
        F.when(F.col("user_key").isNull(), "missing_user_id")
        .when(F.col("variant").isNull(), "missing_variant")
        .when(in_two_variants, "conflicting_variant")
        .when(unparseable, "unparseable_value")
    )
    staged = parsed.withColumn("reason", row_reason)
    same_arm = Window.partitionBy("user_key", "variant", F.col("reason").isNull()).orderBy("line_number")
    repeat = F.col("reason").isNull() & (F.row_number().over(same_arm) > 1)
    return staged.select(
        "user_key",
        "variant",
        "segment",
        "assigned_at",
        "line_number",
        *values,
        F.when(repeat, F.lit("duplicate_user")).otherwise(F.col("reason")).alias("reason"),
    )


def accepted_rows(classified: DataFrame) -> DataFrame:
    """The rows that count: one per user."""
    return classified.where(F.col("reason").isNull()).drop("reason")


def rejection_counts(classified: DataFrame) -> DataFrame:
    """``reason, rows, users`` for every reason that occurred (users counted by pseudonymized key)."""
    return (
        classified.where(F.col("reason").isNotNull())
        .groupBy("reason")
        .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("user_key").alias("users"))
        .select("reason", "rows", "users")
    )


def _long(grouped: DataFrame, keys: Sequence[str], structs: Sequence[Column]) -> DataFrame:
    """One row per metric out of one wide aggregate (a single pass over the data either way)."""
    return grouped.select(*keys, F.inline(F.array(*structs)))


def metric_kinds(accepted: DataFrame, metrics: Sequence[str]) -> DataFrame:
    """``metric, kind``: a conversion when every value is 0 or 1, otherwise continuous."""
    grouped = accepted.agg(
        *[F.bool_and(F.col(m).isin(0.0, 1.0)).alias(f"_b{i}") for i, m in enumerate(metrics)]
    )
    structs = [
        F.struct(
            F.lit(m).alias("metric"),
            F.when(F.coalesce(F.col(f"_b{i}"), F.lit(False)), "conversion")
            .otherwise("continuous")
            .alias("kind"),
        )
        for i, m in enumerate(metrics)
    ]
    return _long(grouped, [], structs)


def sufficient_statistics(
    accepted: DataFrame, metrics: Sequence[str], by: Sequence[Breakdown] = ()
) -> DataFrame:
    """Per variant (and ``by`` keys) and metric: ``n, sum, sum_squares, pre_sum, pre_sum_squares,
    sum_products`` (covariate sums null without ``pre_<metric>``) and ``first_line``, the variant's first
    line in the file, which orders variants and so picks the default control.
    """
    keys = [*by, "variant"]
    source = (
        accepted.withColumn("assigned_date", F.to_date("assigned_at")) if "assigned_date" in by else accepted
    )
    aggregates = [F.count(F.lit(1)).alias("n"), F.min("line_number").alias("first_line")]
    structs = []
    for i, m in enumerate(metrics):
        y = F.col(m)
        aggregates += [F.sum(y).alias(f"_y{i}"), F.sum(y * y).alias(f"_yy{i}")]
        pre = f"{PRE_PREFIX}{m}"
        present = pre in accepted.columns
        if present:
            x = F.col(pre)
            aggregates += [
                F.sum(x).alias(f"_x{i}"),
                F.sum(x * x).alias(f"_xx{i}"),
                F.sum(x * y).alias(f"_xy{i}"),
            ]
        cov = {
            name: F.col(f"{name}{i}") if present else F.lit(None).cast("double")
            for name in ("_x", "_xx", "_xy")
        }
        structs.append(
            F.struct(
                F.lit(m).alias("metric"),
                F.col(f"_y{i}").alias("sum"),
                F.col(f"_yy{i}").alias("sum_squares"),
                cov["_x"].alias("pre_sum"),
                cov["_xx"].alias("pre_sum_squares"),
                cov["_xy"].alias("sum_products"),
            )
        )
    grouped = source.groupBy(*keys).agg(*aggregates)
    return _long(grouped, [*keys, "n", "first_line"], structs).select(*keys, "metric", *STAT_COLUMNS)


# -- metrics from the lake's events -------------------------------------------------------------------

#: The metrics :func:`window_metrics` computes per assigned user, each with its ``pre_`` covariate.
LAKE_METRICS: tuple[str, ...] = ("purchased", "revenue", "sessions")
#: The pre-period of the CUPED covariates, in days before assignment.
PRE_PERIOD_DAYS = 28
#: Reason of a lake-computed experiment's row without an assignment time (its window is unknown).
MISSING_ASSIGNED_AT = "missing_assigned_at"


def require_assignment_time(classified: DataFrame) -> DataFrame:
    """Reject accepted rows whose ``assigned_at`` is blank: metrics after assignment need the time."""
    reason = F.when(F.col("reason").isNull() & F.col("assigned_at").isNull(), F.lit(MISSING_ASSIGNED_AT))
    return classified.withColumn("reason", reason.otherwise(F.col("reason")))


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


__all__ = [
    "LAKE_METRICS",
    "MISSING_ASSIGNED_AT",
    "NO_SEGMENT",
    "PRE_PERIOD_DAYS",
    "PRE_PREFIX",
    "REJECT_REASONS",
    "RESERVED_COLUMNS",
    "Breakdown",
    "ExperimentSchemaError",
    "RejectReason",
    "accepted_rows",
    "classify_experiment",
    "metric_columns",
    "metric_kinds",
    "rejection_counts",
    "require_assignment_time",
    "sufficient_statistics",
    "window_metrics",
]
