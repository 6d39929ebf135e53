"""Synthetic marketing ground truth: a weekly spend plan per channel and the revenue it drives.

Used two ways (both seeded, byte-identical for the same arguments):

- :func:`weekly_truth` simulates a weekly revenue series *at the truth level*:
  ``revenue_w = base_w + sum_c contribution_c(w) + noise``, with
  ``contribution_c(w) = beta_c * logistic(lam_c * adstock_c(spend_c / max(spend_c)))(w)``.
  This is the series the recovery test fits (two years, six channels): exact truth, no event noise.
- ``shoplens generate --marketing`` (:mod:`etl.generate`) turns the same contributions into extra
  daily session intensity, so purchases in the event files respond to the plan; see
  :func:`relative_effect`. Its ``_truth/mmm.json`` gives each channel's expected counterfactual
  contribution (:class:`SessionResponse`), the ROI the files contain, not the target ROI above.

The transforms here are written independently of ``model/mmm`` (an explicit loop over lags rather
than a convolution) so that the model is checked against a separate implementation:

- geometric adstock, normalized and truncated at ``l_max`` (Jin et al. 2017, eq. 1):
  ``a_t = sum_{l<L} alpha^l x_{t-l} / sum_{l<L} alpha^l``;
- logistic saturation (PyMC-Marketing's ``logistic_saturation``): ``s(x) = (1 - e^{-lam x}) / (1 + e^{-lam x})``.

ROI is defined as in the model: the revenue a channel's spend in the window drives inside the window
(adstock starting from zero at the first week) divided by that spend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Final

import numpy as np
import pandas as pd

CHANNELS: Final[tuple[str, ...]] = ("search", "social", "display", "video", "email", "affiliates")
L_MAX: Final[int] = 8


@dataclass(frozen=True)
class ChannelTruth:
    """The known behaviour of one channel (weekly units)."""

    name: str
    weekly_spend: float  # mean weekly spend before seasonality and flighting
    alpha: float  # geometric adstock retention
    lam: float  # logistic saturation steepness on spend / max(spend)
    roi: float  # target ROI over the window (beta is solved from it)
    flighting: str  # always_on | bursts | campaigns | random_walk
    cpm: float  # cost per thousand impressions (impressions = spend / cpm * 1000)
    volatility: float = 0.25  # week-to-week lognormal spread of always-on spend


TRUTH: Final[tuple[ChannelTruth, ...]] = (
    ChannelTruth("search", 6000.0, alpha=0.20, lam=1.5, roi=2.4, flighting="always_on", cpm=9.0),
    ChannelTruth("social", 4000.0, alpha=0.45, lam=2.2, roi=1.6, flighting="bursts", cpm=6.0),
    ChannelTruth("display", 2600.0, alpha=0.30, lam=1.8, roi=1.1, flighting="bursts", cpm=3.0),
    ChannelTruth("video", 3600.0, alpha=0.60, lam=1.2, roi=1.4, flighting="campaigns", cpm=14.0),
    ChannelTruth("email", 900.0, alpha=0.10, lam=2.8, roi=3.5, flighting="always_on", cpm=0.5, volatility=0.7),
    ChannelTruth("affiliates", 2900.0, alpha=0.15, lam=1.6, roi=1.9, flighting="random_walk", cpm=4.0),
)
#: Mean weekly base revenue (everything the media does not drive).
BASE_LEVEL: Final[float] = 100_000.0
NOISE_SHARE: Final[float] = 0.025


def black_friday(year: int) -> date:
    first = date(year, 11, 1)
    return first + timedelta(days=(3 - first.weekday()) % 7 + 22)


def holiday_weeks(weeks: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """(Black Friday week, Christmas shopping weeks) as 0/1 per week starting Monday."""
    bf = np.zeros(len(weeks))
    xmas = np.zeros(len(weeks))
    for i, w in enumerate(weeks):
        d = w.date()
        end = d + timedelta(days=6)
        b = black_friday(d.year)
        bf[i] = float(d <= b <= end)
        xmas[i] = float(d.month == 12 and d.day <= 21 and not bf[i])
    return bf, xmas


def week_starts(start: date, weeks: int) -> pd.DatetimeIndex:
    """``weeks`` Mondays, the first on or after ``start``."""
    first = start + timedelta(days=(7 - start.weekday()) % 7)
    return pd.date_range(first, periods=weeks, freq="W-MON")


def spend_plan(weeks: pd.DatetimeIndex, seed: int) -> np.ndarray:
    """Weekly spend (weeks x channels): seasonality, a holiday push and per-channel flighting."""
    rng = np.random.default_rng([seed, 71])
    n = len(weeks)
    doy = weeks.dayofyear.to_numpy()
    season = 1.0 + 0.15 * np.sin(2 * np.pi * (doy - 60) / 365.25)
    bf, xmas = holiday_weeks(weeks)
    push = 1.0 + 0.8 * bf + 0.4 * xmas
    out = np.zeros((n, len(TRUTH)))
    for c, ch in enumerate(TRUTH):
        if ch.flighting == "always_on":
            shape = season * rng.lognormal(0.0, ch.volatility, n)
        elif ch.flighting == "bursts":  # 3-8 weeks on, 1-5 off
            shape, on, i = np.zeros(n), bool(rng.random() < 0.5), 0
            while i < n:
                length = int(rng.integers(3, 9) if on else rng.integers(1, 6))
                if on:
                    shape[i:i + length] = rng.uniform(0.8, 2.0)
                i, on = i + length, not on
            shape *= rng.lognormal(0.0, 0.15, n)
        elif ch.flighting == "campaigns":  # 4-6 campaigns a year of 3-6 weeks, nothing between
            shape = np.zeros(n)
            for _ in range(max(1, round(n / 52 * 5))):
                s = int(rng.integers(0, n))
                shape[s:s + int(rng.integers(3, 7))] = rng.uniform(2.0, 4.0)
        else:  # random walk in log space
            shape = np.exp(np.cumsum(rng.normal(0.0, 0.18, n)))
            shape = shape / shape.mean() * rng.lognormal(0.0, 0.1, n)
        out[:, c] = ch.weekly_spend * shape / max(shape.mean(), 1e-9) * push
    return np.round(out, 2)


def _adstock(x: np.ndarray, alpha: float, l_max: int = L_MAX) -> np.ndarray:
    weights = alpha ** np.arange(l_max)
    weights = weights / weights.sum()
    out = np.zeros(len(x))
    for t in range(len(x)):
        for lag in range(min(l_max, t + 1)):
            out[t] += weights[lag] * x[t - lag]
    return out


def _logistic(x: np.ndarray, lam: float) -> np.ndarray:
    return (1 - np.exp(-lam * x)) / (1 + np.exp(-lam * x))


def shapes(spend: np.ndarray) -> np.ndarray:
    """Saturated adstocked spend per channel (weeks x channels), before the channel's beta."""
    out = np.zeros_like(spend, dtype=float)
    for c, ch in enumerate(TRUTH):
        scale = spend[:, c].max() or 1.0
        out[:, c] = _logistic(_adstock(spend[:, c] / scale, ch.alpha), ch.lam)
    return out


