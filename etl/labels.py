"""Point-in-time training examples for purchase propensity: features at a cutoff, label after it.

For a cutoff time ``c`` and a horizon ``h`` (default 7 days):

* **population**: every user with at least one event at or before ``c`` (users first seen later do
  not exist yet at ``c``);
* **features**: computed ONLY from events at or before ``c``: the per-user features of
  :mod:`etl.features` with ``as_of = c`` (``price_level``'s category means too come from the events at
  or before ``c``, :func:`cutoff_prices`), plus the recent-activity windows of :mod:`etl.activity`;
  exactly ``compute_features_local(events[event_time <= c], as_of=c)`` joined with the windows (tested);
* **label**: 1 if the user has a purchase event in ``(c, c + h]``, else 0.

How: every cutoff needs all of a user's events, and the lake's user timelines (:mod:`etl.timeline`)
hold them already cut by user bucket and sorted: :func:`timeline_examples` is what a Spark task runs
on one bucket (``services.jobs.propensity`` hands it the buckets through
``services.core.timelines.run_on_buckets``), every cutoff's rows of its users with the Spark-free
twins (:class:`etl.local_features.CutoffFeatures`, which codes a bucket's events once for all its
cutoffs, and :func:`etl.activity.activity_frame`: numpy and polars on whole users, the same
definitions the scoring paths use); :func:`timeline_activity` gives the batch scores' windows the
same way. Why not Spark SQL: its version replicated every event once per cutoff under a string key
``"<cutoff>:<user>"`` and aggregated those, which took 31 s for 20,000 users (hours for millions);
the bucket tasks read each event once and keep the per-cutoff work vectorized. The category price
means per cutoff are lake-wide: each bucket's priced events are summed per day and category
(:func:`price_sums_by_period`, in the same pass that finds the event span) and :func:`cutoff_prices`
adds up the days before each cutoff. Cutoffs are chosen by :func:`weekly_cutoffs` (pure Python): the validation
cutoff is the most recent one whose label window is complete, training cutoffs are the weeks before
it. Tables in, tables out: no store, settings or logging here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from etl.activity import (
    ACTIVITY_DTYPES,
    ACTIVITY_NAMES,
    LOOKBACK_DAYS,
    US_PER_DAY,
    activity_columns,
    activity_frame,
    as_of_micros,
)
from etl.local_features import FEATURE_DTYPES, CutoffFeatures, priced_log_prices, reference_means

DEFAULT_HORIZON_DAYS = 7
LABEL = "label"
CUTOFF = "cutoff"
#: The examples' user column: :func:`key_codes` of the pseudonymized key.
USER_CODE = "user_code"


class NotEnoughData(ValueError):
    """Too little history for honest propensity training (the message says what is missing)."""


# ---------------------------------------------------------------------------------------- cutoffs
@dataclass(frozen=True)
class Cutoffs:
    """Training cutoffs (oldest first) and the validation cutoff (the most recent complete one)."""

    train: tuple[datetime, ...]
    validation: datetime
    horizon_days: int

    @property
    def all(self) -> tuple[datetime, ...]:
        return (*self.train, self.validation)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def weekly_cutoffs(
    first_event: datetime,
    last_event: datetime,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    n_train: int = 4,
    step_days: int = 7,
    min_history_days: int = 7,
) -> Cutoffs:
    """Cutoffs at UTC midnights, ``step_days`` apart, ending at the last complete label window.

    The validation cutoff ``v`` is the latest midnight with ``v + horizon <= last_event`` (its label
    window is fully observed); training cutoffs are ``v - k * step`` for k = 1..``n_train``, keeping
    those with at least ``min_history_days`` of events before them. Raises :class:`NotEnoughData`
    when fewer than two complete cutoffs exist (one to train on, one to validate).
    """
    first, last = _utc(first_event), _utc(last_event)
    latest = last - timedelta(days=horizon_days)
    validation = latest.replace(hour=0, minute=0, second=0, microsecond=0)
    earliest = first + timedelta(days=min_history_days)
    train = [validation - timedelta(days=step_days * k) for k in range(1, n_train + 1)]
    train = sorted(c for c in train if c >= earliest)
    if validation < earliest or not train:
        span = (last - first).total_seconds() / 86_400
        raise NotEnoughData(
            f"not enough history for propensity: {span:.1f} days of events give "
            f"{int(validation >= earliest) + len(train)} complete cutoff(s); at least two are needed "
            f"({min_history_days} days of history + {step_days} days between cutoffs + a {horizon_days}-day "
            f"label window = {min_history_days + step_days + horizon_days} days)"
        )
    return Cutoffs(tuple(train), validation, horizon_days)


# ------------------------------------------------------------------------------------ examples
#: The lake's event columns the examples read.
EVENT_COLUMNS: tuple[str, ...] = (
    "user_key", "session_key", "event_time", "event_type", "price", "category_l1", "brand", "category_id",
)  # fmt: skip
_ARROW_TYPES = {
    "string": pa.string(), "long": pa.int64(), "int": pa.int32(), "double": pa.float64(), "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}  # fmt: skip


def examples_schema(*, base: bool = True, label: bool = True, narrow: Collection[str] = ()) -> pa.Schema:
    """``cutoff, user_code``, the features of etl.features but the key (``base``), the activity
    columns, ``label``; the ``narrow`` columns as float32."""
    types = {n: _ARROW_TYPES[t] for n, t in {**FEATURE_DTYPES, **ACTIVITY_DTYPES}.items()}
    types |= {n: pa.float32() for n in narrow}
    features = [n for n in FEATURE_DTYPES if base and n != "user_key"]
    return pa.schema([
        (CUTOFF, _ARROW_TYPES["timestamp"]), (USER_CODE, pa.int64()), *((n, types[n]) for n in features),
        *((n, types[n]) for n in ACTIVITY_DTYPES), *([(LABEL, pa.int32())] if label else []),
    ])  # fmt: skip


def key_codes(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The int64 code of each pseudonymized key: the bits of its first 16 hex digits.

    Why: the examples carry every event of a user through a shuffle, and 64-character keys made up
    most of its bytes; a code is 8 bytes and factorizes far faster. HMAC digests are uniform, so two
    of N users share a code with probability about N^2 / 2^65 (2.4e-7 for 3 million users); scoring
    checks its whole population for that (:func:`services.jobs.propensity.score`). A dictionary
    array is coded once per distinct key. A key that is not hex raises.
    """
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks() if keys.num_chunks else pa.array([], pa.string())
    values = keys.dictionary if isinstance(keys, pa.DictionaryArray) else keys
    codes = pl.Series(values).str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64).reinterpret(signed=True)
    out = codes.to_arrow()
    return out.take(keys.indices) if isinstance(keys, pa.DictionaryArray) else out


