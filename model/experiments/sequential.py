"""Always-valid inference for experiments that are looked at every day.

A fixed-horizon interval covers the truth 95% of the time at one pre-chosen look; checked daily, some
look will exclude zero far more often than 5%. A confidence sequence covers the truth at all looks at
once. We use the Gaussian-mixture boundary in its asymptotic form:

    estimate ± sigma_hat·sqrt( 2(Nrho² + 1) / (N²rho²) · log( sqrt(Nrho² + 1) / alpha ) )

Source: Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit theory and
asymptotic confidence sequences" (Ann. Statist., 2024), the Gaussian-mixture asymptotic CS, built on
the normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon (Ann. Statist., 2021). As in
GrowthBook's gbstats, rho is tuned so the sequence is tightest at N = ``tuning`` users, with
sigma_hat² = se²·N the per-user variance of the estimator.
"""

from __future__ import annotations

import numpy as np

from model.experiments.frequentist import FloatArray

#: Total users at which the sequence is tightest (GrowthBook's default).
DEFAULT_TUNING = 5000.0


def mixture_rho_squared(alpha: float, tuning: float = DEFAULT_TUNING) -> float:
    """rho² that minimizes the half-width at N = tuning (Waudby-Smith et al., the rho choice for N*)."""
    return (-2.0 * np.log(alpha) + np.log(-2.0 * np.log(alpha) + 1.0)) / tuning


def confidence_sequence_halfwidth(
    se: FloatArray, n_total: FloatArray, alpha: float, tuning: float = DEFAULT_TUNING
) -> FloatArray:
    """Half-width of the two-sided (1 - alpha) confidence sequence for an estimate with standard error ``se``."""
    rho2 = mixture_rho_squared(alpha, tuning)
    n = np.asarray(n_total, dtype=np.float64)
    sigma = se * np.sqrt(n)
    return sigma * np.sqrt(2.0 * (n * rho2 + 1.0) / (n**2 * rho2) * np.log(np.sqrt(n * rho2 + 1.0) / alpha))


def always_valid_p_value(
    estimate: FloatArray, se: FloatArray, n_total: FloatArray, alpha: float, tuning: float = DEFAULT_TUNING
) -> FloatArray:
    """The smallest level at which the sequence (rho kept at its value for ``alpha``) excludes zero.

    Solving |estimate| = half-width for alpha gives sqrt(Nrho²+1)·exp(-estimate²·Nrho² / (2se²(Nrho²+1))), the
    inverse of the mixture martingale; p < alpha exactly when the (1 - alpha) sequence excludes zero.
    """
    rho2 = mixture_rho_squared(alpha, tuning)
    n = np.asarray(n_total, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = -(np.asarray(estimate) ** 2) * n * rho2 / (2.0 * se**2 * (n * rho2 + 1.0))
        return np.minimum(1.0, np.sqrt(n * rho2 + 1.0) * np.exp(exponent))
