"""Per-customer value from the fitted models: alive, purchases ahead, value per purchase, lifetime value.

Every figure is PyMC-Marketing's (the posterior mean over the draws; one draw for a MAP fit):

* ``p_alive``: probability that the customer has not dropped out, given their history.
* ``expected_purchases_30/90/365``: expected transactions in the next 30, 90 and 365 days.
* ``expected_value``: Gamma-Gamma's expected value of a future transaction (the population mean,
  shrunk towards the customer's own mean as their repeat transactions grow).
* ``clv``: discounted lifetime value over ``horizon_months``: the expected transactions of each month
  ahead times ``expected_value``, each month discounted by ``(1 + monthly_discount) ** month``
  (lifetimes' definition, which PyMC-Marketing keeps; a month is 30 days).
"""

from __future__ import annotations

import warnings
from typing import Final

import numpy as np
import pandas as pd
import xarray
from pymc_marketing.clv.utils import customer_lifetime_value

from model.clv.fit import FittedCLV, distinct_triples, model_data

PURCHASE_HORIZONS: Final[tuple[int, ...]] = (30, 90, 365)
SCORE_COLUMNS: Final[tuple[str, ...]] = (
    "p_alive", *(f"expected_purchases_{d}" for d in PURCHASE_HORIZONS), "expected_value", "clv",
)  # fmt: skip


def _point(values: xarray.DataArray) -> np.ndarray:
    dims = [d for d in ("chain", "draw") if d in values.dims]
    return np.asarray(values.mean(dims).values, dtype=float)


def expected_purchases(fitted: FittedCLV, rfm: pd.DataFrame, days: float) -> np.ndarray:
    """Expected transactions of each customer of ``rfm`` in the next ``days``."""
    data = model_data(rfm)[["customer_id", "frequency", "recency", "T"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _point(fitted.purchase.expected_purchases(data=data, future_t=days))


def score_customers(
    fitted: FittedCLV, rfm: pd.DataFrame, horizon_months: int, monthly_discount: float
) -> pd.DataFrame:
    """The columns of :data:`SCORE_COLUMNS`, one row per row of ``rfm`` (same order).

    The purchase model's figures depend on (frequency, recency, T) alone, and whole days make those
    triples repeat (a few tens of thousands among millions of customers), so they are computed once
    per distinct triple; CLV is linear in the value per transaction, so it is the triple's discounted
    expected purchases (PyMC-Marketing's ``customer_lifetime_value`` at a value of 1) times each
    customer's ``expected_value``.
    """
    if horizon_months < 1:
        raise ValueError(f"the lifetime value horizon must be at least 1 month, got {horizon_months}")
    if not 0 <= monthly_discount < 1:
        raise ValueError(f"the monthly discount rate must be in [0, 1), got {monthly_discount}")
    data = model_data(rfm)
    distinct, inverse = distinct_triples(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"p_alive": _point(fitted.purchase.expected_probability_alive(data=distinct))[inverse]}
        for d in PURCHASE_HORIZONS:
            out[f"expected_purchases_{d}"] = _point(
                fitted.purchase.expected_purchases(data=distinct, future_t=d)
            )[inverse]
        spend_data = data[["customer_id", "frequency", "monetary_value"]]
        out["expected_value"] = _point(fitted.spend.expected_customer_spend(data=spend_data))
        discounted = customer_lifetime_value(fitted.purchase, distinct.assign(future_spend=1.0), future_t=horizon_months,
                                             discount_rate=monthly_discount, time_unit="D")  # fmt: skip
        out["clv"] = _point(discounted)[inverse] * out["expected_value"]
    return pd.DataFrame(out, index=rfm.index)


__all__ = ["PURCHASE_HORIZONS", "SCORE_COLUMNS", "expected_purchases", "score_customers"]
