"""Both models on the same validation cutoff: fit on the training cutoffs, evaluate, pick by AUC.

The validation cutoff must be later than every training cutoff (time, never a random split); the
shipped model is the one with the higher validation ROC AUC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from model.propensity.estimator import PropensityModel
from model.propensity.evaluation import (
    DEFAULT_CAPACITY,
    calibration_table,
    curves,
    decile_table,
    evaluate,
    permutation_importance_auc,
    threshold_grid,
)
from model.propensity.features import design_matrix
from model.propensity.scorer import LightPropensityScorer, export_artifact


@dataclass
class ModelReport:
    """One fitted model and its validation figures (no user keys)."""

    kind: str
    model: PropensityModel
    metrics: dict[str, Any]
    roc: pd.DataFrame
    pr: pd.DataFrame
    calibration: pd.DataFrame
    deciles: pd.DataFrame
    grid: pd.DataFrame
    importance: pd.DataFrame
    coefficients: pd.DataFrame | None = None


@dataclass
class Comparison:
    """The models side by side; ``shipped`` is the kind with the best validation ROC AUC."""

    reports: dict[str, ModelReport]
    shipped: str
    validation_cutoff: Any
    train_cutoffs: list[Any]
    capacity: float
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> ModelReport:
        return self.reports[self.shipped]


def _check_time_split(train: pd.DataFrame, validation: pd.DataFrame, cutoff_col: str, label_col: str) -> None:
    if train.empty or validation.empty:
        raise ValueError("propensity: need rows at two or more cutoffs (training and validation)")
    if validation[cutoff_col].nunique() != 1:
        raise ValueError("propensity: the validation frame must hold exactly one cutoff")
    if train[cutoff_col].max() >= validation[cutoff_col].iloc[0]:
        raise ValueError("propensity: every training cutoff must be earlier than the validation cutoff")
    if int(train[label_col].sum()) == 0:
        raise ValueError("propensity: no positive labels at the training cutoffs (nobody bought after them)")
    if int(validation[label_col].sum()) in (0, len(validation)):
        raise ValueError("propensity: the validation cutoff needs both buyers and non-buyers")


def report_for(
    model: PropensityModel, validation: pd.DataFrame, label_col: str, capacity: float, seed: int = 0,
    A: np.ndarray | None = None,
) -> ModelReport:  # fmt: skip
    """Every validation figure of one fitted model (``A``: the validation design matrix, if already built).

    Every figure is on the whole validation cutoff except the permutation importance, which is on a
    seeded sample of at most 20,000 users (see :func:`permutation_importance_auc`). The probabilities
    and the importance's 3 x p re-scorings come from the light scorer of the same model
    (:class:`LightPropensityScorer`: what ``propensity score`` applies, equal to
    ``model.predict_proba`` to rounding, tests/model/test_propensity.py): the figures are those of the
    artifact that ships (the boosted trees in numpy, :mod:`model.propensity.trees`, several times faster
    than scikit-learn's predict).
    """
    y = validation[label_col].to_numpy(dtype=int)
    A = design_matrix(validation, model.features_) if A is None else A
    light = LightPropensityScorer(export_artifact(model, "validation"))
    p = light.proba_matrix(A)  # what the shipped artifact scores
    c = curves(y, p)
    importance = permutation_importance_auc(light.proba_matrix, A, y, model.features_, seed=seed,
                                            column_change=light.column_change)
    metrics = {**evaluate(y, p, capacity), "calibration": model.calibration_, "holdout": model.holdout_,
               "n_train": model.n_train_}  # fmt: skip
    return ModelReport(
        kind=model.kind, model=model, metrics=metrics, roc=c["roc"], pr=c["pr"], calibration=calibration_table(y, p),
        deciles=decile_table(y, p), grid=threshold_grid(y, p), importance=importance,
        coefficients=model.coefficients() if model.kind == "logistic" else None,
    )  # fmt: skip


def compare_models(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    *,
    kinds: Sequence[str] = ("logistic", "boosted"),
    capacity: float = DEFAULT_CAPACITY,
    cutoff_col: str = "cutoff",
    label_col: str = "label",
    params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
) -> Comparison:
    """Fit each kind on ``train`` (stacked training cutoffs) and evaluate on ``validation`` (one later cutoff)."""
    _check_time_split(train, validation, cutoff_col, label_col)
    models = {}
    for kind in kinds:
        model = PropensityModel(kind=kind, random_state=seed, **(params or {}).get(kind, {}))
        models[kind] = model.fit(train, train[label_col].to_numpy(), train[cutoff_col])
    # every model first, then the validation design matrix once for all (they read the same columns)
    A_val = design_matrix(validation, next(iter(models.values())).features_)
    reports = {k: report_for(m, validation, label_col, capacity, seed, A=A_val) for k, m in models.items()}
    shipped = max(reports, key=lambda k: reports[k].metrics["roc_auc"])
    return Comparison(
        reports=reports, shipped=shipped, validation_cutoff=validation[cutoff_col].iloc[0],
        train_cutoffs=sorted(pd.unique(train[cutoff_col]).tolist()), capacity=capacity,
    )  # fmt: skip


__all__ = ["Comparison", "ModelReport", "compare_models", "report_for"]
