"""Point-in-time training examples for purchase propensity: features at a cutoff, label after it.

For a cutoff time ``c`` and a horizon ``h`` (default 7 days):

* **population**: every user with at least one event at or before ``c`` (users first seen later do
  not exist yet at ``c``);
* **features**: computed ONLY from events at or before ``c``: the per-user features of
  :func:`etl.features.compute_features` with ``as_of = c`` (``price_level``'s category means too come
  from the events at or before ``c``), plus the recent-activity windows of :mod:`etl.activity`;
  exactly ``compute_features(events.where(event_time <= c), as_of=c)`` joined with the windows;
* **label**: 1 if the user has a purchase event in ``(c, c + h]``, else 0.

Several cutoffs are built in ONE Spark job: the events are tagged with every cutoff they precede (a
cross join with a small broadcast cutoff table and a filter), under a composite key
``"<cutoff micros>:<user_key>"``, so a single aggregation computes every (cutoff, user) row; the
composite key is split back at the end. Cutoffs are chosen by :func:`weekly_cutoffs` (pure Python):
the validation cutoff is the most recent one whose label window is complete, training cutoffs are
the weeks before it. Pure transforms: no I/O, settings or logging here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl.activity import ACTIVITY, ACTIVITY_NAMES, US_PER_DAY, as_of_micros
from etl.aggregates import Aggregates, aggregate_events
from etl.features import FEATURE_NAMES, finalize

DEFAULT_HORIZON_DAYS = 7
LABEL = "label"
CUTOFF = "cutoff"
_SEP = ":"


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


# ------------------------------------------------------------------------------------ the tagging
def cutoff_table(spark: SparkSession, cutoffs: Sequence[datetime]) -> DataFrame:
    """One row per cutoff: ``cutoff_us`` (epoch microseconds, long)."""
    rows = [(as_of_micros(c),) for c in sorted(set(cutoffs))]
    return spark.createDataFrame(rows, T.StructType([T.StructField("cutoff_us", T.LongType(), False)]))


def _cutoff_of_key(key: Column) -> Column:
    return F.substring_index(key, _SEP, 1).cast("long")


def tag_events(events: DataFrame, cutoffs: DataFrame) -> DataFrame:
    """Each event once per cutoff at or after it, under ``user_key = "<cutoff_us>:<user_key>"``.

    ``cutoffs`` is :func:`cutoff_table`'s frame (small, broadcast). The other columns are unchanged,
    so any per-user computation on the result is a per-(cutoff, user) computation.
    """
    tagged = events.crossJoin(F.broadcast(cutoffs)).where(F.unix_micros(F.col("event_time")) <= F.col("cutoff_us"))
    key = F.concat(F.col("cutoff_us").cast("string"), F.lit(_SEP), F.col("user_key"))
    return tagged.withColumn("user_key", key).drop("cutoff_us")


def _split_key(df: DataFrame) -> DataFrame:
    """Composite key -> ``cutoff`` (timestamp) and the plain ``user_key``."""
    return df.withColumn(CUTOFF, F.timestamp_micros(_cutoff_of_key(F.col("user_key")))).withColumn(
        "user_key", F.substring_index(F.col("user_key"), _SEP, -1)
    )


# ------------------------------------------------------------------------------------ features
def _per_cutoff_prices(aggregates: Aggregates) -> Aggregates:
    """The prices table keyed by ``"<cutoff_us>:<category_id>"``: category means per cutoff.

    ``finalize`` joins a user's category sums with the category means of its reference; keying the
    category by cutoff makes that reference "events at or before this cutoff", as a separate
    ``compute_features`` call on the truncated events would.
    """
    cat = F.concat(_cutoff_of_key(F.col("user_key")).cast("string"), F.lit(_SEP), F.col("category_id").cast("string"))
    return Aggregates(aggregates.users, aggregates.sessions, aggregates.days, aggregates.brands,
                      aggregates.prices.withColumn("category_id", cat))  # fmt: skip


def base_features_at(tagged: DataFrame) -> DataFrame:
    """etl.features columns per (composite key): as_of = the key's cutoff, prices as of the cutoff."""
    aggregates = _per_cutoff_prices(aggregate_events(tagged))
    return finalize(aggregates, as_of=F.timestamp_micros(_cutoff_of_key(F.col("user_key"))))


