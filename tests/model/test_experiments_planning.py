"""Sample size, days and power against statsmodels' NormalIndPower (Cohen's h for rates, d for means)."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.power import NormalIndPower, zt_ind_solve_power
from statsmodels.stats.proportion import proportion_effectsize

from model.experiments import normal_test_power, plan_means, plan_proportions, power_means, power_proportions

SM_ALTERNATIVE = {"two-sided": "two-sided", "greater": "larger", "less": "smaller"}


@pytest.mark.parametrize(
    ("baseline", "mde", "mde_kind", "alternative", "ratio"),
    [
        (0.10, 0.10, "relative", "two-sided", 1.0),
        (0.03, 0.005, "absolute", "two-sided", 1.0),
        (0.25, 0.05, "relative", "greater", 2.0),
        (0.40, 0.02, "absolute", "less", 0.5),
    ],
)
def test_users_per_arm_for_a_rate_match_zt_ind_solve_power_with_cohens_h(
    baseline, mde, mde_kind, alternative, ratio
):
    plan = plan_proportions(
        baseline, mde, mde_kind, alpha=0.05, power=0.8, alternative=alternative, ratio=ratio
    )
    delta = mde * baseline if mde_kind == "relative" else mde
    treated = baseline - delta if alternative == "less" else baseline + delta
    h = proportion_effectsize(treated, baseline)
    expected = zt_ind_solve_power(
        effect_size=h, alpha=0.05, power=0.8, ratio=ratio, alternative=SM_ALTERNATIVE[alternative]
    )
    assert plan.effect_size == pytest.approx(h, rel=1e-12)
    assert plan.users_per_arm_exact == pytest.approx(expected, rel=1e-9)
    assert plan.users_per_arm == int(np.ceil(expected))
    assert plan.mde_abs == pytest.approx(treated - baseline, rel=1e-12)


@pytest.mark.parametrize(("alpha", "power"), [(0.05, 0.8), (0.01, 0.9), (0.1, 0.95)])
def test_users_per_arm_for_a_mean_match_zt_ind_solve_power_with_cohens_d(alpha, power):
    plan = plan_means(baseline=42.0, sd=60.0, mde=0.05, alpha=alpha, power=power)
    d = 42.0 * 0.05 / 60.0
    assert plan.effect_size == pytest.approx(d, rel=1e-12)
    assert plan.users_per_arm_exact == pytest.approx(
        zt_ind_solve_power(effect_size=d, alpha=alpha, power=power), rel=1e-9
    )


def test_days_divide_all_users_by_the_daily_traffic():
    plan = plan_means(baseline=10.0, sd=5.0, mde=0.5, mde_kind="absolute", daily_users=300, ratio=1.0)
    assert plan.users_total == 2 * plan.users_per_arm
    assert plan.days == int(np.ceil(plan.users_total / 300))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_power_curve_over_users_and_effects_matches_normal_ind_power(alternative):
    users = np.array([100.0, 1_000.0, 10_000.0, 50_000.0])
    h = np.array([0.01, 0.03, -0.02, 0.1])
    got = normal_test_power(h[:, None], users[None, :], 0.05, alternative, ratio=1.5)
    engine = NormalIndPower()
    for i, j in np.ndindex(got.shape):
        expected = engine.power(h[i], users[j], 0.05, ratio=1.5, alternative=SM_ALTERNATIVE[alternative])
        assert got[i, j] == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_power_at_the_planned_size_is_the_target_and_rises_with_users_and_effect():
    plan = plan_proportions(0.05, 0.1)
    assert power_proportions(0.05, 0.1, plan.users_per_arm_exact) == pytest.approx(0.8, abs=1e-9)
    by_users = power_proportions(0.05, 0.1, np.array([1_000, 10_000, 100_000]))
    by_effect = power_means(10.0, 4.0, np.array([0.01, 0.05, 0.1]), 5_000)
    assert np.all(np.diff(by_users) > 0) and np.all(np.diff(by_effect) > 0)


def test_impossible_plans_return_named_codes_instead_of_raising():
    assert plan_proportions(0.8, 0.5).warnings == ("rate_out_of_range",)
    zero = plan_means(10.0, 5.0, 0.0)
    assert (
        zero.warnings == ("zero_effect",)
        and zero.users_per_arm is None
        and zero.users_per_arm_exact == np.inf
    )
    assert plan_means(10.0, 0.0, 0.1).warnings == ("zero_effect",)
    no_traffic = plan_proportions(0.1, 0.1, daily_users=0)
    assert no_traffic.warnings == ("no_traffic",) and no_traffic.days is None and no_traffic.users_per_arm


def test_inconsistent_planning_arguments_are_programming_errors():
    with pytest.raises(ValueError, match="alpha < power"):
        plan_proportions(0.1, 0.1, alpha=0.5, power=0.4)
    with pytest.raises(ValueError, match="magnitude"):
        plan_proportions(0.1, -0.1)
