"""How many users and days an experiment needs, and how much power it has.

Power follows statsmodels' ``NormalIndPower`` (a normal test on a standardized effect, both tails
counted for two-sided tests), with the effect standardized as Cohen's h = 2·asin√p₁ - 2·asin√p₀
for conversions (statsmodels ``proportion_effectsize``, the arcsine variance-stabilizing transform)
and Cohen's d = Δ/sigma for means. Source: Cohen, Statistical Power Analysis for the Behavioral
Sciences (2nd ed., 1988), §2.2 and §6.2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import optimize, stats

from model.experiments.frequentist import Alternative, FloatArray
from model.experiments.sufficient import MetricKind

MdeKind = Literal["absolute", "relative"]
PlanCode = Literal["zero_effect", "rate_out_of_range", "no_traffic"]


@dataclass(frozen=True)
class SampleSizePlan:
    """Users per arm (control; the variant gets ``ratio`` times as many) and days for an effect."""

    kind: MetricKind
    baseline: float
    mde_abs: float
    mde_rel: float
    effect_size: float
    users_per_arm_exact: float
    users_per_arm: int | None
    users_total: int | None
    days: int | None
    alpha: float
    power: float
    alternative: Alternative
    ratio: float
    warnings: tuple[PlanCode, ...] = field(default=())


def normal_test_power(
    effect_size: FloatArray,
    users_per_arm: FloatArray,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    ratio: float = 1.0,
) -> FloatArray:
    """Power of a normal test of a standardized effect with ``users_per_arm`` control users.

    Effective n = n₁n₂/(n₁+n₂); power = P(Z > c - d√n) [+ P(Z < -c - d√n) when two-sided].
    """
    n_eff = np.asarray(users_per_arm, dtype=np.float64) * ratio / (1.0 + ratio)
    shift = np.asarray(effect_size) * np.sqrt(n_eff)
    crit = stats.norm.isf(alpha / 2.0 if alternative == "two-sided" else alpha)
    upper = stats.norm.sf(crit - shift) if alternative != "less" else 0.0
    lower = stats.norm.cdf(-crit - shift) if alternative != "greater" else 0.0
    return upper + lower


def cohens_h(baseline: FloatArray, treated: FloatArray) -> FloatArray:
    return 2.0 * np.arcsin(np.sqrt(treated)) - 2.0 * np.arcsin(np.sqrt(baseline))


def _treated(baseline: float, mde: FloatArray, mde_kind: MdeKind, alternative: Alternative) -> FloatArray:
    """The metric under the alternative: ``mde`` is a magnitude, applied downwards for ``"less"``."""
    if np.any(np.asarray(mde) < 0):
        raise ValueError("mde is a magnitude (>= 0); the direction comes from the alternative")
    delta = np.asarray(mde) * (baseline if mde_kind == "relative" else 1.0)
    return baseline - delta if alternative == "less" else baseline + delta


def power_proportions(
    baseline: float,
    mde: FloatArray,
    users_per_arm: FloatArray,
    mde_kind: MdeKind = "relative",
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    ratio: float = 1.0,
) -> FloatArray:
    """Power curve for a conversion rate: broadcast over effects, users per arm, or both."""
    h = cohens_h(baseline, _treated(baseline, mde, mde_kind, alternative))
    return normal_test_power(h, users_per_arm, alpha, alternative, ratio)


def power_means(
    baseline: float,
    sd: float,
    mde: FloatArray,
    users_per_arm: FloatArray,
    mde_kind: MdeKind = "relative",
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    ratio: float = 1.0,
) -> FloatArray:
    """Power curve for a mean with per-user standard deviation ``sd`` (Cohen's d = Δ/sd)."""
    d = (_treated(baseline, mde, mde_kind, alternative) - baseline) / sd
    return normal_test_power(d, users_per_arm, alpha, alternative, ratio)


def _solve_users(
    effect_size: float, alpha: float, target: float, alternative: Alternative, ratio: float
) -> float:
    """The users per arm at which ``power`` reaches ``target`` (root of a monotone function, brentq)."""
    z_a = stats.norm.isf(alpha / 2.0 if alternative == "two-sided" else alpha)
    one_tail = ((z_a + stats.norm.ppf(target)) / effect_size) ** 2 * (1.0 + 1.0 / ratio)
    return optimize.brentq(
        lambda n: normal_test_power(effect_size, n, alpha, alternative, ratio) - target,
        1e-9,
        2.0 * one_tail,
        xtol=1e-10,
        rtol=4 * np.finfo(float).eps,
    )


def _plan(
    kind: MetricKind,
    baseline: float,
    treated: float,
    effect_size: float,
    alpha: float,
    target: float,
    alternative: Alternative,
    ratio: float,
    daily_users: float | None,
    codes: tuple[PlanCode, ...],
) -> SampleSizePlan:
    if not 0.0 < alpha < target < 1.0:
        raise ValueError(f"need 0 < alpha < power < 1, got alpha={alpha}, power={target}")
    solvable = not codes and np.isfinite(effect_size) and effect_size != 0.0
    if not codes and not solvable:
        codes = ("zero_effect",)
    exact = _solve_users(effect_size, alpha, target, alternative, ratio) if solvable else float("inf")
    per_arm = math.ceil(exact) if solvable else None
    total = per_arm + math.ceil(per_arm * ratio) if per_arm is not None else None
    if total is not None and daily_users is not None and daily_users <= 0:
        codes = ("no_traffic",)
    days = math.ceil(total / daily_users) if total is not None and daily_users and daily_users > 0 else None
    return SampleSizePlan(
        kind=kind,
        baseline=baseline,
        mde_abs=treated - baseline,
        mde_rel=(treated - baseline) / baseline if baseline else float("nan"),
        effect_size=effect_size,
        users_per_arm_exact=exact,
        users_per_arm=per_arm,
        users_total=total,
        days=days,
        alpha=alpha,
        power=target,
        alternative=alternative,
        ratio=ratio,
        warnings=codes,
    )


def plan_proportions(
    baseline: float,
    mde: float,
    mde_kind: MdeKind = "relative",
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "two-sided",
    ratio: float = 1.0,
    daily_users: float | None = None,
) -> SampleSizePlan:
    """Users per arm (and days at ``daily_users`` entering the experiment per day) to detect ``mde``.

    Equals ``statsmodels.stats.power.zt_ind_solve_power(proportion_effectsize(p₁, p₀), ...)``.
    A rate pushed outside (0, 1) by the effect returns a plan with ``rate_out_of_range``.
    """
    treated = float(_treated(baseline, mde, mde_kind, alternative))
    ok = 0.0 < baseline < 1.0 and 0.0 < treated < 1.0
    h = float(cohens_h(baseline, treated)) if ok else float("nan")
    codes: tuple[PlanCode, ...] = () if ok else ("rate_out_of_range",)
    return _plan("conversion", baseline, treated, h, alpha, power, alternative, ratio, daily_users, codes)


def plan_means(
    baseline: float,
    sd: float,
    mde: float,
    mde_kind: MdeKind = "relative",
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "two-sided",
    ratio: float = 1.0,
    daily_users: float | None = None,
) -> SampleSizePlan:
    """Users per arm and days to detect ``mde`` on a mean with per-user standard deviation ``sd``.

    Equals ``zt_ind_solve_power(effect_size=Δ/sd, ...)`` (Cohen's d); a zero ``sd`` or ``mde`` returns
    a plan with ``zero_effect`` (d would be undefined or zero).
    """
    treated = float(_treated(baseline, mde, mde_kind, alternative))
    d = (treated - baseline) / sd if sd > 0 else float("nan")
    return _plan("continuous", baseline, treated, d, alpha, power, alternative, ratio, daily_users, ())
