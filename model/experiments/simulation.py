"""What would a promotion do? Monte Carlo experiments on real users' own baselines.

Each repetition assigns every user at random (``exposed_share`` to the promotion), draws a conversion
from the user's own probability (times the segment's true lift when exposed) and, for converters, an
order value from a gamma distribution around the user's own mean order value (times the revenue lift),
reduces the draws to sufficient statistics per arm and segment, and runs the same tests as
:func:`model.experiments.analyze`. With no lift it is an A/A test: the rejection rate is the false
positive rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from model.experiments.frequentist import ArmSummary, FrequentistResult, Hypothesis, frequentist_test

SimulatedMetric = Literal["conversion", "revenue"]

#: Upper bound on users x repetitions drawn at once, so memory stays around 100 MB.
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class Population:
    """Real users: baseline conversion probability, mean order value and segment label, one entry each."""

    conversion_rate: NDArray[np.float64]
    order_value: NDArray[np.float64]
    segment: NDArray[np.str_]

    def __post_init__(self) -> None:
        sizes = {len(self.conversion_rate), len(self.order_value), len(self.segment)}
        if len(sizes) != 1:
            raise ValueError(f"population arrays differ in length: {sorted(sizes)}")


@dataclass(frozen=True)
class Scenario:
    """The promotion: who is exposed and the true relative lifts per segment (missing segments: none)."""

    exposed_share: float = 0.5
    conversion_lift: Mapping[str, float] = field(default_factory=dict)
    revenue_lift: Mapping[str, float] = field(default_factory=dict)
    order_value_shape: float = 2.0  # gamma shape: order values with a coefficient of variation 1/√2


@dataclass(frozen=True)
class Response:
    """How one metric responded, overall (``segment`` None) or in one segment, over all repetitions.

    ``power`` is the share of repetitions whose two-sided test rejected at ``alpha`` (with a zero
    true lift, the false positive rate); ``coverage`` the share whose relative interval held the truth.
    """

    metric: SimulatedMetric
    segment: str | None
    users: int
    true_lift: float
    mean_estimated_lift: float
    power: float
    coverage: float


@dataclass(frozen=True)
class SimulationResult:
    repetitions: int
    alpha: float
    overall: tuple[Response, ...]
    segments: tuple[Response, ...]
    estimated_lifts: Mapping[SimulatedMetric, NDArray[np.float64]]  # relative lift per repetition


def _true_lift(treated: NDArray[np.float64], baseline: NDArray[np.float64]) -> float:
    """Relative lift of the population mean: the estimand of a randomized comparison."""
    return float(treated.sum() / baseline.sum() - 1.0) if baseline.sum() > 0 else float("nan")


@dataclass(frozen=True)
class _Arms:
    """Each user's expected outcome without (``*0``) and with (``*1``) the promotion."""

    p0: NDArray[np.float64]
    p1: NDArray[np.float64]
    v0: NDArray[np.float64]
    v1: NDArray[np.float64]

    @classmethod
    def of(
        cls, population: Population, scenario: Scenario, names: NDArray[np.str_], codes: NDArray[np.intp]
    ) -> _Arms:
        conv_lift = np.array([scenario.conversion_lift.get(str(s), 0.0) for s in names])[codes]
        rev_lift = np.array([scenario.revenue_lift.get(str(s), 0.0) for s in names])[codes]
        p0, v0 = population.conversion_rate, population.order_value
        return cls(p0, np.clip(p0 * (1.0 + conv_lift), 0.0, 1.0), v0, v0 * (1.0 + rev_lift))

    def expected(self, metric: SimulatedMetric) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per-user expected metric (treated, baseline): conversion probability or revenue p·v."""
        if metric == "conversion":
            return self.p1, self.p0
        return self.p1 * self.v1, self.p0 * self.v0


def _draw_stats(
    arms: _Arms,
    codes: NDArray[np.intp],
    n_segments: int,
    scenario: Scenario,
    repetitions: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Sufficient statistics, shape (repetitions, segments, arm, [n, conversions, revenue, revenue²])."""
    n_users = len(codes)
    out = np.empty((repetitions, n_segments, 2, 4))
    chunk = max(1, _CHUNK_CELLS // max(n_users, 1))
    shape = scenario.order_value_shape
    for start in range(0, repetitions, chunk):
        reps = min(chunk, repetitions - start)
        exposed = rng.random((reps, n_users)) < scenario.exposed_share
        converted = rng.random((reps, n_users)) < np.where(exposed, arms.p1, arms.p0)
        scale = np.where(exposed, arms.v1, arms.v0) / shape
        revenue = np.where(converted, rng.gamma(shape, scale), 0.0)
        cell = ((np.arange(reps)[:, None] * n_segments + codes[None, :]) * 2 + exposed).ravel()
        size = reps * n_segments * 2
        counts = np.bincount(cell, minlength=size)
        sums = [
            np.bincount(cell, weights=w.ravel(), minlength=size) for w in (converted, revenue, revenue**2)
        ]
        out[start : start + reps] = np.stack([counts, *sums], axis=-1).reshape(reps, n_segments, 2, 4)
    return out


def _test(stats: NDArray[np.float64], metric: SimulatedMetric, hypothesis: Hypothesis) -> FrequentistResult:
    """The analysis' own tests on (..., arm, statistic) arrays: pooled z for conversion, Welch for revenue."""
    n = stats[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "conversion":
            mean = stats[..., 1] / n
            var = mean * (1.0 - mean)
        else:
            mean = stats[..., 2] / n
            var = (stats[..., 3] - stats[..., 2] ** 2 / n) / (n - 1)
    control, variant = (ArmSummary(n[..., a], mean[..., a], var[..., a]) for a in (0, 1))
    return frequentist_test(
        control, variant, hypothesis, "two_proportion_z" if metric == "conversion" else "welch_t"
    )


def _response(
    result: FrequentistResult,
    metric: SimulatedMetric,
    segment: str | None,
    users: int,
    truth: float,
    alpha: float,
) -> Response:
    rel = np.asarray(result.lift_rel)
    covered = (np.asarray(result.rel_ci_low) <= truth) & (truth <= np.asarray(result.rel_ci_high))
    return Response(
        metric=metric,
        segment=segment,
        users=users,
        true_lift=truth,
        mean_estimated_lift=float(np.nanmean(rel)) if np.isfinite(rel).any() else float("nan"),
        power=float(np.mean(np.asarray(result.p_value) < alpha)),
        coverage=float(np.mean(covered)),
    )


def simulate_promotion(
    population: Population,
    scenario: Scenario,
    repetitions: int = 1000,
    alpha: float = 0.05,
    seed: int | np.random.Generator | None = None,
) -> SimulationResult:
    """Run ``repetitions`` randomized experiments of ``scenario`` on ``population`` and summarize them.

    A repetition in which an arm ends up empty (a tiny segment) has no p-value and counts as not
    rejected, so ``power`` never overstates what the experiment would show.
    """
    rng = np.random.default_rng(seed)
    names, codes = np.unique(population.segment, return_inverse=True)
    arms = _Arms.of(population, scenario, names, codes)
    stats = _draw_stats(arms, codes, len(names), scenario, repetitions, rng)
    hypothesis = Hypothesis(alpha=alpha)
    overall: list[Response] = []
    segments: list[Response] = []
    lifts: dict[SimulatedMetric, NDArray[np.float64]] = {}
    metric: SimulatedMetric
    for metric in ("conversion", "revenue"):
        treated, base = arms.expected(metric)
        result = _test(stats.sum(axis=1), metric, hypothesis)
        lifts[metric] = np.asarray(result.lift_rel)
        overall.append(_response(result, metric, None, len(codes), _true_lift(treated, base), alpha))
        for j, name in enumerate(names):
            mask = codes == j
            truth = _true_lift(treated[mask], base[mask])
            segment_result = _test(stats[:, j], metric, hypothesis)
            segments.append(_response(segment_result, metric, str(name), int(mask.sum()), truth, alpha))
    return SimulationResult(repetitions, alpha, tuple(overall), tuple(segments), lifts)
