"""Which columns the propensity models read, and the design matrix built from them.

Inputs are the per-user behaviour features (docs/features.md, :data:`etl.local_features.FEATURE_DTYPES`)
without the bookkeeping columns, plus the recent-activity windows of :mod:`etl.activity`. The
matrix keeps nulls as NaN: the boosted model routes them natively, the logistic pipeline imputes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from etl.activity import ACTIVITY_DTYPES, ACTIVITY_NAMES
from etl.local_features import FEATURE_DTYPES

#: Feature-table columns that are not behaviour: keys, times, flags.
NON_FEATURES: frozenset[str] = frozenset(
    {"user_key", "first_event_time", "last_event_time", "last_purchase_time", "as_of", "is_suspicious"}
)
BASE_FEATURES: tuple[str, ...] = tuple(c for c in FEATURE_DTYPES if c not in NON_FEATURES)
MODEL_FEATURES: tuple[str, ...] = (*BASE_FEATURES, *ACTIVITY_NAMES)
#: Heavy-tailed non-negative inputs the logistic pipeline takes as log1p (counts, amounts, durations, days).
LOG_FEATURES: frozenset[str] = frozenset(
    {c for c, t in {**FEATURE_DTYPES, **ACTIVITY_DTYPES}.items() if t in ("long", "int") and c in MODEL_FEATURES}
    | {"monetary", "median_session_duration_s", "mean_days_between_visits", "events_per_session", "spend_28d"}
    | {c for c in ACTIVITY_NAMES if c.startswith("days_since")}
)


def design_matrix(frame: pd.DataFrame, features: tuple[str, ...] | list[str] = MODEL_FEATURES) -> np.ndarray:
    """``frame[features]`` as a float64 (n, p) array, nulls as NaN; a missing column is an error."""
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ValueError(f"propensity: the frame lacks feature column(s) {missing}")
    out = np.empty((len(frame), len(features)), dtype=np.float64)
    for j, c in enumerate(features):
        out[:, j] = pd.to_numeric(frame[c], errors="coerce").astype("float64").to_numpy(na_value=np.nan)
    return out


__all__ = ["BASE_FEATURES", "LOG_FEATURES", "MODEL_FEATURES", "NON_FEATURES", "design_matrix"]
