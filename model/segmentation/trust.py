"""Per-user trust: the estimated chance that today's segment is the one the full history would give.

Learned from the truncation study (``model.segmentation.threshold``): for users with long histories,
each row is (n events seen, the assignment confidence from those n events, whether that segment equals
the one from all their events). A logistic regression of the agreement on ``ln(n)`` and the
confidence (``sklearn.linear_model.LogisticRegression``; three numbers) is the trust figure; the light
scorer applies it with numpy (:func:`trust_from_dict`), so ``shoplens predict`` and the batch scores
report the same value. Logistic regression is well calibrated on the data it was fitted on by
construction (its score equations make mean predicted = observed agreement, overall and along each
input), which is what a "chance" needs; the report shows the calibration per decile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

__all__ = ["TrustModel", "fit_trust", "trust_from_dict"]


@dataclass(frozen=True)
class TrustModel:
    """``trust = 1 / (1 + exp(-(intercept + coef_log_n * ln(n) + coef_confidence * confidence)))``."""

    intercept: float
    coef_log_n: float
    coef_confidence: float

    def predict(self, n_events: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Trust in [0, 1] per row; NaN where the confidence is NaN (no segment)."""
        n = np.maximum(np.nan_to_num(np.asarray(n_events, dtype=float), nan=1.0), 1.0)
        z = self.intercept + self.coef_log_n * np.log(n) + self.coef_confidence * np.asarray(confidence, dtype=float)
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, float]:
        return {"intercept": self.intercept, "coef_log_n": self.coef_log_n, "coef_confidence": self.coef_confidence}


def fit_trust(n_events: np.ndarray, confidence: np.ndarray, agree: np.ndarray, seed: int = 0) -> TrustModel:
    """Fit the trust model on truncation-study rows (``agree`` = first-n segment equals full segment)."""
    n = np.asarray(n_events, dtype=float)
    c = np.asarray(confidence, dtype=float)
    y = np.asarray(agree, dtype=bool)
    if len(y) == 0 or y.all() or not y.any():
        rate = float(y.mean()) if len(y) else 0.5
        rate = min(max(rate, 1e-3), 1 - 1e-3)
        return TrustModel(float(np.log(rate / (1 - rate))), 0.0, 0.0)
    X = np.c_[np.log(np.maximum(n, 1.0)), c]
    lr = LogisticRegression(C=1e4, random_state=seed, max_iter=1000).fit(X, y)
    return TrustModel(float(lr.intercept_[0]), float(lr.coef_[0, 0]), float(lr.coef_[0, 1]))


def trust_from_dict(d: Mapping | None) -> TrustModel | None:
    """The trust model of an artifact's ``trust`` entry (None when the artifact has none)."""
    if not d:
        return None
    return TrustModel(float(d["intercept"]), float(d["coef_log_n"]), float(d["coef_confidence"]))


def calibration_table(trust: np.ndarray, agree: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean predicted trust vs observed agreement per trust decile (for the model report)."""
    t = np.asarray(trust, dtype=float)
    y = np.asarray(agree, dtype=float)
    if len(t) == 0:
        return []
    edges = np.unique(np.quantile(t, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for b in np.unique(idx):
        m = idx == b
        out.append({"trust_mean": float(t[m].mean()), "agreement": float(y[m].mean()), "users": int(m.sum())})
    return out


__all__ += ["calibration_table"]
