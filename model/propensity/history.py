"""Propensity of a raw event history without Spark: typed REES46 rows -> features + activity -> P(buy).

The per-user features come from :mod:`etl.local_features` and the recent-activity windows from
:mod:`etl.activity` (the same definitions the batch path uses), at the same ``as_of``; the light
scorer applies the shipped model, and the batch scores' decile cut points give the decile. So a user
scored here gets the probability and decile the batch scores give them (tests/services/jobs/test_propensity.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from etl.activity import compute_activity_local
from etl.local_features import compute_features_local, raw_to_events
from model.propensity.scorer import LightPropensityScorer


@dataclass(frozen=True)
class LoadedPropensity:
    """A propensity artifact ready to score (deciles from the current batch scores, if any)."""

    version: str
    scorer: LightPropensityScorer
    category_means: pd.Series | None


def history_frame(events: pd.DataFrame, category_means: Any = None, as_of: datetime | str | None = None) -> pd.DataFrame:
    """Features + activity of lake-shaped events (one row per user, sorted by user_key)."""
    feats = compute_features_local(events, as_of=as_of, category_reference=category_means)
    if as_of == "last_event":  # each user's own last event, as compute_features_local does
        key = "user_key" if "user_key" in events.columns else "user_id"
        activity = pd.concat([compute_activity_local(g) for _, g in events.groupby(key, sort=True)], ignore_index=True)
    else:
        activity = compute_activity_local(events, as_of=as_of)
    return feats.merge(activity, on="user_key", how="left", validate="one_to_one")


def score_history(rows: pd.DataFrame, model: LoadedPropensity, as_of: datetime | str | None = None) -> dict[str, dict]:
    """user_id -> {propensity, propensity_decile, propensity_model_version} for typed REES46 rows."""
    if rows.empty:
        return {}
    frame = history_frame(raw_to_events(rows), model.category_means, as_of)
    p = model.scorer.predict_proba(frame)
    deciles = model.scorer.deciles_of(p).tolist() if model.scorer.decile_cuts is not None else [None] * len(p)
    return {
        str(k): {"propensity": float(v), "propensity_decile": d, "propensity_model_version": model.version}
        for k, v, d in zip(frame["user_key"], p, deciles, strict=True)
    }


__all__ = ["LoadedPropensity", "history_frame", "score_history"]
