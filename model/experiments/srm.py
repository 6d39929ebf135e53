"""Sample-ratio mismatch: did assignment deliver the planned split?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats

SrmCode = Literal["srm_detected", "srm_not_testable"]

#: Conventional SRM threshold (Fabijan et al., "Diagnosing Sample Ratio Mismatch", KDD 2019).
SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class SrmResult:
    """Pearson chi-square of observed users per variant against the planned split."""

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    threshold: float
    warnings: tuple[SrmCode, ...] = field(default=())

    @property
    def mismatch(self) -> bool:
        return "srm_detected" in self.warnings


def sample_ratio_mismatch(
    observed: Mapping[str, int],
    planned: Mapping[str, float] | None = None,
    threshold: float = SRM_THRESHOLD,
) -> SrmResult:
    """Chi-square goodness of fit (scipy.stats.chisquare) of users per variant; equal split by default.

    ``planned`` holds relative weights (e.g. ``{"control": 50, "promo": 50}``). Fewer than two arms,
    no users, or a variant that was not planned cannot be tested and say so instead of raising.
    """
    names = list(observed)
    counts = np.array([observed[v] for v in names], dtype=np.float64)
    weights = np.array([1.0 if planned is None else planned.get(v, 0.0) for v in names], dtype=np.float64)
    total = counts.sum()
    expected = total * weights / weights.sum() if weights.sum() > 0 else np.zeros_like(counts)
    observed_out = {v: int(c) for v, c in zip(names, counts, strict=True)}
    expected_out = {v: float(e) for v, e in zip(names, expected, strict=True)}
    if len(names) < 2 or total == 0 or np.any(expected == 0):
        return SrmResult(
            observed_out, expected_out, float("nan"), float("nan"), threshold, ("srm_not_testable",)
        )
    result = stats.chisquare(counts, expected)
    p = float(result.pvalue)
    codes: tuple[SrmCode, ...] = ("srm_detected",) if p < threshold else ()
    return SrmResult(observed_out, expected_out, float(result.statistic), p, threshold, codes)
