"""A/B test statistics on sufficient statistics: analysis, checks, planning and promotion simulation.

Pure numpy/scipy/statsmodels. Spark (``etl.experiments``) reduces one-row-per-user tables to the
statistics in :mod:`.sufficient`; everything here is small arithmetic on them.
"""

from model.experiments.analysis import (
    AnalysisSettings,
    Comparison,
    ExperimentResult,
    MetricInput,
    MetricResult,
    SegmentResult,
    VariantSummary,
    WarningCode,
    analyze,
    compare,
    metric_inputs_from_records,
)
from model.experiments.bayesian import BayesianResult, beta_binomial, normal_posterior, prob_beta_greater
from model.experiments.cuped import CupedAdjustment, cuped
from model.experiments.frequentist import (
    Alternative,
    ArmSummary,
    FrequentistResult,
    Hypothesis,
    TestName,
    frequentist_test,
)
from model.experiments.multiple import Correction, adjust_p_values
from model.experiments.planning import (
    MdeKind,
    SampleSizePlan,
    cohens_h,
    normal_test_power,
    plan_means,
    plan_proportions,
    power_means,
    power_proportions,
)
from model.experiments.sequential import always_valid_p_value, confidence_sequence_halfwidth
from model.experiments.simulation import Population, Response, Scenario, SimulationResult, simulate_promotion
from model.experiments.srm import SrmResult, sample_ratio_mismatch
from model.experiments.sufficient import (
    CovariateStats,
    MeanStats,
    MetricKind,
    ProportionStats,
    SufficientStats,
    kind_of,
)
from model.experiments.summary import (
    NO_ACCEPTED_ROWS,
    analysis_document,
    analyze_statistics,
    parse_split,
    srm_verdict,
    variants_in_order,
)

__all__ = [
    "NO_ACCEPTED_ROWS",
    "Alternative",
    "AnalysisSettings",
    "ArmSummary",
    "BayesianResult",
    "Comparison",
    "Correction",
    "CovariateStats",
    "CupedAdjustment",
    "ExperimentResult",
    "FrequentistResult",
    "Hypothesis",
    "MdeKind",
    "MeanStats",
    "MetricInput",
    "MetricKind",
    "MetricResult",
    "Population",
    "ProportionStats",
    "Response",
    "SampleSizePlan",
    "Scenario",
    "SegmentResult",
    "SimulationResult",
    "SrmResult",
    "SufficientStats",
    "TestName",
    "VariantSummary",
    "WarningCode",
    "adjust_p_values",
    "always_valid_p_value",
    "analysis_document",
    "analyze",
    "analyze_statistics",
    "beta_binomial",
    "cohens_h",
    "compare",
    "confidence_sequence_halfwidth",
    "cuped",
    "frequentist_test",
    "kind_of",
    "metric_inputs_from_records",
    "normal_posterior",
    "normal_test_power",
    "parse_split",
    "plan_means",
    "plan_proportions",
    "power_means",
    "power_proportions",
    "prob_beta_greater",
    "sample_ratio_mismatch",
    "simulate_promotion",
    "srm_verdict",
    "variants_in_order",
]
