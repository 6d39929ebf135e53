"""Validation in time: rolling-origin cross-validation, error metrics, and a gradient-boosted peer.

Rolling origin (Tashman 2000, "Out-of-sample tests of forecasting accuracy"): for fold k the model is
fitted on the first ``n - (folds - k) * horizon`` weeks and scored on the next ``horizon`` weeks,
whose spend is known (so the adstock of earlier spend carries over) but whose revenue is not.

- MAPE = mean(|y - y^| / y) over held-out weeks;
- NRMSE = sqrt(mean((y - y^)^2)) / (max(y) - min(y)), as in Robyn (Meta's MMM).

The gradient-boosted model (sklearn ``HistGradientBoostingRegressor`` on geometric-adstocked spend,
trend, Fourier terms, holiday weeks and controls) is only a comparison of out-of-sample accuracy: it
has no notion of ROI and is never its source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from model.mmm.data import MMMData, holiday_features
from model.mmm.posterior import Posterior
from model.mmm.transforms import geometric_adstock


def mape(y: np.ndarray, yhat: np.ndarray) -> float:
    y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    ok = y != 0
    return float(np.mean(np.abs(y[ok] - yhat[ok]) / np.abs(y[ok])))


def nrmse(y: np.ndarray, yhat: np.ndarray) -> float:
    y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    spread = float(y.max() - y.min()) or 1.0
    return float(np.sqrt(np.mean((y - yhat) ** 2)) / spread)


@dataclass
class CVResult:
    folds: list[dict] = field(default_factory=list)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)  # date, fold, actual, model, [peer]

    def pooled(self, column: str = "model") -> dict[str, float]:
        if self.predictions.empty:
            return {"mape": float("nan"), "nrmse": float("nan")}
        p = self.predictions
        return {"mape": mape(p["actual"], p[column]), "nrmse": nrmse(p["actual"], p[column])}


def fold_origins(n: int, folds: int, horizon: int, min_train: int) -> list[int]:
    """Training lengths of each fold (the origin moves forward by ``horizon``)."""
    origins = [n - (folds - k) * horizon for k in range(folds)]
    return [o for o in origins if o >= min_train]


def posterior_forecast(post: Posterior, data: MMMData, start: int) -> np.ndarray:
    """Posterior-mean expected revenue for weeks ``start:`` of ``data`` (spend before carries over)."""
    dates = data.dates[start:]
    pred = post.predict(dates, data.spend[start:], data.controls.iloc[start:], history=data.spend[:start])
    return pred["mu"].mean(axis=0)


def gbm_features(data: MMMData, alpha: float = 0.5, l_max: int = 8, order: int = 2) -> pd.DataFrame:
    """Adstocked spend (one fixed retention), trend, yearly Fourier terms, holiday weeks, controls."""
    ad = geometric_adstock(data.spend, np.full(len(data.channels), alpha), l_max)
    frame = pd.DataFrame(ad, columns=[f"adstock_{c}" for c in data.channels], index=data.dates)
    frame["trend"] = np.arange(len(data), dtype=float)
    doy = data.dates.dayofyear.to_numpy()
    for m in range(1, order + 1):
        frame[f"sin_{m}"] = np.sin(2 * np.pi * m * doy / 365.25)
        frame[f"cos_{m}"] = np.cos(2 * np.pi * m * doy / 365.25)
    frame = frame.join(holiday_features(data.dates))
    for name in data.controls.columns:
        frame[name] = data.controls[name].to_numpy()
    return frame


def gbm_forecast(data: MMMData, start: int, seed: int = 0) -> np.ndarray:
    """Fit the gradient-boosted peer on weeks ``:start`` and predict weeks ``start:``."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    x = gbm_features(data)
    model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, min_samples_leaf=5,
                                          random_state=seed)
    model.fit(x.iloc[:start], data.revenue[:start])
    return model.predict(x.iloc[start:])


def ridge_forecast(data: MMMData, start: int) -> np.ndarray:
    """Ridge regression on the same features (a linear peer; used by the benchmark)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = gbm_features(data)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    model.fit(x.iloc[:start], data.revenue[:start])
    return model.predict(x.iloc[start:])


def rolling_origin(data: MMMData, fit_posterior: Callable[[MMMData], Posterior], *, folds: int = 3,
                   horizon: int = 8, min_train: int = 52, peers: bool = True) -> CVResult:
    """Rolling-origin cross-validation of ``fit_posterior`` (and the GBM peer) on held-out weeks."""
    result = CVResult()
    rows = []
    for k, origin in enumerate(fold_origins(len(data), folds, horizon, min_train)):
        end = min(origin + horizon, len(data))
        sub = data.head(end)
        post = fit_posterior(sub.head(origin))
        model = posterior_forecast(post, sub, origin)
        actual = data.revenue[origin:end]
        frame = pd.DataFrame({"date": data.dates[origin:end], "fold": k, "actual": actual, "model": model})
        fold = {"fold": k, "train_weeks": origin, "test_weeks": end - origin,
                "first_test_week": str(data.dates[origin].date()),
                "mape": mape(actual, model), "nrmse": nrmse(actual, model)}
        if peers:
            frame["gbm"] = gbm_forecast(sub, origin)
            fold.update(gbm_mape=mape(actual, frame["gbm"]), gbm_nrmse=nrmse(actual, frame["gbm"]))
        rows.append(frame)
        result.folds.append(fold)
    result.predictions = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return result


__all__ = ["CVResult", "fold_origins", "gbm_features", "gbm_forecast", "mape", "nrmse", "posterior_forecast",
           "ridge_forecast", "rolling_origin"]
