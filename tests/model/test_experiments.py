"""A/B statistics against independent computations: statsmodels, scipy, numerical integration, Monte Carlo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import integrate, stats
from statsmodels.stats import proportion as smp
from statsmodels.stats.multitest import multipletests

from model.experiments import (
    AnalysisSettings,
    ArmSummary,
    CovariateStats,
    Hypothesis,
    MeanStats,
    MetricInput,
    ProportionStats,
    analyze,
    beta_binomial,
    compare,
    cuped,
    frequentist_test,
    metric_inputs_from_records,
    normal_posterior,
    prob_beta_greater,
    sample_ratio_mismatch,
)

TIGHT = {"rel": 1e-9, "abs": 1e-12}
#: (control conversions, control users, variant conversions, variant users)
CONVERSION_CASES = [(100, 1000, 130, 1000), (48, 2000, 41, 1800), (5000, 50000, 5150, 50500), (3, 40, 9, 35)]


def mean_stats(x: np.ndarray) -> MeanStats:
    return MeanStats(len(x), float(x.sum()), float((x**2).sum()))


def covariate_stats(y: np.ndarray, x: np.ndarray) -> CovariateStats:
    return CovariateStats(mean_stats(y), mean_stats(x), float((x * y).sum()))


# --- sufficient statistics -------------------------------------------------------------------------


def test_mean_stats_of_two_parts_add_up_to_the_stats_of_the_whole():
    rng = np.random.default_rng(1)
    a, b = rng.normal(3, 2, 500), rng.normal(3, 2, 700)
    whole = mean_stats(np.concatenate([a, b]))
    added = mean_stats(a) + mean_stats(b)
    assert added.n == whole.n
    assert added.mean == pytest.approx(whole.mean, **TIGHT)
    assert added.variance == pytest.approx(np.var(np.concatenate([a, b]), ddof=1), **TIGHT)


def test_proportion_and_covariate_stats_add_up():
    assert ProportionStats(10, 3) + ProportionStats(5, 1) == ProportionStats(15, 4)
    rng = np.random.default_rng(2)
    y, x = rng.normal(size=300), rng.normal(size=300)
    added = covariate_stats(y[:100], x[:100]) + covariate_stats(y[100:], x[100:])
    assert added.covariance == pytest.approx(np.cov(y, x, ddof=1)[0, 1], **TIGHT)


# --- frequentist ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("xa", "na", "xb", "nb"), CONVERSION_CASES)
def test_conversion_z_test_is_statsmodels_pooled_two_proportion_z_test(xa, na, xb, nb):
    result = compare(ProportionStats(na, xa), ProportionStats(nb, xb))
    z, p = smp.proportions_ztest([xb, xa], [nb, na])
    assert result.test == "two_proportion_z"
    assert result.statistic == pytest.approx(z, **TIGHT)
    assert result.p_value == pytest.approx(p, **TIGHT)


@pytest.mark.parametrize(("xa", "na", "xb", "nb"), CONVERSION_CASES)
def test_conversion_interval_is_the_wald_interval_of_the_difference(xa, na, xb, nb):
    result = compare(ProportionStats(na, xa), ProportionStats(nb, xb), AnalysisSettings(alpha=0.1))
    low, high = smp.confint_proportions_2indep(xb, nb, xa, na, method="wald", compare="diff", alpha=0.1)
    assert result.lift_abs == pytest.approx(xb / nb - xa / na, **TIGHT)
    assert (result.ci_low, result.ci_high) == (pytest.approx(low, **TIGHT), pytest.approx(high, **TIGHT))


@pytest.mark.parametrize(("alternative", "sm_alternative"), [("greater", "larger"), ("less", "smaller")])
def test_one_sided_conversion_p_values_match_statsmodels(alternative, sm_alternative):
    xa, na, xb, nb = CONVERSION_CASES[0]
    result = compare(
        ProportionStats(na, xa), ProportionStats(nb, xb), AnalysisSettings(alternative=alternative)
    )
    _, p = smp.proportions_ztest([xb, xa], [nb, na], alternative=sm_alternative)
    assert result.p_value == pytest.approx(p, **TIGHT)


def test_one_sided_interval_is_unbounded_on_the_other_side():
    xa, na, xb, nb = CONVERSION_CASES[0]
    result = compare(
        ProportionStats(na, xa), ProportionStats(nb, xb), AnalysisSettings(alternative="greater")
    )
    se = np.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
    assert result.ci_low == pytest.approx(0.03 - stats.norm.isf(0.05) * se, **TIGHT)
    assert result.ci_high == np.inf


def test_non_inferiority_on_conversions_is_statsmodels_wald_test_against_the_margin():
    xa, na, xb, nb = CONVERSION_CASES[1]
    settings = AnalysisSettings(alternative="greater", margin=0.01)
    result = compare(ProportionStats(na, xa), ProportionStats(nb, xb), settings)
    expected = smp.test_proportions_2indep(
        xb, nb, xa, na, value=-0.01, method="wald", compare="diff", alternative="larger"
    )
    assert result.test == "wald_z"
    assert result.statistic == pytest.approx(expected.statistic, **TIGHT)
    assert result.p_value == pytest.approx(expected.pvalue, **TIGHT)


@pytest.fixture(scope="module")
def revenue() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.gamma(2.0, 10.0, 400), rng.gamma(2.0, 11.5, 350) + rng.normal(0, 3, 350)


def test_continuous_test_is_scipy_welch_t_test(revenue):
    control, variant = revenue
    result = compare(mean_stats(control), mean_stats(variant), AnalysisSettings(alpha=0.1))
    expected = stats.ttest_ind(variant, control, equal_var=False)
    interval = expected.confidence_interval(0.9)
    assert result.test == "welch_t"
    assert result.statistic == pytest.approx(expected.statistic, **TIGHT)
    assert result.p_value == pytest.approx(expected.pvalue, **TIGHT)
    assert result.df == pytest.approx(expected.df, **TIGHT)
    assert (result.ci_low, result.ci_high) == (
        pytest.approx(interval.low, **TIGHT),
        pytest.approx(interval.high, **TIGHT),
    )


def test_non_inferiority_on_means_is_welch_against_the_shifted_variant(revenue):
    control, variant = revenue
    settings = AnalysisSettings(alternative="greater", margin=2.0)
    result = compare(mean_stats(control), mean_stats(variant), settings)
    expected = stats.ttest_ind(variant + 2.0, control, equal_var=False, alternative="greater")
    assert result.p_value == pytest.approx(expected.pvalue, **TIGHT)


def test_relative_lift_interval_uses_the_delta_method_variance(revenue):
    control, variant = (mean_stats(x) for x in revenue)
    result = compare(control, variant)
    # independent: numerical gradient of g(m_a, m_b) = m_b/m_a - 1 with Var(m) = s²/n on the diagonal
    m = np.array([control.mean, variant.mean])
    cov = np.diag([control.variance / control.n, variant.variance / variant.n])
    h = 1e-6
    grad = np.array([((m[1] / (m[0] + h)) - m[1] / (m[0] - h)) / (2 * h), 1.0 / m[0]])
    se = np.sqrt(grad @ cov @ grad)
    crit = stats.t.isf(0.025, result.df)
    assert result.lift_rel == pytest.approx(variant.mean / control.mean - 1.0, **TIGHT)
    assert result.rel_ci_high - result.lift_rel == pytest.approx(crit * se, rel=1e-7)


def test_frequentist_test_accepts_arrays_of_experiments():
    xa, xb, n = np.array([100.0, 48.0]), np.array([130.0, 41.0]), np.array([1000.0, 1000.0])
    arms = [ArmSummary(n, x / n, x / n * (1 - x / n)) for x in (xa, xb)]
    result = frequentist_test(arms[0], arms[1], Hypothesis(), "two_proportion_z")
    for i in range(2):
        assert result.p_value[i] == pytest.approx(
            smp.proportions_ztest([xb[i], xa[i]], [1000, 1000])[1], **TIGHT
        )


def test_a_margin_with_a_two_sided_test_is_a_programming_error():
    with pytest.raises(ValueError, match="one-sided"):
        Hypothesis(alternative="two-sided", margin=0.1)


# --- Bayesian -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("xa", "na", "xb", "nb"), CONVERSION_CASES)
def test_beta_binomial_chance_and_loss_agree_with_monte_carlo(xa, na, xb, nb):
    result = beta_binomial(xa, na, xb, nb)
    rng = np.random.default_rng(4)
    a = rng.beta(1 + xa, 1 + na - xa, 400_000)
    b = rng.beta(1 + xb, 1 + nb - xb, 400_000)
    assert result.chance_to_beat_control == pytest.approx(np.mean(b > a), abs=0.005)
    assert result.expected_loss == pytest.approx(np.mean(np.maximum(a - b, 0)), rel=0.03, abs=1e-5)
    assert result.expected_loss_control == pytest.approx(np.mean(np.maximum(b - a, 0)), rel=0.03, abs=1e-5)


@pytest.mark.parametrize(
    ("a1", "b1", "a2", "b2"),
    [(101, 901, 131, 871), (5, 300, 900, 80), (900, 80, 5, 300), (40, 3, 50, 2), (1, 1, 1, 1)],
)
def test_closed_form_beta_probability_matches_numerical_integration(a1, b1, a2, b2):
    # P(X2 > X1) = ∫ f2(x) F1(x) dx, integrated where f2 has its mass
    lo, hi = stats.beta.ppf([1e-13, 1 - 1e-13], a2, b2)
    expected, _ = integrate.quad(
        lambda x: stats.beta.pdf(x, a2, b2) * stats.beta.cdf(x, a1, b1), lo, hi, epsabs=1e-13, limit=200
    )
    assert prob_beta_greater(a1, b1, a2, b2) == pytest.approx(expected, abs=1e-9)


def test_lower_is_better_swaps_chance_and_losses():
    higher = beta_binomial(100, 1000, 130, 1000)
    lower = beta_binomial(100, 1000, 130, 1000, higher_is_better=False)
    assert lower.chance_to_beat_control == pytest.approx(1 - higher.chance_to_beat_control, **TIGHT)
    assert lower.expected_loss == pytest.approx(higher.expected_loss_control, **TIGHT)


def test_normal_posterior_for_means_agrees_with_monte_carlo():
    result = normal_posterior(0.4, 0.5)
    draws = np.random.default_rng(5).normal(0.4, 0.5, 1_000_000)
    assert result.chance_to_beat_control == pytest.approx(np.mean(draws > 0), abs=0.005)
    assert result.expected_loss == pytest.approx(np.mean(np.maximum(-draws, 0)), rel=0.01)


# --- SRM ----------------------------------------------------------------------------------------------


def test_srm_is_scipy_chisquare_and_flags_only_below_one_in_a_thousand():
    mild = sample_ratio_mismatch({"control": 10_000, "promo": 10_300})
    severe = sample_ratio_mismatch({"control": 10_000, "promo": 10_500})
    assert mild.p_value == pytest.approx(stats.chisquare([10_000, 10_300]).pvalue, **TIGHT)
    assert 0.001 < mild.p_value < 0.05 and not mild.mismatch
    assert severe.p_value < 0.001 and severe.mismatch and severe.warnings == ("srm_detected",)


def test_srm_compares_with_the_planned_split():
    result = sample_ratio_mismatch({"control": 9_000, "promo": 1_000}, {"control": 90, "promo": 10})
    assert result.expected == {"control": 9_000.0, "promo": 1_000.0}
    assert result.p_value == pytest.approx(1.0) and not result.mismatch
    skewed = sample_ratio_mismatch({"control": 5_000, "promo": 5_000}, {"control": 90, "promo": 10})
    assert skewed.mismatch


@pytest.mark.parametrize("observed", [{"control": 0, "promo": 0}, {"control": 10}])
def test_srm_without_two_populated_arms_is_not_testable(observed):
    result = sample_ratio_mismatch(observed)
    assert result.warnings == ("srm_not_testable",) and np.isnan(result.p_value)


# --- CUPED ------------------------------------------------------------------------------------------


def _correlated(rng: np.random.Generator, n: int, rho: float, shift: float) -> CovariateStats:
    x = rng.normal(10, 2, n)
    y = 5 + shift + rho * (x - 10) + np.sqrt(1 - rho**2) * 2 * rng.normal(size=n)
    return covariate_stats(y, x)


@pytest.mark.parametrize("rho", [0.3, 0.7])
def test_cuped_cuts_the_variance_by_about_rho_squared(rho):
    rng = np.random.default_rng(6)
    control, variant = _correlated(rng, 100_000, rho, 0.0), _correlated(rng, 100_000, rho, 0.05)
    adjustment = cuped(control, variant)
    assert adjustment.variance_reduction == pytest.approx(rho**2, abs=0.01)
    result = compare(control, variant)
    assert result.variance_reduction == adjustment.variance_reduction
    assert result.lift_abs == pytest.approx(0.05, abs=0.02)


def test_cuped_on_a_conversion_uses_a_wald_test_and_saves_about_rho_squared():
    rng = np.random.default_rng(9)
    x = rng.poisson(1.0, size=(2, 50_000)).astype(float)  # e.g. purchases in the 28 days before
    y = (rng.random((2, 50_000)) < 0.02 + 0.15 * np.minimum(x, 4)).astype(float)
    arms = [
        CovariateStats(ProportionStats(50_000, int(y[i].sum())), mean_stats(x[i]), float((x[i] * y[i]).sum()))
        for i in (0, 1)
    ]
    result = compare(*arms)
    rho = np.corrcoef(x.ravel(), y.ravel())[0, 1]
    assert result.test == "wald_z"
    assert result.variance_reduction == pytest.approx(rho**2, abs=0.01)


def test_cuped_theta_is_the_pooled_regression_slope():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 500))
    y = 2.0 * x + rng.normal(size=(2, 500)) + np.array([[0.0], [0.3]])
    adjustment = cuped(covariate_stats(y[0], x[0]), covariate_stats(y[1], x[1]))
    slope = np.polyfit(x.ravel(), y.ravel(), 1)[0]
    assert adjustment.theta == pytest.approx(slope, rel=1e-9)


def test_cuped_with_a_constant_covariate_falls_back_to_the_raw_metric_with_a_code():
    rng = np.random.default_rng(8)
    y = rng.normal(size=(2, 200))
    arms = [covariate_stats(y[i], np.ones(200)) for i in (0, 1)]
    result = compare(*arms)
    assert "cuped_constant_covariate" in result.warnings
    assert result.p_value == pytest.approx(stats.ttest_ind(y[1], y[0], equal_var=False).pvalue, **TIGHT)


# --- analyze: corrections, degenerate data, JSON -----------------------------------------------------------------


def _two_metric_experiment() -> list[MetricInput]:
    return [
        MetricInput(
            "purchased",
            {
                "control": ProportionStats(5000, 500),
                "a": ProportionStats(5000, 560),
                "b": ProportionStats(5000, 515),
            },
        ),
        MetricInput(
            "revenue",
            {
                "control": MeanStats(5000, 50_000.0, 5000 * (10.0**2 + 30.0**2)),
                "a": MeanStats(5000, 54_000.0, 5000 * (10.8**2 + 30.0**2)),
                "b": MeanStats(5000, 49_000.0, 5000 * (9.8**2 + 30.0**2)),
            },
        ),
    ]


@pytest.mark.parametrize("method", ["holm", "fdr_bh"])
def test_adjusted_p_values_correct_all_variant_by_metric_comparisons_together(method):
    result = analyze(_two_metric_experiment(), settings=AnalysisSettings(correction=method))
    raw = [c.p_value for m in result.metrics for c in m.comparisons]
    adjusted = [c.p_value_adjusted for m in result.metrics for c in m.comparisons]
    assert len(raw) == 4
    np.testing.assert_allclose(adjusted, multipletests(raw, method=method)[1], rtol=1e-12)


def test_control_defaults_to_the_first_variant_and_can_be_chosen():
    assert analyze(_two_metric_experiment()).control == "control"
    result = analyze(_two_metric_experiment(), control="b")
    assert [c.variant for c in result.metrics[0].comparisons] == ["control", "a"]


def test_an_empty_arm_gives_a_named_warning_and_leaves_the_correction_family():
    metrics = [
        MetricInput(
            "purchased",
            {
                "control": ProportionStats(1000, 100),
                "a": ProportionStats(1000, 130),
                "b": ProportionStats(0, 0),
            },
        )
    ]
    result = analyze(metrics)
    good, empty = result.metrics[0].comparisons
    assert empty.warnings == ("empty_arm",) and np.isnan(empty.p_value) and np.isnan(empty.p_value_adjusted)
    assert good.p_value_adjusted == pytest.approx(good.p_value, **TIGHT)  # a family of one
    assert result.srm.mismatch  # nobody in arm b is itself a sample-ratio mismatch


def test_a_metric_without_variance_gives_zero_variance():
    result = compare(MeanStats(100, 500.0, 2500.0), MeanStats(120, 600.0, 3000.0))
    assert result.warnings == ("zero_variance",) and np.isnan(result.p_value) and result.test is None


def test_a_conversion_without_conversions_gives_no_conversions_but_still_a_posterior():
    result = compare(ProportionStats(500, 0), ProportionStats(500, 0))
    assert result.warnings == ("no_conversions", "zero_control_mean")
    assert np.isnan(result.p_value)
    assert result.chance_to_beat_control == pytest.approx(0.5, abs=1e-9)


def test_a_single_user_arm_is_too_few_for_welch():
    result = compare(MeanStats(1, 3.0, 9.0), MeanStats(50, 150.0, 600.0))
    assert result.warnings == ("too_few_users",)


def test_a_control_rate_of_zero_leaves_the_relative_lift_undefined():
    result = compare(ProportionStats(500, 0), ProportionStats(500, 7))
    assert "zero_control_mean" in result.warnings
    assert np.isfinite(result.p_value) and not np.isfinite(result.lift_rel)


def test_segments_missing_an_arm_are_empty_and_corrected_in_their_own_family():
    segments = {
        "loyal": {"control": ProportionStats(800, 90), "a": ProportionStats(800, 120)},
        "new": {"control": ProportionStats(300, 20)},
    }
    metric = MetricInput(
        "purchased", {"control": ProportionStats(1100, 110), "a": ProportionStats(800, 120)}, segments
    )
    result = analyze([metric])
    loyal, new = result.metrics[0].segments
    assert new.comparisons[0].warnings == ("empty_arm",)
    assert loyal.comparisons[0].p_value_adjusted == pytest.approx(loyal.comparisons[0].p_value, **TIGHT)
    assert result.metrics[0].comparisons[0].p_value_adjusted == pytest.approx(
        result.metrics[0].comparisons[0].p_value
    )


def test_sequential_comparison_adds_a_wider_always_valid_interval():
    control, variant = ProportionStats(5000, 500), ProportionStats(5000, 570)
    result = compare(control, variant, AnalysisSettings(sequential=True))
    assert result.sequential_ci_low < result.ci_low and result.sequential_ci_high > result.ci_high
    assert result.sequential_p_value > result.p_value


def test_to_dict_has_the_json_shape_with_nulls_for_undefined_numbers():
    metrics = _two_metric_experiment()
    metrics.append(
        MetricInput(
            "signup",
            {
                "control": ProportionStats(5000, 0),
                "a": ProportionStats(5000, 0),
                "b": ProportionStats(5000, 0),
            },
        )
    )
    out = analyze(metrics).to_dict()
    text = json.dumps(out, allow_nan=False)  # no NaN or Infinity can leak into the JSON
    assert json.loads(text) == out
    assert set(out["srm"]) >= {"p_value", "observed", "expected"}
    first = out["metrics"][0]
    assert {"metric", "kind", "variants", "comparisons"} <= set(first)
    assert set(first["variants"][0]) == {"variant", "users", "mean"}
    keys = {
        "variant",
        "control",
        "lift_abs",
        "lift_rel",
        "ci_low",
        "ci_high",
        "p_value",
        "p_value_adjusted",
        "chance_to_beat_control",
    }
    assert keys <= set(first["comparisons"][0])
    assert out["metrics"][2]["comparisons"][0]["p_value"] is None
    assert out["metrics"][2]["comparisons"][0]["warnings"] == ["no_conversions", "zero_control_mean"]


def test_metric_inputs_from_records_order_variants_by_first_line_and_split_segments():
    records = [
        {"metric": "revenue", "variant": "b", "segment": None, "n": 3, "sum": 6.0, "sum_squares": 14.0, "first_line": 5},
        {"metric": "revenue", "variant": "a", "segment": None, "n": 2, "sum": 3.0, "sum_squares": 5.0, "first_line": 2},
        {"metric": "revenue", "variant": "a", "segment": "new", "n": 2, "sum": 3.0, "sum_squares": 5.0, "first_line": 2},
        {"metric": "bought", "variant": "a", "segment": None, "n": 2, "sum": 1.0, "sum_squares": 1.0, "first_line": 2,
         "pre_sum": 1.0, "pre_sum_squares": 1.0, "sum_products": 1.0},
    ]  # fmt: skip
    revenue, bought = metric_inputs_from_records(records, {"revenue": "continuous", "bought": "conversion"})
    assert list(revenue.variants) == ["a", "b"] and revenue.variants["b"] == MeanStats(3, 6.0, 14.0)
    assert revenue.segments == {"new": {"a": MeanStats(2, 3.0, 5.0)}}
    assert bought.kind == "conversion"
    assert bought.variants["a"] == CovariateStats(ProportionStats(2, 1), MeanStats(2, 1.0, 1.0), 1.0)
