"""Per-user behavioural features: the registry (name, type, definition, why).

The computation is :mod:`etl.local_features` (one implementation: ``timeline_features`` on each timeline
bucket for ``shoplens features``, ``compute_features_local`` for one history in ``shoplens predict``, the
API and the dashboard); this module says what each column means. :data:`FEATURES` is the single source
of the documentation (``docs/features.md`` is generated from it: ``python -m etl.features >
docs/features.md``; a test keeps them in sync) and tests/etl/test_local_features.py checks the
computation's columns against it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from etl.contract import CATEGORY_BUCKETS, HOUR_BANDS

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


def render_markdown() -> str:
    """docs/features.md, generated from :data:`FEATURES`."""
    lines = [
        "# Per-user features",
        "",
        "<!-- Generated by `python -m etl.features > docs/features.md`; do not edit by hand. -->",
        "",
        "One row per pseudonymized user, computed by `shoplens features` from the user timelines (code:",
        "`etl/local_features.py`, the same for one uploaded history in `shoplens predict`, the API and the",
        "dashboard) and published as `features/<version>/` in the lake.",
        "",
        "Conventions: times are UTC; `as_of` defaults to the latest event time in the lake; rates with a",
        "zero denominator are **null** (the model imputes); shares are over all the user's events.",
        "Each run recomputes every user from the timelines (`services/jobs/features.py`): Spark tasks run",
        "`etl.local_features.timeline_features` on each user bucket, no shuffle.",
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
        "- `etl.local_features.timeline_features(timeline, as_of=None, category_reference=None,",
        "  suspicious_users=None)` on a timeline (Arrow, `etl.timeline.TIMELINE_SCHEMA`), or",
        "  `compute_features_local(events, ...)` on a pandas frame of the lake's event columns.",
        '- `as_of`: `None` (latest event of the input), a datetime or ISO string (naive = UTC),',
        '  `"last_event"` (each user\'s own last event) or epoch microseconds per user.',
        "  Events after `as_of` are not dropped; filter first for a point-in-time view.",
        "- `category_reference`: the lake-wide mean ln(price) per category behind `price_level` (the",
        "  lake's `category_prices` dataset); None uses the input's own prices.",
        "- Short histories (how many events a segment needs): `first_n_features(timeline, ns, users,",
        '  category_reference)` gives each user\'s first n events\' features for every n, as of the last',
        "  included event.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
