"""False positives, peeking and promotion scenarios, by vectorized simulation (each test a second or less)."""

from __future__ import annotations

import numpy as np
import pytest

from model.experiments import (
    ArmSummary,
    Hypothesis,
    Population,
    Scenario,
    always_valid_p_value,
    confidence_sequence_halfwidth,
    frequentist_test,
    simulate_promotion,
)

EXPERIMENTS = 2_000
NOMINAL = (0.035, 0.065)


def _arms(n: np.ndarray, sums: np.ndarray, sum_squares: np.ndarray) -> list[ArmSummary]:
    mean = sums / n
    return [ArmSummary(n[a], mean[a], (sum_squares[a] - sums[a] ** 2 / n[a]) / (n[a] - 1)) for a in (0, 1)]


def test_aa_conversion_tests_reject_about_five_percent_of_the_time():
    rng = np.random.default_rng(11)
    n = np.full((2, EXPERIMENTS), 4_000.0)
    conversions = rng.binomial(4_000, 0.07, size=(2, EXPERIMENTS)).astype(float)
    rate = conversions / n
    control, variant = (ArmSummary(n[a], rate[a], rate[a] * (1 - rate[a])) for a in (0, 1))
    result = frequentist_test(control, variant, Hypothesis(), "two_proportion_z")
    assert NOMINAL[0] <= np.mean(result.p_value < 0.05) <= NOMINAL[1]


def test_aa_welch_tests_on_skewed_revenue_reject_about_five_percent_of_the_time():
    rng = np.random.default_rng(12)
    revenue = rng.gamma(0.5, 40.0, size=(2, EXPERIMENTS, 500))
    n = np.full((2, EXPERIMENTS), 500.0)
    control, variant = _arms(n, revenue.sum(axis=2), (revenue**2).sum(axis=2))
    result = frequentist_test(control, variant, Hypothesis(), "welch_t")
    assert NOMINAL[0] <= np.mean(result.p_value < 0.05) <= NOMINAL[1]


def test_daily_peeking_inflates_the_naive_test_but_not_the_confidence_sequence():
    rng = np.random.default_rng(13)
    days, per_day = 30, 200
    daily = rng.normal(20.0, 15.0, size=(2, EXPERIMENTS, days, per_day))
    n = np.cumsum(np.full((2, EXPERIMENTS, days), float(per_day)), axis=2)
    sums, squares = np.cumsum(daily.sum(axis=3), axis=2), np.cumsum((daily**2).sum(axis=3), axis=2)
    control, variant = _arms(n, sums, squares)
    result = frequentist_test(control, variant, Hypothesis(), "welch_t")
    naive = np.mean((result.p_value < 0.05).any(axis=1))
    p_seq = always_valid_p_value(result.lift_abs, result.se, n[0] + n[1], 0.05)
    sequential = np.mean((p_seq < 0.05).any(axis=1))
    assert naive > 0.15  # about four times the nominal rate
    assert sequential <= 0.05
    half = confidence_sequence_halfwidth(result.se, n[0] + n[1], 0.05)
    np.testing.assert_array_equal(p_seq < 0.05, np.abs(result.lift_abs) > half)  # test = interval excludes 0


def test_confidence_sequence_is_the_gaussian_mixture_boundary_tightest_at_the_tuning_size():
    se, n, alpha, tuning = 0.02, 5_000.0, 0.05, 5_000.0
    rho2 = (-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / tuning
    sigma = se * np.sqrt(n)
    expected = sigma * np.sqrt(2 * (n * rho2 + 1) / (n**2 * rho2) * np.log(np.sqrt(n * rho2 + 1) / alpha))
    assert confidence_sequence_halfwidth(se, n, alpha, tuning) == pytest.approx(expected, rel=1e-12)
    # at a fixed per-user sd the width scaled by √N is smallest near N = tuning
    sizes = np.array([500.0, 5_000.0, 50_000.0])
    scaled = confidence_sequence_halfwidth(sigma / np.sqrt(sizes), sizes, alpha, tuning) * np.sqrt(sizes)
    assert scaled[1] < scaled[0] and scaled[1] < scaled[2]


@pytest.fixture(scope="module")
def shoppers() -> Population:
    """Heterogeneous users: loyal customers convert often, new visitors rarely."""
    rng = np.random.default_rng(14)
    segment = np.where(rng.random(6_000) < 0.4, "loyal", "new")
    rate = np.where(segment == "loyal", rng.beta(4, 20, 6_000), rng.beta(1, 40, 6_000))
    return Population(rate, rng.lognormal(3.5, 0.6, 6_000), segment)


def test_a_promotion_with_no_effect_is_an_aa_test(shoppers):
    result = simulate_promotion(shoppers, Scenario(exposed_share=0.5), repetitions=EXPERIMENTS, seed=15)
    for response in result.overall:
        assert response.true_lift == 0.0
        assert NOMINAL[0] <= response.power <= NOMINAL[1], response
        assert abs(response.mean_estimated_lift) < 0.03  # a ratio of noisy means is biased up by ~CV²


def test_a_promotion_on_one_segment_is_found_in_that_segment_with_an_unbiased_lift(shoppers):
    scenario = Scenario(exposed_share=0.5, conversion_lift={"loyal": 0.4}, revenue_lift={"loyal": 0.1})
    result = simulate_promotion(shoppers, scenario, repetitions=400, seed=16)
    by = {(r.metric, r.segment): r for r in result.segments}
    assert by["conversion", "loyal"].power > 0.9
    assert by["conversion", "new"].power < 0.1 and by["conversion", "new"].true_lift == 0.0
    assert by["revenue", "loyal"].true_lift == pytest.approx(1.4 * 1.1 - 1, rel=1e-12)
    overall = {r.metric: r for r in result.overall}
    # revenue is noisier, so its ratio estimate carries more of the ~CV² upward bias of a ratio of means
    for metric, tolerance in (("conversion", 0.03), ("revenue", 0.04)):
        response = overall[metric]
        assert response.mean_estimated_lift == pytest.approx(response.true_lift, abs=tolerance)
        assert 0.9 <= response.coverage <= 0.98
    assert result.estimated_lifts["conversion"].shape == (400,)


def test_an_unbalanced_exposure_still_keeps_the_false_positive_rate(shoppers):
    result = simulate_promotion(shoppers, Scenario(exposed_share=0.1), repetitions=EXPERIMENTS, seed=17)
    conversion = next(r for r in result.overall if r.metric == "conversion")
    assert NOMINAL[0] <= conversion.power <= NOMINAL[1]
