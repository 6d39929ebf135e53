"""How many events before a segment can be trusted: the agreement curve and the chosen threshold.

Input: for users with long histories, one row per (user, n) with the segment computed from the
user's first n events and the segment from all of their events (same model, so ids are comparable).
Per n: ``agreement`` = share of users whose two segments are equal, and the adjusted Rand index
(Hubert & Arabie 1985; ``sklearn.metrics.adjusted_rand_score``), which discounts chance agreement.

The threshold is the smallest n from which the chosen metric stays >= ``target`` for every larger n
studied. "Stays" rather than "first reaches": a single lucky point on a noisy curve followed by a
dip should not set the bar. On a monotone curve both readings give the same n.

With ``confidence`` (default 0.95) the metric's one-sided lower confidence bound must meet the target,
not the point estimate: a study of a few thousand users measures an agreement of 0.80 to about
+-0.02, and a bar set where the estimate barely touches the target is a coin toss. Agreement is a
proportion, bounded by Wilson's score interval (``statsmodels.stats.proportion.proportion_confint``);
the ARI by a seeded percentile bootstrap over users (``scipy.stats.bootstrap``, paired).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import bootstrap
from sklearn.metrics import adjusted_rand_score
from statsmodels.stats.proportion import proportion_confint

__all__ = ["ThresholdPoint", "ThresholdStudy", "threshold_study"]

Metric = Literal["agreement", "ari"]


#: Bootstrap resamples for the ARI's lower bound (its percentile moves by well under 0.01 beyond this).
ARI_RESAMPLES = 200


@dataclass(frozen=True)
class ThresholdPoint:
    """One n of the curve; ``lower`` is the chosen metric's lower confidence bound (NaN without one)."""

    n: int
    n_users: int
    agreement: float
    ari: float
    lower: float = float("nan")


@dataclass(frozen=True)
class ThresholdStudy:
    """The curve and the choice. ``threshold`` is None with ``error="target_not_reached"``."""

    curve: tuple[ThresholdPoint, ...]
    target: float
    metric: Metric
    threshold: int | None
    error: Literal["target_not_reached", "no_data"] | None = None
    confidence: float | None = None

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([p.__dict__ for p in self.curve], columns=["n", "n_users", "agreement", "ari", "lower"])

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "metric": self.metric,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "error": self.error,
            "curve": [
                {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in vars(p).items()}
                for p in self.curve
            ],
        }


def threshold_study(
    n: np.ndarray | pd.Series,
    label_first_n: np.ndarray | pd.Series,
    label_all: np.ndarray | pd.Series,
    target: float = 0.8,
    metric: Metric = "agreement",
    confidence: float | None = 0.95,
    seed: int = 0,
) -> ThresholdStudy:
    """Agreement and ARI per n, and the smallest n whose metric (its lower bound at ``confidence``,
    one-sided; the estimate itself when None) stays >= ``target`` (module doc).

    ARI is NaN where fewer than two users share an n, or where it is undefined.
    """
    if metric not in ("agreement", "ari"):
        raise ValueError(f"metric must be 'agreement' or 'ari', got {metric!r}")
    if confidence is not None and not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1) or None, got {confidence!r}")
    n = np.asarray(n)
    a = np.asarray(label_first_n)
    b = np.asarray(label_all)
    if not (len(n) == len(a) == len(b)):
        raise ValueError(f"arrays differ in length: {len(n)}, {len(a)}, {len(b)}")
    if len(n) == 0:
        return ThresholdStudy((), target, metric, None, error="no_data", confidence=confidence)
    curve = []
    for value in np.unique(n):
        m = n == value
        ari = float(adjusted_rand_score(b[m], a[m])) if m.sum() >= 2 else float("nan")
        agree = int(np.sum(a[m] == b[m]))
        lower = float("nan")
        if confidence is not None and metric == "agreement":
            # one-sided bound at `confidence` = lower end of the two-sided interval at 2 * confidence - 1
            lower = float(proportion_confint(agree, int(m.sum()), alpha=2 * (1 - confidence), method="wilson")[0])
        elif confidence is not None and np.isfinite(ari):
            lower = _ari_lower(a[m], b[m], confidence, seed)
        curve.append(ThresholdPoint(int(value), int(m.sum()), agree / int(m.sum()), ari, lower))
    values = np.array([getattr(p, metric) if confidence is None else p.lower for p in curve], dtype=float)
    ok = np.nan_to_num(values, nan=-np.inf) >= target
    # suffix-all: ok_from[i] is True when every point from i onwards meets the target
    ok_from = np.logical_and.accumulate(ok[::-1])[::-1]
    hits = np.flatnonzero(ok_from)
    if len(hits) == 0:
        return ThresholdStudy(tuple(curve), target, metric, None, error="target_not_reached", confidence=confidence)
    return ThresholdStudy(tuple(curve), target, metric, curve[hits[0]].n, confidence=confidence)


def _ari_lower(first: np.ndarray, full: np.ndarray, confidence: float, seed: int) -> float:
    """One-sided percentile-bootstrap lower bound of the ARI, resampling users (pairs)."""
    if len(first) < 3:
        return float("nan")
    res = bootstrap((first, full), adjusted_rand_score, paired=True, vectorized=False, n_resamples=ARI_RESAMPLES,
                    confidence_level=confidence, alternative="greater", method="percentile",
                    rng=np.random.default_rng(seed))  # fmt: skip
    return float(res.confidence_interval.low)
