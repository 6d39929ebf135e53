"""Fitting the purchase and spend models of lifetime value, with PyMC-Marketing's ``clv`` module.

* Repeat purchases: BG/NBD (``bgnbd``, the default) or Pareto/NBD (``pareto``), on each customer's
  ``frequency``, ``recency`` and ``T`` in days (:mod:`etl.clv`).
* Spend per transaction: Gamma-Gamma on the repeat customers' ``frequency`` and ``monetary_value``
  (the mean of their repeat transactions); customers whose repeat transactions are all worth 0 carry
  no spend information and are left out of this fit (the model needs positive values).

Priors are flat (``HalfFlat``) on every parameter, so the default fit, maximum a posteriori, is the
maximum-likelihood estimate of the published analyses (PyMC's ``find_MAP`` maximizes the density of
the untransformed parameters). With ``method="mcmc"`` the same model is sampled with NUTS instead and
the parameters are posterior means.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import numpy as np
import pandas as pd
import pymc as pm
from pymc_extras.prior import Prior
from pymc_marketing.clv import BetaGeoModel, GammaGammaModel, ParetoNBDModel

TransactionModel = Literal["bgnbd", "pareto"]
Method = Literal["map", "mcmc"]

#: Parameters of each transaction model, as the result documents name them.
PURCHASE_PARAMETERS: Final[dict[str, tuple[str, ...]]] = {"bgnbd": ("r", "alpha", "a", "b"),
                                                          "pareto": ("r", "alpha", "s", "beta")}  # fmt: skip
SPEND_PARAMETERS: Final[tuple[str, ...]] = ("p", "q", "v")
#: Repeat customers with positive spend the Gamma-Gamma fit needs at the very least (3 parameters).
MIN_SPEND_CUSTOMERS: Final[int] = 10
#: Sampling settings of ``method="mcmc"``: enough for posterior means and intervals of 4-7 parameters.
MCMC_SETTINGS: Final[dict[str, Any]] = {"draws": 500, "tune": 500, "chains": 2, "progressbar": False,
                                        "random_seed": 7}  # fmt: skip

log = logging.getLogger("shoplens.clv")


class NotEnoughData(ValueError):
    """Too few customers (or repeat customers) to fit: the pipeline stage skips instead of failing."""


@dataclass
class FittedCLV:
    """The fitted purchase model, the fitted spend model, and their parameter estimates."""

    transaction_model: TransactionModel
    method: Method
    purchase: BetaGeoModel | ParetoNBDModel
    spend: GammaGammaModel
    parameters: dict[str, float]
    spend_customers: int  # repeat customers with positive spend the Gamma-Gamma model was fitted on


def model_data(rfm: pd.DataFrame) -> pd.DataFrame:
    """The RFM summary in PyMC-Marketing's layout: ``customer_id`` (row number), frequency, recency, T, monetary_value."""
    missing = [c for c in ("frequency", "recency", "T", "monetary_value") if c not in rfm.columns]
    if missing:
        raise ValueError(f"the RFM summary lacks column(s) {', '.join(missing)}")
    return pd.DataFrame({
        "customer_id": range(len(rfm)), "frequency": rfm["frequency"].to_numpy(dtype=float),
        "recency": rfm["recency"].to_numpy(dtype=float), "T": rfm["T"].to_numpy(dtype=float),
        "monetary_value": rfm["monetary_value"].to_numpy(dtype=float),
    })  # fmt: skip


def _flat(names: tuple[str, ...]) -> dict[str, Prior]:
    return {n: Prior("HalfFlat") for n in names}


def _fit(model: Any, data: pd.DataFrame | None, method: Method) -> None:
    """Fit by ``method``; ``data=None`` fits the model as already built (the weighted purchase model)."""
    given = {} if data is None else {"data": data}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyMC's notes on improper flat priors and the sampler's progress
        if method == "map":
            model.fit(**given, method="map", progressbar=False)
        else:
            model.fit(**given, method="mcmc", **MCMC_SETTINGS)


