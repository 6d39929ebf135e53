"""Descriptive and data-quality statistics of the lake, as a small JSON-serializable dict.

Pure Spark: DataFrames in, a dict of aggregates out (no raw or pseudonymized keys ever leave here; only
counts, rates and category/brand names). Each statistic is one grouped aggregation over the few columns
it needs, so Parquet column pruning keeps the passes cheap:

1. per day: volume by event type, missing values, time range, daily active users (also the overview);
2. per user and 3. per session: event counts, then quantiles (``percentile_approx``) and a histogram;
4. per (category, brand): volume, purchases and revenue, ranked on the driver (a small result);
5. per top-level category: price quantiles; 6. distinct products.

Quantiles come from ``percentile_approx``: with its default accuracy they are exact below about ten
thousand values and within 0.01% of rank above; the value returned is an observed one (the smallest
value whose cumulative share reaches the quantile, i.e. numpy's ``inverted_cdf`` method).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from etl.contract import EVENT_TYPES

SCHEMA_VERSION = 1
#: Quantiles reported for every distribution.
QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
#: Histogram bins of "events per user/session": inclusive lower bounds (the last bin is open).
COUNT_BINS: tuple[int, ...] = (1, 2, 3, 6, 11, 21, 51, 101, 501, 1001)
#: Columns that may legitimately be empty in the source; their missing rate is a quality signal.
MISSABLE_COLUMNS: tuple[str, ...] = (
    "category_code",
    "category_l1",
    "category_l2",
    "category_l3",
    "brand",
    "category_id",
)
NO_CATEGORY = "(no category)"
NO_BRAND = "(no brand)"


def _q(q: float) -> str:
    """Key of a quantile in the output: 0.5 -> ``p50``."""
    return f"p{round(q * 100):02d}"


def _missing(column: str) -> Column:
    c = F.col(column)
    if column == "category_id":
        return c.isNull()
    return c.isNull() | (F.trim(c) == "")


def _bin_labels(bins: tuple[int, ...]) -> list[tuple[str, int, int | None]]:
    out: list[tuple[str, int, int | None]] = []
    for lo, nxt in zip(bins, (*bins[1:], None), strict=True):
        hi = None if nxt is None else nxt - 1
        label = f"{lo}+" if hi is None else (str(lo) if hi == lo else f"{lo}-{hi}")
        out.append((label, lo, hi))
    return out


def _count_distribution(per_key: DataFrame) -> dict[str, Any]:
    """Reach, quantiles, mean, max and histogram of events per key, in one aggregation.

    ``per_key`` comes from :func:`_per_key`; an optional ``flagged`` column marks suspicious users.
    """
    c = F.col("events")
    bins = _bin_labels(COUNT_BINS)
    flagged = F.col("flagged") if "flagged" in per_key.columns else F.lit(False)
    aggs = [
        F.count(F.lit(1)).alias("n"),
        F.avg(c).alias("mean"),
        F.max(c).alias("max"),
        F.percentile_approx(c, list(QUANTILES)).alias("q"),
        F.sum("carted").alias("carted"),
        F.sum("purchased").alias("purchased"),
        F.sum(flagged.cast("int")).alias("flagged_keys"),
        F.sum(F.when(flagged, c).otherwise(0)).alias("flagged_events"),
    ]
    aggs += [
        F.sum(F.when(c.between(lo, hi) if hi is not None else c >= lo, 1).otherwise(0)).alias(f"b{i}")
        for i, (_, lo, hi) in enumerate(bins)
    ]
    row = per_key.agg(*aggs).first()
    n = int(row["n"])
    return {
        "n": n,
        "carted": int(row["carted"] or 0),
        "purchased": int(row["purchased"] or 0),
        "flagged_keys": int(row["flagged_keys"] or 0),
        "flagged_events": int(row["flagged_events"] or 0),
        "mean": float(row["mean"]) if n else None,
        "max": int(row["max"]) if n else None,
        "quantiles": {_q(q): float(v) for q, v in zip(QUANTILES, row["q"] or [], strict=False)},
        "histogram": [
            {"bin": label, "lo": lo, "hi": hi, "count": int(row[f"b{i}"] or 0)}
            for i, (label, lo, hi) in enumerate(bins)
        ],
    }


def _per_day(events: DataFrame) -> list[dict[str, Any]]:
    et = F.col("event_type")
    rows = (
        events.groupBy("event_date")
        .agg(
            F.count(F.lit(1)).alias("events"),
            *[F.sum(F.when(et == t, 1).otherwise(0)).alias(t) for t in EVENT_TYPES],
            F.sum(F.when(et == "purchase", F.col("price")).otherwise(0.0)).alias("revenue"),
            F.count_distinct("user_key").alias("users"),
            F.min("event_time").alias("first_event"),
            F.max("event_time").alias("last_event"),
            F.sum(F.when(F.col("price") <= 0, 1).otherwise(0)).alias("zero_price"),
            *[F.sum(F.when(_missing(c), 1).otherwise(0)).alias(f"missing_{c}") for c in MISSABLE_COLUMNS],
        )
        .orderBy("event_date")
        .collect()
    )
    return [r.asDict() for r in rows]


def _per_key(events: DataFrame, key: str) -> DataFrame:
    et = F.col("event_type")
    return events.groupBy(key).agg(
        F.count(F.lit(1)).alias("events"),
        F.max((et == "cart").cast("int")).alias("carted"),
        F.max((et == "purchase").cast("int")).alias("purchased"),
    )


def _catalog(events: DataFrame) -> list[dict[str, Any]]:
    et = F.col("event_type")
    blank_to_null = {
        "category_code": F.when(~_missing("category_code"), F.col("category_code")),
        "brand": F.when(~_missing("brand"), F.col("brand")),
    }
    return [
        r.asDict()
        for r in events.select(
            blank_to_null["category_code"].alias("category_code"),
            blank_to_null["brand"].alias("brand"),
            "event_type",
            "price",
        )
        .groupBy("category_code", "brand")
        .agg(
            F.count(F.lit(1)).alias("events"),
            *[F.sum(F.when(et == t, 1).otherwise(0)).alias(t) for t in EVENT_TYPES],
            F.sum(F.when(et == "purchase", F.col("price")).otherwise(0.0)).alias("revenue"),
        )
        .collect()
    ]


def _ranked(catalog: list[dict[str, Any]], field: str, label_missing: str, top_n: int) -> dict[str, Any]:
    totals: dict[str | None, dict[str, float]] = {}
    for row in catalog:
        acc = totals.setdefault(row[field], {"events": 0, "revenue": 0.0, **dict.fromkeys(EVENT_TYPES, 0)})
        for k in ("events", "revenue", *EVENT_TYPES):
            acc[k] += row[k] or 0
    all_events = sum(v["events"] for v in totals.values()) or 1
    named = sorted(
        ((k, v) for k, v in totals.items() if k is not None), key=lambda kv: (-kv[1]["events"], kv[0])
    )
    top = [
        {
            "name": name,
            "events": int(v["events"]),
            "share": v["events"] / all_events,
            **{t: int(v[t]) for t in EVENT_TYPES},
            "revenue": round(float(v["revenue"]), 2),
            "view_to_purchase": (v["purchase"] / v["view"]) if v["view"] else None,
        }
        for name, v in named[:top_n]
    ]
    missing = totals.get(None, {}).get("events", 0)
    return {
        "distinct": len(named),
        "top": top,
        "missing_label": label_missing,
        "missing_events": int(missing),
    }


def _price_by_category(events: DataFrame, top_n: int) -> list[dict[str, Any]]:
    l1 = F.coalesce(F.when(~_missing("category_l1"), F.col("category_l1")), F.lit(NO_CATEGORY))
    rows = (
        events.select(l1.alias("category"), "price")
        .groupBy("category")
        .agg(
            F.count(F.lit(1)).alias("events"),
            F.min("price").alias("min"),
            F.max("price").alias("max"),
            F.avg("price").alias("mean"),
            F.percentile_approx("price", list(QUANTILES)).alias("q"),
        )
        .orderBy(F.desc("events"), "category")
        .limit(top_n)
        .collect()
    )
    return [
        {
            "category": r["category"],
            "events": int(r["events"]),
            "min": float(r["min"]),
            "max": float(r["max"]),
            "mean": float(r["mean"]),
            "quantiles": {_q(q): float(v) for q, v in zip(QUANTILES, r["q"], strict=True)},
        }
        for r in rows
    ]


def _quarantine(quarantine: DataFrame | None, accepted: int) -> dict[str, Any] | None:
    if quarantine is None:
        return None
    by_reason = {r["reason"]: int(r["count"]) for r in quarantine.groupBy("reason").count().collect()}
    total = sum(by_reason.values())
    return {
        "rows": total,
        "share_of_valid_and_rejected": total / (total + accepted) if total + accepted else 0.0,
        "by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def _flag(per_user: DataFrame, flagged: DataFrame | None) -> DataFrame:
    """Mark users listed in ``flags/suspicious_users`` (a small table, so broadcast)."""
    if flagged is None:
        return per_user
    keys = flagged.select("user_key").distinct().withColumn("flagged", F.lit(True))
    return per_user.join(F.broadcast(keys), on="user_key", how="left").fillna(False, subset=["flagged"])


def _suspicious(flagged: DataFrame | None, users: dict[str, Any], total_events: int) -> dict[str, Any] | None:
    if flagged is None:
        return None
    return {
        "users": flagged.select("user_key").distinct().count(),
        "users_with_events": users["flagged_keys"],
        "events": users["flagged_events"],
        "share_of_events": users["flagged_events"] / total_events if total_events else 0.0,
    }


def _distribution_view(dist: dict[str, Any]) -> dict[str, Any]:
    return {k: dist[k] for k in ("n", "mean", "max", "quantiles", "histogram")}


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else value


def describe(
    events: DataFrame,
    quarantine: DataFrame | None = None,
    *,
    duplicates: DataFrame | None = None,
    suspicious_users: DataFrame | None = None,
    top_n: int = 15,
) -> dict[str, Any]:
    """Statistics of an events table (``etl.contract.EVENT_SCHEMA``) and its quality side tables.

    ``quarantine``, ``duplicates`` and ``suspicious_users`` may be None (absent from the lake); their
    sections are then None. The result holds only aggregates and is ``json.dumps``-able as is.
    """
    days = _per_day(events)
    total = sum(int(d["events"]) for d in days)
    by_type = {t: sum(int(d[t]) for d in days) for t in EVENT_TYPES}

    users = _count_distribution(_flag(_per_key(events, "user_key"), suspicious_users))
    sessions = _count_distribution(_per_key(events, "session_key"))
    catalog = _catalog(events)
    products = events.select("product_id").distinct().count()

    overview = {
        "events": total,
        "users": users["n"],
        "sessions": sessions["n"],
        "products": products,
        "first_event": _iso(min((d["first_event"] for d in days), default=None)),
        "last_event": _iso(max((d["last_event"] for d in days), default=None)),
        "first_date": _iso(days[0]["event_date"]) if days else None,
        "last_date": _iso(days[-1]["event_date"]) if days else None,
        "days_with_events": len(days),
        "revenue": round(sum(float(d["revenue"] or 0) for d in days), 2),
        "zero_or_negative_price_events": sum(int(d["zero_price"]) for d in days),
    }
    missing = {
        c: {
            "missing": (m := sum(int(d[f"missing_{c}"]) for d in days)),
            "rate": m / total if total else 0.0,
        }
        for c in MISSABLE_COLUMNS
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "overview": overview,
        "event_types": by_type,
        "funnel": {
            "users": users["n"],
            "users_who_carted": users["carted"],
            "users_who_purchased": users["purchased"],
            "sessions": sessions["n"],
            "sessions_with_cart": sessions["carted"],
            "sessions_with_purchase": sessions["purchased"],
            "user_purchase_rate": users["purchased"] / users["n"] if users["n"] else 0.0,
            "session_purchase_rate": sessions["purchased"] / sessions["n"] if sessions["n"] else 0.0,
            "purchases_per_view": by_type["purchase"] / by_type["view"] if by_type["view"] else None,
        },
        "missing": missing,
        "events_per_user": _distribution_view(users),
        "events_per_session": _distribution_view(sessions),
        "categories": _ranked(catalog, "category_code", NO_CATEGORY, top_n),
        "brands": _ranked(catalog, "brand", NO_BRAND, top_n),
        "price_by_category": _price_by_category(events, top_n),
        "daily": [
            {
                "date": _iso(d["event_date"]),
                "events": int(d["events"]),
                "users": int(d["users"]),
                **{t: int(d[t]) for t in EVENT_TYPES},
                "revenue": round(float(d["revenue"] or 0), 2),
            }
            for d in days
        ],
        "quarantine": _quarantine(quarantine, total),
        "duplicates": None if duplicates is None else {"rows": duplicates.count()},
        "suspicious_users": _suspicious(suspicious_users, users, total),
    }
