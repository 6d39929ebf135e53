"""Per-user features of a small event history without Spark: the numpy/pandas twin of etl.features.

``shoplens predict`` and the dashboard score a user from an uploaded history of a few hundred events;
starting a JVM for that would cost seconds. :func:`compute_features_local` returns exactly the columns
of ``etl.features.FEATURES`` with the same definitions and arithmetic (a test compares it with the
Spark computation column by column on a few hundred users), so :class:`model.scorer.LightScorer`
gives the same segment as the batch path.

It mirrors the structure of ``etl.aggregates`` + ``etl.features.finalize``: per-session, per-day,
per-brand and per-(user, category) partial sums first, then the ratios. All calendar quantities come
from epoch microseconds in UTC, like the Spark code. This module imports neither pyspark nor
``etl.features`` (which imports pyspark); the column list below is checked against the registry in
tests/model/test_local_features.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from etl.contract import CATEGORY_L1

__all__ = [
    "CATEGORY_BUCKETS",
    "FEATURE_DTYPES",
    "HOUR_BANDS",
    "compute_features_local",
    "raw_to_events",
    "reference_means",
]

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 86_400_000_000
#: Same values as etl.aggregates.HOUR_BANDS / CATEGORY_BUCKETS (that module imports pyspark).
HOUR_BANDS: dict[str, tuple[int, int]] = {
    "night": (0, 6),
    "morning": (6, 12),
    "afternoon": (12, 18),
    "evening": (18, 24),
}
CATEGORY_BUCKETS: tuple[str, ...] = (*CATEGORY_L1, "other")

#: Column -> dtype of the features table, in the order of etl.features.FEATURES.
FEATURE_DTYPES: dict[str, str] = {
    "user_key": "string",
    "n_events": "long",
    "n_sessions": "long",
    "active_days": "long",
    "events_per_session": "double",
    "median_session_duration_s": "double",
    "mean_days_between_visits": "double",
    "frequency": "long",
    "monetary": "double",
    "recency_days": "int",
    "tenure_days": "int",
    "n_views": "long",
    "n_carts": "long",
    "n_removals": "long",
    "n_purchases": "long",
    "view_to_cart_rate": "double",
    "cart_to_purchase_rate": "double",
    "cart_abandonment_rate": "double",
    "removal_rate": "double",
    **{f"share_{b}": "double" for b in CATEGORY_BUCKETS},
    "category_diversity": "int",
    "category_entropy": "double",
    "brand_concentration": "double",
    "price_level": "double",
    "weekend_share": "double",
    **{f"{band}_share": "double" for band in HOUR_BANDS},
    "holiday_share": "double",
    "first_event_time": "timestamp",
    "last_event_time": "timestamp",
    "last_purchase_time": "timestamp",
    "as_of": "timestamp",
    "is_suspicious": "boolean",
}

AsOfLocal = datetime | str | None


# ------------------------------------------------------------------------------------- raw rows
def raw_to_events(raw: pd.DataFrame, key: bytes | None = None) -> pd.DataFrame:
    """Typed REES46 rows -> the lake's event columns, normalized as etl.ingest does.

    ``raw`` has the REES46 columns (``event_time`` parseable as UTC, ``event_type``, ``product_id``,
    ``category_id``, ``category_code``, ``brand``, ``price``, ``user_id``, ``user_session``) and has
    already passed the contract's validation (see services.predict). ``category_code`` and ``brand``
    are trimmed and lower-cased (blank = null), ``category_l1..l3`` are its dot-separated levels.
    ``user_key`` / ``session_key`` are the raw ids unless ``key`` is given, in which case they are the
    lake's HMAC pseudonyms (etl.pseudonymize), so a history can be matched with the lake.
    """
    out = pd.DataFrame(index=raw.index)
    out["event_time"] = pd.to_datetime(raw["event_time"], utc=True, format="mixed")
    out["event_type"] = raw["event_type"].astype(object)
    out["product_id"] = pd.to_numeric(raw["product_id"]).astype("int64")
    out["category_id"] = pd.to_numeric(raw["category_id"]).astype("Int64")
    code = _clean_lower(raw["category_code"])
    levels = code.str.split(".", regex=False)
    out["category_code"] = code
    for i in (1, 2, 3):
        out[f"category_l{i}"] = levels.str.get(i - 1).where(code.notna(), None)
    out["brand"] = _clean_lower(raw["brand"])
    out["price"] = pd.to_numeric(raw["price"]).astype(float)
    users = raw["user_id"].astype(str)
    sessions = raw["user_session"].astype(str)
    if key is not None:
        from etl.pseudonymize import pseudonymize

        users = users.map(lambda v: pseudonymize(v, key))
        sessions = sessions.map(lambda v: pseudonymize(v, key))
    out["user_key"] = users
    out["session_key"] = sessions
    return out


def _clean_lower(s: pd.Series) -> pd.Series:
    """lower(trim(x)) with blank -> null (the ingest's nullif(lower(trim(x)), ''))."""
    text = s.astype(object).where(s.notna(), None)
    text = text.map(lambda v: None if v is None else str(v).strip().lower())
    return text.where(text.fillna("") != "", None).astype(object)


# ------------------------------------------------------------------------ category reference
def reference_means(obj: Any) -> pd.Series:
    """Mean ln(price) per category_id (a float Series indexed by int category_id).

    Accepts what the lake and the model artifact may hold: a frame of ``category_id, mean_log_price``
    or of ``category_id, n_priced, sum_log_price`` at any grain (the Spark ``prices`` aggregate), a
    list of such records, a dict of column lists, or a plain ``{category_id: mean}`` mapping.
    """
    if isinstance(obj, pd.Series):
        s = obj.astype(float)
        s.index = s.index.astype("int64")
        return s
    if isinstance(obj, Mapping) and "category_id" not in obj:
        return pd.Series({int(k): float(v) for k, v in obj.items()}, dtype=float)
    frame = obj if isinstance(obj, pd.DataFrame) else pd.DataFrame(obj)
    frame = frame[frame["category_id"].notna()]
    ids = frame["category_id"].astype("int64")
    if {"n_priced", "sum_log_price"} <= set(frame.columns):
        sums = frame.groupby(ids)[["sum_log_price", "n_priced"]].sum()
        return (sums["sum_log_price"] / sums["n_priced"]).astype(float)
    if "mean_log_price" in frame.columns:
        return pd.Series(frame["mean_log_price"].to_numpy(dtype=float), index=ids.to_numpy())
    raise ValueError(
        "category reference needs category_id with mean_log_price, or with n_priced and sum_log_price; "
        f"got columns {list(frame.columns)}"
    )


# ----------------------------------------------------------------------------- the features
def _as_of_micros(as_of: AsOfLocal) -> int | None:
    """Epoch microseconds of a fixed as-of time (naive = UTC), as etl.features._as_of_column."""
    if as_of is None or as_of == "last_event":
        return None
    when = datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1_000_000)


