"""Per-user behavioural features: the registry (name, type, definition, why) and their computation.

``finalize(aggregates, as_of)`` turns the mergeable aggregates of :mod:`etl.aggregates` into one row
per ``user_key``; ``compute_features(events, as_of)`` is the full computation on any events frame
(``finalize(aggregate_events(events), as_of)``), so the incremental and the full path share every
formula. :data:`FEATURES` is the single source of the documentation (``docs/features.md`` is generated
from it: ``python -m etl.features > docs/features.md``; a test keeps them in sync).

``as_of`` may be:

* ``None``: the latest ``event_time`` among the events (the lake's latest event);
* a ``datetime`` (naive = UTC) or an ISO string: one time for everybody;
* ``"last_event"``: each user's own last event (use it on truncated histories, e.g. the first n events
  of a user, so recency and tenure are measured at the user's last included event);
* a Spark ``Column`` over the per-user frame (it may refer to ``first_event_time``,
  ``last_event_time`` or ``last_purchase_time``).

Events after ``as_of`` are not dropped: filter the events first if you want a point-in-time view.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from etl.aggregates import CATEGORY_BUCKETS, HOUR_BANDS, US_PER_DAY, Aggregates, aggregate_events
from etl.contract import CATEGORY_L1

AsOf = datetime | str | Column | None
DType = Literal["string", "long", "int", "double", "timestamp", "boolean"]


@dataclass(frozen=True)
class Feature:
    """One column of the features table."""

    name: str
    dtype: DType
    definition: str
    why: str


_RATE_NOTE = "Null when the denominator is 0."

FEATURES: tuple[Feature, ...] = (
    Feature(
        "user_key",
        "string",
        "Pseudonymized user id (HMAC-SHA256 of the raw id); one row per user.",
        "The join key; raw ids never leave ingestion.",
    ),
    # -- activity
    Feature("n_events", "long", "Number of events of any type.", "Overall engagement volume."),
    Feature("n_sessions", "long", "Number of distinct session_key values.", "How often the user comes."),
    Feature(
        "active_days",
        "long",
        "Number of distinct UTC calendar days with at least one event.",
        "Spread of activity over time, robust to one very long session.",
    ),
    Feature("events_per_session", "double", "n_events / n_sessions.", "Depth of a typical visit."),
    Feature(
        "median_session_duration_s",
        "double",
        "Median over the user's sessions of (last event time - first event time) in seconds; "
        "a one-event session lasts 0 s; the median of an even count averages the two middle values.",
        "Browsing intensity; long sessions suggest research, short ones targeted buying.",
    ),
    Feature(
        "mean_days_between_visits",
        "double",
        "Mean gap in days between consecutive active days = (last active day - first active day) / "
        "(active_days - 1). Null with a single active day.",
        "Visit rhythm; drives re-engagement timing.",
    ),
    # -- RFM
    Feature(
        "frequency",
        "long",
        "Number of distinct sessions with at least one purchase event.",
        "RFM frequency: repeat buying.",
    ),
    Feature(
        "monetary",
        "double",
        "Sum of price over purchase events (0 for users who never bought).",
        "RFM monetary: revenue attributable to the user.",
    ),
    Feature(
        "recency_days",
        "int",
        "floor((as_of - time of the last purchase event) / 1 day). Null for users who never bought.",
        "RFM recency: how long since the last purchase; high = at risk of lapsing.",
    ),
    Feature(
        "tenure_days",
        "int",
        "floor((as_of - first event time) / 1 day).",
        "How long we have known the user; separates newcomers from regulars.",
    ),
    # -- funnel
    Feature("n_views", "long", "Number of view events.", "Funnel volume: browsing."),
    Feature("n_carts", "long", "Number of cart events.", "Funnel volume: purchase intent."),
    Feature("n_removals", "long", "Number of remove_from_cart events.", "Funnel volume: second thoughts."),
    Feature("n_purchases", "long", "Number of purchase events.", "Funnel volume: conversion."),
    Feature(
        "view_to_cart_rate",
        "double",
        f"n_carts / n_views (may exceed 1 if carts have no logged view). {_RATE_NOTE}",
        "Propensity to move from browsing to intent.",
    ),
    Feature(
        "cart_to_purchase_rate",
        "double",
        f"n_purchases / n_carts (may exceed 1 when purchases have no logged cart event). {_RATE_NOTE}",
        "Propensity to complete what was carted.",
    ),
    Feature(
        "cart_abandonment_rate",
        "double",
        f"Share of the user's sessions with at least one cart event that have no purchase event. "
        f"{_RATE_NOTE}",
        "Cart abandoners are the target of reminder campaigns.",
    ),
    Feature(
        "removal_rate",
        "double",
        f"n_removals / n_carts. {_RATE_NOTE}",
        "Hesitation or price comparison inside the cart.",
    ),
    # -- what they buy
    *(
        Feature(
            f"share_{b}",
            "double",
            f"Share of the user's events whose category_l1 is '{b}'."
            if b != "other"
            else "Share of the user's events with no category code or a top level outside etl.contract."
            "CATEGORY_L1.",
            "Product interests (all share_* sum to 1).",
        )
        for b in CATEGORY_BUCKETS
    ),
    Feature(
        "category_diversity",
        "int",
        "Number of distinct top-level categories of etl.contract.CATEGORY_L1 with at least one event "
        "(0..13; 'other' not counted).",
        "Specialists versus generalists.",
    ),
    Feature(
        "category_entropy",
        "double",
        "Shannon entropy (natural log) of the 14 share_* values: -sum p ln p over p > 0.",
        "A smooth version of category_diversity that weighs how evenly events spread.",
    ),
    Feature(
        "brand_concentration",
        "double",
        "Herfindahl index of brand shares over the user's events with a brand: sum over brands of "
        "(events of the brand / events with a brand)^2, in (0, 1]. Null without branded events.",
        "Brand loyalty (1 = one brand only).",
    ),
    Feature(
        "price_level",
        "double",
        "Mean over the user's events with price > 0 and a category_id of ln(price) - m(category_id), "
        "where m(c) is the mean ln(price) of all such events of category c in the input (the whole "
        "lake). Negative = cheaper than typical. Null without such events.",
        "Price sensitivity: bargain hunters versus premium buyers, comparable across categories.",
    ),
    # -- when they shop
    Feature("weekend_share", "double", "Share of events on Saturday or Sunday (UTC).", "Weekday vs weekend."),
    *(
        Feature(
            f"{band}_share",
            "double",
            f"Share of events with UTC hour in [{lo}, {hi}).",
            "Hour-of-day profile; shapes send-time of campaigns.",
        )
        for band, (lo, hi) in HOUR_BANDS.items()
    ),
    Feature(
        "holiday_share",
        "double",
        "Share of events from the Monday of Black Friday week (Black Friday = the day after the 4th "
        "Thursday of November) through 31 December of the same year, UTC dates.",
        "Seasonal shoppers who come for the holiday peak.",
    ),
    # -- bookkeeping
    Feature("first_event_time", "timestamp", "Time of the first event (UTC).", "Start of the history."),
    Feature("last_event_time", "timestamp", "Time of the last event (UTC).", "End of the history."),
    Feature(
        "last_purchase_time",
        "timestamp",
        "Time of the last purchase event; null if none.",
        "Lets anyone recompute recency at another as-of time.",
    ),
    Feature(
        "as_of",
        "timestamp",
        "The reference time of recency_days and tenure_days (default: the latest event time in the input).",
        "Makes the snapshot reproducible.",
    ),
    Feature(
        "is_suspicious",
        "boolean",
        "True if the user is in the lake's flags/suspicious_users dataset (bot-like volume).",
        "Lets the model exclude bots without dropping them.",
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)


def _ratio(num: Column, den: Column) -> Column:
    """num / den as double, null when den is 0 (ANSI mode would raise on division by zero)."""
    return F.when(den > 0, num.cast("double") / den.cast("double"))


def _as_of_column(as_of: AsOf) -> Column | None:
    """A per-user Column for ``as_of``; None means "latest event time of the input"."""
    if as_of is None:
        return None
    if isinstance(as_of, Column):
        return as_of
    if as_of == "last_event":
        return F.col("last_event_time")
    when = datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    micros = round(when.timestamp() * 1_000_000)
    return F.timestamp_micros(F.lit(micros))


def _whole_days(later: Column, earlier: Column) -> Column:
    return F.floor((F.unix_micros(later) - F.unix_micros(earlier)) / F.lit(US_PER_DAY)).cast("int")


def finalize(
    aggregates: Aggregates,
    as_of: AsOf = None,
    suspicious_users: DataFrame | None = None,
    category_prices: DataFrame | None = None,
) -> DataFrame:
    """One row per user with every column of :data:`FEATURES`, in that order.

    ``suspicious_users`` (a frame with ``user_key``) sets ``is_suspicious``. ``category_prices``
    (``category_id, n_priced, sum_log_price`` at any grain, e.g. the ``prices`` table of the whole
    lake's aggregates) is the reference for ``price_level``'s category means; by default the
    aggregates' own ``prices`` table.
    """
    users = aggregates.users
    sessions = aggregates.sessions.groupBy("user_key").agg(
        F.count(F.lit(1)).alias("n_sessions"),
        F.sum(F.when(F.col("n_purchases") > 0, 1).otherwise(0)).alias("frequency"),
        F.median(
            (F.unix_micros(F.col("last_time")) - F.unix_micros(F.col("first_time"))) / F.lit(1_000_000.0)
        ).alias("median_session_duration_s"),
        F.sum(F.when(F.col("n_carts") > 0, 1).otherwise(0)).alias("cart_sessions"),
        F.sum(F.when((F.col("n_carts") > 0) & (F.col("n_purchases") == 0), 1).otherwise(0)).alias(
            "abandoned_sessions"
        ),
    )
    days = aggregates.days.groupBy("user_key").agg(
        F.count(F.lit(1)).alias("active_days"),
        F.min("day").alias("first_day"),
        F.max("day").alias("last_day"),
    )
    brands = aggregates.brands.groupBy("user_key").agg(
        (
            F.sum(F.col("n_events") * F.col("n_events")).cast("double")
            / F.sum("n_events").cast("double") ** 2
        ).alias("brand_concentration")
    )
    reference = aggregates.prices if category_prices is None else category_prices
    category_mean = reference.groupBy("category_id").agg(
        (F.sum("sum_log_price") / F.sum("n_priced")).alias("_category_mean_log")
    )
    prices = (
        aggregates.prices.join(F.broadcast(category_mean), on="category_id", how="inner")
        .groupBy("user_key")
        .agg(
            (
                F.sum(F.col("sum_log_price") - F.col("n_priced") * F.col("_category_mean_log"))
                / F.sum("n_priced")
            ).alias("price_level")
        )
    )
    joined = (
        users.join(sessions, on="user_key", how="left")
        .join(days, on="user_key", how="left")
        .join(brands, on="user_key", how="left")
        .join(prices, on="user_key", how="left")
    )
    as_of_col = _as_of_column(as_of)
    if as_of_col is None:
        latest = users.agg(F.max("last_event_time").alias("_latest"))
        joined = joined.crossJoin(F.broadcast(latest))
        as_of_col = F.col("_latest")
    joined = joined.withColumn("as_of", as_of_col)

    if suspicious_users is not None:
        flagged = suspicious_users.select("user_key").distinct().withColumn("_flagged", F.lit(True))
        joined = joined.join(F.broadcast(flagged), on="user_key", how="left")
    else:
        joined = joined.withColumn("_flagged", F.lit(None).cast("boolean"))

    n = F.col("n_events")
    shares = {f"share_{b}": _ratio(F.col(f"n_cat_{b}"), n) for b in CATEGORY_BUCKETS}
    entropy_terms = [
        F.when(F.col(f"n_cat_{b}") > 0, -shares[f"share_{b}"] * F.log(shares[f"share_{b}"])).otherwise(0.0)
        for b in CATEGORY_BUCKETS
    ]
    diversity_terms = [F.when(F.col(f"n_cat_{b}") > 0, 1).otherwise(0) for b in CATEGORY_L1]
    exprs: dict[str, Column] = {
        "user_key": F.col("user_key"),
        "n_events": n,
        "n_sessions": F.col("n_sessions"),
        "active_days": F.col("active_days"),
        "events_per_session": _ratio(n, F.col("n_sessions")),
        "median_session_duration_s": F.col("median_session_duration_s"),
        "mean_days_between_visits": _ratio(
            F.col("last_day") - F.col("first_day"), F.col("active_days") - F.lit(1)
        ),
        "frequency": F.col("frequency"),
        "monetary": F.col("monetary"),
        "recency_days": _whole_days(F.col("as_of"), F.col("last_purchase_time")),
        "tenure_days": _whole_days(F.col("as_of"), F.col("first_event_time")),
        "n_views": F.col("n_views"),
        "n_carts": F.col("n_carts"),
        "n_removals": F.col("n_removals"),
        "n_purchases": F.col("n_purchases"),
        "view_to_cart_rate": _ratio(F.col("n_carts"), F.col("n_views")),
        "cart_to_purchase_rate": _ratio(F.col("n_purchases"), F.col("n_carts")),
        "cart_abandonment_rate": _ratio(F.col("abandoned_sessions"), F.col("cart_sessions")),
        "removal_rate": _ratio(F.col("n_removals"), F.col("n_carts")),
        **shares,
        "category_diversity": sum(diversity_terms[1:], diversity_terms[0]).cast("int"),
        "category_entropy": sum(entropy_terms[1:], entropy_terms[0]),
        "brand_concentration": F.col("brand_concentration"),
        "price_level": F.col("price_level"),
        "weekend_share": _ratio(F.col("n_weekend"), n),
        **{f"{band}_share": _ratio(F.col(f"n_{band}"), n) for band in HOUR_BANDS},
        "holiday_share": _ratio(F.col("n_holiday"), n),
        "first_event_time": F.col("first_event_time"),
        "last_event_time": F.col("last_event_time"),
        "last_purchase_time": F.col("last_purchase_time"),
        "as_of": F.col("as_of"),
        "is_suspicious": F.coalesce(F.col("_flagged"), F.lit(False)),
    }
    assert tuple(exprs) == FEATURE_NAMES, "etl.features: expressions and FEATURES registry out of sync"
    return joined.select(*[exprs[f.name].cast(f.dtype).alias(f.name) for f in FEATURES])


def compute_features(
    events: DataFrame,
    as_of: AsOf = None,
    suspicious_users: DataFrame | None = None,
    category_prices: DataFrame | None = None,
) -> DataFrame:
    """Per-user features of any events frame (columns of ``etl.contract.EVENT_SCHEMA``).

    Pure Spark built-ins, no Python UDF. ``price_level``'s category means come from ``events`` itself
    unless ``category_prices`` is given (see :func:`finalize`). For truncated histories pass
    ``as_of="last_event"`` and the whole lake's prices, e.g.::

        first_n = compute_features(
            first_n_events(events, 20), as_of="last_event", category_prices=aggregate_events(events).prices
        )
    """
    return finalize(
        aggregate_events(events),
        as_of=as_of,
        suspicious_users=suspicious_users,
        category_prices=category_prices,
    )


def first_n_events(events: DataFrame, n: int) -> DataFrame:
    """Each user's first ``n`` events (by event_time; ties broken by event_type, product_id, session).

    For studying how many events a segment needs; one shuffle by user.
    """
    return first_events_by_n(events, [n]).drop("n")


def first_events_by_n(events: DataFrame, ns: Sequence[int]) -> DataFrame:
    """:func:`first_n_events` for every n of ``ns`` at once: a row per (event, n it falls within), column ``n``.

    One ranking shuffle for the whole grid (the threshold study's truncations), not one per n.
    """
    order = Window.partitionBy("user_key").orderBy("event_time", "event_type", "product_id", "session_key")
    grid = F.array(*(F.lit(int(n)) for n in sorted(set(ns))))
    ranked = events.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= max(ns))
    return ranked.withColumn("n", F.explode(F.filter(grid, lambda n: n >= F.col("_rank")))).drop("_rank")


def render_markdown() -> str:
    """docs/features.md, generated from :data:`FEATURES`."""
    lines = [
        "# Per-user features",
        "",
        "<!-- Generated by `python -m etl.features > docs/features.md`; do not edit by hand. -->",
        "",
        "One row per pseudonymized user, computed by `shoplens features` (code: `etl/features.py`,",
        "aggregates: `etl/aggregates.py`) and published as `features/<version>/` in the lake.",
        "",
        "Conventions: times are UTC; `as_of` defaults to the latest event time in the lake; rates with a",
        "zero denominator are **null** (the model imputes); shares are over all the user's events.",
        "Updates are incremental: per-user aggregates (sums, counts, minima, maxima per user, per",
        "session, per day, per brand and per category) are folded with each new committed ingestion",
        "run and give exactly the result of a full recomputation (`shoplens features --full`).",
        "",
        "| name | type | definition | why it matters |",
        "|---|---|---|---|",
    ]
    for f in FEATURES:
        lines.append(f"| `{f.name}` | {f.dtype} | {f.definition} | {f.why} |")
    lines += [
        "",
        "## Computing features yourself",
        "",
        "- `etl.features.compute_features(events, as_of=None, suspicious_users=None, category_prices=None)`",
        "  works on any events DataFrame with the columns of `etl.contract.EVENT_SCHEMA`.",
        "- `as_of`: `None` (latest event of the input), a datetime or ISO string (naive = UTC),",
        '  `"last_event"` (each user\'s own last event) or a Spark Column over the per-user frame.',
        "  Events after `as_of` are not dropped; filter first for a point-in-time view.",
        "- Short histories (how many events a segment needs): `first_n_events(events, n)`, then",
        '  `compute_features(..., as_of="last_event", category_prices=aggregate_events(events).prices)`',
        "  so `price_level` keeps the whole lake's category means.",
        "- Incremental: `etl.aggregates.update_aggregates(previous, new_events)` then",
        "  `etl.features.finalize(aggregates, as_of)`; the aggregate tables are `users`, `sessions`,",
        "  `days`, `brands`, `prices` (see `etl/aggregates.py`). `shoplens features` records the folded",
        "  ingestion runs as `folded_run_ids` in `aggregates/_current.json`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
