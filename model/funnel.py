"""What drives conversion: odds ratios of going on to the next funnel step, per attribute value.

Input: the 2x2 sufficient statistics of :func:`etl.funnel.driver_counts` (polars reduces the per-unit
frame to them; the maths here is small and pure). For a value v at step k, among the units that reached k::

                 went on   dropped
    with v          a         b
    without v       c         d

odds ratio = (a d) / (b c): how much higher the odds of going on are with v than without it. The
interval is Woolf's logit interval, exp(log OR +/- z sqrt(1/a + 1/b + 1/c + 1/d)) (Woolf 1955, "On
estimating the relation between blood group and disease", Ann. Hum. Genet. 19:251-253); when a cell
is zero, 0.5 is added to all four cells first (Haldane 1956, "The estimation and significance of the
logarithm of a ratio of frequencies", Ann. Hum. Genet. 20:309-311), so every value gets a finite,
appropriately wide interval. statsmodels' ``Table2x2`` on the corrected table computes the same (its own
``shift_zeros`` adds 0.5 to the zero cells only, which is not Haldane's correction).

"Strongest first" ranks by how far the whole interval lies from 1 on the log scale (0 when it contains
1), then by |log OR|: a large ratio with an interval that spans 1 is not a strong driver.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd
from scipy import stats

COUNT_COLUMNS: Final[tuple[str, ...]] = (
    "step",
    "attribute",
    "value",
    "went_on",
    "dropped",
    "step_went_on",
    "step_dropped",
)
DRIVER_COLUMNS: Final[tuple[str, ...]] = (
    "step",
    "attribute",
    "value",
    "units",
    "went_on",
    "dropped",
    "conversion",
    "conversion_without",
    "odds_ratio",
    "ci_low",
    "ci_high",
    "strength",
)


def woolf_odds_ratio(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Odds ratios of the 2x2 tables [[a, b], [c, d]] and their Woolf intervals (Haldane-corrected).

    Returns ``(odds_ratio, ci_low, ci_high)``, arrays of the broadcast shape of the inputs.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    cells = np.stack(np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (a, b, c, d))))
    if (cells < 0).any():
        raise ValueError("2x2 counts must be non-negative")
    cells = np.where((cells == 0).any(axis=0), cells + 0.5, cells)  # Haldane (1956)
    a_, b_, c_, d_ = cells
    log_or = np.log(a_) + np.log(d_) - np.log(b_) - np.log(c_)
    se = np.sqrt(1 / a_ + 1 / b_ + 1 / c_ + 1 / d_)  # Woolf (1955)
    z = stats.norm.ppf(0.5 + confidence / 2)
    return np.exp(log_or), np.exp(log_or - z * se), np.exp(log_or + z * se)


def conversion_drivers(counts: pd.DataFrame, min_units: int = 30, confidence: float = 0.95) -> pd.DataFrame:
    """Per step, the attribute values whose units went on more (or less) often than the rest, strongest first.

    A value is kept when at least ``min_units`` units at the step have it and at least ``min_units``
    do not (without a contrast there is nothing to compare). Output columns: :data:`DRIVER_COLUMNS`;
    ``conversion`` is a / (a + b), ``conversion_without`` c / (c + d).
    """
    missing = [c for c in COUNT_COLUMNS if c not in counts.columns]
    if missing:
        raise ValueError(
            f"driver counts lack column(s) {', '.join(missing)}; they have {', '.join(counts.columns)}"
        )
    a = counts["went_on"].to_numpy(dtype=float)
    b = counts["dropped"].to_numpy(dtype=float)
    c = counts["step_went_on"].to_numpy(dtype=float) - a
    d = counts["step_dropped"].to_numpy(dtype=float) - b
    keep = (a + b >= min_units) & (c + d >= min_units)
    a, b, c, d = a[keep], b[keep], c[keep], d[keep]
    odds, low, high = woolf_odds_ratio(a, b, c, d, confidence)
    strength = np.maximum.reduce([np.log(low), -np.log(high), np.zeros_like(low)])
    out = pd.DataFrame(
        {
            "step": counts["step"].to_numpy()[keep],
            "attribute": counts["attribute"].to_numpy()[keep],
            "value": counts["value"].to_numpy()[keep],
            "units": (a + b).astype(np.int64),
            "went_on": a.astype(np.int64),
            "dropped": b.astype(np.int64),
            "conversion": a / (a + b),
            "conversion_without": c / (c + d),
            "odds_ratio": odds,
            "ci_low": low,
            "ci_high": high,
            "strength": strength,
        }
    )
    out["_abs_log_or"] = np.abs(np.log(out["odds_ratio"]))
    out = out.sort_values(
        ["step", "strength", "_abs_log_or", "attribute", "value"],
        ascending=[True, False, False, True, True],
        kind="stable",
    )
    return out.drop(columns="_abs_log_or").reset_index(drop=True)
