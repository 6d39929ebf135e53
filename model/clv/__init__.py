"""Customer lifetime value: BG/NBD or Pareto/NBD for repeat purchases, Gamma-Gamma for spend (PyMC-Marketing)."""

from model.clv.evaluation import (
    HoldoutEvaluation,
    holdout_evaluation,
    spend_frequency_correlation,
    thin_data_warnings,
)
from model.clv.fit import FittedCLV, NotEnoughData, fit_clv
from model.clv.score import PURCHASE_HORIZONS, SCORE_COLUMNS, expected_purchases, score_customers

__all__ = [
    "PURCHASE_HORIZONS",
    "SCORE_COLUMNS",
    "FittedCLV",
    "HoldoutEvaluation",
    "NotEnoughData",
    "expected_purchases",
    "fit_clv",
    "holdout_evaluation",
    "score_customers",
    "spend_frequency_correlation",
    "thin_data_warnings",
]