def contributions(spend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weekly revenue contribution per channel, beta per channel) with each channel's ROI hit exactly."""
    s = shapes(spend)
    beta = np.array([ch.roi for ch in TRUTH]) * spend.sum(axis=0) / np.maximum(s.sum(axis=0), 1e-12)
    return s * beta, beta


def true_lift(spend: np.ndarray, channel: str, first: int, weeks: int, change: float) -> tuple[float, float]:
    """(spend change, revenue change) of a lift test: ``channel``'s spend in weeks ``first:first+weeks``
    times ``1 + change`` (``-1``: the channel goes dark, a hold-out test).

    The revenue change is the channel's contribution with the changed spend minus without it, over the
    whole window (so the carry-over after the test weeks counts), with the channel's saturation scale
    and beta as they are for the plan (the experiment does not change the truth).
    """
    base, beta = contributions(spend)
    c = CHANNELS.index(channel)
    ch = TRUTH[c]
    moved = spend[:, c].astype(float)
    moved[first:first + weeks] *= 1.0 + change
    after = beta[c] * _logistic(_adstock(moved / (spend[:, c].max() or 1.0), ch.alpha), ch.lam)
    return float(moved.sum() - spend[:, c].sum()), float(after.sum() - base[:, c].sum())


def base_revenue(weeks: pd.DatetimeIndex) -> np.ndarray:
    """Trend (+8% a year), yearly seasonality and holiday lift, around :data:`BASE_LEVEL`."""
    t = np.arange(len(weeks)) / 52.0
    doy = weeks.dayofyear.to_numpy()
    yearly = 0.06 * np.sin(2 * np.pi * doy / 365.25) + 0.03 * np.cos(4 * np.pi * doy / 365.25)
    bf, xmas = holiday_weeks(weeks)
    return BASE_LEVEL * (0.96 + 0.08 * t + yearly + 0.45 * bf + 0.18 * xmas)


