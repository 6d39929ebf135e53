"""Honest checks of a lifetime value fit: the holdout period, and the spend model's independence assumption.

Holdout: the models are fitted on the calibration period only, and for the customers born in it the
repeat transactions they then made in the holdout period are set against

* the model's expected transactions over the holdout's length, and
* the naive forecast: the customer's calibration rate (``frequency / T`` repeat transactions per day
  of their calibration life; 0 when ``T`` is 0) times the holdout's length,

as totals, per customer (mean absolute error of each, Pearson correlation of the model's) and per
calibration frequency (0, 1, ..., 6 and "7+": lifetimes' classic calibration/holdout chart).

Spend-frequency correlation: Gamma-Gamma assumes a customer's spend per transaction does not depend on
how often they buy; the Pearson correlation of ``frequency`` and ``monetary_value`` over the repeat
customers should be near 0 (the published CDNOW sample: 0.11).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

#: Calibration frequencies shown one by one; higher ones form the last group ("7+").
FREQUENCY_GROUPS: Final[int] = 7
#: Below this many repeat customers the fit is flagged as thin (the models learn from repeats).
MIN_REPEAT_CUSTOMERS: Final[int] = 300


@dataclass(frozen=True)
class HoldoutEvaluation:
    """The holdout comparison of one fit (``by_frequency``: one row per calibration-frequency group)."""

    start: str
    end: str
    days: int
    customers: int
    actual_purchases: float
    predicted_purchases: float
    naive_purchases: float
    mae: float
    mae_naive: float
    correlation: float | None
    by_frequency: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (the stored document names ``start``/``end`` ``from``/``to``)."""
        return {**asdict(self), "by_frequency": self.by_frequency.to_dict("records")}


def frequency_group(frequency: pd.Series) -> pd.Series:
    """ "0".."6" and "7+": the calibration-frequency groups of the holdout chart."""
    f = frequency.astype(int)
    return (
        f.where(f < FREQUENCY_GROUPS)
        .astype("Int64")
        .astype(str)
        .where(f < FREQUENCY_GROUPS, f"{FREQUENCY_GROUPS}+")
    )


def naive_forecast(frequency: pd.Series, t: pd.Series, days: float) -> np.ndarray:
    """Calibration rate times the holdout length (0 for customers born on the calibration's last day)."""
    f, tt = frequency.to_numpy(float), t.to_numpy(float)
    rate = np.divide(f, tt, out=np.zeros_like(f), where=tt > 0)
    return rate * days


def _correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def holdout_evaluation(calibration: pd.DataFrame, predicted: np.ndarray, start: str, end: str,
                       days: int) -> HoldoutEvaluation:  # fmt: skip
    """``calibration``: the RFM summary of the calibration period with ``holdout_purchases`` per customer;
    ``predicted``: the model's expected transactions over the ``days`` of the holdout, same rows."""
    actual = calibration["holdout_purchases"].to_numpy(float)
    naive = naive_forecast(calibration["frequency"], calibration["T"], days)
    frame = pd.DataFrame({"group": frequency_group(calibration["frequency"]).to_numpy(), "actual": actual,
                          "predicted": predicted, "naive": naive})  # fmt: skip
    by = (frame.groupby("group", sort=False)
          .agg(customers=("actual", "size"), actual_mean=("actual", "mean"), predicted_mean=("predicted", "mean"),
               naive_mean=("naive", "mean"))
          .reset_index().rename(columns={"group": "calibration_frequency"}))  # fmt: skip
    order = {str(i): i for i in range(FREQUENCY_GROUPS)} | {f"{FREQUENCY_GROUPS}+": FREQUENCY_GROUPS}
    by = by.sort_values("calibration_frequency", key=lambda s: s.map(order), ignore_index=True)
    return HoldoutEvaluation(
        start=start, end=end, days=days, customers=len(frame), actual_purchases=float(actual.sum()),
        predicted_purchases=float(predicted.sum()), naive_purchases=float(naive.sum()),
        mae=float(np.abs(predicted - actual).mean()) if len(frame) else 0.0,
        mae_naive=float(np.abs(naive - actual).mean()) if len(frame) else 0.0,
        correlation=_correlation(predicted, actual), by_frequency=by,
    )  # fmt: skip


def spend_frequency_correlation(rfm: pd.DataFrame) -> float | None:
    """Pearson correlation of frequency and monetary_value over the repeat customers with positive spend."""
    repeat = rfm[(rfm["frequency"] > 0) & (rfm["monetary_value"] > 0)]
    return _correlation(repeat["frequency"].to_numpy(float), repeat["monetary_value"].to_numpy(float))


def thin_data_warnings(repeat_customers: int) -> list[str]:
    """The warnings a fit on few repeat customers deserves."""
    if repeat_customers < MIN_REPEAT_CUSTOMERS:
        return [f"only {repeat_customers} customers bought more than once (fewer than {MIN_REPEAT_CUSTOMERS}): "
                "the purchase and spend parameters are poorly determined; treat the values as rough"]  # fmt: skip
    return []


__all__ = [
    "FREQUENCY_GROUPS",
    "MIN_REPEAT_CUSTOMERS",
    "HoldoutEvaluation",
    "frequency_group",
    "holdout_evaluation",
    "naive_forecast",
    "spend_frequency_correlation",
    "thin_data_warnings",
]