def _micros(cutoffs: Sequence[datetime]) -> list[int]:
    return sorted({as_of_micros(c) for c in cutoffs})


#: Per (period, category_id): the priced events (price > 0, with a category) and their sum of ln(price);
#: ``until`` ends the event's period (epoch microseconds: the first multiple of the grain at or after
#: the event; with a day's grain, the first UTC midnight). Every row carries the span of the input's
#: events, and one row without a period or category carries it when nothing is priced.
PRICE_SUMS_BY_PERIOD = pa.schema([("until", pa.int64()), ("category_id", pa.int64()), ("n_priced", pa.int64()),
                                  ("sum_log_price", pa.float64()), ("first_us", pa.int64()), ("last_us", pa.int64())])  # fmt: skip


def price_sums_by_period(timeline: pa.Table, grain_us: int = US_PER_DAY) -> pa.Table:
    """:data:`PRICE_SUMS_BY_PERIOD` of some events (``event_time``, ``category_id``, ``price``; a timeline bucket).

    Summed over buckets, the rows give the event span that :func:`weekly_cutoffs` needs and, by
    :func:`cutoff_prices`, the category reference at every cutoff on the grain (weekly cutoffs are
    midnights): one pass over the timelines for both.
    """
    us = timeline["event_time"].cast(pa.int64()).to_numpy()
    span = (int(us.min()), int(us.max())) if len(us) else (None, None)
    priced, category, log_price = priced_log_prices(timeline)
    until = -(-us[priced] // grain_us) * grain_us  # an event at a cutoff counts at that cutoff
    sums = (pd.DataFrame({"until": until, "category_id": category, "log_price": log_price})
            .groupby(["until", "category_id"])["log_price"].agg(["size", "sum"]))  # fmt: skip
    n = len(sums) + 1
    return pa.table({
        "until": pa.array([*sums.index.get_level_values("until").tolist(), None], pa.int64()),
        "category_id": pa.array([*sums.index.get_level_values("category_id").tolist(), None], pa.int64()),
        "n_priced": pa.array([*sums["size"].tolist(), 0], pa.int64()),
        "sum_log_price": pa.array([*sums["sum"].tolist(), 0.0], pa.float64()),
        "first_us": pa.array([span[0]] * n, pa.int64()),
        "last_us": pa.array([span[1]] * n, pa.int64()),
    }, schema=PRICE_SUMS_BY_PERIOD)  # fmt: skip


def event_span(sums: pa.Table) -> tuple[datetime, datetime]:
    """First and last event time of :func:`price_sums_by_period` rows (of any number of buckets)."""
    first, last = pc.min(sums["first_us"]).as_py(), pc.max(sums["last_us"]).as_py()
    if first is None:
        raise ValueError("no events")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + timedelta(microseconds=first), epoch + timedelta(microseconds=last)


def cutoff_prices(sums: pa.Table, cutoffs: Sequence[datetime], grain_us: int = US_PER_DAY) -> dict[int, pd.Series]:
    """Cutoff (epoch microseconds) -> mean ln(price) per category_id over ALL events at or before it.

    The reference of ``price_level`` at that cutoff (events with price > 0 and a category_id, as in
    the lake's ``category_prices``), from :func:`price_sums_by_period` rows (same ``grain_us``) of every
    bucket: a cutoff's sums are those of the periods ending at or before it, so a cutoff off the grain
    is an error.
    """
    cuts = _micros(cutoffs)
    if off := [c for c in cuts if c % grain_us]:
        raise ValueError(f"cutoffs {off} are not on the {grain_us} us grain of the price sums")
    rows = sums.filter(pc.is_valid(sums["until"])).select(["until", "category_id", "n_priced", "sum_log_price"])
    rows = rows.to_pandas()
    return {c: reference_means(rows.loc[rows["until"] <= c, ["category_id", "n_priced", "sum_log_price"]]) for c in cuts}


def examples_of_users(
    events: pl.DataFrame,
    cutoffs_us: Sequence[int],
    horizon_days: int,
    prices: Mapping[int, pd.Series],
    narrow: Collection[str] = (),
) -> pa.Table:
    """Every cutoff's rows for the users of ``events`` (all of each user's events, any order; user and
    session keys as :func:`key_codes`).

    At each cutoff ``c`` (epoch microseconds): the users with an event at or before ``c``, their
    features as of ``c`` with ``prices[c]`` as the category reference, their activity windows, and
    their label for ``(c, c + horizon_days]``. In :func:`examples_schema`'s columns, the ``narrow``
    ones rounded to float32 (to nearest, as numpy does).
    """
    schema = examples_schema(narrow=narrow)
    # the base features' twin reads pandas (19-digit category ids as Int64), and codes the events once
    base = CutoffFeatures(events.to_arrow().to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get))
    columns = activity_columns(events)
    us = columns["us"].to_numpy()
    buys = (columns["etype"] == "purchase").to_numpy()
    parts = []
    for c in cutoffs_us:
        frame = activity_frame(columns, c).rename({"user": "user_key"}).to_pandas()
        if frame.empty:
            continue
        frame = base.at(c, prices[c]).merge(frame, on="user_key", how="inner", validate="one_to_one")
        inside = buys & (us > c) & (us <= c + horizon_days * US_PER_DAY)
        frame[LABEL] = frame["user_key"].isin(columns["user"].to_numpy()[inside]).astype("int32")
        frame.insert(0, CUTOFF, pd.Timestamp(c, unit="us", tz="UTC"))
        frame = frame.rename(columns={"user_key": USER_CODE})
        for column in narrow:  # nullable integers too: a missing value becomes NaN
            frame[column] = frame[column].to_numpy(dtype=np.float32, na_value=np.nan)
        parts.append(pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False))
    return pa.concat_tables(parts) if parts else schema.empty_table()