@dataclass(frozen=True)
class WeeklyTruth:
    spend: pd.DataFrame  # date, channel, spend, impressions (long)
    revenue: pd.DataFrame  # date, revenue
    contributions: pd.DataFrame  # date x channel
    truth: dict


def truth_document(weeks: pd.DatetimeIndex, spend: np.ndarray, contrib: np.ndarray, beta: np.ndarray,
                   revenue_total: float, how: str) -> dict:
    """The ``_truth/mmm.json`` document: per channel spend, ROI, transforms and contribution share."""
    channels = []
    for c, ch in enumerate(TRUTH):
        total = float(spend[:, c].sum())
        channels.append({
            "channel": ch.name,
            "spend": round(total, 2),
            "spend_share": round(total / float(spend.sum()), 6),
            "contribution": round(float(contrib[:, c].sum()), 2),
            "contribution_share": round(float(contrib[:, c].sum()) / revenue_total, 6),
            "roi": round(float(contrib[:, c].sum()) / total, 6) if total else None,
            "adstock": {"type": "geometric", "alpha": ch.alpha, "l_max": L_MAX, "normalize": True},
            "saturation": {"type": "logistic", "lam": ch.lam, "beta": round(float(beta[c]), 4),
                           "x_scale": round(float(spend[:, c].max()), 2)},
            "flighting": ch.flighting,
        })
    return {"frequency": "W-MON", "first_week": weeks[0].date().isoformat(),
            "last_week": weeks[-1].date().isoformat(), "weeks": len(weeks),
            "roi_definition": "sum of the weekly revenue the channel drives inside the window "
                              "(adstock from zero at the first week) / its spend in the window",
            "revenue": round(revenue_total, 2), "how": how, "channels": channels}


def weekly_truth(start: date = date(2022, 1, 3), weeks: int = 104, seed: int = 0) -> WeeklyTruth:
    """A weekly revenue series generated at the truth level (see the module docstring)."""
    idx = week_starts(start, weeks)
    spend = spend_plan(idx, seed)
    contrib, beta = contributions(spend)
    base = base_revenue(idx)
    rng = np.random.default_rng([seed, 72])
    revenue = base + contrib.sum(axis=1) + rng.normal(0.0, NOISE_SHARE * BASE_LEVEL, len(idx))
    truth = truth_document(idx, spend, contrib, beta, float(revenue.sum()), "weekly series at the truth level")
    return WeeklyTruth(spend=long_spend(idx, spend),
                       revenue=pd.DataFrame({"date": idx, "revenue": np.round(revenue, 2)}),
                       contributions=pd.DataFrame(contrib, index=idx, columns=list(CHANNELS)), truth=truth)


