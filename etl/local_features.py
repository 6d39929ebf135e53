"""Per-user features without Spark: the one implementation of every column of etl.features.FEATURES.

``shoplens features`` runs :func:`timeline_features` on each user bucket of the lake's timelines in
Spark tasks (services/jobs/features.py); ``shoplens predict``, the API and the dashboard score one
uploaded history of a few hundred events with :func:`compute_features_local` (starting a JVM for that
would cost seconds); the segmentation's first-n study runs :func:`first_n_features`; the propensity
examples take several cutoffs of the same users with :class:`CutoffFeatures`. All share the arithmetic
below, so a history scored alone gets the lake's features (tests/etl/test_local_features.py).

The structure: per-session, per-day, per-brand and per-(user, category) partial sums first, then the
ratios. All calendar quantities come from epoch microseconds in UTC. This module imports no pyspark;
the column list below is checked against the registry (etl.features) in tests/etl/test_local_features.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl.contract import CATEGORY_BUCKETS, CATEGORY_L1, HOUR_BANDS
from etl.timeline import plain
from etl.user_runs import user_runs

__all__ = [
    "CATEGORY_BUCKETS",
    "FEATURES_ARROW",
    "FEATURE_DTYPES",
    "FIRST_N_ARROW",
    "FIRST_N_INPUTS",
    "HOUR_BANDS",
    "PRICE_SUMS",
    "CutoffFeatures",
    "as_of_micros",
    "compute_features_local",
    "features_frame",
    "first_n_features",
    "key_array",
    "priced_log_prices",
    "raw_feature_columns",
    "raw_price_level",
    "raw_to_events",
    "reference_means",
    "timeline_feature_columns",
    "timeline_features",
    "timeline_price_sums",
]

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 86_400_000_000
_BUCKET_POS = {b: i for i, b in enumerate(CATEGORY_BUCKETS)}

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
_ARROW_TYPES = {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "double": pa.float64(),
                "timestamp": pa.timestamp("us", tz="UTC"), "boolean": pa.bool_()}  # fmt: skip
#: The features table in Arrow, as the features job writes it (the types Spark reads back).
FEATURES_ARROW: pa.Schema = pa.schema([(c, _ARROW_TYPES[t]) for c, t in FEATURE_DTYPES.items()])
#: One timeline bucket's sums behind ``price_level``'s category means, and its latest event time.
PRICE_SUMS: pa.Schema = pa.schema([("category_id", pa.int64()), ("n_priced", pa.int64()),
                                   ("sum_log_price", pa.float64()), ("latest", pa.timestamp("us", tz="UTC"))])  # fmt: skip


# ------------------------------------------------------------------------------------- raw rows
def raw_to_events(raw: pd.DataFrame, key: bytes | None = None) -> pd.DataFrame:
    """Typed REES46 rows -> the lake's event columns, normalized as etl.ingest does.

    ``raw`` has the REES46 columns (``event_time`` parseable as UTC, ``event_type``, ``product_id``,
    ``category_id``, ``category_code``, ``brand``, ``price``, ``user_id``, ``user_session``) and has
    already passed the contract's validation (see services.jobs.predict). ``category_code`` and ``brand``
    are trimmed and lower-cased (blank = null), ``category_l1..l3`` are its dot-separated levels.
    ``user_key`` / ``session_key`` are the raw ids unless ``key`` is given, in which case they are the
    lake's HMAC pseudonyms (etl.pseudonymize), so a history can be matched with the lake.
    """
    codes, levels, brands = _normalized_text(raw["category_code"].tolist(), raw["brand"].tolist())
    users = raw["user_id"].astype(str).tolist()
    sessions = raw["user_session"].astype(str).tolist()
    if key is not None:
        from etl.pseudonymize import pseudonymize

        users = [pseudonymize(v, key) for v in users]
        sessions = [pseudonymize(v, key) for v in sessions]
    return pd.DataFrame(
        {
            "event_time": pd.to_datetime(raw["event_time"], utc=True),
            "event_type": raw["event_type"].to_numpy(dtype=object),
            "product_id": pd.to_numeric(raw["product_id"]).astype("int64").to_numpy(),
            "category_id": pd.array(raw["category_id"], dtype="Int64"),
            "category_code": codes,
            **{f"category_l{i}": level for i, level in enumerate(levels, start=1)},
            "brand": brands,
            "price": pd.to_numeric(raw["price"]).astype(float).to_numpy(),
            "user_key": np.array(users, dtype=object),
            "session_key": np.array(sessions, dtype=object),
        },
        index=raw.index,
    )


def _normalized_text(codes: list, brands: list) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(category_code, [category_l1, l2, l3], brand) as object arrays, normalized as etl.ingest does."""
    clean = _clean_all(codes)
    parts = {c: (*c.split(".", 3)[:3], None, None)[:3] for c in set(clean) if c is not None}
    parts[None] = (None, None, None)
    rows = [parts[c] for c in clean]
    return (
        np.array(clean, dtype=object),
        [np.array([r[i] for r in rows], dtype=object) for i in range(3)],
        np.array(_clean_all(brands), dtype=object),
    )