#: Events per call of :func:`examples_of_users` within a bucket: whole users, a few hundred thousand
#: events, so a bucket of the 3M-user lake (about 1.9M events) never holds every cutoff's frames at once.
CHUNK_EVENTS: int = 400_000


def _coded(timeline: pa.Table, last: int, after: int | None = None) -> pl.DataFrame:
    """A timeline's rows in ``(after, last]`` (epoch microseconds; no lower bound without ``after``) as
    polars, the user and session keys as :func:`key_codes` (a dictionary column is coded once per
    distinct key; text stays dictionary-coded)."""
    when, stamp = timeline["event_time"], pa.timestamp("us", tz="UTC")
    keep = pc.less_equal(when, pa.scalar(last, stamp))
    if after is not None:
        keep = pc.and_(keep, pc.greater(when, pa.scalar(after, stamp)))
    table = timeline.filter(keep)
    rest = pl.from_arrow(table.drop_columns(["user_key", "session_key"]))
    return rest.with_columns(user_key=pl.Series(key_codes(table["user_key"])),
                             session_key=pl.Series(key_codes(table["session_key"])))  # fmt: skip


def _whole_users(events: pl.DataFrame, rows: int) -> list[pl.DataFrame]:
    """``events`` (each user's rows together, as in a timeline) cut into slices of about ``rows`` rows,
    each starting at a user's first row."""
    if events.height == 0:
        return []
    user = events["user_key"].to_numpy()
    firsts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])  # each user's first row
    at = np.searchsorted(firsts, np.arange(0, len(user), rows))
    starts = np.unique(firsts[at[at < len(firsts)]])
    return [events.slice(a, b - a) for a, b in zip(starts, [*starts[1:], len(user)], strict=True)]


