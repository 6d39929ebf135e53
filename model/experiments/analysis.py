"""One experiment, every metric: per-variant summaries, comparisons with control, SRM, corrections.

``analyze`` reads sufficient statistics only. It never raises on degenerate data: an empty arm, a
metric without variance or without conversions yields a comparison whose numbers are nan (``None``
in ``to_dict``) and whose ``warnings`` name the reason.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from model.experiments.bayesian import BayesianResult, beta_binomial, normal_posterior
from model.experiments.cuped import CupedCode, cuped
from model.experiments.frequentist import (
    Alternative,
    ArmSummary,
    Hypothesis,
    TestName,
    frequentist_test,
)
from model.experiments.multiple import Correction, adjust_p_values
from model.experiments.sequential import DEFAULT_TUNING, always_valid_p_value, confidence_sequence_halfwidth
from model.experiments.srm import SRM_THRESHOLD, SrmResult, sample_ratio_mismatch
from model.experiments.sufficient import (
    CovariateStats,
    MeanStats,
    MetricKind,
    ProportionStats,
    SufficientStats,
    kind_of,
)

WarningCode = Literal[
    "empty_arm",
    "too_few_users",
    "zero_variance",
    "no_conversions",
    "zero_control_mean",
    "cuped_constant_covariate",
]


@dataclass(frozen=True)
class AnalysisSettings:
    """How every comparison of an experiment is tested, summarized and corrected."""

    alpha: float = 0.05
    alternative: Alternative = "two-sided"
    margin: float = 0.0
    correction: Correction = "holm"
    cuped: bool = True
    sequential: bool = False
    sequential_tuning: float = DEFAULT_TUNING
    prior: tuple[float, float] = (1.0, 1.0)
    srm_threshold: float = SRM_THRESHOLD

    @property
    def hypothesis(self) -> Hypothesis:
        return Hypothesis(self.alternative, self.margin, self.alpha)


@dataclass(frozen=True)
class MetricInput:
    """One metric's statistics per variant (file order; the first is the default control), and per segment."""

    name: str
    variants: Mapping[str, SufficientStats]
    segments: Mapping[str, Mapping[str, SufficientStats]] = field(default_factory=dict)

    @property
    def kind(self) -> MetricKind:
        return kind_of(next(iter(self.variants.values())))


@dataclass(frozen=True)
class VariantSummary:
    variant: str
    users: int
    mean: float


@dataclass(frozen=True)
class Comparison:
    """A variant against control on one metric; ``ci_*`` bound the absolute lift, ``rel_ci_*`` the relative."""

    variant: str
    control: str
    test: TestName | None
    lift_abs: float
    lift_rel: float
    ci_low: float
    ci_high: float
    rel_ci_low: float
    rel_ci_high: float
    p_value: float
    p_value_adjusted: float
    chance_to_beat_control: float
    expected_loss: float
    statistic: float
    df: float
    cuped_theta: float | None = None
    variance_reduction: float | None = None
    sequential_ci_low: float | None = None
    sequential_ci_high: float | None = None
    sequential_p_value: float | None = None
    warnings: tuple[WarningCode | CupedCode, ...] = ()


@dataclass(frozen=True)
class SegmentResult:
    segment: str
    variants: tuple[VariantSummary, ...]
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True)
class MetricResult:
    metric: str
    kind: MetricKind
    variants: tuple[VariantSummary, ...]
    comparisons: tuple[Comparison, ...]
    segments: tuple[SegmentResult, ...] = ()


@dataclass(frozen=True)
class ExperimentResult:
    """SRM verdict first, then every metric; ``to_dict`` is the ``--json`` shape (without ``rejected``)."""

    control: str
    srm: SrmResult
    metrics: tuple[MetricResult, ...]
    settings: AnalysisSettings

    def to_dict(self) -> dict[str, Any]:
        srm = dataclasses.asdict(self.srm) | {"mismatch": self.srm.mismatch}
        return _jsonable(
            {
                "control": self.control,
                "srm": srm,
                "metrics": [dataclasses.asdict(m) for m in self.metrics],
                "settings": dataclasses.asdict(self.settings),
            }
        )