def _clean_all(values: list) -> list[str | None]:
    """:func:`_clean_lower` of each value, computed once per distinct string (a history repeats a few)."""
    memo = {v: _clean_lower(v) for v in {v for v in values if isinstance(v, str)}}
    return [memo[v] if isinstance(v, str) else _clean_lower(v) for v in values]


def _clean_lower(v: Any) -> str | None:
    """lower(trim(v)) with blank -> None: the ingest's nullif(lower(trim(x)), '') (trim = spaces)."""
    if isinstance(v, str):  # the usual case first
        return v.strip(" ").lower() or None
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return None
    return str(v).strip(" ").lower() or None


def _top_level(v: Any) -> str | None:
    """category_l1 of a raw category code: the first dot-separated level of :func:`_clean_lower`."""
    code = _clean_lower(v)
    return None if code is None else code.split(".", 1)[0]


def _per_distinct(values: pa.ChunkedArray | pa.Array, fn: Callable[[Any], str | None]) -> np.ndarray:
    """``fn`` of each value (None for null) as an object array, called once per distinct value: Arrow's
    dictionary encoding instead of a Python list of every value (a history repeats a few brands)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    out = np.empty(len(encoded.dictionary) + 1, dtype=object)
    out[:] = [*map(fn, encoded.dictionary.to_pylist()), fn(None)]
    return out[pc.fill_null(encoded.indices, -1).to_numpy()]  # a null's index -1: fn(None)


# ------------------------------------------------------------------------ category reference
def reference_means(obj: Any) -> pd.Series:
    """Mean ln(price) per category_id (a float Series indexed by int category_id).

    Accepts what the lake and the model artifact may hold: a frame of ``category_id, mean_log_price``
    or of ``category_id, n_priced, sum_log_price`` at any grain (the lake's ``category_prices``), a
    list of such records, a dict of column lists, or a plain ``{category_id: mean}`` mapping.
    """
    if isinstance(obj, pd.Series):
        if obj.dtype == np.float64 and obj.index.dtype == np.int64 and obj.index.is_unique:
            return obj  # already normalized (e.g. LoadedModel.category_means): no copy per call
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
        if not ids.is_unique:
            raise ValueError("category reference lists a category_id more than once")
        return pd.Series(frame["mean_log_price"].to_numpy(dtype=float), index=ids.to_numpy())
    raise ValueError(
        "category reference needs category_id with mean_log_price, or with n_priced and sum_log_price; "
        f"got columns {list(frame.columns)}"
    )


# ----------------------------------------------------------------------------- the features
def as_of_micros(as_of: datetime | str | int) -> int:
    """Epoch microseconds of a reference time (naive = UTC; an int is already them)."""
    if isinstance(as_of, int):
        return as_of
    when = datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1_000_000)


def _as_of_micros(as_of: AsOfLocal | int) -> int | None:
    """:func:`as_of_micros` of a fixed as-of time; None for None and ``"last_event"``."""
    return None if as_of is None or as_of == "last_event" else as_of_micros(as_of)


def _holiday_start(day: np.ndarray) -> np.ndarray:
    """First day (days since epoch) of the holiday peak in the year of ``day``.

    The peak starts on the Monday of Black Friday week. Black Friday is the day after the 4th Thursday
    of November, so the Monday is 3 days before that Thursday: with ``w`` the weekday of 1 November
    (Monday = 0), the first Thursday is 1 Nov + (3 - w) mod 7, and the Monday is 18 days after it.
    1970-01-01 was a Thursday, hence weekday(d) = (d + 3) mod 7.
    """
    years = day.astype("datetime64[D]").astype("datetime64[Y]")
    nov1 = (years.astype("datetime64[M]") + 10).astype("datetime64[D]").astype(np.int64)
    return nov1 + 18 + np.mod(3 - np.mod(nov1 + 3, 7), 7)


def _in_holiday_peak(day: np.ndarray) -> np.ndarray:
    """``day >= _holiday_start(day)``, the calendar worked out once per day of the events' span."""
    first = int(day.min())
    span = np.arange(first, int(day.max()) + 1)
    return (span >= _holiday_start(span))[day - first]


def _user_time_order(u: np.ndarray, us: np.ndarray) -> np.ndarray | slice:
    """The permutation sorting events by (user code, time); a no-op slice when they already are (the
    training examples sort each bucket once for all its cutoffs)."""
    du, dt = np.diff(u), np.diff(us)
    if bool(np.all((du > 0) | ((du == 0) & (dt >= 0)))):
        return slice(None)
    return np.lexsort((us, u))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float, NaN (null) when den is 0."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


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
    prices. Priced events of a category missing from the
    reference are left out of ``price_level`` (inner join); a user with none gets null.
    ``suspicious_users`` are keys flagged ``is_suspicious``. Rows are sorted by user_key.
    """
    arrays = _event_arrays(events)
    if arrays is None:
        return _empty_frame()
    return features_frame(_feature_columns(arrays, as_of, category_reference, suspicious_users))


def raw_feature_columns(
    raw: pa.Table, as_of: AsOfLocal = None, category_reference: Any = None
) -> dict[str, np.ndarray]:
    """``compute_features_local(raw_to_events(raw.to_pandas()), as_of, category_reference)`` as columns.

    ``raw``: typed REES46 rows in Arrow, as :class:`etl.lines.History` holds them (event_time a UTC
    timestamp, ids int64, price float64, the rows validated). The same normalization and arithmetic,
    without building the two frames, which costs more than the arithmetic on one small history (the
    scoring API scores one user per request). Timestamps are epoch microseconds (``last_purchase_time``
    is the int64 minimum without a purchase) and ``recency_days`` is a float with NaN for null.
    """
    if raw.num_rows == 0:
        return {c: _empty_frame()[c].to_numpy() for c in FEATURE_DTYPES}
    return _feature_columns(_raw_events(raw), as_of, category_reference, None)


def raw_price_level(raw: pa.Table, category_reference: Any = None) -> np.ndarray:
    """``raw_feature_columns(raw, category_reference=...)["price_level"]`` alone (users in the same
    order): for a second model whose category price reference differs from the one the features were
    computed with (only ``price_level`` reads the reference)."""
    if raw.num_rows == 0:
        return np.empty(0)
    return _price_level(_code(_raw_events(raw)), category_reference)


def _raw_events(raw: pa.Table) -> _Events:
    """The event arrays of typed REES46 rows in Arrow (see :func:`raw_feature_columns`)."""
    category = raw["category_id"]
    return _Events(
        user=raw["user_id"].cast(pa.string()).to_numpy(zero_copy_only=False),
        session=raw["user_session"].cast(pa.string()).to_numpy(zero_copy_only=False),
        us=pc.cast(raw["event_time"], pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64()).to_numpy(),
        event_type=raw["event_type"].to_numpy(zero_copy_only=False),
        price=raw["price"].cast(pa.float64()).to_numpy(zero_copy_only=False),
        l1=_per_distinct(raw["category_code"], _top_level),
        brand=_per_distinct(raw["brand"], _clean_lower),
        category_id=pc.fill_null(category, 0).cast(pa.int64()).to_numpy(),
        has_category=category.is_valid().to_numpy(zero_copy_only=False),
    )


def timeline_features(
    timeline: pa.Table, as_of: AsOfLocal | int | np.ndarray = None, category_reference: Any = None,
    suspicious_users: Iterable[str] | None = None,
) -> pa.Table:
    """:func:`compute_features_local` of a timeline bucket (:mod:`etl.timeline`), Arrow in and out.

    ``as_of`` (None: the bucket's latest event; an int64 array: epoch microseconds per user, in user
    order, for point-in-time features) and ``category_reference`` must be the whole lake's
    for a lake's features (see services.jobs.features): a bucket sees only its own users. Rows in
    user order, :data:`FEATURES_ARROW` (nulls where :func:`compute_features_local` has NaN).
    """
    if timeline.num_rows == 0:
        return FEATURES_ARROW.empty_table()
    cols = timeline_feature_columns(timeline, as_of, category_reference, suspicious_users)
    last_buy = cols["last_purchase_time"]
    arrays_out = {
        **{c: pa.array(v, from_pandas=True) for c, v in cols.items()},
        "recency_days": pa.array(cols["recency_days"], from_pandas=True).cast(pa.int32()),
        **{c: pa.array(cols[c]).cast(pa.timestamp("us", tz="UTC")) for c in _TIMESTAMPS},
        "last_purchase_time": pa.array(last_buy, mask=last_buy == _NO_BUY).cast(pa.timestamp("us", tz="UTC")),
    }
    return pa.table(arrays_out).cast(FEATURES_ARROW)


#: A user's first events are taken in this order (``first_n_features``): time, then fixed tie-breaks.
FIRST_N_ORDER: tuple[str, ...] = ("event_time", "event_type", "product_id", "session_key")
#: The timeline columns :func:`first_n_features` reads.
FIRST_N_INPUTS: tuple[str, ...] = ("user_key", "session_key", "event_time", "event_type", "product_id", "price",
                                   "category_l1", "brand", "category_id")  # fmt: skip
#: :data:`FEATURES_ARROW` of each (user, n) of a first-n study, plus its ``n``.
FIRST_N_ARROW: pa.Schema = FEATURES_ARROW.append(pa.field("n", pa.int64()))


def first_n_features(
    timeline: pa.Table, ns: Sequence[int], users: Iterable[str] | None = None, category_reference: Any = None
) -> pa.Table:
    """The features of each user's first ``n`` events, for every ``n`` of ``ns`` (:data:`FIRST_N_ARROW`).

    For the segmentation's event-threshold study: how a segment from a short history compares with
    the whole history's. A user's events are taken in :data:`FIRST_N_ORDER`; recency and tenure are
    measured at the user's last included event (``as_of="last_event"``) and ``price_level`` against
    ``category_reference`` (the whole lake's, as the full features are). ``users``: only these keys
    (None: all). A user with fewer than ``n`` events gets all of them; the caller decides eligibility.
    Rows by ``n``, then user.
    """
    if users is not None:
        timeline = timeline.filter(pc.is_in(plain(timeline, ["user_key"])["user_key"],
                                            value_set=pa.array(sorted(set(users)), pa.string())))  # fmt: skip
    if timeline.num_rows == 0 or not ns:
        return FIRST_N_ARROW.empty_table()
    keys = ["user_key", *FIRST_N_ORDER]
    ordered = timeline.take(pc.sort_indices(plain(timeline, keys), [(c, "ascending") for c in keys]))
    u, first_rows = user_runs(ordered["user_key"])
    starts = np.flatnonzero(first_rows)
    rank = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)]))  # 0-based, per user
    parts = []
    for n in sorted({int(n) for n in ns}):
        part = timeline_features(ordered.filter(pa.array(rank < n)), "last_event", category_reference)
        parts.append(part.append_column("n", pa.array(np.full(part.num_rows, n), pa.int64())))
    return pa.concat_tables(parts).cast(FIRST_N_ARROW)


def timeline_feature_columns(
    timeline: pa.Table, as_of: AsOfLocal | int | np.ndarray = None, category_reference: Any = None,
    suspicious_users: Iterable[str] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`timeline_features` as numpy columns (as :func:`raw_feature_columns` gives them), for a
    caller that scores them without a table (the funnel's point-in-time traits)."""
    category = timeline["category_id"]
    arrays = _Events(
        user=timeline["user_key"].to_numpy(),
        session=timeline["session_key"].to_numpy(),
        us=timeline["event_time"].cast(pa.int64()).to_numpy(),
        event_type=_codes(timeline["event_type"]),
        price=timeline["price"].to_numpy(),
        l1=_codes(timeline["category_l1"]),
        brand=_codes(timeline["brand"]),
        category_id=pc.fill_null(category, 0).to_numpy(),
        has_category=category.is_valid().to_numpy(),
    )
    return _feature_columns(arrays, as_of, category_reference, suspicious_users)


def priced_log_prices(timeline: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The category price reference's rule: the events with a category_id and price > 0 (a mask), and
    their category ids and ln(price)."""
    category, price = timeline["category_id"], timeline["price"].to_numpy()
    priced = category.is_valid().to_numpy() & (price > 0)
    return priced, pc.fill_null(category, 0).to_numpy()[priced], np.log(price[priced])


def timeline_price_sums(timeline: pa.Table) -> pa.Table:
    """Per category_id, the priced events (price > 0) and their sum of ln(price), plus one row without
    a category; every row carries the bucket's latest event time (:data:`PRICE_SUMS`). Summed over
    buckets they are the lake's category reference and as-of time."""
    _, category, log_price = priced_log_prices(timeline)
    sums = pd.DataFrame({"category_id": category, "log_price": log_price}).groupby("category_id")["log_price"].agg(["size", "sum"])  # fmt: skip
    latest = pc.max(timeline["event_time"]).as_py() if timeline.num_rows else None
    return pa.table({
        "category_id": pa.array([*sums.index.tolist(), None], pa.int64()),
        "n_priced": pa.array([*sums["size"].tolist(), 0], pa.int64()),
        "sum_log_price": pa.array([*sums["sum"].tolist(), 0.0], pa.float64()),
        "latest": pa.array([latest] * (len(sums) + 1), pa.timestamp("us", tz="UTC")),
    }, schema=PRICE_SUMS)  # fmt: skip


def _codes(values: pa.ChunkedArray) -> np.ndarray | pd.Categorical:
    """A timeline text column to factorize: its dictionary as a categorical (no string hashing)."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not pa.types.is_dictionary(array.type):
        return array.to_numpy(zero_copy_only=False)
    codes = pc.fill_null(array.indices, -1).to_numpy()
    return pd.Categorical.from_codes(codes, categories=pd.Index(array.dictionary.to_pylist(), dtype=object))


@dataclass(frozen=True)
class _Events:
    """The event columns the features read, as numpy arrays in input order."""

    user: np.ndarray  # object: user key (str), or int64 codes (key_array)
    session: np.ndarray  # object: session key, or int64 codes
    us: np.ndarray  # int64: event time, epoch microseconds UTC
    event_type: np.ndarray | pd.Categorical  # object or categorical
    price: np.ndarray  # float64
    l1: np.ndarray | pd.Categorical  # top category level, null without a category code
    brand: np.ndarray | pd.Categorical  # normalized brand, null without one
    category_id: np.ndarray  # int64 (0 where null)
    has_category: np.ndarray  # bool: category_id is not null


def key_array(keys: pd.Series) -> np.ndarray:
    """User or session keys as a numpy array to factorize: integer codes as they are (the training
    examples code each 64-character key as an int64 once, which factorizes far faster), anything
    else as Python strings."""
    if pd.api.types.is_integer_dtype(keys.dtype):
        return keys.to_numpy(dtype=np.int64)
    return keys.astype(str).to_numpy(dtype=object)


def _labels(values: pd.Series) -> np.ndarray | pd.Categorical:
    """A text column to factorize: a categorical as it is (its codes are factorized, not its strings:
    the training examples read the lake's strings as dictionaries), anything else as Python objects."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.array
    return values.to_numpy(dtype=object)


def _event_arrays(ev: pd.DataFrame) -> _Events | None:
    """The arrays of an events frame (see :func:`compute_features_local`); None if it has no rows."""
    user_col = "user_key" if "user_key" in ev.columns else "user_id"
    session_col = "session_key" if "session_key" in ev.columns else "user_session"
    if "category_l1" in ev.columns:
        l1 = ev["category_l1"]
    else:
        l1 = ev["category_code"].astype(object).str.split(".", regex=False).str.get(0)
    if len(ev) == 0:
        return None
    # category ids reach 19 digits: keep them int64 (a float64 round trip would merge categories)
    category = pd.array(ev["category_id"], dtype="Int64")
    return _Events(
        user=key_array(ev[user_col]),
        session=key_array(ev[session_col]),
        us=pd.to_datetime(ev["event_time"], utc=True).dt.as_unit("us").astype("int64").to_numpy(),
        event_type=_labels(ev["event_type"]),
        price=ev["price"].to_numpy(dtype=float),
        l1=_labels(l1),
        brand=_labels(ev["brand"]),
        category_id=category.to_numpy(dtype=np.int64, na_value=0),
        has_category=~np.asarray(category.isna()),
    )


_NO_BUY = np.iinfo(np.int64).min
_TIMESTAMPS = ("first_event_time", "last_event_time", "as_of")


def features_frame(cols: dict[str, Any]) -> pd.DataFrame:
    """The features table of :func:`_feature_columns` (or :func:`raw_feature_columns`): timestamps as UTC datetimes, nullable ints."""
    last_buy = cols["last_purchase_time"]
    return pd.DataFrame({
        **cols,
        "recency_days": _nullable_int(cols["recency_days"]),
        **{c: pd.to_datetime(cols[c], unit="us", utc=True) for c in _TIMESTAMPS},
        "last_purchase_time": pd.to_datetime(last_buy, unit="us", utc=True).where(last_buy != _NO_BUY),
    })  # fmt: skip


def _feature_columns(
    e: _Events, as_of: AsOfLocal | int | np.ndarray, category_reference: Any, suspicious_users: Iterable[str] | None
) -> dict[str, Any]:
    """The features of :func:`compute_features_local` as numpy columns (see :func:`raw_feature_columns`)."""
    return _coded_columns(_code(e), as_of, category_reference, suspicious_users)


class CutoffFeatures:
    """The features of one event history at several cutoffs, the events sorted and coded once.

    ``CutoffFeatures(events).at(c, reference)`` equals ``compute_features_local(events[event_time <=
    c], as_of=c, category_reference=reference)``: the training examples take five cutoffs of the same
    users, and coding each cutoff's subset again (hashing users, sessions, brands and categories) was
    a third of their time.
    """

    def __init__(self, events: pd.DataFrame) -> None:
        arrays = _event_arrays(events)
        self._coded = None if arrays is None else _code(arrays)

    def at(self, cut: int, category_reference: Any = None) -> pd.DataFrame:
        """The features as of ``cut`` (epoch microseconds) of the users with an event at or before it."""
        coded = None if self._coded is None else self._coded.until(cut)
        if coded is None or len(coded.u) == 0:
            return _empty_frame()
        return features_frame(_coded_columns(coded, cut, category_reference, None))


@dataclass(frozen=True)
class _Coded:
    """Events sorted by (user, time) with every grouping the features need coded once.

    Codes are dense (0..n-1; -1: the event is in no such group). :meth:`until` keeps the events at or
    before a time and renumbers the codes present, with no hashing.
    """

    users: np.ndarray  # the key of each user code
    u: np.ndarray  # user code per event, non-decreasing
    us: np.ndarray  # event time, epoch microseconds UTC; non-decreasing within a user
    is_view: np.ndarray
    is_cart: np.ndarray
    is_removal: np.ndarray
    is_purchase: np.ndarray
    price: np.ndarray
    bucket: np.ndarray  # category bucket position per event
    day: np.ndarray  # days since epoch
    session: np.ndarray  # (user, session) code per event
    session_user: np.ndarray  # user code of each (user, session)
    brand: np.ndarray  # (user, brand) code per event, -1 without a brand
    brand_user: np.ndarray
    pair: np.ndarray  # (user, category) code per priced event (price > 0 and a category), -1 otherwise
    pair_user: np.ndarray
    pair_cat: np.ndarray  # position in ``cats`` of each (user, category)
    cats: np.ndarray  # category ids
    log_price: np.ndarray  # ln(price) of a priced event, 0 otherwise

    def until(self, cut: int) -> _Coded:
        """The events at or before ``cut`` (epoch microseconds), the codes renumbered over those present."""
        keep = self.us <= cut
        u, users = _recode(self.u[keep], len(self.users))
        session, sessions = _recode(self.session[keep], len(self.session_user))
        brand, brands = _recode(self.brand[keep], len(self.brand_user))
        pair, pairs = _recode(self.pair[keep], len(self.pair_user))
        return _Coded(
            users=self.users[users], u=u, us=self.us[keep], is_view=self.is_view[keep], is_cart=self.is_cart[keep],
            is_removal=self.is_removal[keep], is_purchase=self.is_purchase[keep], price=self.price[keep],
            bucket=self.bucket[keep], day=self.day[keep],
            session=session, session_user=np.searchsorted(users, self.session_user[sessions]),
            brand=brand, brand_user=np.searchsorted(users, self.brand_user[brands]),
            pair=pair, pair_user=np.searchsorted(users, self.pair_user[pairs]), pair_cat=self.pair_cat[pairs],
            cats=self.cats, log_price=self.log_price[keep],
        )  # fmt: skip


def _recode(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..n-1 (-1: none) renumbered densely over those present: (new codes, old code of each new one)."""
    present = np.zeros(n, dtype=bool)
    present[codes[codes >= 0]] = True
    renumber = np.cumsum(present) - 1
    return np.where(codes >= 0, renumber[codes], -1), np.flatnonzero(present)


def _pairs(u: np.ndarray, local: np.ndarray, n_local: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, value) pairs coded by hashing (every use is order-free): the pair code per event (-1
    where ``local`` is -1), and the user code and value code of each pair."""
    has = local >= 0
    code = np.full(len(u), -1, dtype=np.int64)
    code[has], pairs = pd.factorize(u[has] * n_local + local[has])
    return code, pairs // max(n_local, 1), pairs % max(n_local, 1)


def _code(e: _Events) -> _Coded:
    """Sort the events by (user, time) and code users, event types, sessions, brands and categories."""
    u_all, users = pd.factorize(e.user, sort=True)
    order = _user_time_order(u_all, e.us)
    u, us = u_all[order], e.us[order]
    t_code, t_names = pd.factorize(e.event_type[order])  # compare small codes, not Python strings
    is_view, is_cart, is_removal, is_purchase = (
        t_code == at for at in pd.Index(t_names).get_indexer(["view", "cart", "remove_from_cart", "purchase"])
    )
    nb = len(CATEGORY_BUCKETS)
    l1_code, l1_names = pd.factorize(e.l1[order])  # null -> -1: "other", like an unknown l1
    s_local, s_names = pd.factorize(e.session[order])
    session, session_user, _ = _pairs(u, s_local, len(s_names))
    b_local, b_names = pd.factorize(e.brand[order])  # null -> -1
    brand, brand_user, _ = _pairs(u, b_local, len(b_names))
    price = e.price[order]
    priced = e.has_category[order] & (price > 0)
    c_local = np.full(len(u), -1, dtype=np.int64)
    c_local[priced], cats = pd.factorize(e.category_id[order][priced])
    pair, pair_user, pair_cat = _pairs(u, c_local, len(cats))
    return _Coded(
        users=np.asarray(users), u=u, us=us, is_view=is_view, is_cart=is_cart, is_removal=is_removal,
        is_purchase=is_purchase, price=price,
        bucket=np.array([_BUCKET_POS.get(v, nb - 1) for v in l1_names] + [nb - 1], dtype=np.intp)[l1_code],
        day=np.floor_divide(us, US_PER_DAY), session=session, session_user=session_user, brand=brand,
        brand_user=brand_user, pair=pair, pair_user=pair_user, pair_cat=pair_cat, cats=np.asarray(cats),
        log_price=np.log(price, out=np.zeros(len(u)), where=priced),
    )  # fmt: skip


def _coded_columns(
    c: _Coded, as_of: AsOfLocal | int | np.ndarray, category_reference: Any, suspicious_users: Iterable[str] | None
) -> dict[str, Any]:
    """The arithmetic of :func:`_feature_columns` on coded events."""
    u, us, nu = c.u, c.us, len(c.users)
    hour = np.floor_divide(np.mod(us, US_PER_DAY), US_PER_HOUR)
    weekday = np.mod(c.day + 3, 7)  # Monday = 0; 1970-01-01 was a Thursday

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(u[mask], minlength=nu).astype(np.int64)

    n_events = np.bincount(u, minlength=nu).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], len(u)] - 1
    first_us, last_us = us[starts], us[ends]
    last_buy_us = np.maximum.reduceat(np.where(c.is_purchase, us, _NO_BUY), starts)
    has_buy = last_buy_us != _NO_BUY

    # -- category buckets (l1 in CATEGORY_L1, else "other")
    nb = len(CATEGORY_BUCKETS)
    n_cat = np.bincount(u * nb + c.bucket, minlength=nu * nb).reshape(nu, nb).astype(np.int64)

    # -- sessions: (user, session) pairs
    ns, s_code, s_user = len(c.session_user), c.session, c.session_user
    s_first = np.full(ns, np.iinfo(np.int64).max)
    s_last = np.full(ns, np.iinfo(np.int64).min)
    np.minimum.at(s_first, s_code, us)
    np.maximum.at(s_last, s_code, us)
    s_carts = np.bincount(s_code[c.is_cart], minlength=ns)
    s_buys = np.bincount(s_code[c.is_purchase], minlength=ns)
    n_sessions = np.bincount(s_user, minlength=nu).astype(np.int64)
    frequency = np.bincount(s_user[s_buys > 0], minlength=nu).astype(np.int64)
    cart_sessions = np.bincount(s_user[s_carts > 0], minlength=nu)
    abandoned = np.bincount(s_user[(s_carts > 0) & (s_buys == 0)], minlength=nu)
    median_duration = _group_median(s_user, (s_last - s_first) / 1_000_000.0, nu)

    # -- active days (day is non-decreasing within a user)
    day = c.day
    new_day = np.r_[True, (u[1:] != u[:-1]) | (day[1:] != day[:-1])]
    active_days = np.bincount(u[new_day], minlength=nu).astype(np.int64)
    first_day, last_day = day[starts], day[ends]

    # -- brands (events with a brand): Herfindahl index of the user's brand counts
    brand_conc = np.full(nu, np.nan)
    branded = c.brand >= 0
    if branded.any():
        b_count = np.bincount(c.brand[branded], minlength=len(c.brand_user))
        square = np.bincount(c.brand_user, weights=(b_count * b_count).astype(float), minlength=nu)
        total = np.bincount(c.brand_user, weights=b_count.astype(float), minlength=nu)
        np.divide(square, total**2, out=brand_conc, where=total > 0)

    price_level = _price_level(c, category_reference)

    # -- as of, recency, tenure
    fixed = None if isinstance(as_of, np.ndarray) else _as_of_micros(as_of)
    if isinstance(as_of, np.ndarray):  # one time per user, in user order
        as_of_us = as_of.astype(np.int64)
    elif fixed is not None:
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
    n_views, n_carts = count(c.is_view), count(c.is_cart)
    n_removals, n_purchases = count(c.is_removal), count(c.is_purchase)
    hours = {band: count((hour >= lo) & (hour < hi)) for band, (lo, hi) in HOUR_BANDS.items()}
    flagged = set(suspicious_users or ())
    keys = c.users
    cols: dict[str, Any] = {
        "user_key": keys,
        "n_events": n_events,
        "n_sessions": n_sessions,
        "active_days": active_days,
        "events_per_session": _ratio(n_events, n_sessions),
        "median_session_duration_s": median_duration,
        "mean_days_between_visits": _ratio(last_day - first_day, active_days - 1),
        "frequency": frequency,
        "monetary": np.bincount(u, weights=np.where(c.is_purchase, c.price, 0.0), minlength=nu),
        "recency_days": recency,
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
        "holiday_share": _ratio(count(_in_holiday_peak(day)), n_events),
        "first_event_time": first_us,
        "last_event_time": last_us,
        "last_purchase_time": last_buy_us,
        "as_of": as_of_us,
        "is_suspicious": np.array([k in flagged for k in keys], dtype=bool),
    }
    assert tuple(cols) == tuple(FEATURE_DTYPES), "local_features: columns and FEATURE_DTYPES out of sync"
    return cols


def _price_level(c: _Coded, category_reference: Any) -> np.ndarray:
    """Per user, the mean of ln(price) - the category's mean ln(price) over priced events, with the
    category means of ``category_reference`` (an inner join) or, for None, of the events themselves."""
    nu = len(c.users)
    price_level = np.full(nu, np.nan)
    priced = c.pair >= 0
    if priced.any():
        npairs = len(c.pair_user)
        n_priced = np.bincount(c.pair[priced], minlength=npairs).astype(float)
        sum_log_price = np.bincount(c.pair[priced], weights=c.log_price[priced], minlength=npairs)
        mean = np.full(len(c.cats), np.nan)
        if category_reference is None:  # the events' own prices
            den = np.bincount(c.pair_cat, weights=n_priced, minlength=len(c.cats))
            np.divide(np.bincount(c.pair_cat, weights=sum_log_price, minlength=len(c.cats)), den, out=mean, where=den > 0)
        else:
            ref = reference_means(category_reference)
            at = ref.index.get_indexer(c.cats)  # the index's hash table is built once per reference
            mean[at >= 0] = ref.to_numpy(dtype=float)[at[at >= 0]]
        m = mean[c.pair_cat]
        known = ~np.isnan(m)
        dev = sum_log_price[known] - n_priced[known] * m[known]
        num = np.bincount(c.pair_user[known], weights=dev, minlength=nu)
        den = np.bincount(c.pair_user[known], weights=n_priced[known], minlength=nu)
        np.divide(num, den, out=price_level, where=den > 0)
    return price_level


def _group_median(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Median of ``values`` per code 0..n-1 (NaN for an empty group; an even count averages the two middle values)."""
    order = np.lexsort((values, codes))
    v, c = values[order], codes[order]
    size = np.bincount(c, minlength=n)
    start = np.r_[0, np.cumsum(size)[:-1]]
    out = np.full(n, np.nan)
    has = size > 0
    lo = v[(start + (size - 1) // 2)[has]]
    hi = v[(start + size // 2)[has]]
    out[has] = lo + (hi - lo) * 0.5
    return out


def _nullable_int(values: np.ndarray) -> pd.arrays.IntegerArray:
    """Float array with NaN -> nullable Int32 (the features table's int with nulls)."""
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
