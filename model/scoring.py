"""Scoring a history: the one use case behind ``shoplens predict``, the scoring API and the dashboard upload.

A typed REES46 history in (:class:`etl.lines.History`'s Arrow table), the per-user features computed
once (:func:`etl.local_features.raw_feature_columns`, the Spark-free twin of the batch features, with
the segmentation model's category price reference), and per user out (:class:`UserScore`): segment,
confidence and trust (the light scorer, :mod:`model.segmentation.scorer`), lifecycle stage
(:mod:`model.segmentation.lifecycle`) and, with a propensity model, the purchase propensity and its
decile (:mod:`model.propensity.scorer`, on the same features plus the recent-activity windows of
:mod:`etl.activity`). A propensity model trained against another category reference only needs its
own ``price_level``, computed alone (:func:`etl.local_features.raw_price_level`).

The funnel's drivers score the history of each unit's user before the unit's first step the same
way (:func:`traits_as_of`): attributes as of then, never after.

Spark-free and pure: no lake, no ids beyond the ones in the rows (callers replace raw ids before
calling when they must not reach the result). The same arithmetic as the batch path, so a user
scored here gets the batch segment, lifecycle stage and propensity (tests/services/jobs/test_predict.py,
test_propensity.py, test_scoring.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from etl.activity import activity_columns, activity_frame
from etl.local_features import features_frame, raw_feature_columns, raw_price_level, timeline_feature_columns
from etl.user_runs import user_runs
from model.propensity.history import LoadedPropensity
from model.segmentation.history import LoadedModel, not_enough_reason
from model.segmentation.lifecycle import lifecycle_action, lifecycle_label, lifecycle_stage_of
from model.segmentation.scorer import NOT_ENOUGH_ACTIVITY

__all__ = [
    "NEW",
    "PROPENSITY_FIELDS",
    "STATUS_NOT_ENOUGH",
    "STATUS_SCORED",
    "TRAITS_SCHEMA",
    "TRAIT_EVENT_COLUMNS",
    "HistoryFeatures",
    "Scorers",
    "UserScore",
    "propensity_scores",
    "score_features",
    "score_history",
    "traits_as_of",
]

STATUS_SCORED = "scored"
STATUS_NOT_ENOUGH = "not_enough_activity"
#: The fields a propensity model adds to an answer (absent without one).
PROPENSITY_FIELDS = ("propensity", "propensity_decile", "propensity_model_version")
#: A point-in-time trait of a unit whose user has no event before it (:func:`traits_as_of`).
NEW = "new"
#: The timeline columns :func:`traits_as_of` reads (the features' inputs).
TRAIT_EVENT_COLUMNS = ("user_key", "session_key", "event_time", "event_type", "price", "category_l1", "brand",
                       "category_id")  # fmt: skip
TRAITS_SCHEMA = pa.schema([("unit_key", pa.string()), ("segment", pa.string()), ("lifecycle_stage", pa.string())])


@dataclass(frozen=True)
class Scorers:
    """The published models a history is scored with (propensity: None before the first training)."""

    segmentation: LoadedModel
    propensity: LoadedPropensity | None = None


@dataclass(frozen=True)
class UserScore:
    """One user's answer. ``segment_*``, ``confidence`` and ``trust`` are None below the model's
    ``min_events`` (``status`` says so, ``reason`` says why); the propensity fields are None without
    a propensity model (and left out of :meth:`to_dict` then)."""

    user_id: str
    segment_id: int | None
    segment_name: str | None
    confidence: float | None
    trust: float | None
    lifecycle_stage: str
    lifecycle_label: str
    lifecycle_action: str
    model_version: str
    n_events: int
    status: str
    reason: str | None
    as_of: str
    propensity: float | None = None
    propensity_decile: int | None = None
    propensity_model_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.propensity_model_version is None:
            for name in PROPENSITY_FIELDS:
                del out[name]
        return out


@dataclass(frozen=True)
class HistoryFeatures:
    """The per-user features of one history, computed once (users sorted by id), and the rows they
    came from (the propensity's activity windows and a second reference's ``price_level`` read them)."""

    rows: pa.Table
    columns: dict[str, np.ndarray]
    as_of: datetime | str | None
    reference: Any

    @classmethod
    def of(cls, rows: pa.Table, as_of: datetime | str | None = None, reference: Any = None) -> HistoryFeatures:
        return cls(rows, raw_feature_columns(rows, as_of=as_of, category_reference=reference), as_of, reference)

    @property
    def users(self) -> list[str]:
        return [str(u) for u in self.columns["user_key"]]

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The features as the features table's frame (timestamps as UTC datetimes), one row per user."""
        return features_frame(self.columns)


