"""Sufficient statistics of one arm: what Spark reduces rows to and every test reads.

They add up (``a + b`` pools two days, strata or shards), so a statistic never needs the raw rows
again. A conversion metric keeps (n, conversions); a continuous metric keeps (n, sum, sum of squares);
CUPED adds the pre-period covariate's sums and the cross-product (the gbstats layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["conversion", "continuous"]


@dataclass(frozen=True)
class ProportionStats:
    """Users and converted users of one arm for a 0/1 metric."""

    n: int
    conversions: int

    def __add__(self, other: ProportionStats) -> ProportionStats:
        return ProportionStats(self.n + other.n, self.conversions + other.conversions)

    @property
    def sum(self) -> float:
        return float(self.conversions)

    @property
    def sum_squares(self) -> float:
        return float(self.conversions)  # x² = x for 0/1 values

    @property
    def mean(self) -> float:
        return self.conversions / self.n if self.n else float("nan")

    @property
    def variance(self) -> float:
        """Bernoulli variance p(1-p), the plug-in used by the z-test and Wald interval."""
        p = self.mean
        return p * (1.0 - p)


@dataclass(frozen=True)
class MeanStats:
    """Users, sum and sum of squares of one arm for a continuous metric."""

    n: int
    sum: float
    sum_squares: float

    def __add__(self, other: MeanStats) -> MeanStats:
        return MeanStats(self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares)

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else float("nan")

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1): (Σx² - (Σx)²/n) / (n-1); nan below two users."""
        if self.n < 2:
            return float("nan")
        return max((self.sum_squares - self.sum**2 / self.n) / (self.n - 1), 0.0)


@dataclass(frozen=True)
class CovariateStats:
    """A metric's statistics plus its pre-period covariate X and the cross-product Σ metric·X (CUPED)."""

    metric: ProportionStats | MeanStats
    pre: MeanStats
    sum_products: float

    def __post_init__(self) -> None:
        if self.metric.n != self.pre.n:
            raise ValueError(f"metric and covariate count different users: {self.metric.n} != {self.pre.n}")

    def __add__(self, other: CovariateStats) -> CovariateStats:
        return CovariateStats(
            self.metric + other.metric,  # type: ignore[operator]  # same kind on both sides
            self.pre + other.pre,
            self.sum_products + other.sum_products,
        )

    @property
    def n(self) -> int:
        return self.metric.n

    @property
    def mean(self) -> float:
        return self.metric.mean

    @property
    def variance(self) -> float:
        return self.metric.variance

    @property
    def covariance(self) -> float:
        """Sample covariance of metric and covariate: (Σxy - ΣxΣy/n) / (n-1)."""
        if self.n < 2:
            return float("nan")
        return (self.sum_products - self.metric.sum * self.pre.sum / self.n) / (self.n - 1)


SufficientStats = ProportionStats | MeanStats | CovariateStats


def kind_of(stats: SufficientStats) -> MetricKind:
    """A metric is a conversion exactly when its (possibly covariate-wrapped) statistics are proportions."""
    inner = stats.metric if isinstance(stats, CovariateStats) else stats
    return "conversion" if isinstance(inner, ProportionStats) else "continuous"
