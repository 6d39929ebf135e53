"""A fitted marketing-mix model as posterior draws, evaluated with numpy only.

The model (PyMC-Marketing's, see :mod:`model.mmm.fit`), on scaled data ``x~ = spend / max(spend)``
and ``y~ = revenue / max(revenue)``:

    y~_t = L_t * (intercept + sum_c sat_c(adstock_c(x~_c))_t + sum_k gamma_k z_{k,t}
                  + sum_m (g_m sin(2 pi m d_t / 365.25) + h_m cos(2 pi m d_t / 365.25))) + eps_t

with ``z`` the base regressors (linear trend, holiday weeks, standardized user controls) and ``d_t``
the day of year. ``L_t = exp(sum_k kappa_k tau_t^k)`` (k = 1..level_order, ``tau``
= weeks since the first fitted week / fitted weeks) is the level of the customer base: it scales media
and base alike, because a shop with fewer active customers gets fewer sales from the same ad euro as well
as from its base (see :func:`model.mmm.fit.customer_base_level`). ``level_order = 0`` is the additive model
(L = 1). Beyond the fitted weeks the level is held at its last fitted value (no extrapolation of a trend).
Everything a report, the optimizer or the dashboard needs is a function of the draws:

- contribution of channel c over a window: ``target_scale * L * sat_c(adstock_c(x~_c))`` summed over it;
- ROI_c = contribution_c / spend_c over the fitted period (adstock from zero at the first week);
- marginal ROI_c = d contribution_c / d spend_c at the fitted spend (1% more spend in every week);
- predictions for new periods carry over the adstock of the spend already made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from model.mmm.data import holiday_features
from model.mmm.transforms import Component

INTERVAL = (0.05, 0.95)  # 90% intervals everywhere


def level_time(dates: pd.DatetimeIndex, first_week: pd.Timestamp, weeks: float) -> np.ndarray:
    """``tau`` of the level for ``dates``: weeks since ``first_week`` / ``weeks``, held inside the fitted weeks."""
    tau = ((pd.DatetimeIndex(dates) - pd.Timestamp(first_week)).days.to_numpy() / 7.0) / weeks
    return np.clip(tau, 0.0, (weeks - 1.0) / weeks)


def quantiles(draws: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(5%, median, 95%) over the draw axis."""
    lo, mid, hi = np.quantile(draws, [INTERVAL[0], 0.5, INTERVAL[1]], axis=axis)
    return lo, mid, hi