def score_history(rows: pa.Table, scorers: Scorers, as_of: datetime | str | None = None) -> list[UserScore]:
    """One :class:`UserScore` per user of typed REES46 rows, in order of first appearance.

    ``as_of``: None (the latest event of ``rows``), a time (ISO; naive = UTC) or ``"last_event"``
    (each user's own last event).
    """
    return score_features(HistoryFeatures.of(rows, as_of, scorers.segmentation.category_means), scorers)


def score_features(feats: HistoryFeatures, scorers: Scorers) -> list[UserScore]:
    """:func:`score_history` of features already computed (with the segmentation model's reference)."""
    if feats.rows.num_rows == 0:
        return []
    cols, model = feats.columns, scorers.segmentation
    scorer = model.scorer
    n_events = cols["n_events"].astype(np.int64)
    seg, conf, names, stages = _assigned(cols, model)
    trust = scorer.trust(n_events, conf)
    propensity: dict[str, dict[str, Any]] = {}
    if scorers.propensity is not None:
        propensity = propensity_scores(feats, scorers.propensity)
    by_user = {}
    for i, user in enumerate(feats.users):
        sid, n = int(seg[i]), int(n_events[i])
        scored = sid != NOT_ENOUGH_ACTIVITY
        stage = str(stages[i])
        by_user[user] = UserScore(
            user_id=user,
            segment_id=sid if scored else None,
            segment_name=names[i] if scored else None,
            confidence=float(conf[i]) if scored else None,
            trust=float(trust[i]) if scored and np.isfinite(trust[i]) else None,
            lifecycle_stage=stage, lifecycle_label=lifecycle_label(stage), lifecycle_action=lifecycle_action(stage),
            model_version=scorer.model_version,
            n_events=n,
            status=STATUS_SCORED if scored else STATUS_NOT_ENOUGH,
            reason=None if scored else not_enough_reason(n, model.min_events),
            as_of=pd.Timestamp(int(cols["as_of"][i]), unit="us", tz="UTC").isoformat(),
            **propensity.get(user, {}),
        )  # fmt: skip
    order = pd.unique(feats.rows["user_id"].cast(pa.string()).to_numpy(zero_copy_only=False))
    return [by_user[u] for u in order]


def _assigned(cols: dict[str, np.ndarray], model: LoadedModel) -> tuple[np.ndarray, np.ndarray, list, np.ndarray]:
    """(segment id, confidence, segment name, lifecycle stage) per user of feature columns."""
    scorer = model.scorer
    matrix = np.column_stack([np.asarray(cols[c], dtype=float) for c in scorer.input_features])
    seg, conf = scorer.predict_array(matrix, np.asarray(cols["n_events"], dtype=float))
    stages = lifecycle_stage_of(cols["frequency"], cols["n_carts"], cols["recency_days"], cols["tenure_days"],
                                cols["last_event_time"], cols["as_of"])  # fmt: skip
    return seg, conf, scorer.names_of(seg), stages