def timeline_examples(
    timeline: pa.Table,
    cutoffs_us: Sequence[int],
    horizon_days: int,
    prices: Mapping[int, pd.Series],
    narrow: Collection[str] = (),
) -> pa.Table:
    """:func:`examples_of_users` of a timeline bucket (:mod:`etl.timeline`: at least the columns of
    :data:`EVENT_COLUMNS`, whole users, each user's rows together), a few hundred thousand events at a
    time; events after the last label window are never read."""
    cuts = sorted(cutoffs_us)
    events = _coded(timeline, cuts[-1] + horizon_days * US_PER_DAY)
    schema = examples_schema(narrow=narrow)
    parts = [examples_of_users(p, cuts, horizon_days, prices, narrow) for p in _whole_users(events, CHUNK_EVENTS)]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def timeline_activity(timeline: pa.Table, as_of: datetime | int) -> pa.Table:
    """``cutoff, user_code`` + the activity columns at ``as_of`` of a timeline bucket's users with an
    event in the last :data:`etl.activity.LOOKBACK_DAYS` days before it (:func:`examples_schema`
    without the base features and the label): the columns read only those days, so a user with no
    event there has :data:`etl.activity.ABSENT` and no row."""
    cut = as_of_micros(as_of)
    frame = activity_frame(activity_columns(_coded(timeline, cut, after=cut - LOOKBACK_DAYS * US_PER_DAY)), cut)
    stamp = pl.lit(cut).cast(pl.Datetime("us", "UTC")).alias(CUTOFF)
    schema = examples_schema(base=False, label=False)
    return frame.select(stamp, pl.col("user").alias(USER_CODE), *ACTIVITY_NAMES).to_arrow().cast(schema)


__all__ = [
    "CHUNK_EVENTS",
    "CUTOFF",
    "DEFAULT_HORIZON_DAYS",
    "EVENT_COLUMNS",
    "LABEL",
    "PRICE_SUMS_BY_PERIOD",
    "USER_CODE",
    "Cutoffs",
    "NotEnoughData",
    "cutoff_prices",
    "event_span",
    "examples_of_users",
    "examples_schema",
    "key_codes",
    "price_sums_by_period",
    "timeline_activity",
    "timeline_examples",
    "weekly_cutoffs",
]
