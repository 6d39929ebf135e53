"""CUPED: remove the part of a metric that the pre-period covariate already predicts.

Source: Deng, Xu, Kohavi & Walker, "Improving the Sensitivity of Online Controlled Experiments by
Utilizing Pre-Experiment Data" (WSDM 2013), §3: Y_cv = Y - θ(X - E[X]) with θ = cov(Y, X) / var(X)
keeps the mean difference unbiased and has variance var(Y)(1 - rho²).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from model.experiments.frequentist import ArmSummary
from model.experiments.sufficient import CovariateStats

CupedCode = Literal["cuped_constant_covariate"]


@dataclass(frozen=True)
class CupedAdjustment:
    """θ, both arms' adjusted summaries, and the share of the lift's variance CUPED removed."""

    theta: float
    control: ArmSummary
    variant: ArmSummary
    variance_reduction: float
    warnings: tuple[CupedCode, ...] = field(default=())


def _summary(stats: CovariateStats) -> ArmSummary:
    return ArmSummary(stats.n, stats.mean, stats.variance)


def cuped(control: CovariateStats, variant: CovariateStats) -> CupedAdjustment:
    """Adjust both arms with one θ estimated on the pooled statistics of the two arms (as gbstats does).

    Arm mean: ȳ - θ(x̄ - x̄_pooled); per-user variance: var(Y) + θ²var(X) - 2θ·cov(Y, X) within the arm.
    A covariate without variance cannot predict anything: the arms are returned unadjusted with a code.
    """
    pooled = control + variant
    var_x = pooled.pre.variance
    if not np.isfinite(var_x) or var_x <= 0.0:
        return CupedAdjustment(0.0, _summary(control), _summary(variant), 0.0, ("cuped_constant_covariate",))
    theta = pooled.covariance / var_x
    x_bar = pooled.pre.mean

    def adjust(arm: CovariateStats) -> ArmSummary:
        variance = arm.variance + theta**2 * arm.pre.variance - 2.0 * theta * arm.covariance
        return ArmSummary(arm.n, arm.mean - theta * (arm.pre.mean - x_bar), max(variance, 0.0))

    adj_c, adj_v = adjust(control), adjust(variant)
    raw = control.variance / control.n + variant.variance / variant.n
    adjusted = adj_c.variance / adj_c.n + adj_v.variance / adj_v.n
    reduction = 1.0 - adjusted / raw if raw > 0 else 0.0
    return CupedAdjustment(float(theta), adj_c, adj_v, float(reduction))
