"""How much to believe each channel's ROI: what the data moved, and what the spend pattern allows.

Per channel, from the posterior draws and the spend (numpy + scipy, no PyMC):

- ``prior_overlap``: overlap coefficient ``integral min(prior, posterior)`` of the ROI's prior
  (LogNormal, see :data:`model.mmm.fit.ROI_PRIOR`) and its posterior, on log ROI (1 = the data said
  nothing, 0 = the posterior left the prior entirely). The posterior density is a Gaussian KDE.
- ``max_spend_corr`` / ``most_correlated``: the largest absolute Pearson correlation of the channel's
  weekly spend with another channel's (a channel that always spends with another cannot be told from it);
- ``spend_cv``: coefficient of variation of its weekly spend (a near-constant channel is the baseline);
- ``spend_drift``: share of its weekly spend's variance that a cubic in time explains (:func:`spend_drift`):
  a channel whose spend mostly drifts slowly (a random walk) moves like a change in the base does
  (a growing or shrinking customer base), which the model's smooth customer-base level also follows, so
  its ROI rests on the base being modelled right;
- ``roi_rel_width``: width of the 90% ROI interval over its median.

A channel is ``identifiable`` only if none of :data:`LIMITS` is crossed; otherwise ``reasons`` says
which. The thresholds are conventions stated here, not fitted: an overlap above one half means the
posterior is still mostly the prior; a correlation of 0.9 leaves 19% of one channel's spend variance
that the other does not share; a 10% coefficient of variation is about what weekly noise alone makes;
an interval wider than the estimate itself (say 0.5x to 1.5x of it) cannot tell a channel that returns
twice as much as another from one that returns half as much. (That last limit was 2.0 until the event
path of the recovery study showed channels 45-85% off with intervals 1.3-1.9x their estimate.) A drift
share above one half means most of the spend's movement is slow. (Added when the event path, whose
customer base shrinks by more than half over two years, put the random-walk channel at 0.28x to 10x
its true ROI, its interval missing the truth on 13 of 20 seeds: benchmarks/results/mmm_recovery.md.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from model.mmm.posterior import Posterior, quantiles

LIMITS = {"prior_overlap": 0.5, "max_spend_corr": 0.9, "spend_cv": 0.1, "roi_rel_width": 1.0, "spend_drift": 0.5}
DRIFT_DEGREE = 3  # a cubic in time: slow movement over the fitted period, not seasons or flights


def prior_overlap(draws: np.ndarray, mu: float, sigma: float, grid: int = 512) -> float:
    """Overlap of the LogNormal(mu, sigma) prior and the posterior draws' density, on log scale."""
    z = np.log(np.asarray(draws, dtype=float))
    z = z[np.isfinite(z)]
    if len(z) < 2 or np.ptp(z) == 0:
        return 0.0
    lo = min(mu - 5 * sigma, z.min() - 1.0)
    hi = max(mu + 5 * sigma, z.max() + 1.0)
    x = np.linspace(lo, hi, grid)
    post = stats.gaussian_kde(z)(x)
    prior = stats.norm.pdf(x, mu, sigma)
    return float(np.trapezoid(np.minimum(post, prior), x))


def spend_correlations(spend: np.ndarray) -> np.ndarray:
    """Absolute Pearson correlations between channels' weekly spend ``(C, C)``, diagonal 0."""
    spend = np.asarray(spend, dtype=float)
    sd = spend.std(axis=0)
    z = np.where(sd > 0, (spend - spend.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)
    corr = np.abs(z.T @ z / len(spend))
    np.fill_diagonal(corr, 0.0)
    return corr


def spend_drift(spend: np.ndarray, degree: int = DRIFT_DEGREE) -> np.ndarray:
    """Per channel ``(C,)``: R^2 of its weekly spend on Legendre polynomials of time up to ``degree``
    (0 for a constant channel)."""
    spend = np.asarray(spend, dtype=float)
    basis = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, len(spend)), degree)
    coef, *_ = np.linalg.lstsq(basis, spend, rcond=None)
    var = spend.var(axis=0)
    resid = (spend - basis @ coef).var(axis=0)
    return np.where(var > 0, 1.0 - resid / np.where(var > 0, var, 1.0), 0.0)


def reasons_for(row: dict) -> list[str]:
    """Why a channel's ROI is not identifiable (empty: it is), from the figures of :func:`channel_trust`."""
    reasons = []
    if row["prior_overlap"] > LIMITS["prior_overlap"]:
        reasons.append(f"posterior overlaps the prior by {row['prior_overlap']:.0%} (the data say little)")
    if row["max_spend_corr"] >= LIMITS["max_spend_corr"]:
        reasons.append(f"spend moves with {row['most_correlated']} (correlation {row['max_spend_corr']:.2f})")
    if row["spend_cv"] < LIMITS["spend_cv"]:
        reasons.append(f"spend barely varies (coefficient of variation {row['spend_cv']:.0%})")
    if row["roi_rel_width"] > LIMITS["roi_rel_width"]:
        reasons.append(f"90% interval {row['roi_rel_width']:.1f}x as wide as the estimate")
    if row.get("spend_drift", 0.0) > LIMITS["spend_drift"]:
        reasons.append(f"spend drifts slowly ({row['spend_drift']:.0%} of its variance), as a change in the "
                       "base can: its ROI rests on the base being modelled right")
    return reasons


def channel_trust(post: Posterior, spend: np.ndarray) -> pd.DataFrame:
    """Per channel: the five figures of the module docstring, ``identifiable`` and its ``reasons``."""
    spend = np.asarray(spend, dtype=float)
    roi_prior = post.roi_prior
    _, roi = post.roi(spend)
    lo, mid, hi = quantiles(roi)
    corr = spend_correlations(spend)
    mean = spend.mean(axis=0)
    cv = np.where(mean > 0, spend.std(axis=0) / np.where(mean > 0, mean, 1.0), 0.0)
    drift = spend_drift(spend)
    rows = []
    for j, ch in enumerate(post.channels):
        k = int(np.argmax(corr[j])) if len(post.channels) > 1 else j
        row = {"channel": ch,
               "prior_overlap": prior_overlap(roi[:, j], *roi_prior) if roi_prior else float("nan"),
               "max_spend_corr": float(corr[j, k]),
               "most_correlated": post.channels[k] if k != j else None,
               "spend_cv": float(cv[j]),
               "spend_drift": float(drift[j]),
               "roi_rel_width": float((hi[j] - lo[j]) / mid[j]) if mid[j] > 0 else float("inf")}
        reasons = reasons_for(row)
        rows.append({**row, "identifiable": not reasons, "reasons": "; ".join(reasons)})
    return pd.DataFrame(rows)


__all__ = ["DRIFT_DEGREE", "LIMITS", "channel_trust", "prior_overlap", "reasons_for", "spend_correlations",
           "spend_drift"]