@dataclass
class Posterior:
    """Posterior draws of every parameter plus what is needed to rebuild the regressors."""

    channels: list[str]
    adstock: Component
    saturation: Component
    channel_scale: np.ndarray  # (C,)
    target_scale: float
    params: dict[str, np.ndarray]  # channel params (D, C); intercept (D,); gamma_control (D, K); ...
    base_names: list[str]  # base regressors, in gamma_control order
    yearly_order: int
    first_week: pd.Timestamp
    trend_weeks: float  # trend = weeks since first_week / trend_weeks
    control_center: dict[str, float] = field(default_factory=dict)
    control_scale: dict[str, float] = field(default_factory=dict)
    roi_prior: tuple[float, float] | None = None  # LogNormal (mu, sigma) of each channel's ROI, if used
    level_order: int = 0  # powers of tau in the log level (0: no level, the additive model)

    @property
    def n_draws(self) -> int:
        return len(self.params["intercept"])

    def subset(self, n: int, seed: int = 0) -> Posterior:
        """At most ``n`` draws, picked without replacement (for fast interactive evaluation)."""
        if n >= self.n_draws:
            return self
        idx = np.sort(np.random.default_rng(seed).choice(self.n_draws, n, replace=False))
        return Posterior(**{**self.__dict__, "params": {k: v[idx] for k, v in self.params.items()}})

    def mean(self) -> Posterior:
        """One pseudo-draw at the posterior mean of every parameter."""
        return Posterior(**{**self.__dict__, "params": {k: v.mean(axis=0, keepdims=True)
                                                        for k, v in self.params.items()}})

    # --------------------------------------------------------------------------------- level

    @property
    def next_week(self) -> pd.Timestamp:
        """The first week after the fitted ones (where plans start; the level there is the last fitted one)."""
        return self.first_week + pd.Timedelta(weeks=round(self.trend_weeks))

    def level(self, dates: pd.DatetimeIndex) -> np.ndarray:
        """The customer-base level per draw and date ``(D, T)`` (ones without a level)."""
        if not self.level_order:
            return np.ones((self.n_draws, len(dates)))
        tau = level_time(dates, self.first_week, self.trend_weeks)
        powers = tau[:, None] ** np.arange(1, self.level_order + 1)[None, :]  # (T, K)
        return np.exp(self.params["level"] @ powers.T)

    def _weeks(self, n: int, start: pd.Timestamp | None, before: int = 0) -> pd.DatetimeIndex:
        first = (self.first_week if start is None else pd.Timestamp(start)) - pd.Timedelta(weeks=before)
        return pd.date_range(first, periods=n, freq="7D")

    # --------------------------------------------------------------------------------- media

    def media(self, spend: np.ndarray, history: np.ndarray | None = None,
              start: pd.Timestamp | None = None) -> np.ndarray:
        """Revenue contribution per draw, period and channel ``(D, T, C)`` of ``spend (T, C)``.

        ``history (H, C)``: spend of the weeks just before, whose adstock carries into ``spend``.
        ``start``: the week of ``spend``'s first row (default: the first fitted week, so the fitted
        spend gets the fitted level; plans pass :attr:`next_week`).
        """
        spend = np.asarray(spend, dtype=float)
        h = 0 if history is None else len(history)
        x = spend if history is None else np.vstack([history, spend])
        adstocked = self.adstock.apply(x / self.channel_scale, self.params)
        level = self.level(self._weeks(len(x), start, h))[:, :, None]
        out = self.saturation.apply(adstocked, self.params) * level * self.target_scale
        return out[:, h:, :]

    def media_gradient(self, spend: np.ndarray, history: np.ndarray | None = None, tail: int = 0,
                       start: pd.Timestamp | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(total contribution per draw ``(D,)``, its gradient wrt ``spend`` ``(D, T, C)``).

        The total runs over ``spend``'s periods plus ``tail`` periods of zero spend after them, so
        carry-over of late spend is credited. ``start`` as in :meth:`media`.
        """
        spend = np.asarray(spend, dtype=float)
        n = len(spend)
        h = 0 if history is None else len(history)
        x = np.vstack([np.zeros((0, spend.shape[1])) if history is None else history, spend,
                       np.zeros((tail, spend.shape[1]))])
        adstocked = self.adstock.apply(x / self.channel_scale, self.params)
        level = self.level(self._weeks(len(x), start, h))[:, :, None]
        value = self.saturation.apply(adstocked, self.params) * level
        slope = self.saturation.derivative(adstocked, self.params) * level  # (D, T', C)
        w = self.adstock.weights(self.params)  # (D, L, C)
        # d total / d x_s = sum_{t >= s} w_{t-s} slope_t : a correlation, done as a reversed convolution
        rev = slope[:, ::-1, :]
        corr = np.zeros_like(rev)
        for lag in range(min(w.shape[-2], rev.shape[1])):
            corr[:, lag:, :] += w[:, lag : lag + 1, :] * rev[:, : rev.shape[1] - lag, :]
        grad = corr[:, ::-1, :][:, h : h + n, :] * self.target_scale / self.channel_scale
        total = value[:, h:, :].sum(axis=(1, 2)) * self.target_scale
        return total, grad

    # ---------------------------------------------------------------------------------- base

    def base_features(self, dates: pd.DatetimeIndex, controls: pd.DataFrame | None = None) -> np.ndarray:
        """Base regressors ``(T, K)`` in ``base_names`` order."""
        cols: dict[str, np.ndarray] = {
            "trend": ((dates - self.first_week).days.to_numpy() / 7.0) / self.trend_weeks}
        cols.update({k: v.to_numpy() for k, v in holiday_features(dates).items()})
        for name in self.control_center:
            raw = (controls[name].to_numpy(dtype=float) if controls is not None and name in controls
                   else np.full(len(dates), self.control_center[name]))
            cols[name] = (raw - self.control_center[name]) / self.control_scale[name]
        return np.column_stack([cols[n] for n in self.base_names]) if self.base_names else np.zeros((len(dates), 0))

    def fourier(self, dates: pd.DatetimeIndex) -> np.ndarray:
        """Yearly Fourier modes ``(T, 2M)``: sin(2 pi m d / 365.25) for m = 1..M, then the cosines."""
        if not self.yearly_order:
            return np.zeros((len(dates), 0))
        x = 2 * np.pi * dates.dayofyear.to_numpy()[:, None] / 365.25 * np.arange(1, self.yearly_order + 1)
        return np.hstack([np.sin(x), np.cos(x)])

    def base(self, dates: pd.DatetimeIndex, controls: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
        """Base components per draw ``(D, T)``: intercept, each base regressor, seasonality (each times the level)."""
        p = self.params
        d = self.n_draws
        scale = self.level(dates) * self.target_scale
        out = {"intercept": p["intercept"][:, None] * scale}
        z = self.base_features(dates, controls)
        for k, name in enumerate(self.base_names):
            out[name] = p["gamma_control"][:, k : k + 1] * z[None, :, k] * scale
        f = self.fourier(dates)
        out["seasonality"] = (p["gamma_fourier"] @ f.T if f.shape[1] else np.zeros((d, len(dates)))) * scale
        return out

    def predict(self, dates: pd.DatetimeIndex, spend: np.ndarray, controls: pd.DataFrame | None = None,
                history: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Expected revenue ``mu (D, T)`` with its components (base parts ``(D, T)``, media ``(D, T, C)``)."""
        base = self.base(dates, controls)
        media = self.media(spend, history, start=dates[0])
        mu = sum(base.values()) + media.sum(axis=2)
        return {"mu": mu, "media": media, **base}

    def predictive(self, mu: np.ndarray, seed: int = 0) -> np.ndarray:
        """Posterior predictive draws: ``mu`` plus the likelihood's noise."""
        rng = np.random.default_rng(seed)
        return mu + rng.normal(0.0, 1.0, mu.shape) * self.params["sigma"][:, None] * self.target_scale

    # ------------------------------------------------------------------------------ summaries

    def roi(self, spend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(contribution ``(D, C)``, ROI ``(D, C)``) over the periods of ``spend``."""
        contrib = self.media(spend).sum(axis=1)
        total = np.asarray(spend, dtype=float).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return contrib, np.where(total > 0, contrib / total, np.nan)

    def marginal_roi(self, spend: np.ndarray, step: float = 0.01) -> np.ndarray:
        """Extra revenue per extra unit of spend when every week's spend rises by ``step`` ``(D, C)``."""
        spend = np.asarray(spend, dtype=float)
        base = self.media(spend).sum(axis=1)
        out = np.empty_like(base)
        for c in range(spend.shape[1]):
            bumped = spend.copy()
            bumped[:, c] *= 1 + step
            extra = spend[:, c].sum() * step
            out[:, c] = (self.media(bumped)[:, :, c].sum(axis=1) - base[:, c]) / extra if extra else np.nan
        return out

    def response_curve(self, grid: np.ndarray) -> np.ndarray:
        """Weekly revenue at a sustained weekly spend ``grid (G, C)``, per draw ``(D, G, C)``.

        With normalized adstock a constant spend adstocks to itself, so this is the saturation curve, at
        the customer base's level of the last fitted week (what a plan would meet).
        """
        level = self.level(pd.DatetimeIndex([self.next_week]))[:, :, None]  # (D, 1, 1)
        return self.saturation.apply(np.asarray(grid, dtype=float) / self.channel_scale, self.params) \
            * level * self.target_scale

    def adstock_curve(self) -> np.ndarray:
        """Share of a week's effect that lands ``l`` weeks later, per draw ``(D, L, C)``."""
        return self.adstock.weights(self.params)

    # ------------------------------------------------------------------------------ storage

    def draws_frame(self) -> pd.DataFrame:
        """One row per draw, one column per scalar parameter (``name[label]`` for vectors)."""
        cols: dict[str, np.ndarray] = {"draw": np.arange(self.n_draws)}
        labels = {"gamma_control": self.base_names,
                  "gamma_fourier": [f"sin_{m}" for m in range(1, self.yearly_order + 1)]
                  + [f"cos_{m}" for m in range(1, self.yearly_order + 1)],
                  "level": [f"tau^{k}" for k in range(1, self.level_order + 1)]}
        for name, v in self.params.items():
            if v.ndim == 1:
                cols[name] = v
            else:
                for j, label in enumerate(labels.get(name, self.channels)):
                    cols[f"{name}[{label}]"] = v[:, j]
        return pd.DataFrame(cols)

    def meta(self) -> dict[str, Any]:
        return {"channels": self.channels, "adstock": self.adstock.to_dict(),
                "saturation": self.saturation.to_dict(), "channel_scale": self.channel_scale.tolist(),
                "target_scale": float(self.target_scale), "base_names": self.base_names,
                "yearly_order": self.yearly_order, "first_week": str(self.first_week.date()),
                "trend_weeks": float(self.trend_weeks), "control_center": self.control_center,
                "control_scale": self.control_scale,
                "roi_prior": list(self.roi_prior) if self.roi_prior else None, "level_order": self.level_order}

    @staticmethod
    def from_frame(draws: pd.DataFrame, meta: dict[str, Any]) -> Posterior:
        channels = list(meta["channels"])
        params: dict[str, np.ndarray] = {}
        vectors: dict[str, list[str]] = {}
        for col in draws.columns:
            if col == "draw":
                continue
            if "[" in col:
                vectors.setdefault(col.split("[", 1)[0], []).append(col)
            else:
                params[col] = draws[col].to_numpy(dtype=float)
        for name, cols in vectors.items():
            params[name] = draws[cols].to_numpy(dtype=float)
        order = meta["yearly_order"]
        params.setdefault("gamma_control", np.zeros((len(draws), 0)))
        params.setdefault("gamma_fourier", np.zeros((len(draws), 2 * order)))
        return Posterior(channels, Component.from_dict(meta["adstock"]), Component.from_dict(meta["saturation"]),
                         np.asarray(meta["channel_scale"], dtype=float), float(meta["target_scale"]), params,
                         list(meta["base_names"]), order, pd.Timestamp(meta["first_week"]),
                         float(meta["trend_weeks"]), dict(meta.get("control_center", {})),
                         dict(meta.get("control_scale", {})),
                         tuple(meta["roi_prior"]) if meta.get("roi_prior") else None,
                         int(meta.get("level_order", 0)))


def channel_summary(post: Posterior, spend: np.ndarray) -> pd.DataFrame:
    """Per channel: spend, contribution, ROI and marginal ROI with 90% intervals, contribution share."""
    contrib, roi = post.roi(spend)
    mroi = post.marginal_roi(spend)
    c_lo, c_mid, c_hi = quantiles(contrib)
    r_lo, r_mid, r_hi = quantiles(roi)
    m_lo, m_mid, m_hi = quantiles(mroi)
    total = np.asarray(spend, dtype=float).sum(axis=0)
    return pd.DataFrame({
        "channel": post.channels, "spend": total, "spend_share": total / total.sum(),
        "contribution": c_mid, "contribution_low": c_lo, "contribution_high": c_hi,
        "roi": r_mid, "roi_low": r_lo, "roi_high": r_hi, "roi_mean": roi.mean(axis=0),
        "mroi": m_mid, "mroi_low": m_lo, "mroi_high": m_hi,
    })


__all__ = ["INTERVAL", "Posterior", "channel_summary", "level_time", "quantiles"]
