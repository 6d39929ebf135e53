"""How many events before a segment can be trusted: the agreement curve and the chosen threshold.

Input: for users with long histories, one row per (user, n) with the segment computed from the
user's first n events and the segment from all of their events (same model, so ids are comparable).
Per n: ``agreement`` = share of users whose two segments are equal, and the adjusted Rand index
(Hubert & Arabie 1985; ``sklearn.metrics.adjusted_rand_score``), which discounts chance agreement.

The threshold is the smallest n from which the chosen metric stays >= ``target`` for every larger n
studied. "Stays" rather than "first reaches": a single lucky point on a noisy curve followed by a
dip should not set the bar. On a monotone curve both readings give the same n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

__all__ = ["ThresholdPoint", "ThresholdStudy", "threshold_study"]

Metric = Literal["agreement", "ari"]


@dataclass(frozen=True)
class ThresholdPoint:
    n: int
    n_users: int
    agreement: float
    ari: float


@dataclass(frozen=True)
class ThresholdStudy:
    """The curve and the choice. ``threshold`` is None with ``error="target_not_reached"``."""

    curve: tuple[ThresholdPoint, ...]
    target: float
    metric: Metric
    threshold: int | None
    error: Literal["target_not_reached", "no_data"] | None = None

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([p.__dict__ for p in self.curve], columns=["n", "n_users", "agreement", "ari"])

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "metric": self.metric,
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
) -> ThresholdStudy:
    """Agreement and ARI per n, and the smallest n whose metric stays >= ``target`` (module doc).

    ARI is NaN where fewer than two users share an n, or where it is undefined.
    """
    if metric not in ("agreement", "ari"):
        raise ValueError(f"metric must be 'agreement' or 'ari', got {metric!r}")
    n = np.asarray(n)
    a = np.asarray(label_first_n)
    b = np.asarray(label_all)
    if not (len(n) == len(a) == len(b)):
        raise ValueError(f"arrays differ in length: {len(n)}, {len(a)}, {len(b)}")
    if len(n) == 0:
        return ThresholdStudy(curve=(), target=target, metric=metric, threshold=None, error="no_data")
    curve = []
    for value in np.unique(n):
        m = n == value
        ari = float(adjusted_rand_score(b[m], a[m])) if m.sum() >= 2 else float("nan")
        agreement = float(np.mean(a[m] == b[m]))
        curve.append(ThresholdPoint(n=int(value), n_users=int(m.sum()), agreement=agreement, ari=ari))
    values = np.array([getattr(p, metric) for p in curve], dtype=float)
    ok = np.nan_to_num(values, nan=-np.inf) >= target
    # suffix-all: ok_from[i] is True when every point from i onwards meets the target
    ok_from = np.logical_and.accumulate(ok[::-1])[::-1]
    hits = np.flatnonzero(ok_from)
    if len(hits) == 0:
        return ThresholdStudy(tuple(curve), target, metric, None, error="target_not_reached")
    return ThresholdStudy(tuple(curve), target, metric, curve[hits[0]].n)