def _holiday_start(day: np.ndarray) -> np.ndarray:
    """First day (days since epoch) of the holiday peak in the year of ``day`` (etl.aggregates)."""
    years = day.astype("datetime64[D]").astype("datetime64[Y]")
    nov1 = (years.astype("datetime64[M]") + 10).astype("datetime64[D]").astype(np.int64)
    return nov1 + 18 + np.mod(3 - np.mod(nov1 + 3, 7), 7)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float, NaN (null) when den is 0."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _group_sum(codes: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(codes, weights=weights, minlength=n)


def compute_features_local(
    events: pd.DataFrame,
    as_of: AsOfLocal = None,
    category_reference: Any = None,
    suspicious_users: Iterable[str] | None = None,
) -> pd.DataFrame:
    """One row per user with the columns of etl.features.FEATURES, computed with numpy/pandas.

    ``events`` has the lake's event columns: ``user_key`` (or ``user_id``), ``session_key`` (or
    ``user_session``), ``event_time`` (datetime; naive = UTC), ``event_type``, ``price``,
    ``category_l1`` (or ``category_code``), ``brand``, ``category_id``; :func:`raw_to_events` builds
    them from REES46 rows. ``as_of``: None (latest event of ``events``), a datetime or ISO string, or
    ``"last_event"`` (each user's own last event). ``category_reference`` is the lake-wide mean
    ln(price) per category (any form :func:`reference_means` accepts); None uses ``events``' own
    prices, like the Spark default. As in Spark, priced events of a category missing from the
    reference are left out of ``price_level`` (inner join); a user with none gets null.
    ``suspicious_users`` are keys flagged ``is_suspicious``. Rows are sorted by user_key.
    """
    ev = events
    user_col = "user_key" if "user_key" in ev.columns else "user_id"
    session_col = "session_key" if "session_key" in ev.columns else "user_session"
    if "category_l1" in ev.columns:
        l1 = ev["category_l1"]
    else:
        l1 = ev["category_code"].astype(object).str.split(".", regex=False).str.get(0)
    if len(ev) == 0:
        return _empty_frame()

    # -- event level (sorted by user, then time, so group boundaries are contiguous)
    u_all, users = pd.factorize(ev[user_col].astype(str), sort=True)
    us_all = pd.to_datetime(ev["event_time"], utc=True).dt.as_unit("us").astype("int64").to_numpy()
    order = np.lexsort((us_all, u_all))
    u = u_all[order]
    us = us_all[order]
    nu = len(users)
    etype = ev["event_type"].to_numpy(dtype=object)[order]
    price = ev["price"].to_numpy(dtype=float)[order]
    is_view, is_cart = etype == "view", etype == "cart"
    is_removal, is_purchase = etype == "remove_from_cart", etype == "purchase"

    day = np.floor_divide(us, US_PER_DAY)
    hour = np.floor_divide(np.mod(us, US_PER_DAY), US_PER_HOUR)
    weekday = np.mod(day + 3, 7)  # Monday = 0; 1970-01-01 was a Thursday

    def count(mask: np.ndarray) -> np.ndarray:
        return _group_sum(u, nu, mask.astype(float)).astype(np.int64)

    n_events = np.bincount(u, minlength=nu).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], len(u)] - 1
    first_us, last_us = us[starts], us[ends]
    buy_us = np.where(is_purchase, us, np.iinfo(np.int64).min)
    last_buy_us = np.maximum.reduceat(buy_us, starts)
    has_buy = last_buy_us != np.iinfo(np.int64).min

    # -- category buckets (l1 in CATEGORY_L1, else "other")
    l1_sorted = pd.Series(l1.to_numpy(dtype=object)[order])
    bucket = pd.Categorical(l1_sorted, categories=CATEGORY_BUCKETS).codes.astype(np.int64)
    bucket = np.where(bucket < 0, len(CATEGORY_BUCKETS) - 1, bucket)
    n_cat = np.bincount(u * len(CATEGORY_BUCKETS) + bucket, minlength=nu * len(CATEGORY_BUCKETS))
    n_cat = n_cat.reshape(nu, len(CATEGORY_BUCKETS)).astype(np.int64)

    # -- sessions
    sess_key = ev[session_col].to_numpy(dtype=object)[order]
    s_code, _ = pd.factorize(pd.MultiIndex.from_arrays([u, sess_key]))
    ns = int(s_code.max()) + 1
    s_user = np.empty(ns, dtype=np.int64)
    s_user[s_code] = u
    s_first = np.full(ns, np.iinfo(np.int64).max)
    s_last = np.full(ns, np.iinfo(np.int64).min)
    np.minimum.at(s_first, s_code, us)
    np.maximum.at(s_last, s_code, us)
    s_carts = _group_sum(s_code, ns, is_cart.astype(float))
    s_buys = _group_sum(s_code, ns, is_purchase.astype(float))
    n_sessions = np.bincount(s_user, minlength=nu).astype(np.int64)
    frequency = _group_sum(s_user, nu, (s_buys > 0).astype(float)).astype(np.int64)
    cart_sessions = _group_sum(s_user, nu, (s_carts > 0).astype(float))
    abandoned = _group_sum(s_user, nu, ((s_carts > 0) & (s_buys == 0)).astype(float))
    duration = (s_last - s_first) / 1_000_000.0
    median_duration = pd.Series(duration).groupby(s_user).median().reindex(range(nu)).to_numpy()

    # -- active days (day is non-decreasing within a user after the sort)
    new_day = np.r_[True, (u[1:] != u[:-1]) | (day[1:] != day[:-1])]
    active_days = _group_sum(u, nu, new_day.astype(float)).astype(np.int64)
    first_day, last_day = day[starts], day[ends]

    # -- brands (events with a brand): Herfindahl index
    brand = ev["brand"].to_numpy(dtype=object)[order]
    has_brand = pd.notna(brand)
    brand_conc = np.full(nu, np.nan)
    if has_brand.any():
        per_brand = pd.DataFrame({"u": u[has_brand], "b": brand[has_brand]}).groupby(["u", "b"]).size()
        per_brand = per_brand.astype(np.int64)
        sq = (per_brand * per_brand).groupby(level="u").sum().astype(float)
        tot = per_brand.groupby(level="u").sum().astype(float)
        brand_conc[tot.index.to_numpy()] = (sq / tot**2).to_numpy()

    # -- price level: per (user, category) partial sums joined to the category means (inner join)
    # category ids reach 19 digits: keep them as int64 (a float64 round trip would merge categories)
    cat_ids = pd.array(ev["category_id"], dtype="Int64")[order]
    has_cat = ~cat_ids.isna()
    cat = cat_ids.to_numpy(dtype=np.int64, na_value=-1)
    priced = has_cat & (price > 0)
    price_level = np.full(nu, np.nan)
    if priced.any():
        pc = pd.DataFrame({"u": u[priced], "category_id": cat[priced]})
        pc["lp"] = np.log(price[priced])
        pairs = pc.groupby(["u", "category_id"])["lp"].agg(n_priced="size", sum_log_price="sum").reset_index()
        ref = reference_means(pairs if category_reference is None else category_reference)
        pairs["m"] = pairs["category_id"].map(ref)
        pairs = pairs[pairs["m"].notna()]
        if len(pairs):
            pairs["dev"] = pairs["sum_log_price"] - pairs["n_priced"] * pairs["m"]
            per_user = pairs.groupby("u")[["dev", "n_priced"]].sum()
            price_level[per_user.index.to_numpy()] = (per_user["dev"] / per_user["n_priced"]).to_numpy()

    # -- as of, recency, tenure
    fixed = _as_of_micros(as_of)
    if fixed is not None:
        as_of_us = np.full(nu, fixed, dtype=np.int64)
    elif as_of == "last_event":
        as_of_us = last_us
    else:
        as_of_us = np.full(nu, us.max(), dtype=np.int64)
    recency = np.where(has_buy, np.floor((as_of_us - last_buy_us) / US_PER_DAY), np.nan)
    tenure = np.floor((as_of_us - first_us) / US_PER_DAY)

    # -- assemble in registry order
    shares = n_cat / n_events[:, None].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(n_cat > 0, -shares * np.log(shares), 0.0)
    n_views, n_carts = count(is_view), count(is_cart)
    n_removals, n_purchases = count(is_removal), count(is_purchase)
    hours = {band: count((hour >= lo) & (hour < hi)) for band, (lo, hi) in HOUR_BANDS.items()}
    flagged = set(suspicious_users or ())
    keys = users.to_numpy(dtype=object)
    cols: dict[str, Any] = {
        "user_key": keys,
        "n_events": n_events,
        "n_sessions": n_sessions,
        "active_days": active_days,
        "events_per_session": _ratio(n_events, n_sessions),
        "median_session_duration_s": median_duration,
        "mean_days_between_visits": _ratio(last_day - first_day, active_days - 1),
        "frequency": frequency,
        "monetary": _group_sum(u, nu, np.where(is_purchase, price, 0.0)),
        "recency_days": _nullable_int(recency),
        "tenure_days": tenure.astype(np.int32),
        "n_views": n_views,
        "n_carts": n_carts,
        "n_removals": n_removals,
        "n_purchases": n_purchases,
        "view_to_cart_rate": _ratio(n_carts, n_views),
        "cart_to_purchase_rate": _ratio(n_purchases, n_carts),
        "cart_abandonment_rate": _ratio(abandoned, cart_sessions),
        "removal_rate": _ratio(n_removals, n_carts),
        **{f"share_{b}": shares[:, i] for i, b in enumerate(CATEGORY_BUCKETS)},
        "category_diversity": (n_cat[:, : len(CATEGORY_L1)] > 0).sum(axis=1).astype(np.int32),
        "category_entropy": terms.sum(axis=1),
        "brand_concentration": brand_conc,
        "price_level": price_level,
        "weekend_share": _ratio(count(weekday >= 5), n_events),
        **{f"{band}_share": _ratio(hours[band], n_events) for band in HOUR_BANDS},
        "holiday_share": _ratio(count(day >= _holiday_start(day)), n_events),
        "first_event_time": pd.to_datetime(first_us, unit="us", utc=True),
        "last_event_time": pd.to_datetime(last_us, unit="us", utc=True),
        "last_purchase_time": pd.to_datetime(last_buy_us, unit="us", utc=True).where(has_buy),
        "as_of": pd.to_datetime(as_of_us, unit="us", utc=True),
        "is_suspicious": np.array([k in flagged for k in keys], dtype=bool),
    }
    assert tuple(cols) == tuple(FEATURE_DTYPES), "local_features: columns and FEATURE_DTYPES out of sync"
    return pd.DataFrame(cols)


def _nullable_int(values: np.ndarray) -> pd.arrays.IntegerArray:
    """Float array with NaN -> nullable Int32 (Spark's int with nulls)."""
    mask = np.isnan(values)
    return pd.arrays.IntegerArray(np.where(mask, 0, values).astype(np.int32), mask)


def _empty_frame() -> pd.DataFrame:
    kinds = {
        "string": object,
        "long": np.int64,
        "int": np.int32,
        "double": float,
        "timestamp": "datetime64[us, UTC]",
        "boolean": bool,
    }
    frame = pd.DataFrame({c: pd.Series(dtype=kinds[t]) for c, t in FEATURE_DTYPES.items()})
    frame["recency_days"] = frame["recency_days"].astype("Int32")
    return frame
