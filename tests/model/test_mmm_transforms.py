"""One suite every media transform passes: equal to PyMC-Marketing's own function, and its contracts."""

from __future__ import annotations

import numpy as np
import pytest

from model.mmm import REGISTRY, Component, Geometric, Hill, Logistic, WeibullPDF

RNG = np.random.default_rng(5)
SPEND = np.abs(RNG.gamma(2.0, 1.0, size=(30, 3))) * (RNG.random((30, 3)) < 0.7)

ADSTOCK_PARAMS = {
    "geometric": {"adstock_alpha": np.array([0.1, 0.5, 0.85])},
    "weibull_pdf": {"adstock_lam": np.array([1.0, 2.5, 4.0]), "adstock_k": np.array([0.8, 1.5, 3.0])},
}
SATURATION_PARAMS = {
    "logistic": {"saturation_lam": np.array([0.5, 2.0, 4.0]), "saturation_beta": np.array([1.0, 0.3, 2.0])},
    "hill": {"saturation_slope": np.array([0.8, 1.5, 3.0]), "saturation_kappa": np.array([0.3, 1.0, 2.0]),
             "saturation_beta": np.array([1.0, 0.3, 2.0])},
}
ADSTOCKS = [Geometric(l_max=8), WeibullPDF(l_max=8)]
SATURATIONS = [Logistic(), Hill()]


def _pymc_eval(component: Component, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """PyMC-Marketing's implementation of the component, evaluated with pytensor."""
    import pytensor.xtensor as ptx

    pm_comp = component.pymc()
    kwargs = {k.split("_", 1)[1]: ptx.as_xtensor(v, dims=("channel",)) for k, v in params.items()}
    xx = ptx.as_xtensor(x, dims=("date", "channel"))
    out = pm_comp.function(xx, **kwargs, dim="date") if component.name in ("geometric", "weibull_pdf") \
        else pm_comp.function(xx, **kwargs)
    return np.asarray(out.transpose("date", "channel").eval())


@pytest.mark.parametrize("component", ADSTOCKS, ids=lambda c: c.name)
class TestAdstock:
    def test_equals_pymc_marketing(self, component):
        p = ADSTOCK_PARAMS[component.name]
        np.testing.assert_allclose(component.apply(SPEND, p), _pymc_eval(component, SPEND, p), rtol=1e-6, atol=1e-9)

    def test_weights_are_normalized_and_conserve_mass(self, component):
        p = ADSTOCK_PARAMS[component.name]
        w = component.weights(p)
        np.testing.assert_allclose(w.sum(axis=-2), 1.0)
        assert (w >= 0).all()
        pulse = np.zeros((40, 3))
        pulse[0] = 1.0
        np.testing.assert_allclose(component.apply(pulse, p).sum(axis=0), 1.0)  # all of it lands within l_max

    def test_constant_spend_adstocks_to_itself_and_is_linear(self, component):
        p = ADSTOCK_PARAMS[component.name]
        flat = np.full((20, 3), 2.0)
        np.testing.assert_allclose(component.apply(flat, p)[component.l_max:], 2.0)
        np.testing.assert_allclose(component.apply(3 * SPEND + SPEND[::-1], p),
                                   3 * component.apply(SPEND, p) + component.apply(SPEND[::-1], p))

    def test_broadcasts_over_draws(self, component):
        p = {k: np.stack([v, v * 0.9]) for k, v in ADSTOCK_PARAMS[component.name].items()}
        out = component.apply(SPEND, p)
        assert out.shape == (2, *SPEND.shape)
        np.testing.assert_allclose(out[0], component.apply(SPEND, {k: v[0] for k, v in p.items()}))

    def test_round_trip(self, component):
        assert Component.from_dict(component.to_dict()) == component
        assert REGISTRY[component.name] is type(component)


@pytest.mark.parametrize("component", SATURATIONS, ids=lambda c: c.name)
class TestSaturation:
    def test_equals_pymc_marketing(self, component):
        p = SATURATION_PARAMS[component.name]
        np.testing.assert_allclose(component.apply(SPEND, p), _pymc_eval(component, SPEND, p), rtol=1e-6, atol=1e-9)

    def test_zero_at_zero_monotone_and_bounded_by_beta(self, component):
        p = SATURATION_PARAMS[component.name]
        grid = np.linspace(0, 50, 400)[:, None].repeat(3, axis=1)
        y = component.apply(grid, p)
        np.testing.assert_allclose(y[0], 0.0, atol=1e-12)
        assert (np.diff(y, axis=0) >= -1e-12).all()
        assert (y <= p["saturation_beta"] + 1e-12).all()

    def test_derivative_matches_finite_differences(self, component):
        p = SATURATION_PARAMS[component.name]
        x = np.linspace(0.05, 5, 60)[:, None].repeat(3, axis=1)
        h = 1e-6
        numeric = (component.apply(x + h, p) - component.apply(x - h, p)) / (2 * h)
        np.testing.assert_allclose(component.derivative(x, p), numeric, rtol=1e-5, atol=1e-8)

    def test_round_trip(self, component):
        assert Component.from_dict(component.to_dict()) == component
