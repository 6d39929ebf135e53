"""Bayesian chance to beat control and expected loss, in closed form (no Monte Carlo).

Conversions: independent Beta posteriors (Beta(1, 1) prior by default). Means: normal approximation
with a flat prior, so the posterior of the difference is N(diff, se²).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from model.experiments.frequentist import FloatArray


@dataclass(frozen=True)
class BayesianResult:
    """P(variant better than control) and the expected loss (metric units) of shipping each arm."""

    chance_to_beat_control: FloatArray
    expected_loss: FloatArray
    expected_loss_control: FloatArray


def _prob_second_greater(a1: float, b1: float, a2: int, b2: float) -> float:
    """P(X2 > X1) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), integer a2.

    Source: Evan Miller, "Formulas for Bayesian A/B Testing" (2015):
    Σ_{i=0}^{a2-1} B(a1+i, b1+b2) / ((b2+i) B(1+i, b2) B(a1, b1)), summed in log space.
    """
    i = np.arange(a2, dtype=np.float64)
    log_terms = special.betaln(a1 + i, b1 + b2) - np.log(b2 + i) - special.betaln(1 + i, b2)
    return float(np.exp(special.logsumexp(log_terms) - special.betaln(a1, b1)))


def prob_beta_greater(a_ctrl: float, b_ctrl: float, a_var: float, b_var: float) -> float:
    """P(p_variant > p_control) for Beta posteriors with integer parameters.

    The closed form sums over one integer parameter; by symmetry (P(X > Y) = 1 - P(Y > X), and
    1 - X ~ Beta(b, a)) any of the four can be the one summed, so the smallest is used.
    """
    options = {
        a_var: lambda: _prob_second_greater(a_ctrl, b_ctrl, int(a_var), b_var),
        a_ctrl: lambda: 1.0 - _prob_second_greater(a_var, b_var, int(a_ctrl), b_ctrl),
        b_ctrl: lambda: _prob_second_greater(b_var, a_var, int(b_ctrl), a_ctrl),
        b_var: lambda: 1.0 - _prob_second_greater(b_ctrl, a_ctrl, int(b_var), a_var),
    }
    return float(np.clip(options[min(options)](), 0.0, 1.0))


def beta_binomial(
    control_conversions: int,
    control_n: int,
    variant_conversions: int,
    variant_n: int,
    prior: tuple[float, float] = (1.0, 1.0),
    higher_is_better: bool = True,
) -> BayesianResult:
    """Chance to beat control and expected losses for two Beta-Binomial arms, exactly.

    Loss of shipping the variant is E[max(p_a - p_b, 0)]. Since x·Beta(x; a, b) = a/(a+b)·Beta(x; a+1, b),
    E[p_a·1(p_a > p_b)] = a_a/(a_a+b_a)·P(A⁺ > B) with A⁺ ~ Beta(a_a+1, b_a), so each loss is a
    difference of two closed-form probabilities (Chris Stucchio, "Bayesian A/B Testing at VWO", 2015).
    The prior parameters must be integers for the closed form (the default Beta(1, 1) is).
    """
    if not all(float(p).is_integer() and p > 0 for p in prior):
        raise ValueError(f"the closed form needs positive integer prior parameters, got {prior}")
    a_a, b_a = prior[0] + control_conversions, prior[1] + control_n - control_conversions
    a_b, b_b = prior[0] + variant_conversions, prior[1] + variant_n - variant_conversions
    p_b_greater = prob_beta_greater(a_a, b_a, a_b, b_b)
    mean_a, mean_b = a_a / (a_a + b_a), a_b / (a_b + b_b)
    e_a_when_a_wins = mean_a * (1.0 - prob_beta_greater(a_a + 1, b_a, a_b, b_b))
    e_b_when_a_wins = mean_b * (1.0 - prob_beta_greater(a_a, b_a, a_b + 1, b_b))
    loss_ship_b = max(e_a_when_a_wins - e_b_when_a_wins, 0.0)  # E[max(p_a - p_b, 0)]
    loss_ship_a = max(loss_ship_b + (mean_b - mean_a), 0.0)  # E[max(p_b - p_a, 0)] = loss_b + E[p_b - p_a]
    if higher_is_better:
        return BayesianResult(p_b_greater, loss_ship_b, loss_ship_a)
    return BayesianResult(1.0 - p_b_greater, loss_ship_a, loss_ship_b)


def normal_posterior(diff: FloatArray, se: FloatArray, higher_is_better: bool = True) -> BayesianResult:
    """Chance to beat and expected losses when the difference is N(diff, se²) a posteriori.

    E[max(-D, 0)] for D ~ N(d, s²) is s·φ(d/s) - d·Φ(-d/s) (the normal partial expectation).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        d = diff if higher_is_better else -np.asarray(diff)
        z = d / se
        chance = stats.norm.cdf(z)
        loss_variant = se * stats.norm.pdf(z) - d * stats.norm.cdf(-z)
        loss_control = loss_variant + d
    return BayesianResult(chance, loss_variant, loss_control)
