"""Fit a marketing-mix model with PyMC-Marketing and keep what later steps need.

Library: PyMC-Marketing's :class:`pymc_marketing.mmm.multidimensional.MMM` (the maintained successor
of its ``MMM`` class): the adstock and saturation components, max-abs scaling of spend and revenue,
yearly Fourier seasonality and control regressors are the library's, as are the priors (documented in
:func:`model_config`). The base gets the built-in holiday weeks as controls, plus the user's controls
standardized, and a linear trend; the whole mean is multiplied by a smooth customer-base level
(:func:`customer_base_level`, added through the library's mu-effect hook).

Why PyMC-Marketing and not a model of our own: it is the field's maintained reference, with its own
recovery tests, and it installs and runs here (pytensor compiles with the system g++). The one thing
added on top is :class:`model.mmm.posterior.Posterior`, a numpy twin of its mean function, so that the
report, the optimizer and the dashboard run from stored draws without PyMC.

Sampler: NUTS through numpyro (JAX), chosen by measurement on this machine (2 cores shared with other
work, 104 weeks x 6 channels, 2 chains x 500 draws after 500 tuning steps, same run): numpyro 31 s
wall including JAX compilation, nutpie (numba backend) 151 s, most of it compiling; PyMC's default
sampler compiles C and is slower still. ``benchmarks/mmm_bench.py`` records the default fit (shared
machine: 84 s wall, 43 s of CPU, converged, against the 3-minute floor). With one CPU device JAX would run the
chains one after the other, so two host devices are requested before JAX is first imported.

After sampling, the draws of the free parameters are thinned to at most ``keep_draws`` and handed
to :class:`model.mmm.posterior.Posterior`, which evaluates everything with numpy (tested equal to
the model's own deterministics).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from model.mmm.data import MMMData, holiday_features
from model.mmm.posterior import Posterior, level_time
from model.mmm.transforms import ADSTOCKS, SATURATIONS

log = logging.getLogger("shoplens.mmm")

#: A fit is called converged when every parameter has R-hat <= this, bulk and tail ESS of at least
#: ESS_PER_CHAIN per chain and no divergent transitions (Vehtari et al. 2021, "Rank-normalization,
#: folding, and localization: an improved R-hat", recommend R-hat < 1.01 and ESS > 100 per chain).
RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
DIVERGENCE_MAX = 0
#: Meridian's default ROI prior, LogNormal(0.2, 0.9) (Google, "Meridian: default prior distributions"):
#: median 1.22, 90% of its mass between 0.28 and 5.4. A published default, not fitted to our generator.
ROI_PRIOR = (0.2, 0.9)
#: Prior sd of each coefficient of the log level (on tau in [0, 1]): a level moving by a factor e over the
#: fitted weeks is one sd; the event path's customer base shrinks by about 2.5x over two years.
LEVEL_PRIOR_SD = 1.0


@dataclass
class FitConfig:
    adstock: str = "geometric"
    saturation: str = "logistic"
    l_max: int = 8
    yearly_order: int = 2
    chains: int = 2
    #: 1000 draws after 1000 tuning steps: converged (unrounded R-hat <= 1.01, ESS, no divergences) on all
    #: three recovery seeds tried, where 500 after 700 converged on one (R-hat up to 1.014, ESS short);
    #: the ROIs move by a few percent at most (benchmarks/results/mmm_recovery.md, "@" rows).
    draws: int = 1000
    tune: int = 1000
    target_accept: float = 0.95
    sampler: str = "numpyro"
    seed: int = 0
    keep_draws: int = 500
    #: LogNormal(mu, sigma) prior on each channel's ROI over the fitted weeks, or None for
    #: PyMC-Marketing's HalfNormal prior on the raw saturation coefficient (see :func:`add_roi_prior`).
    roi_prior: tuple[float, float] | None = ROI_PRIOR
    #: Powers of time in the log of the customer-base level that scales media and base alike (see
    #: :func:`customer_base_level`); 0 is the additive model.
    level_order: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Diagnostics:
    rhat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    draws: int
    chains: int
    sampler: str
    seconds: float
    per_parameter: list[dict] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        need = ESS_PER_CHAIN * self.chains
        return (self.rhat_max <= RHAT_MAX and min(self.ess_bulk_min, self.ess_tail_min) >= need
                and self.divergences <= DIVERGENCE_MAX)

    def problems(self) -> list[str]:
        out = []
        if self.rhat_max > RHAT_MAX:
            bad = [p["parameter"] for p in self.per_parameter if p["r_hat"] > RHAT_MAX]
            out.append(f"R-hat {self.rhat_max:.3f} > {RHAT_MAX} ({', '.join(bad[:5])})")
        need = ESS_PER_CHAIN * self.chains
        if min(self.ess_bulk_min, self.ess_tail_min) < need:
            out.append(f"effective sample size {min(self.ess_bulk_min, self.ess_tail_min):.0f} < {need:.0f}")
        if self.divergences > DIVERGENCE_MAX:
            out.append(f"{self.divergences} divergent transitions")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "converged": self.converged, "problems": self.problems()}


@dataclass
class FitResult:
    posterior: Posterior
    diagnostics: Diagnostics
    config: FitConfig
    warnings: list[str] = field(default_factory=list)
    lift_tests: list[dict] = field(default_factory=list)  # calibration rows the fit used (weekly units)


def base_frame(data: MMMData) -> tuple[pd.DataFrame, dict, dict]:
    """Linear trend, holiday weeks and standardized user controls (constant columns dropped).

    The trend stays inside the customer-base level's bracket: a base that grows by itself (new products,
    prices) is additive and does not scale media, which the level alone would assume. Measured on the
    truth-level series (additive 8% a year growth, constant media effects), seeds 1000-1003 at 1000/1000:
    without the trend 15 of 20 channels were within 20% of the true ROI, with it 17 of 20 and the level
    stays near 1; on the event path (seeds 1100-1103) the two give the same figures (15-20% within 20%,
    coverage 85%), most ROIs within a few points of each other (affiliates on seed 1100: +26% and +66%).
    """
    frame = pd.DataFrame({"trend": np.arange(len(data)) / float(len(data))}, index=data.dates)
    for name, col in holiday_features(data.dates).items():
        if col.std() > 0:
            frame[name] = col.to_numpy()
    center, scale = {}, {}
    for name in data.controls.columns:
        col = data.controls[name].to_numpy(dtype=float)
        center[name], scale[name] = float(col.mean()), float(col.std() or 1.0)
        frame[name] = (col - center[name]) / scale[name]
    return frame, center, scale


def model_config(n_controls: int) -> dict[str, Any]:
    """Priors on the scaled data (target / max(target), spend / max(spend)).

    PyMC-Marketing's defaults for the media shapes (adstock alpha ~ Beta(1, 3), logistic lam ~ Gamma(3, 1));
    the coefficient beta gets the ROI prior of :func:`add_roi_prior` (or, with ``roi_prior=None``, the
    library's HalfNormal(2)); the likelihood (Normal, sigma ~ HalfNormal(2)) and the Fourier terms
    (Laplace(0, 1)); the intercept and controls get Normal(0, 2) / Normal(0, 1) on the scaled target.
    """
    from pymc_extras.prior import Prior

    cfg: dict[str, Any] = {"intercept": Prior("Normal", mu=0, sigma=2)}
    if n_controls:
        cfg["gamma_control"] = Prior("Normal", mu=0, sigma=1, dims="control")
    return cfg


def customer_base_level(order: int, first_week: pd.Timestamp, weeks: float) -> Any:
    """PyMC-Marketing mu effect that multiplies the whole mean (base and media) by the level ``L_t``.

    ``L_t = exp(sum_k kappa_k tau_t^k)``, ``kappa_k ~ Normal(0, LEVEL_PRIOR_SD)``, ``tau`` as in
    :func:`model.mmm.posterior.level_time`. Why: revenue is customers times what each one buys, and the
    media reach the customers there are. On the event path the active customer base shrinks over the two
    years, so the revenue a euro of media drives falls from about 1.7x to 0.67x of its mean by quarter
    (benchmarks/results/mmm_event_path.md); an additive model with constant media effects cannot hold
    that, and even least squares told the true media shapes missed the ROIs by 50-500% there, where with
    the level (and the holiday weeks of :func:`model.mmm.data.holiday_features`) it came within about 20%
    on the expected series. The library's ``time_varying_media`` and ``time_varying_intercept`` would give
    media and base two separate latent processes; one shared level is what the customer base is, and it
    is learned from the base's revenue, not only from the media's weaker signal.

    PyMC-Marketing adds mu effects after the intercept, media, controls and seasonality, so the effect is
    ``(L - 1) x`` (their sum): the mean becomes ``L x`` (their sum).
    """
    import pymc.dims as pmd
    from pymc_marketing.mmm.additive_effect import MuEffect

    class CustomerBaseLevel(MuEffect):
        order: int
        first_week: str
        weeks: float

        def _tau(self, dates: Any) -> np.ndarray:
            return level_time(pd.DatetimeIndex(dates), pd.Timestamp(self.first_week), self.weeks)

        def create_data(self, mmm: Any) -> None:
            mmm.model.add_coord("level_power", list(range(1, self.order + 1)))
            pmd.Data("level_tau", self._tau(mmm.model.coords["date"]), dims="date")

        def create_effect(self, mmm: Any) -> Any:
            model = mmm.model
            kappa = pmd.Normal("level", mu=0.0, sigma=LEVEL_PRIOR_SD, dims="level_power")
            powers = pmd.math.as_xtensor(np.arange(1, self.order + 1, dtype=float), dims=("level_power",))
            level = pmd.Deterministic("level_multiplier",
                                      pmd.math.exp((kappa * model["level_tau"] ** powers).sum(dim="level_power")))
            inner = model["intercept_contribution"] + model["channel_contribution"].sum(dim="channel")
            if "control_contribution" in model.named_vars:
                inner = inner + model["control_contribution"].sum(dim="control")
            if "yearly_seasonality_contribution" in model.named_vars:
                inner = inner + model["yearly_seasonality_contribution"]
            return (level - 1.0) * inner

        def set_data(self, mmm: Any, model: Any, X: Any) -> None:
            import pymc as pm

            pm.set_data({"level_tau": self._tau(model.coords["date"])}, model=model)

    return CustomerBaseLevel(order=order, first_week=str(pd.Timestamp(first_week).date()), weeks=weeks)


def add_roi_prior(mmm: Any, spend_total: np.ndarray, target_scale: float, mu: float, sigma: float) -> None:
    """Make the prior of each channel's ROI LogNormal(mu, sigma), whatever its adstock and saturation.

    ``roi = beta * g(adstock, saturation)`` is the revenue the channel drives over the fitted weeks per
    unit of its spend. With a flat prior on ``log beta`` (see :func:`fit`) and the term
    ``Normal(mu | log roi, sigma)`` added here, the joint prior density is
    ``LogNormal(roi | mu, sigma) x (the library's priors on the shape parameters)``: the flat prior on
    ``log beta`` is the Jacobian of ``(beta, shape) -> (roi, shape)``. Why: a HalfNormal on beta on the
    scaled target puts a prior on ROI that depends on each channel's spend level and saturation, which
    is what Meridian's and Robyn's users ask to avoid.

    The term is an observed ``pymc.dims`` Normal rather than a potential: PyMC lowers the dims graph of
    observed variables before differentiating, not that of potentials (PyMC 5.28).
    """
    import pymc.dims as pmd

    model = mmm.model
    with model:
        spend = pmd.math.as_xtensor(np.asarray(spend_total, dtype=float), dims=("channel",))
        contribution = model["channel_contribution"]
        if "level_multiplier" in model.named_vars:  # the revenue media drive is at the customer base's level
            contribution = contribution * model["level_multiplier"]
        roi = pmd.Deterministic("roi", contribution.sum(dim="date") * target_scale / spend)
        pmd.Normal("roi_prior", mu=pmd.math.log(roi), sigma=sigma,
                   observed=pmd.math.as_xtensor(np.full(len(spend_total), mu), dims=("channel",)))


def add_lift_tests(mmm: Any, rows: pd.DataFrame, level: bool) -> None:
    """PyMC-Marketing's lift-test likelihood for ``rows`` (:func:`model.mmm.data.clean_lift_tests`).

    With a customer-base level the revenue a test measures is the saturation curve's difference times
    the level in the test's week, so the rows go through the library's time-varying form of the same
    likelihood (the one it uses for its own ``time_varying_media``), with the level as the multiplier.
    """
    from pymc_marketing.mmm.lift_test import (
        add_lift_measurements_to_likelihood_from_saturation,
        scale_lift_measurements,
    )

    if not level:
        mmm.add_lift_test_measurements(rows.drop(columns="week"))
        return
    rows = rows.drop(columns="week").assign(date=pd.to_datetime(rows["week"]).to_numpy())
    scaled = scale_lift_measurements(df_lift_test=rows, channel_col="channel", channel_columns=mmm.channel_columns,
                                     channel_transform=mmm._make_channel_transform(rows),
                                     target_transform=mmm._make_target_transform(rows), dim_cols=[])
    add_lift_measurements_to_likelihood_from_saturation(scaled, mmm.saturation,
                                                        time_varying_var_name="level_multiplier", model=mmm.model)


def _ensure_host_devices(n: int) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def fit(data: MMMData, config: FitConfig | None = None, lift_tests: pd.DataFrame | None = None) -> FitResult:
    """Sample the posterior of the model for ``data`` (see the module docstring).

    ``lift_tests``: rows of :func:`model.mmm.data.clean_lift_tests`, added as likelihood terms with
    PyMC-Marketing's lift-test calibration (a Gamma likelihood of the measured lift around the
    saturation curve's difference, times the level in the test's week: :func:`add_lift_tests`).
    """
    config = config or FitConfig()
    if config.adstock not in ADSTOCKS or config.saturation not in SATURATIONS:
        raise ValueError(f"unknown adstock/saturation {config.adstock}/{config.saturation}; "
                         f"choose from {sorted(ADSTOCKS)} / {sorted(SATURATIONS)}")
    _ensure_host_devices(max(1, config.chains))
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
        from pymc_marketing.mmm.multidimensional import MMM

    adstock = ADSTOCKS[config.adstock](l_max=config.l_max)
    saturation = SATURATIONS[config.saturation]()
    sat_priors = None
    if config.roi_prior is not None:
        from pymc_extras.prior import Prior

        sat_priors = {"beta": Prior("Flat", dims="channel", transform="exp")}  # flat on log beta
    base, center, scale = base_frame(data)
    X = pd.DataFrame({"date": data.dates})
    for j, ch in enumerate(data.channels):
        X[ch] = data.spend[:, j]
    for name in base.columns:
        X[name] = base[name].to_numpy()
    y = pd.Series(data.revenue, name="revenue")
    mmm = MMM(date_column="date", channel_columns=list(data.channels), target_column="revenue",
              adstock=adstock.pymc(), saturation=saturation.pymc(sat_priors),
              control_columns=list(base.columns) or None, yearly_seasonality=config.yearly_order or None,
              model_config=model_config(len(base.columns)))
    if config.level_order:
        mmm.mu_effects.append(customer_base_level(config.level_order, data.dates[0], float(len(data))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("pymc").setLevel(logging.ERROR)
        mmm.build_model(X, y)
        target_scale = float(np.asarray(mmm.scalers["_target"]).reshape(-1)[0])
        if config.roi_prior is not None:
            add_roi_prior(mmm, data.spend.sum(axis=0), target_scale, *config.roi_prior)
        if lift_tests is not None and len(lift_tests):
            add_lift_tests(mmm, lift_tests, bool(config.level_order))
        idata = mmm.fit(X, y, chains=config.chains, draws=config.draws, tune=config.tune,
                        target_accept=config.target_accept, nuts_sampler=config.sampler,
                        random_seed=config.seed, progressbar=False)
    seconds = time.perf_counter() - began

    free = [*adstock.params, *saturation.params, "intercept_contribution", "y_sigma"]
    if len(base.columns):
        free.append("gamma_control")
    if config.yearly_order:
        free.append("gamma_fourier")
    if config.level_order:
        free.append("level")
    post = idata.posterior
    summary = az.summary(idata, var_names=free, kind="diagnostics", round_to="none")  # unrounded: 1.014 is not <= 1.01
    diverging = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
    per_param = [{"parameter": str(i), "r_hat": float(r.r_hat), "ess_bulk": float(r.ess_bulk),
                  "ess_tail": float(r.ess_tail)} for i, r in summary.iterrows()]
    diag = Diagnostics(rhat_max=float(summary["r_hat"].max()), ess_bulk_min=float(summary["ess_bulk"].min()),
                       ess_tail_min=float(summary["ess_tail"].min()), divergences=diverging,
                       draws=config.draws, chains=config.chains, sampler=config.sampler,
                       seconds=round(seconds, 2), per_parameter=per_param)

    def flat(name: str) -> np.ndarray:
        v = post[name]
        dims = [d for d in v.dims if d not in ("chain", "draw")]
        return v.stack(sample=("chain", "draw")).transpose("sample", *dims).to_numpy()

    params = {p: flat(p) for p in (*adstock.params, *saturation.params)}
    params["intercept"] = flat("intercept_contribution").reshape(-1)
    params["sigma"] = flat("y_sigma").reshape(-1)
    n = len(params["intercept"])
    params["gamma_control"] = flat("gamma_control") if len(base.columns) else np.zeros((n, 0))
    params["gamma_fourier"] = flat("gamma_fourier") if config.yearly_order else np.zeros((n, 0))
    if config.level_order:
        params["level"] = flat("level")
    channel_scale = np.asarray(mmm.scalers["_channel"].sel(channel=list(data.channels)).to_numpy(), dtype=float)
    posterior = Posterior(list(data.channels), adstock, saturation, channel_scale, target_scale, params,
                          list(base.columns), config.yearly_order, data.dates[0], float(len(data)), center, scale,
                          config.roi_prior, config.level_order)
    posterior = posterior.subset(config.keep_draws, seed=config.seed)
    notes = list(data.warnings)
    if not diag.converged:
        notes.insert(0, "SAMPLER DID NOT CONVERGE: " + "; ".join(diag.problems())
                     + " - do not act on these estimates; refit with more tuning/draws or simplify the model")
    result = FitResult(posterior, diag, config, notes,
                       [] if lift_tests is None else lift_tests.to_dict(orient="records"))
    result.idata = idata  # type: ignore[attr-defined]  # kept in memory for tests, never stored
    return result


__all__ = ["DIVERGENCE_MAX", "ESS_PER_CHAIN", "RHAT_MAX", "Diagnostics", "FitConfig", "FitResult", "base_frame", "fit"]
