"""Media transforms: adstock (carry-over) and saturation (diminishing returns), numpy twins.

The fit uses PyMC-Marketing's own implementations (:mod:`pymc_marketing.mmm.components`); these numpy
functions are their twins for everything that runs from published posterior draws without PyMC
(contributions for new periods, response curves, the budget optimizer, the dashboard). A test
(tests/model/test_mmm_transforms.py) checks every twin equals PyMC-Marketing's function.

Shapes: ``x`` is ``(..., T, C)`` (time, channel); parameters are ``(..., C)`` and broadcast over the
leading (draw) axes, so one call transforms every posterior draw at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

# ----------------------------------------------------------------------------------------- adstock


def _convolve(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``out[..., t, c] = sum_l w[..., l, c] * x[..., t - l, c]`` (zero before the first period)."""
    x = np.asarray(x, dtype=float)
    out = np.zeros(np.broadcast_shapes(x.shape, (*w.shape[:-2], x.shape[-2], w.shape[-1])))
    n_t = x.shape[-2]
    for lag in range(min(w.shape[-2], n_t)):
        out[..., lag:, :] += w[..., lag : lag + 1, :] * x[..., : n_t - lag, :]
    return out


def geometric_weights(alpha: np.ndarray, l_max: int, normalize: bool = True) -> np.ndarray:
    r"""Geometric decay weights ``w_l = \alpha^l`` for ``l = 0..l_max-1`` (normalized to sum 1).

    Jin, Wang, Sun, Chan, Koehler (2017), *Bayesian Methods for Media Mix Modeling with Carryover and
    Shape Effects*, eq. (1). Returns ``(..., l_max, C)``.
    """
    alpha = np.asarray(alpha, dtype=float)[..., None, :]
    w = alpha ** np.arange(l_max)[:, None]
    return w / w.sum(axis=-2, keepdims=True) if normalize else w


def weibull_pdf_weights(lam: np.ndarray, k: np.ndarray, l_max: int, normalize: bool = True) -> np.ndarray:
    r"""Weibull-PDF lag weights ``w_l = (k/\lambda) (l/\lambda)^{k-1} e^{-(l/\lambda)^k}``, ``l = 1..l_max``.

    A flexible carry-over that can peak after the exposure (k > 1). Robyn's "weibull_pdf" adstock;
    PyMC-Marketing's :func:`weibull_adstock` with ``type="PDF"``, which first rescales the densities to
    ``[0, 1]`` (``(w - min w) / (max w - min w)``, so the smallest lag weight is 0) and then normalizes.
    Returns ``(..., l_max, C)``.
    """
    lam = np.asarray(lam, dtype=float)[..., None, :]
    k = np.asarray(k, dtype=float)[..., None, :]
    t = (np.arange(l_max) + 1.0)[:, None]
    logw = np.log(k) - np.log(lam) + (k - 1) * (np.log(t) - np.log(lam)) - (t / lam) ** k
    w = np.exp(logw)
    lo, hi = w.min(axis=-2, keepdims=True), w.max(axis=-2, keepdims=True)
    w = (w - lo) / (hi - lo)
    return w / w.sum(axis=-2, keepdims=True) if normalize else w


def geometric_adstock(x: np.ndarray, alpha: np.ndarray, l_max: int, normalize: bool = True) -> np.ndarray:
    r"""``a_t = \sum_{l<L} w_l x_{t-l}`` with geometric weights (see :func:`geometric_weights`)."""
    return _convolve(x, geometric_weights(alpha, l_max, normalize))


def weibull_pdf_adstock(x: np.ndarray, lam: np.ndarray, k: np.ndarray, l_max: int,
                        normalize: bool = True) -> np.ndarray:
    r"""``a_t = \sum_{l<L} w_l x_{t-l}`` with Weibull-PDF weights (see :func:`weibull_pdf_weights`)."""
    return _convolve(x, weibull_pdf_weights(lam, k, l_max, normalize))


# -------------------------------------------------------------------------------------- saturation


def logistic_saturation(x: np.ndarray, lam: np.ndarray, beta: np.ndarray) -> np.ndarray:
    r"""``\beta (1 - e^{-\lambda x}) / (1 + e^{-\lambda x})``: zero at zero, ``\beta`` at infinity.

    Jin et al. (2017) use the Hill curve; this logistic form is PyMC-Marketing's default
    (``logistic_saturation``).
    """
    e = np.exp(-np.asarray(lam, dtype=float) * x)
    return beta * (1 - e) / (1 + e)


