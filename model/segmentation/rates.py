"""Model features that converge quickly: per-event and per-session rates shrunk toward the population.

Totals (events, sessions, revenue, tenure) keep growing with a user's history, so a segment built on
them drifts as the user comes back. Rates and shares do not, but from a handful of events they are
noisy: 1 cart in 3 views is a cart rate of 33%. Each rate here is therefore estimated with additive
(empirical-Bayes style) smoothing toward the population's rate::

    shrunk = (successes + strength * prior) / (trials + strength)

with ``prior`` learned in the fit (the population's pooled rate: sum of successes / sum of trials,
or the trial-weighted mean for averages such as ``price_level``) and ``strength`` a declared
pseudo-count in the rate's own unit (views, carts, sessions, events). A user with no evidence gets
the population rate; with much evidence their own. The priors are stored in the light artifact
(:func:`priors_to_dict`) so the light scorer applies exactly the same shrinkage
(:func:`derive_columns` is the one implementation both call).

Hour of day: the features table has four shares (night 0-6, morning 6-12, afternoon 12-18, evening
18-24 UTC). A persona whose peak sits near a boundary (07:00, 20:00) splits across two buckets and
K-Means cut it in two; the two contrasts ``hour_daytime`` (morning + afternoon - evening - night) and
``hour_first_half`` (night + morning - afternoon - evening) are the coordinates of the user's mean
hour on the 4-bucket circle and do not depend on which side of a boundary the peak falls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DERIVED",
    "DERIVED_NAMES",
    "DerivedFeature",
    "derive_columns",
    "derived_inputs",
    "fit_priors",
    "priors_from_dict",
    "priors_to_dict",
]

HOUR_SHARES = ("night_share", "morning_share", "afternoon_share", "evening_share")


@dataclass(frozen=True)
class DerivedFeature:
    """A shrunk rate ``(successes + strength * prior) / (trials + strength)``.

    ``kind`` "count": ``successes`` is a count column (capped at ``trials``); "share": a share of
    ``trials`` (successes = share x trials); "mean": a per-trial average (successes = mean x trials),
    with ``log`` its natural log taken first. ``trials`` is a count column.
    """

    name: str
    kind: str
    value: str
    trials: str
    strength: float
    log: bool = False
    doc: str = ""


DERIVED: tuple[DerivedFeature, ...] = (
    DerivedFeature("eb_cart_rate", "count", "n_carts", "n_views", 20.0,
                   doc="add-to-carts per view, shrunk by 20 views"),
    DerivedFeature("eb_removal_rate", "count", "n_removals", "n_carts", 2.0,
                   doc="removals per cart, shrunk by 2 carts"),
    DerivedFeature("eb_buy_session_rate", "count", "frequency", "n_sessions", 2.0,
                   doc="share of sessions with a purchase, shrunk by 2 sessions"),
    DerivedFeature("eb_price_level", "mean", "price_level", "n_events", 3.0,
                   doc="price_level, shrunk by 3 events"),
    DerivedFeature("eb_log_events_per_session", "mean", "events_per_session", "n_sessions", 1.0, log=True,
                   doc="ln(events per session), shrunk by 1 session"),
    DerivedFeature("eb_holiday_share", "share", "holiday_share", "n_events", 8.0,
                   doc="holiday-season share of events, shrunk by 8 events"),
    *(DerivedFeature(f"eb_{s}", "share", s, "n_events", 8.0, doc=f"{s}, shrunk by 8 events") for s in HOUR_SHARES),
)  # fmt: skip

#: Contrasts of the shrunk hour shares (module docstring): name -> (+ shares, - shares).
HOUR_CONTRASTS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "hour_daytime": (("eb_morning_share", "eb_afternoon_share"), ("eb_evening_share", "eb_night_share")),
    "hour_first_half": (("eb_night_share", "eb_morning_share"), ("eb_afternoon_share", "eb_evening_share")),
}

DERIVED_NAMES: tuple[str, ...] = tuple(d.name for d in DERIVED) + tuple(HOUR_CONTRASTS)
_BY_NAME = {d.name: d for d in DERIVED}


def derived_inputs(names: list[str] | tuple[str, ...]) -> list[str]:
    """The features-table columns the derived features ``names`` read (in a stable order)."""
    needed: list[str] = []
    for name in names:
        parts = [name] if name in _BY_NAME else [p for side in HOUR_CONTRASTS.get(name, ((), ())) for p in side]
        for p in parts:
            d = _BY_NAME[p]
            for c in (d.value, d.trials):
                if c not in needed:
                    needed.append(c)
    return needed


def _evidence(d: DerivedFeature, cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(successes, trials) per row; a null value counts as no evidence (0 trials)."""
    trials = np.nan_to_num(np.asarray(cols[d.trials], dtype=float), nan=0.0)
    value = np.asarray(cols[d.value], dtype=float)
    if d.kind == "count":
        value = np.minimum(np.nan_to_num(value, nan=0.0), trials)
        return value, trials
    if d.log:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.log(value)
    ok = np.isfinite(value)
    trials = np.where(ok, trials, 0.0)
    return np.where(ok, value, 0.0) * trials, trials


def fit_priors(cols: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Population rate of every base derived feature: sum of successes / sum of trials."""
    priors: dict[str, float] = {}
    for d in DERIVED:
        if d.value not in cols or d.trials not in cols:
            continue
        s, t = _evidence(d, cols)
        total = float(t.sum())
        priors[d.name] = float(s.sum() / total) if total > 0 else 0.0
    return priors


def derive_columns(
    cols: Mapping[str, np.ndarray], names: list[str] | tuple[str, ...], priors: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """The derived features ``names`` from raw columns and fitted priors (float arrays, no nulls)."""
    cache: dict[str, np.ndarray] = {}

    def base(name: str) -> np.ndarray:
        if name not in cache:
            d = _BY_NAME[name]
            s, t = _evidence(d, cols)
            cache[name] = (s + d.strength * priors[name]) / (t + d.strength)
        return cache[name]

    out: dict[str, np.ndarray] = {}
    for name in names:
        if name in HOUR_CONTRASTS:
            plus, minus = HOUR_CONTRASTS[name]
            out[name] = sum(base(p) for p in plus) - sum(base(m) for m in minus)
        else:
            out[name] = base(name)
    return out


def priors_to_dict(names: list[str] | tuple[str, ...], priors: Mapping[str, float]) -> dict:
    """The artifact's ``derived`` entry: the derived features used, and every prior they need."""
    return {"features": list(names), "priors": {k: float(v) for k, v in priors.items()},
            "strengths": {d.name: d.strength for d in DERIVED if d.name in priors}}  # fmt: skip


def priors_from_dict(d: Mapping | None) -> tuple[list[str], dict[str, float]]:
    """(derived feature names, priors) of an artifact's ``derived`` entry (empty for old artifacts)."""
    if not d:
        return [], {}
    strengths = d.get("strengths", {})
    for name, value in strengths.items():
        if name in _BY_NAME and float(value) != _BY_NAME[name].strength:
            raise ValueError(f"artifact shrinks {name} by {value}, this code by {_BY_NAME[name].strength}")
    return list(d["features"]), {k: float(v) for k, v in d["priors"].items()}
