"""Frequentist comparison of a variant with control: lifts, intervals, p-values.

Every formula is plain numpy, so the same code tests one comparison (floats) or thousands of
simulated ones at once (arrays); the simulation and the peeking study rely on that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

Alternative = Literal["two-sided", "greater", "less"]
TestName = Literal["two_proportion_z", "wald_z", "welch_t"]
FloatArray = float | NDArray[np.float64]


@dataclass(frozen=True)
class Hypothesis:
    """What "the variant differs" means, for variant minus control.

    ``alternative="greater"`` tests that the variant is higher; with ``margin > 0`` it becomes the
    non-inferiority test H0: diff <= -margin (the variant is worse by more than the margin). With
    ``"less"`` (lower is better) H0 is diff >= +margin. The margin is in the metric's own units.
    """

    alternative: Alternative = "two-sided"
    margin: float = 0.0
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.margin < 0.0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.margin > 0.0 and self.alternative == "two-sided":
            raise ValueError("a non-inferiority margin needs a one-sided alternative ('greater' or 'less')")

    @property
    def null_difference(self) -> float:
        """The difference under H0: -margin when higher is better, +margin when lower is better."""
        return -self.margin if self.alternative == "greater" else self.margin


@dataclass(frozen=True)
class ArmSummary:
    """Users, mean and per-user variance of one arm: all a comparison reads (fields may be arrays)."""

    n: FloatArray
    mean: FloatArray
    variance: FloatArray


@dataclass(frozen=True)
class FrequentistResult:
    """Absolute and relative lift of variant over control with intervals and the test of ``Hypothesis``."""

    test: TestName
    lift_abs: FloatArray
    se: FloatArray
    df: FloatArray
    statistic: FloatArray
    p_value: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    lift_rel: FloatArray
    rel_ci_low: FloatArray
    rel_ci_high: FloatArray


def p_value(statistic: FloatArray, df: FloatArray, alternative: Alternative) -> FloatArray:
    """Tail probability of a t (df=inf: standard normal) statistic under H0."""
    if alternative == "two-sided":
        return 2.0 * stats.t.sf(np.abs(statistic), df)
    if alternative == "greater":
        return stats.t.sf(statistic, df)
    return stats.t.cdf(statistic, df)


def critical_value(alpha: float, df: FloatArray, alternative: Alternative) -> FloatArray:
    return stats.t.isf(alpha / 2.0 if alternative == "two-sided" else alpha, df)


def interval(
    estimate: FloatArray, se: FloatArray, crit: FloatArray, alternative: Alternative
) -> tuple[FloatArray, FloatArray]:
    """Two-sided estimate ± crit·se, or the one-sided bound that matches the one-sided test."""
    low = estimate - crit * se if alternative != "less" else np.full_like(np.asarray(estimate), -np.inf)
    high = estimate + crit * se if alternative != "greater" else np.full_like(np.asarray(estimate), np.inf)
    return low, high


def pooled_se(control: ArmSummary, variant: ArmSummary) -> FloatArray:
    """SE of p_b - p_a under H0: p_a = p_b, sqrt(p(1-p)(1/n_a + 1/n_b)) with the pooled rate p.

    Source: the two-proportion z-test, e.g. Agresti, Categorical Data Analysis (3rd ed.), §3.1.3.
    """
    n = control.n + variant.n
    p = (control.n * control.mean + variant.n * variant.mean) / n
    return np.sqrt(p * (1.0 - p) * (1.0 / control.n + 1.0 / variant.n))


def welch_df(control: ArmSummary, variant: ArmSummary) -> FloatArray:
    """Welch-Satterthwaite degrees of freedom (Welch 1947, eq. 9; Satterthwaite 1946)."""
    qa, qb = control.variance / control.n, variant.variance / variant.n
    return (qa + qb) ** 2 / (qa**2 / (control.n - 1) + qb**2 / (variant.n - 1))


def relative_lift(control: ArmSummary, variant: ArmSummary) -> tuple[FloatArray, FloatArray]:
    """m_b/m_a - 1 and its delta-method SE.

    Var(m_b/m_a) ≈ v_b/(n_b m_a²) + m_b² v_a/(n_a m_a⁴) (first-order Taylor expansion of the ratio;
    Casella & Berger, Statistical Inference, §5.5.4; the form gbstats uses for relative lift).
    """
    ma, mb = control.mean, variant.mean
    var = variant.variance / (variant.n * ma**2) + mb**2 * control.variance / (control.n * ma**4)
    return mb / ma - 1.0, np.sqrt(var)


def _as_arrays(arm: ArmSummary) -> ArmSummary:
    return ArmSummary(*(np.asarray(v, dtype=np.float64) for v in (arm.n, arm.mean, arm.variance)))


def frequentist_test(
    control: ArmSummary, variant: ArmSummary, hypothesis: Hypothesis, test: TestName
) -> FrequentistResult:
    """Lift of ``variant`` over ``control`` with the chosen test; degenerate inputs give nan, not errors.

    ``two_proportion_z`` uses the pooled SE for the statistic (H0: equal rates) and the unpooled Wald
    SE for the interval; with a non-inferiority margin H0 no longer says the rates are equal, so the
    statistic falls back to the Wald SE (reported as ``wald_z``). ``welch_t`` is Welch's unequal-
    variance t-test; ``wald_z`` is a z-test on the unpooled SE (used for CUPED-adjusted conversions).
    """
    control, variant = (_as_arrays(arm) for arm in (control, variant))  # nan/inf instead of ZeroDivisionError
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = variant.mean - control.mean
        se = np.sqrt(control.variance / control.n + variant.variance / variant.n)  # Wald SE of diff
        df = welch_df(control, variant) if test == "welch_t" else np.full_like(np.asarray(diff), np.inf)
        if test == "two_proportion_z" and hypothesis.null_difference != 0.0:
            test = "wald_z"
        se_stat = pooled_se(control, variant) if test == "two_proportion_z" else se
        statistic = (diff - hypothesis.null_difference) / se_stat
        p = p_value(statistic, df, hypothesis.alternative)
        crit = critical_value(hypothesis.alpha, df, hypothesis.alternative)
        ci_low, ci_high = interval(diff, se, crit, hypothesis.alternative)
        rel, rel_se = relative_lift(control, variant)
        rel_low, rel_high = interval(rel, rel_se, crit, hypothesis.alternative)
    return FrequentistResult(
        test=test,
        lift_abs=diff,
        se=se,
        df=df,
        statistic=statistic,
        p_value=p,
        ci_low=ci_low,
        ci_high=ci_high,
        lift_rel=rel,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
    )