def hill_saturation(x: np.ndarray, slope: np.ndarray, kappa: np.ndarray, beta: np.ndarray) -> np.ndarray:
    r"""``\beta (1 - \kappa^s / (\kappa^s + x^s))``: the Hill curve, half of ``\beta`` at ``x = \kappa``.

    Jin et al. (2017), eq. (3); PyMC-Marketing's ``hill_function`` times ``beta``.
    """
    x = np.maximum(np.asarray(x, dtype=float), 0.0)
    ks = np.power(kappa, slope)
    with np.errstate(divide="ignore", invalid="ignore"):
        return beta * (1 - ks / (ks + np.power(x, slope)))


# ----------------------------------------------------------------------------- registered components


@dataclass(frozen=True)
class Component:
    """A named transform with its PyMC-Marketing counterpart and a to_dict/from_dict round trip."""

    name: ClassVar[str]
    params: ClassVar[tuple[str, ...]]
    l_max: int = 8

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name, "l_max": self.l_max}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Component:
        kind = REGISTRY[data["type"]]
        return kind(**{k: v for k, v in data.items() if k != "type"})


@dataclass(frozen=True)
class Geometric(Component):
    name: ClassVar[str] = "geometric"
    params: ClassVar[tuple[str, ...]] = ("adstock_alpha",)

    def apply(self, x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        return geometric_adstock(x, p["adstock_alpha"], self.l_max)

    def weights(self, p: dict[str, np.ndarray]) -> np.ndarray:
        return geometric_weights(p["adstock_alpha"], self.l_max)

    def pymc(self) -> Any:
        from pymc_marketing.mmm import GeometricAdstock

        return GeometricAdstock(l_max=self.l_max, normalize=True)


@dataclass(frozen=True)
class WeibullPDF(Component):
    name: ClassVar[str] = "weibull_pdf"
    params: ClassVar[tuple[str, ...]] = ("adstock_lam", "adstock_k")

    def apply(self, x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        return weibull_pdf_adstock(x, p["adstock_lam"], p["adstock_k"], self.l_max)

    def weights(self, p: dict[str, np.ndarray]) -> np.ndarray:
        return weibull_pdf_weights(p["adstock_lam"], p["adstock_k"], self.l_max)

    def pymc(self) -> Any:
        from pymc_marketing.mmm import WeibullPDFAdstock

        return WeibullPDFAdstock(l_max=self.l_max, normalize=True)


@dataclass(frozen=True)
class Logistic(Component):
    name: ClassVar[str] = "logistic"
    params: ClassVar[tuple[str, ...]] = ("saturation_lam", "saturation_beta")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name}

    def apply(self, x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        return logistic_saturation(x, p["saturation_lam"][..., None, :], p["saturation_beta"][..., None, :])

    def derivative(self, x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        r"""``d/dx``: ``2 \beta \lambda e^{-\lambda x} / (1 + e^{-\lambda x})^2``."""
        lam, beta = p["saturation_lam"][..., None, :], p["saturation_beta"][..., None, :]
        e = np.exp(-lam * x)
        return 2 * beta * lam * e / (1 + e) ** 2

    def pymc(self, priors: dict[str, Any] | None = None) -> Any:
        from pymc_marketing.mmm import LogisticSaturation

        return LogisticSaturation(priors=priors)


@dataclass(frozen=True)
class Hill(Component):
    name: ClassVar[str] = "hill"
    params: ClassVar[tuple[str, ...]] = ("saturation_slope", "saturation_kappa", "saturation_beta")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name}

    def apply(self, x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        return hill_saturation(x, p["saturation_slope"][..., None, :], p["saturation_kappa"][..., None, :],
                               p["saturation_beta"][..., None, :])

    def derivative(self, x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        r"""``d/dx``: ``\beta s \kappa^s x^{s-1} / (\kappa^s + x^s)^2``."""
        s, kappa = p["saturation_slope"][..., None, :], p["saturation_kappa"][..., None, :]
        beta = p["saturation_beta"][..., None, :]
        x = np.maximum(x, 1e-12)
        ks, xs = np.power(kappa, s), np.power(x, s)
        return beta * s * ks * xs / x / (ks + xs) ** 2

    def pymc(self, priors: dict[str, Any] | None = None) -> Any:
        from pymc_marketing.mmm import HillSaturation

        return HillSaturation(priors=priors)


ADSTOCKS: dict[str, type[Component]] = {"geometric": Geometric, "weibull_pdf": WeibullPDF}
SATURATIONS: dict[str, type[Component]] = {"logistic": Logistic, "hill": Hill}
REGISTRY: dict[str, type[Component]] = {**ADSTOCKS, **SATURATIONS}


__all__ = [
    "ADSTOCKS",
    "REGISTRY",
    "SATURATIONS",
    "Component",
    "Geometric",
    "Hill",
    "Logistic",
    "WeibullPDF",
    "geometric_adstock",
    "geometric_weights",
    "hill_saturation",
    "logistic_saturation",
    "weibull_pdf_adstock",
    "weibull_pdf_weights",
]
