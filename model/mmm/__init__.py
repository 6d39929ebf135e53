"""Marketing-mix modelling: media transforms, inputs, the PyMC-Marketing fit, posterior summaries,
rolling-origin validation and the budget optimizer. Pure: frames and arrays in, frames, arrays and
small dataclasses out; PyMC-Marketing is imported only by :func:`fit` (everything else, including
the optimizer the dashboard runs, needs numpy/scipy only).

Callers import from this package; the modules behind it may move.
"""

from model.mmm.data import (
    FREQ,
    MIN_PERIODS,
    ROW_REASONS,
    InputError,
    MMMData,
    RowIssue,
    clean_controls,
    clean_kpi,
    clean_spend,
    holiday_features,
    prepare,
)
from model.mmm.fit import ESS_PER_CHAIN, RHAT_MAX, Diagnostics, FitConfig, FitResult, fit
from model.mmm.posterior import INTERVAL, Posterior, channel_summary, quantiles
from model.mmm.transforms import (
    ADSTOCKS,
    REGISTRY,
    SATURATIONS,
    Component,
    Geometric,
    Hill,
    Logistic,
    WeibullPDF,
    geometric_adstock,
    hill_saturation,
    logistic_saturation,
    weibull_pdf_adstock,
)

__all__ = [
    "ADSTOCKS",
    "ESS_PER_CHAIN",
    "FREQ",
    "INTERVAL",
    "MIN_PERIODS",
    "REGISTRY",
    "RHAT_MAX",
    "ROW_REASONS",
    "SATURATIONS",
    "Component",
    "Diagnostics",
    "FitConfig",
    "FitResult",
    "Geometric",
    "Hill",
    "InputError",
    "Logistic",
    "MMMData",
    "Posterior",
    "RowIssue",
    "WeibullPDF",
    "channel_summary",
    "clean_controls",
    "clean_kpi",
    "clean_spend",
    "fit",
    "geometric_adstock",
    "hill_saturation",
    "holiday_features",
    "logistic_saturation",
    "prepare",
    "quantiles",
    "weibull_pdf_adstock",
]
