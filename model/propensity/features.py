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


#: Precision of the design matrix's values: float32 halves the memory of the float64 feature table
#: (3M users x 5 cutoffs x 58 columns: 3.5 GB instead of 7). Counts are exact below 2**24 and amounts
#: keep 7 significant digits. Values are always rounded to it, whatever the container dtype, so every
#: path (fit, batch scores, the light scorer, ``shoplens predict``) sees the same numbers.
MATRIX_DTYPE = np.float32


def design_matrix(
    frame: pd.DataFrame,
    features: tuple[str, ...] | list[str] = MODEL_FEATURES,
    rows: np.ndarray | slice | None = None,
    dtype: type = MATRIX_DTYPE,
) -> np.ndarray:
    """``frame[features]`` (only the positional ``rows``, an index array or a slice, if given) as a (n, p)
    array, nulls as NaN.

    Values are rounded to :data:`MATRIX_DTYPE` and stored as ``dtype`` (float64 for a consumer that
    would widen a float32 matrix anyway, as scikit-learn's gradient boosting does: one copy, not two).
    A missing column is an error. Numeric numpy columns are read in place (only the selected rows
    are gathered); other dtypes go through ``pd.to_numeric``.
    """
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ValueError(f"propensity: the frame lacks feature column(s) {missing}")
    n = len(frame) if rows is None else len(range(len(frame))[rows]) if isinstance(rows, slice) else len(rows)
    out = np.empty((n, len(features)), dtype=dtype)
    for j, c in enumerate(features):
        col = frame[c]
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "fiub":
            v = col.to_numpy(copy=False)
            v = v if rows is None else v[rows]
        else:
            col = col if rows is None else col.iloc[rows]
            v = pd.to_numeric(col, errors="coerce").astype("float64").to_numpy(na_value=np.nan)
        out[:, j] = v if v.dtype == MATRIX_DTYPE else v.astype(MATRIX_DTYPE)
    return out


__all__ = ["BASE_FEATURES", "LOG_FEATURES", "MATRIX_DTYPE", "MODEL_FEATURES", "NON_FEATURES", "design_matrix"]