def distinct_triples(rfm: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct (frequency, recency, T) of ``rfm`` in PyMC-Marketing's layout (``customer_id`` = row
    number, sorted by the triple), and each row's index into them. Hashed (pandas' group numbers):
    ``np.unique(axis=0)`` sorts rows and took two thirds of scoring a million customers."""
    columns = ["frequency", "recency", "T"]
    inverse = rfm.groupby(columns, sort=True).ngroup().to_numpy()
    first = np.empty(inverse.max() + 1 if len(inverse) else 0, dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(inverse) - 1, -1, -1)  # each group's first row
    distinct = rfm[columns].iloc[first].astype(float).reset_index(drop=True)
    distinct.insert(0, "customer_id", np.arange(len(distinct)))
    return distinct, inverse


def _fit_weighted(model: Any, rfm: pd.DataFrame, method: Method) -> None:
    """Fit the purchase model on the distinct (frequency, recency, T) triples, each weighted by its customers.

    The purchase models' likelihood of a customer depends on that triple alone, and whole days make
    triples repeat (about 10^5 distinct among millions of customers), so the weighted sum over the
    distinct triples is the very log-likelihood of all customers, at a fraction of the cost. PyMC-Marketing's
    model is built on the triples; a ``Potential`` adds ``(count - 1)`` times each triple's log-likelihood
    term (PyMC's element-wise ``logp`` of the model's own observed variable), so every fit method sees the
    full data's posterior. (The fitted model's ``fit_data`` holds the triples, not the customers.)
    """
    distinct, inverse = distinct_triples(rfm)
    counts = np.bincount(inverse, minlength=len(distinct))
    model.build_model(data=distinct)
    with model.model:
        observed = model.model.observed_RVs
        terms = model.model.logp(vars=observed, sum=False)
        pm.Potential("repeated_customers", sum(((counts - 1.0) * t).sum() for t in terms))
    _fit(model, None, method)


def _estimates(model: Any, names: tuple[str, ...]) -> dict[str, float]:
    posterior = model.idata.posterior
    return {n: float(posterior[n].mean()) for n in names}


def fit_clv(rfm: pd.DataFrame, transaction_model: str = "bgnbd", method: str = "map") -> FittedCLV:
    """Fit the purchase model on every customer and Gamma-Gamma on the repeat customers with spend."""
    if transaction_model not in get_args(TransactionModel):
        raise ValueError(f"unknown model {transaction_model!r}; use bgnbd or pareto")
    if method not in get_args(Method):
        raise ValueError(f"unknown fit method {method!r}; use map or mcmc")
    data = model_data(rfm)
    if len(data) == 0:
        raise NotEnoughData("no customers: no purchase in the observation period")
    names = PURCHASE_PARAMETERS[transaction_model]
    kind = BetaGeoModel if transaction_model == "bgnbd" else ParetoNBDModel
    purchase = kind(model_config=_flat(names))
    _fit_weighted(purchase, data[["frequency", "recency", "T"]], method)
    repeat = data[(data["frequency"] > 0) & (data["monetary_value"] > 0)]
    if len(repeat) < MIN_SPEND_CUSTOMERS:
        raise NotEnoughData(f"only {len(repeat)} customers bought again with a positive value; the spend model "
                            f"needs at least {MIN_SPEND_CUSTOMERS}")  # fmt: skip
    spend = GammaGammaModel(model_config=_flat(SPEND_PARAMETERS))
    spend_data = repeat[["customer_id", "frequency", "monetary_value"]].reset_index(drop=True)
    _fit(spend, spend_data, method)  # type: ignore[arg-type]
    parameters = {**_estimates(purchase, names), **_estimates(spend, SPEND_PARAMETERS)}
    log.info("clv models fitted", extra={"stage": "clv", "customers": len(data), "method": method,
                                         "spend_customers": len(repeat)})  # fmt: skip
    return FittedCLV(transaction_model, method, purchase, spend, parameters, len(repeat))  # type: ignore[arg-type]


__all__ = [
    "MIN_SPEND_CUSTOMERS",
    "PURCHASE_PARAMETERS",
    "SPEND_PARAMETERS",
    "FittedCLV",
    "NotEnoughData",
    "distinct_triples",
    "fit_clv",
    "model_data",
]
