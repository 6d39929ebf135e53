"""Purchase propensity: who buys within the horizon, from behaviour at a cutoff.

The estimator (logistic baseline and gradient boosting, calibrated on a held-out cutoff), the
evaluation figures (ROC/PR, log loss, Brier, confusion at campaign capacity, calibration and ECE,
deciles, permutation importance), the model comparison, and the light JSON scorer that applies a
fitted model with numpy. Pure: frames and arrays in, dicts, frames and arrays out.

Callers import from this package; the modules behind it may move.
"""

from model.propensity.estimator import LogPrep, PropensityModel, PropensityWarning
from model.propensity.evaluation import (
    DEFAULT_CAPACITY,
    ECE_BINS,
    calibration_table,
    capacity_threshold,
    confusion_at,
    curves,
    decile_table,
    evaluate,
    expected_calibration_error,
    permutation_importance_auc,
    threshold_grid,
)
from model.propensity.features import BASE_FEATURES, LOG_FEATURES, MODEL_FEATURES, design_matrix
from model.propensity.history import LoadedPropensity
from model.propensity.scorer import (
    ARTIFACT_KIND,
    SCHEMA_VERSION,
    LightPropensityScorer,
    decile_cuts,
    export_artifact,
)
from model.propensity.study import Comparison, ModelReport, compare_models

__all__ = [
    "ARTIFACT_KIND",
    "BASE_FEATURES",
    "DEFAULT_CAPACITY",
    "ECE_BINS",
    "LOG_FEATURES",
    "MODEL_FEATURES",
    "SCHEMA_VERSION",
    "Comparison",
    "LightPropensityScorer",
    "LoadedPropensity",
    "LogPrep",
    "ModelReport",
    "PropensityModel",
    "PropensityWarning",
    "calibration_table",
    "capacity_threshold",
    "compare_models",
    "confusion_at",
    "curves",
    "decile_cuts",
    "decile_table",
    "design_matrix",
    "evaluate",
    "expected_calibration_error",
    "export_artifact",
    "permutation_importance_auc",
    "threshold_grid",
]