def long_spend(weeks: pd.DatetimeIndex, spend: np.ndarray, daily: bool = False) -> pd.DataFrame:
    """Spend in the documented CSV layout ``date,channel,spend,impressions`` (weekly, or spread over days)."""
    frames = []
    for c, ch in enumerate(TRUTH):
        if daily:
            dates = pd.DatetimeIndex([w + pd.Timedelta(days=d) for w in weeks for d in range(7)])
            amount = np.round(np.repeat(spend[:, c] / 7.0, 7), 2)
        else:
            dates, amount = weeks, spend[:, c]
        frames.append(pd.DataFrame({"date": dates, "channel": ch.name, "spend": amount,
                                    "impressions": np.round(amount / ch.cpm * 1000).astype(np.int64)}))
    return pd.concat(frames, ignore_index=True).sort_values(["date", "channel"], kind="stable")


def relative_effect(weeks: pd.DatetimeIndex, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spend, contributions relative to the mean base, beta) for the event generator.

    Each channel's weekly contribution divided by :data:`BASE_LEVEL`: the generator adds
    ``persona mean intensity x sum_c effect_c(w)`` to every day of week ``w``, so media-driven
    sessions add to the base instead of scaling its seasonality.
    """
    spend = spend_plan(weeks, seed)
    contrib, beta = contributions(spend)
    return spend, contrib / BASE_LEVEL, beta


def channel_table() -> list[dict]:
    return [asdict(ch) for ch in TRUTH]


__all__ = [
    "CHANNELS",
    "L_MAX",
    "TRUTH",
    "ChannelTruth",
    "SessionResponse",
    "WeeklyTruth",
    "base_revenue",
    "channel_table",
    "contributions",
    "event_plan",
    "event_truth",
    "holiday_weeks",
    "long_spend",
    "relative_effect",
    "spend_plan",
    "true_lift",
    "truth_document",
    "week_starts",
    "weekly_truth",
]


def event_plan(days: list[date], seed: int) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the event generator: (weeks, weekly spend, beta, week of each day, relative effect per day x channel).

    Weeks start on the Monday on or before the first day, so every day belongs to a plan week.
    """
    first = days[0] - timedelta(days=days[0].weekday())
    n_weeks = (days[-1] - first).days // 7 + 1
    weeks = pd.date_range(first, periods=n_weeks, freq="W-MON")
    spend, effect, beta = relative_effect(weeks, seed)
    week_of_day = np.array([(d - first).days // 7 for d in days])
    return weeks, spend, beta, week_of_day, effect[week_of_day]


@dataclass(frozen=True)
class SessionResponse:
    """How the event generator's revenue responds to the plan, in expectation given its users.

    The rules of ``etl.generate``'s session draw: a user's sessions are ``clip(Poisson(m), 1, max_sessions)``
    with ``m = rate x`` the persona's intensity summed over the user's active days (media effect added to
    it, see :func:`relative_effect`), or a fixed count whatever the intensity (``fixed``, NaN otherwise);
    the sessions fall on the active days in proportion to that intensity. Revenue per session is the
    persona's in the generator's own run. What a channel's spend puts into the event files is then the
    counterfactual: expected revenue with the channel minus without it (:meth:`contributions`).
    """

    base: np.ndarray  # (personas, days) session intensity without media
    effect: np.ndarray  # (days, channels) relative media effect
    persona: np.ndarray  # (users,) persona index
    first_day: np.ndarray  # (users,) first active day
    last_day: np.ndarray  # (users,) last active day (inclusive)
    rate: np.ndarray  # (users,) expected sessions per unit of intensity
    fixed: np.ndarray  # (users,) expected sessions of users whose count ignores intensity, NaN otherwise
    per_session: np.ndarray  # (personas,) revenue per session
    max_sessions: int

    def day_revenue(self, on: np.ndarray) -> np.ndarray:
        """Expected revenue per day with the media effect times ``on`` (channels, or days x channels; 1 on, 0 dark)."""
        from scipy import stats

        media = (self.effect * on).sum(axis=1)
        inten = self.base + self.base.mean(axis=1, keepdims=True) * media[None, :]
        cum = np.concatenate([np.zeros((len(inten), 1)), np.cumsum(inten, axis=1)], axis=1)
        p = self.persona
        span = cum[p, self.last_day + 1] - cum[p, self.first_day]
        m, k = self.rate * span, self.max_sessions
        # E[clip(N, 1, k)] = E[N] + P(N = 0) - E[(N - k)+], and E[(N - k)+] = m P(N >= k) - k P(N > k)
        sessions = m + stats.poisson.pmf(0, m) - (m * stats.poisson.sf(k - 1, m) - k * stats.poisson.sf(k, m))
        sessions = np.where(np.isnan(self.fixed), sessions, self.fixed)
        weight = np.zeros((len(inten), inten.shape[1] + 1))  # revenue per unit of intensity, by persona and day
        w = self.per_session[p] * sessions / np.maximum(span, 1e-12)
        np.add.at(weight, (p, self.first_day), w)
        np.add.at(weight, (p, self.last_day + 1), -w)
        return (np.cumsum(weight, axis=1)[:, :-1] * inten).sum(axis=0)

    def contributions(self) -> np.ndarray:
        """(days x channels): expected revenue with every channel on minus with the channel dark all window."""
        n_c = self.effect.shape[1]
        full = self.day_revenue(np.ones(n_c))
        return np.column_stack([full - self.day_revenue(1.0 - np.eye(n_c)[c]) for c in range(n_c)])

    def hold_out(self, channel: int, days: np.ndarray) -> float:
        """Expected revenue change over the whole window (carry-over included) of ``channel`` dark on ``days``."""
        on = np.ones(self.effect.shape)
        on[days, channel] = 0.0
        return float(self.day_revenue(on).sum() - self.day_revenue(np.ones(self.effect.shape[1])).sum())


def event_truth(days: list[date], weeks: pd.DatetimeIndex, spend: np.ndarray, beta: np.ndarray,
                week_of_day: np.ndarray, day_revenue: np.ndarray,
                response: SessionResponse) -> tuple[dict, pd.DataFrame]:
    """Truth of an event-level generation: each channel's expected counterfactual contribution.

    A channel's contribution on a day is the expected revenue of the generator's simulation with its
    spend minus without it (:meth:`SessionResponse.contributions`), given the users: what its spend puts
    into the files, up to the purchase noise. Spend is the plan's spend on the generated days.
    """
    contrib_day = response.contributions()
    n_w = len(weeks)
    contrib = np.zeros((n_w, spend.shape[1]))
    np.add.at(contrib, week_of_day, contrib_day)
    days_in_week = np.bincount(week_of_day, minlength=n_w)
    spend_window = spend * (days_in_week / 7.0)[:, None]
    doc = truth_document(weeks, spend_window, contrib, beta, float(day_revenue.sum()),
                         "event files: extra session intensity per persona; contributions are the expected "
                         "revenue with the channel minus without it, given the users (the simulation's rules)")
    doc["complete_weeks"] = [str(w.date()) for w, n in zip(weeks, days_in_week, strict=True) if n == 7]
    rows = [{"date": str(d), "channel": ch.name, "spend": round(float(spend[w, c]) / 7.0, 2),
             "impressions": round(float(spend[w, c]) / 7.0 / ch.cpm * 1000)}
            for d, w in zip(days, week_of_day, strict=True) for c, ch in enumerate(TRUTH)]
    weekly = pd.DataFrame(contrib, columns=list(CHANNELS)).assign(week=[str(w.date()) for w in weeks])
    doc["weekly_contributions"] = weekly.to_dict(orient="records")
    return doc, pd.DataFrame(rows)
