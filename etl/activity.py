"""Recent-activity features: the one definition of the windows, and their Spark-free computation.

The purchase-propensity model (``shoplens propensity``) adds these to the per-user features of
:mod:`etl.features`: how much a user did in the last 1, 7 and 28 days before a reference time
``as_of``, and how long ago their last event, cart and purchase were. :data:`ACTIVITY` declares each
column once as data (what it counts, over which window), and :func:`compute_activity_local`
(numpy/pandas) is its one computation: in the Spark tasks that build the training examples and the
batch scores (:mod:`etl.labels`, per user bucket), in ``shoplens predict`` and in the dashboard.

Conventions: a window of ``w`` days is ``(as_of - w days, as_of]`` (an event exactly at ``as_of``
counts, one exactly ``w`` days before does not); only events at or before ``as_of`` are ever read;
``days_since_*`` are fractional days ``(as_of - time of the last such event) / 1 day``, null when
there is none. All arithmetic is on epoch microseconds (UTC), like :mod:`etl.aggregates`. This module
imports no pyspark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pandas as pd

from etl.local_features import key_array

US_PER_DAY = 86_400_000_000
#: Window lengths in days.
WINDOWS: tuple[int, ...] = (1, 7, 28)

Kind = Literal["count", "sessions", "spend", "days_since"]


@dataclass(frozen=True)
class Activity:
    """One activity column: ``kind`` over events of ``event_type`` (None = any) in the last ``days``."""

    name: str
    kind: Kind
    event_type: str | None
    days: int | None
    definition: str


def _window_text(days: int) -> str:
    return f"in (as_of - {days} day{'s' if days > 1 else ''}, as_of]"


ACTIVITY: tuple[Activity, ...] = (
    *(Activity(f"events_{w}d", "count", None, w, f"Number of events {_window_text(w)}.") for w in WINDOWS),
    *(Activity(f"carts_{w}d", "count", "cart", w, f"Number of cart events {_window_text(w)}.") for w in WINDOWS),
    *(
        Activity(f"purchases_{w}d", "count", "purchase", w, f"Number of purchase events {_window_text(w)}.")
        for w in WINDOWS
    ),
    *(
        Activity(f"sessions_{w}d", "sessions", None, w, f"Number of distinct sessions with an event {_window_text(w)}.")
        for w in WINDOWS
    ),
    Activity("spend_28d", "spend", "purchase", 28, f"Sum of price over purchase events {_window_text(28)}."),
    Activity("days_since_last_event", "days_since", None, None,
             "(as_of - time of the last event) in fractional days."),
    Activity("days_since_last_cart", "days_since", "cart", None,
             "(as_of - time of the last cart event) in fractional days; null without one."),
    Activity("days_since_last_purchase", "days_since", "purchase", None,
             "(as_of - time of the last purchase event) in fractional days; null without one."),
)  # fmt: skip
ACTIVITY_NAMES: tuple[str, ...] = tuple(a.name for a in ACTIVITY)
#: Column -> dtype, in the order of :data:`ACTIVITY` (counts are long, the rest double).
ACTIVITY_DTYPES: dict[str, str] = {a.name: "long" if a.kind in ("count", "sessions") else "double" for a in ACTIVITY}


def as_of_micros(as_of: datetime | str) -> int:
    """Epoch microseconds of a reference time (naive = UTC), as etl.features does."""
    when = datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1_000_000)


def compute_activity_local(events: pd.DataFrame, as_of: datetime | str | None = None) -> pd.DataFrame:
    """``user_key`` + every :data:`ACTIVITY` column, one row per user with an event at or before ``as_of``.

    ``events`` has ``user_key`` (or ``user_id``), ``session_key`` (or ``user_session``), ``event_time``
    (naive = UTC), ``event_type`` and ``price``. ``as_of`` None = the latest event of ``events``.
    Rows are sorted by user_key (like :func:`etl.local_features.compute_features_local`).
    """
    user_col = "user_key" if "user_key" in events.columns else "user_id"
    session_col = "session_key" if "session_key" in events.columns else "user_session"
    us = pd.to_datetime(events["event_time"], utc=True).dt.as_unit("us").astype("int64").to_numpy()
    if len(events) == 0:
        return pd.DataFrame({"user_key": pd.Series(dtype=object),
                             **{n: pd.Series(dtype="int64" if t == "long" else float) for n, t in ACTIVITY_DTYPES.items()}})  # fmt: skip
    cut = int(us.max()) if as_of is None else as_of_micros(as_of)
    keep = us <= cut
    ev = events.loc[keep]
    us = us[keep]
    codes, users = pd.factorize(key_array(ev[user_col]), sort=True)
    nu = len(users)
    etype = ev["event_type"].to_numpy(dtype=object)
    price = ev["price"].to_numpy(dtype=float)
    cols: dict[str, np.ndarray] = {"user_key": np.asarray(users)}
    sessions = pd.factorize(key_array(ev[session_col]))[0]
    for a in ACTIVITY:
        of_type = np.ones(len(ev), dtype=bool) if a.event_type is None else etype == a.event_type
        if a.kind == "days_since":
            last = np.full(nu, np.iinfo(np.int64).min)
            np.maximum.at(last, codes[of_type], us[of_type])
            cols[a.name] = np.where(last == np.iinfo(np.int64).min, np.nan, (cut - last) / US_PER_DAY)
            continue
        inside = of_type & (us > cut - a.days * US_PER_DAY)
        if a.kind == "count":
            cols[a.name] = np.bincount(codes[inside], minlength=nu).astype(np.int64)
        elif a.kind == "spend":
            cols[a.name] = np.bincount(codes[inside], weights=price[inside], minlength=nu)
        else:  # sessions: distinct (user, session) pairs with an event in the window
            n_sessions = int(sessions.max()) + 1
            pairs = np.unique(codes[inside].astype(np.int64) * n_sessions + sessions[inside])
            cols[a.name] = np.bincount(pairs // n_sessions, minlength=nu).astype(np.int64)
    return pd.DataFrame(cols)


__all__ = [
    "ACTIVITY",
    "ACTIVITY_DTYPES",
    "ACTIVITY_NAMES",
    "US_PER_DAY",
    "WINDOWS",
    "Activity",
    "as_of_micros",
    "compute_activity_local",
]