def _jsonable(value: Any) -> Any:
    """Plain JSON types: nan and ±inf (undefined or one-sided bounds) become None, tuples lists."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _summary(stats: SufficientStats) -> ArmSummary:
    return ArmSummary(stats.n, stats.mean, stats.variance)


def _degeneracies(
    kind: MetricKind, control: SufficientStats, variant: SufficientStats
) -> tuple[WarningCode, ...]:
    if control.n == 0 or variant.n == 0:
        return ("empty_arm",)
    if kind == "continuous" and min(control.n, variant.n) < 2:
        return ("too_few_users",)
    codes: list[WarningCode] = []
    inner = [s.metric if isinstance(s, CovariateStats) else s for s in (control, variant)]
    if kind == "conversion" and all(s.sum == 0 for s in inner):
        codes.append("no_conversions")
    elif control.variance == 0 and variant.variance == 0:
        codes.append("zero_variance")
    if control.mean == 0:
        codes.append("zero_control_mean")
    return tuple(codes)


def _undefined(
    variant: str, control: str, codes: tuple[WarningCode, ...], bayes: BayesianResult | None
) -> Comparison:
    nan = float("nan")
    return Comparison(
        variant=variant,
        control=control,
        test=None,
        lift_abs=nan,
        lift_rel=nan,
        ci_low=nan,
        ci_high=nan,
        rel_ci_low=nan,
        rel_ci_high=nan,
        p_value=nan,
        p_value_adjusted=nan,
        chance_to_beat_control=nan if bayes is None else float(bayes.chance_to_beat_control),
        expected_loss=nan if bayes is None else float(bayes.expected_loss),
        statistic=nan,
        df=nan,
        warnings=codes,
    )


def compare(
    control: SufficientStats,
    variant: SufficientStats,
    settings: AnalysisSettings = AnalysisSettings(),
    names: tuple[str, str] = ("control", "variant"),
) -> Comparison:
    """Compare one variant with control on one metric (``p_value_adjusted`` waits for :func:`analyze`).

    Conversions: pooled two-proportion z-test, Wald interval, Beta-Binomial posterior. Means: Welch's
    t-test and a normal posterior. With covariates on both arms (and ``settings.cuped``) the CUPED-
    adjusted arms are compared instead, by a Wald z (conversions) or Welch (means) test and a normal
    posterior, since the adjusted metric is no longer a count.
    """
    kind = kind_of(control)
    codes = _degeneracies(kind, control, variant)
    higher_is_better = settings.alternative != "less"
    bayes = None
    if kind == "conversion" and control.n and variant.n:
        c, v = (s.metric if isinstance(s, CovariateStats) else s for s in (control, variant))
        bayes = beta_binomial(int(c.sum), c.n, int(v.sum), v.n, settings.prior, higher_is_better)
    if {"empty_arm", "too_few_users", "zero_variance", "no_conversions"} & set(codes):
        return _undefined(names[1], names[0], codes, bayes)

    a, b = _summary(control), _summary(variant)
    test: TestName = "two_proportion_z" if kind == "conversion" else "welch_t"
    theta = reduction = None
    cuped_codes: tuple[CupedCode, ...] = ()
    if settings.cuped and isinstance(control, CovariateStats) and isinstance(variant, CovariateStats):
        adjustment = cuped(control, variant)
        cuped_codes = adjustment.warnings
        if not cuped_codes:
            a, b, theta, reduction = (
                adjustment.control,
                adjustment.variant,
                adjustment.theta,
                adjustment.variance_reduction,
            )
            test = "wald_z" if kind == "conversion" else "welch_t"
    freq = frequentist_test(a, b, settings.hypothesis, test)
    if bayes is None or theta is not None:  # means, or CUPED-adjusted conversions: normal posterior
        bayes = normal_posterior(freq.lift_abs, freq.se, higher_is_better)

    seq_low = seq_high = seq_p = None
    if settings.sequential:
        n_total = control.n + variant.n
        half = float(
            confidence_sequence_halfwidth(freq.se, n_total, settings.alpha, settings.sequential_tuning)
        )
        seq_low, seq_high = float(freq.lift_abs) - half, float(freq.lift_abs) + half
        seq_p = float(
            always_valid_p_value(freq.lift_abs, freq.se, n_total, settings.alpha, settings.sequential_tuning)
        )
    return Comparison(
        variant=names[1],
        control=names[0],
        test=freq.test,
        lift_abs=float(freq.lift_abs),
        lift_rel=float(freq.lift_rel),
        ci_low=float(freq.ci_low),
        ci_high=float(freq.ci_high),
        rel_ci_low=float(freq.rel_ci_low),
        rel_ci_high=float(freq.rel_ci_high),
        p_value=float(freq.p_value),
        p_value_adjusted=float("nan"),
        chance_to_beat_control=float(bayes.chance_to_beat_control),
        expected_loss=float(bayes.expected_loss),
        statistic=float(freq.statistic),
        df=float(freq.df),
        cuped_theta=theta,
        variance_reduction=reduction,
        sequential_ci_low=seq_low,
        sequential_ci_high=seq_high,
        sequential_p_value=seq_p,
        warnings=codes + cuped_codes,
    )


def _summaries(stats: Mapping[str, SufficientStats]) -> tuple[VariantSummary, ...]:
    return tuple(VariantSummary(name, int(s.n), float(s.mean)) for name, s in stats.items())


def _empty_like(stats: SufficientStats) -> SufficientStats:
    return ProportionStats(0, 0) if kind_of(stats) == "conversion" else MeanStats(0, 0.0, 0.0)


def _compare_all(
    stats: Mapping[str, SufficientStats], arms: Sequence[str], settings: AnalysisSettings
) -> tuple[Comparison, ...]:
    """Every arm after the first (control) against it; an arm without statistics counts as empty."""
    empty = _empty_like(next(iter(stats.values())))
    control = arms[0]
    return tuple(
        compare(stats.get(control, empty), stats.get(name, empty), settings, (control, name))
        for name in arms[1:]
    )


def _with_adjusted(
    groups: Sequence[tuple[Comparison, ...]], method: Correction
) -> list[tuple[Comparison, ...]]:
    """Adjust every comparison in ``groups`` as one family and put the results back in place."""
    flat = [c for group in groups for c in group]
    adjusted = iter(adjust_p_values([c.p_value for c in flat], method))
    return [tuple(dataclasses.replace(c, p_value_adjusted=float(next(adjusted))) for c in g) for g in groups]


def analyze(
    metrics: Sequence[MetricInput],
    control: str | None = None,
    settings: AnalysisSettings = AnalysisSettings(),
    planned_split: Mapping[str, float] | None = None,
    users: Mapping[str, int] | None = None,
) -> ExperimentResult:
    """Analyze every metric of one experiment against ``control`` (default: the first variant listed).

    Holm (or BH) runs over all variant x metric comparisons; per-segment comparisons form their own
    family. SRM compares ``users`` per variant (default: the first metric's counts) with ``planned_split``
    (default: equal). A ``control`` without statistics is an empty arm (named warnings, no exception).
    """
    if not metrics:
        raise ValueError("analyze needs at least one metric")
    control = control if control is not None else next(iter(metrics[0].variants))
    arms = [[control, *(v for v in m.variants if v != control)] for m in metrics]
    first = metrics[0].variants
    counts = users if users is not None else {v: int(first[v].n) if v in first else 0 for v in arms[0]}
    srm = sample_ratio_mismatch(counts, planned_split, settings.srm_threshold)

    overall = _with_adjusted(
        [_compare_all(m.variants, arms[i], settings) for i, m in enumerate(metrics)], settings.correction
    )
    segment_keys = [(i, seg) for i, m in enumerate(metrics) for seg in m.segments]
    per_segment = _with_adjusted(
        [_compare_all(metrics[i].segments[seg], arms[i], settings) for i, seg in segment_keys],
        settings.correction,
    )
    segments: dict[int, list[SegmentResult]] = {}
    for (i, seg), comparisons in zip(segment_keys, per_segment, strict=True):
        segments.setdefault(i, []).append(
            SegmentResult(seg, _summaries(metrics[i].segments[seg]), comparisons)
        )
    results = tuple(
        MetricResult(m.name, m.kind, _summaries(m.variants), overall[i], tuple(segments.get(i, ())))
        for i, m in enumerate(metrics)
    )
    return ExperimentResult(control, srm, results, settings)


def metric_inputs_from_records(
    records: Iterable[Mapping[str, Any]], kinds: Mapping[str, MetricKind]
) -> list[MetricInput]:
    """Build :class:`MetricInput` objects from sufficient-statistics rows (e.g. a collected Spark frame).

    Each record has ``metric``, ``variant``, ``segment`` (None for the whole experiment), ``n``, ``sum``,
    ``sum_squares`` and, when the metric has a covariate, ``pre_sum``, ``pre_sum_squares`` and
    ``sum_products``. Variants keep the order of ``first_line`` when present, else of the records.
    Pass the overall rows, the per-segment rows or both; per-day rows must be summed first.
    """
    rows = sorted(records, key=lambda r: r.get("first_line") or 0)
    overall: dict[str, dict[str, SufficientStats]] = {m: {} for m in kinds}
    by_segment: dict[str, dict[str, dict[str, SufficientStats]]] = {m: {} for m in kinds}
    for r in rows:
        metric, kind = r["metric"], kinds[r["metric"]]
        n = int(r["n"])
        base: ProportionStats | MeanStats = (
            ProportionStats(n, round(r["sum"]))
            if kind == "conversion"
            else MeanStats(n, float(r["sum"]), float(r["sum_squares"]))
        )
        stats: SufficientStats = base
        if r.get("pre_sum") is not None:
            pre = MeanStats(n, float(r["pre_sum"]), float(r["pre_sum_squares"]))
            stats = CovariateStats(base, pre, float(r["sum_products"]))
        if r.get("segment") is None:
            overall[metric][r["variant"]] = stats
        else:
            by_segment[metric].setdefault(r["segment"], {})[r["variant"]] = stats
    return [MetricInput(m, overall[m], by_segment[m]) for m in kinds]