def _activity_columns(us: Column, etype: Column, price: Column, cutoff_us: Column) -> list[Column]:
    """The aggregate expressions of every non-session :data:`etl.activity.ACTIVITY` column."""
    out = []
    for a in ACTIVITY:
        of_type = F.lit(True) if a.event_type is None else etype == F.lit(a.event_type)
        if a.kind == "sessions":
            continue
        if a.kind == "days_since":
            last = F.max(F.when(of_type, us))
            out.append(((cutoff_us - last).cast("double") / F.lit(float(US_PER_DAY))).alias(a.name))
            continue
        inside = of_type & (us > cutoff_us - F.lit(a.days * US_PER_DAY)) & (us <= cutoff_us)
        if a.kind == "count":
            out.append(F.sum(F.when(inside, F.lit(1)).otherwise(F.lit(0))).cast("long").alias(a.name))
        else:  # spend
            out.append(F.sum(F.when(inside, price).otherwise(F.lit(0.0))).cast("double").alias(a.name))
    return out


def activity_at(tagged: DataFrame) -> DataFrame:
    """The :data:`etl.activity.ACTIVITY` columns per composite key (events already <= cutoff)."""
    cutoff_us = _cutoff_of_key(F.col("user_key"))
    us = F.unix_micros(F.col("event_time"))
    per_user = tagged.groupBy("user_key").agg(
        *_activity_columns(us, F.col("event_type"), F.col("price"), cutoff_us)
    )
    # sessions in a window: a session counts if its last event (at or before the cutoff) is inside it
    sessions = tagged.groupBy("user_key", "session_key").agg(F.max(us).alias("_last_us"))
    session_cols = [
        F.sum(F.when(F.col("_last_us") > cutoff_us - F.lit(a.days * US_PER_DAY), 1).otherwise(0)).cast("long").alias(a.name)
        for a in ACTIVITY
        if a.kind == "sessions"
    ]
    per_session = sessions.groupBy("user_key").agg(*session_cols)
    joined = per_user.join(per_session, on="user_key", how="left")
    return joined.select("user_key", *ACTIVITY_NAMES)


def activity_features(events: DataFrame, cutoffs: DataFrame) -> DataFrame:
    """``cutoff, user_key`` + the activity columns, for every cutoff in one job."""
    return _split_key(activity_at(tag_events(events, cutoffs))).select(CUTOFF, "user_key", *ACTIVITY_NAMES)


def cutoff_features(events: DataFrame, cutoffs: DataFrame) -> DataFrame:
    """``cutoff`` + every etl.features column + the activity columns, one row per (cutoff, user).

    Users appear at a cutoff iff they have an event at or before it. One Spark job for all cutoffs.
    """
    tagged = tag_events(events, cutoffs)
    joined = base_features_at(tagged).join(activity_at(tagged), on="user_key", how="inner")
    return _split_key(joined).select(CUTOFF, *FEATURE_NAMES, *ACTIVITY_NAMES)


# ------------------------------------------------------------------------------------ labels
def purchase_labels(events: DataFrame, cutoffs: DataFrame, horizon_days: int = DEFAULT_HORIZON_DAYS) -> DataFrame:
    """``cutoff, user_key, label=1`` for every user with a purchase in ``(cutoff, cutoff + horizon]``."""
    us = F.unix_micros(F.col("event_time"))
    buys = events.where(F.col("event_type") == F.lit("purchase")).select("user_key", us.alias("_us"))
    inside = (F.col("_us") > F.col("cutoff_us")) & (F.col("_us") <= F.col("cutoff_us") + F.lit(horizon_days * US_PER_DAY))
    hits = buys.crossJoin(F.broadcast(cutoffs)).where(inside).select("cutoff_us", "user_key").distinct()
    return hits.select(F.timestamp_micros(F.col("cutoff_us")).alias(CUTOFF), "user_key", F.lit(1).alias(LABEL))


def training_examples(
    events: DataFrame, cutoffs: DataFrame, horizon_days: int = DEFAULT_HORIZON_DAYS
) -> DataFrame:
    """:func:`cutoff_features` with ``label`` (0/1, int): the stacked examples of every cutoff."""
    feats = cutoff_features(events, cutoffs)
    labels = purchase_labels(events, cutoffs, horizon_days)
    out = feats.join(labels, on=[CUTOFF, "user_key"], how="left")
    return out.withColumn(LABEL, F.coalesce(F.col(LABEL), F.lit(0)).cast("int"))


__all__ = [
    "CUTOFF",
    "DEFAULT_HORIZON_DAYS",
    "LABEL",
    "Cutoffs",
    "NotEnoughData",
    "activity_features",
    "cutoff_features",
    "cutoff_table",
    "purchase_labels",
    "tag_events",
    "training_examples",
    "weekly_cutoffs",
]
