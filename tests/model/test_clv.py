"""model.clv: the per-customer scores against the BG/NBD and Gamma-Gamma closed forms (Fader, Hardie
and Lee 2005, eq. 11 and 13; Fader and Hardie 2013) evaluated with scipy, and the holdout arithmetic
against a hand computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import hyp2f1

from model.clv import SCORE_COLUMNS, fit_clv, holdout_evaluation, score_customers, spend_frequency_correlation
from model.clv.evaluation import naive_forecast

CDNOW = Path(__file__).resolve().parents[1] / "data" / "cdnow" / "CDNOW_sample.txt"


def cdnow_rfm() -> pd.DataFrame:
    """RFM in days over the 39-week calibration period, by pandas (one transaction per customer and day)."""
    raw = pd.read_csv(CDNOW, sep=r"\s+", header=None, names=["m", "c", "date", "cds", "value"], dtype={"date": str})
    raw["day"] = pd.to_datetime(raw["date"])
    end = pd.Timestamp("1997-09-30")
    daily = raw[raw["day"] <= end].groupby(["c", "day"], as_index=False)["value"].sum().sort_values(["c", "day"])
    g = daily.groupby("c")
    first, last, n = g["day"].min(), g["day"].max(), g.size()
    repeat_value = g["value"].sum() - g["value"].first()
    return pd.DataFrame({"user_key": first.index.astype(str), "frequency": (n - 1).to_numpy(),
                         "recency": (last - first).dt.days.to_numpy(float), "T": (end - first).dt.days.to_numpy(float),
                         "monetary_value": np.where(n > 1, repeat_value / (n - 1).clip(lower=1), 0.0)})  # fmt: skip


def bgnbd_expected(r, alpha, a, b, x, tx, T, t):
    alive_odds = np.where(x > 0, a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x), 0.0)
    head = (a + b + x - 1) / (a - 1)
    tail = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    return head * tail / (1 + alive_odds), 1 / (1 + alive_odds)


@pytest.mark.slow
def test_scores_match_the_closed_forms():
    rfm = cdnow_rfm()
    fitted = fit_clv(rfm)
    r, alpha, a, b, p, q, v = (fitted.parameters[k] for k in ("r", "alpha", "a", "b", "p", "q", "v"))
    assert alpha / 7 == pytest.approx(4.414, rel=0.01) and p == pytest.approx(6.25, rel=0.01)
    months, discount = 6, 0.02
    got = score_customers(fitted, rfm, months, discount)
    assert list(got.columns) == list(SCORE_COLUMNS)
    x, tx, T = (rfm[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    e365, alive = bgnbd_expected(r, alpha, a, b, x, tx, T, 365.0)
    np.testing.assert_allclose(got["p_alive"], alive, rtol=1e-6)
    np.testing.assert_allclose(got["expected_purchases_365"], e365, rtol=1e-6)
    spend = p * (v + x * rfm["monetary_value"].to_numpy()) / (p * x + q - 1)
    np.testing.assert_allclose(got["expected_value"], spend, rtol=1e-6)
    cum = [bgnbd_expected(r, alpha, a, b, x, tx, T, 30.0 * m)[0] for m in range(months + 1)]
    clv = sum((cum[m] - cum[m - 1]) * spend / (1 + discount) ** m for m in range(1, months + 1))
    np.testing.assert_allclose(got["clv"], clv, rtol=1e-6)
    assert spend_frequency_correlation(rfm) == pytest.approx(0.1139, abs=1e-3)


def test_holdout_arithmetic_by_hand():
    cal = pd.DataFrame({"frequency": [0, 1, 2, 9], "T": [10.0, 20.0, 0.0, 30.0], "holdout_purchases": [1, 0, 3, 4]})
    predicted = np.array([0.5, 1.0, 2.0, 5.0])
    ev = holdout_evaluation(cal, predicted, "2020-02-01", "2020-02-10", 10)
    naive = np.array([0.0, 0.5, 0.0, 3.0])  # frequency / T x 10 days; T = 0 gives 0
    np.testing.assert_allclose(naive_forecast(cal["frequency"], cal["T"], 10), naive)
    assert ev.actual_purchases == 8 and ev.predicted_purchases == 8.5 and ev.naive_purchases == 3.5
    assert ev.mae == pytest.approx((0.5 + 1 + 1 + 1) / 4) and ev.mae_naive == pytest.approx((1 + 0.5 + 3 + 1) / 4)
    assert ev.correlation == pytest.approx(np.corrcoef(predicted, cal["holdout_purchases"])[0, 1])
    doc = ev.to_dict()
    assert (doc["start"], doc["end"]) == ("2020-02-01", "2020-02-10")
    assert [g["calibration_frequency"] for g in doc["by_frequency"]] == ["0", "1", "2", "7+"]


def test_bad_options_are_refused():
    rfm = pd.DataFrame({"frequency": [0], "recency": [0.0], "T": [1.0], "monetary_value": [0.0]})
    with pytest.raises(ValueError, match="unknown model"):
        fit_clv(rfm, "nbd")
    with pytest.raises(ValueError, match="unknown fit method"):
        fit_clv(rfm, method="advi")


@pytest.mark.slow
def test_the_fit_on_weighted_triples_is_the_fit_on_every_customer(model: str = "bgnbd"):
    """The purchase model is fitted on the distinct (frequency, recency, T), each weighted by its count:
    its estimates equal PyMC-Marketing's own fit on one row per customer (CDNOW's 2,357 customers,
    1,016 distinct triples). BG/NBD only: Pareto/NBD's fit takes minutes, and its weighting is the same code."""
    from pymc_marketing.clv import BetaGeoModel, ParetoNBDModel

    from model.clv.fit import PURCHASE_PARAMETERS, _fit, _flat, distinct_triples, model_data

    rfm = cdnow_rfm()
    distinct, inverse = distinct_triples(model_data(rfm))
    assert len(distinct) < len(rfm)
    assert (distinct.iloc[inverse, 1:].to_numpy() == rfm[["frequency", "recency", "T"]].to_numpy()).all()
    names = PURCHASE_PARAMETERS[model]
    plain = (BetaGeoModel if model == "bgnbd" else ParetoNBDModel)(model_config=_flat(names))
    _fit(plain, model_data(rfm)[["customer_id", "frequency", "recency", "T"]], "map")
    weighted = fit_clv(rfm, model).parameters
    for name in names:
        assert weighted[name] == pytest.approx(float(plain.idata.posterior[name].mean()), rel=1e-4), name