def traits_as_of(timeline: pa.Table, units: pa.Table, model: LoadedModel) -> pa.Table:
    """Each unit's segment and lifecycle stage as of a time, from its user's events strictly before it.

    ``units``: ``unit_key, user_key, at`` (a UTC timestamp: the unit's entry into the funnel);
    ``timeline``: those users' events, each user's together (a timeline bucket, :mod:`etl.timeline`;
    at least :data:`TRAIT_EVENT_COLUMNS`, the keys as text or dictionaries). A unit's user's events
    before ``at`` are its history (:func:`_histories`), scored as this module scores any history
    with ``as_of = at``; the segment is the segment's name (:data:`NOT_ENOUGH_NAME` below the model's
    ``min_events``), and a unit whose user has no earlier event gets :data:`NEW` for both. Out:
    :data:`TRAITS_SCHEMA`, in the order of ``units``. Why: an attribute taken after the first step can
    be made of the outcome itself (whoever carted is "carted, never bought" afterwards).
    """
    at = units["at"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    segment = np.full(units.num_rows, NEW, dtype=object)
    stage = np.full(units.num_rows, NEW, dtype=object)
    history = _histories(timeline, units["user_key"], at)
    if history.num_rows:
        present = np.unique(history["user_key"].to_numpy())  # the features' user order
        cols = timeline_feature_columns(history, at.to_numpy(zero_copy_only=False)[present], model.category_means)
        seg, _, _, stages = _assigned(cols, model)
        segment[present] = model.scorer.labels_of(seg)
        stage[present] = stages
    return pa.table({"unit_key": units["unit_key"].cast(pa.string()), "segment": pa.array(segment, pa.string()),
                     "lifecycle_stage": pa.array(stage, pa.string())}, schema=TRAITS_SCHEMA)  # fmt: skip


def _histories(timeline: pa.Table, unit_users: pa.ChunkedArray, at: pa.ChunkedArray) -> pa.Table:
    """The events of each unit's history (its user's events before its ``at``, epoch microseconds),
    :data:`TRAIT_EVENT_COLUMNS` with ``user_key`` replaced by the unit's position (an integer key for the
    features), by unit and then in timeline order.

    Only the events before their user's latest ``at`` are matched with units, and a unit finds its
    user by the users' keys (one per user), not the events': joining every event with the units on
    the 64-character key cost more than the walk of the bucket itself.
    """
    users = pl.from_arrow(timeline.select(["user_key"]))["user_key"]  # a categorical if read as a dictionary
    user_of_event, new_user = user_runs(timeline["user_key"])
    first = np.flatnonzero(new_user)
    wanted = pl.DataFrame({"user_key": pl.from_arrow(unit_users).cast(pl.String), "at": pl.from_arrow(at)})
    wanted = wanted.with_row_index("unit").drop_nulls("at").join(
        pl.DataFrame({"user_key": users.gather(first).cast(pl.String), "user": np.arange(len(first))}),
        on="user_key", how="inner")  # fmt: skip
    latest = np.full(len(first), np.iinfo(np.int64).min)
    np.maximum.at(latest, wanted["user"].to_numpy(), wanted["at"].to_numpy())
    us = timeline["event_time"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    rows = np.flatnonzero(us < latest[user_of_event])
    earlier = pl.DataFrame({"row": rows, "user": user_of_event[rows], "us": us[rows]})
    pairs = (earlier.join(wanted.select("unit", "user", "at"), on="user").filter(pl.col("us") < pl.col("at"))
             .sort("unit", "row"))  # fmt: skip
    history = timeline.select(list(TRAIT_EVENT_COLUMNS)).take(pairs["row"].to_numpy())
    unit = pa.array(pairs["unit"].to_numpy().astype(np.int64))
    return history.set_column(history.schema.get_field_index("user_key"), "user_key", unit)


def propensity_scores(feats: HistoryFeatures, model: LoadedPropensity) -> dict[str, dict[str, Any]]:
    """user id -> the :data:`PROPENSITY_FIELDS` of each user of ``feats``, from its features (their
    ``price_level`` with the propensity model's own reference) and activity windows at the same as-of."""
    frame = feats.frame
    if not _same_reference(model.category_means, feats.reference):
        frame = frame.assign(price_level=raw_price_level(feats.rows, model.category_means))
    frame = frame.merge(_activity(feats), on="user_key", how="left", validate="one_to_one")
    p = model.scorer.predict_proba(frame)
    deciles = model.scorer.deciles_of(p).tolist() if model.scorer.decile_cuts is not None else [None] * len(p)
    return {
        str(k): {"propensity": float(v), "propensity_decile": d, "propensity_model_version": model.version}
        for k, v, d in zip(frame["user_key"], p, deciles, strict=True)
    }


def _same_reference(a: pd.Series | None, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a is b or (isinstance(b, pd.Series) and a.equals(b))


def _activity(feats: HistoryFeatures) -> pd.DataFrame:
    """The activity windows (:mod:`etl.activity`) of every user at the features' as-of time."""
    rows = feats.rows
    events = pl.from_arrow(pa.table({
        "user_key": rows["user_id"].cast(pa.string()), "session_key": rows["user_session"].cast(pa.string()),
        "event_time": rows["event_time"], "event_type": rows["event_type"], "price": rows["price"],
    }))  # fmt: skip
    columns = activity_columns(events)
    if feats.as_of == "last_event":  # each user's own last event, as the features take it
        parts = [activity_frame(part) for part in columns.partition_by("user", maintain_order=True)]
        activity = pl.concat(parts).sort("user")
    else:
        activity = activity_frame(columns, feats.as_of)
    return activity.rename({"user": "user_key"}).to_pandas()
