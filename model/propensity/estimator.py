"""The purchase-propensity estimator: logistic regression or gradient boosting, calibrated by time.

``PropensityModel(kind="logistic")`` is the readable baseline (median imputation + missing flags,
log1p of heavy-tailed inputs, StandardScaler, LogisticRegression; its coefficients are standardized,
so their sizes compare); ``kind="boosted"`` is scikit-learn's HistGradientBoostingClassifier (nulls
routed natively). Both read :data:`model.propensity.features.MODEL_FEATURES`.

Time, never chance, separates what is learned from what is checked. ``fit(X, y, groups)`` takes the
cutoff of each row; the most recent training cutoff is held out: the base model is fitted on the
earlier cutoffs, the boosted model's early stopping watches the held-out cutoff, and calibration is
decided and fitted there. Calibration rule (``calibration="auto"``): measure the held-out ECE of
the uncalibrated scores; above ``ece_tolerance`` calibrate, with isotonic regression when the
held-out cutoff has at least ``isotonic_min_positives`` buyers (flexible, needs data) and Platt's
sigmoid otherwise (two parameters, safe on few positives), via ``CalibratedClassifierCV`` on the
frozen base model. The evaluation cutoff (validation) is never seen by ``fit``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from model.propensity.evaluation import expected_calibration_error
from model.propensity.features import LOG_FEATURES, MODEL_FEATURES, design_matrix

Kind = Literal["logistic", "boosted"]
Calibration = Literal["auto", "none", "sigmoid", "isotonic"]


class PropensityWarning(UserWarning):
    """A legal but notable outcome (no held-out cutoff, a constant feature, ...)."""


class LogPrep(TransformerMixin, BaseEstimator):
    """Median imputation, a 0/1 flag per column that had nulls, and sign(x) log1p(|x|) of ``log_columns``."""

    def __init__(self, log_columns: tuple[int, ...] = ()) -> None:
        self.log_columns = log_columns

    def fit(self, A: np.ndarray, y: Any = None) -> LogPrep:
        A = np.asarray(A, dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> nan, replaced below
            med = np.nanmedian(A, axis=0)
        self.medians_ = np.where(np.isnan(med), 0.0, med)
        self.missing_columns_ = np.flatnonzero(np.isnan(A).any(axis=0))
        self.log_mask_ = np.isin(np.arange(A.shape[1]), np.asarray(self.log_columns, dtype=int))
        return self

    def transform(self, A: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "medians_")
        return prep_transform(np.asarray(A, dtype=float), self.medians_, self.missing_columns_, self.log_mask_)


def prep_transform(A: np.ndarray, medians: np.ndarray, missing_columns: np.ndarray, log_mask: np.ndarray) -> np.ndarray:
    """The arithmetic of :class:`LogPrep` (shared with the light scorer)."""
    nan = np.isnan(A)
    X = np.where(nan, medians, A)
    X[:, log_mask] = np.sign(X[:, log_mask]) * np.log1p(np.abs(X[:, log_mask]))
    return np.hstack([X, nan[:, missing_columns].astype(float)])


class PropensityModel(ClassifierMixin, BaseEstimator):
    """P(purchase within the horizon | behaviour at the cutoff).

    Parameters
    ----------
    kind : {"logistic", "boosted"}
    calibration : {"auto", "none", "sigmoid", "isotonic"}
        See the module docstring; "auto" calibrates only when the held-out ECE exceeds ``ece_tolerance``.
    ece_tolerance : float
    isotonic_min_positives : int
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization : boosted model knobs.
    C : float
        Inverse L2 strength of the logistic regression.
    max_train_rows : int
        Rows of the earlier cutoffs the base model is fitted on (seeded sample beyond that).
    random_state : int

    Attributes
    ----------
    features_ : tuple of str, the input columns, in order.
    base_ : fitted sklearn estimator on the design matrix (Pipeline or HistGradientBoostingClassifier).
    calibrator_ : fitted calibrator (IsotonicRegression or _SigmoidCalibration) or None.
    calibration_ : str or None, the method used.
    holdout_ : dict, the held-out cutoff and its ECE before/after calibration (None without one).
    n_train_ : int, rows the base model was fitted on.
    classes_ : ndarray of shape (2,)

    Examples
    --------
    >>> m = PropensityModel(kind="logistic").fit(frame, frame["label"], frame["cutoff"])  # doctest: +SKIP
    >>> m.predict_proba(frame)[:, 1]  # doctest: +SKIP
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "kind": ("logistic", "boosted"),
        "calibration": ("auto", "none", "sigmoid", "isotonic"),
        "ece_tolerance": (0.0, 1.0),
        "learning_rate": (1e-6, 1.0),
        "max_iter": (1, 100_000),
        "C": (1e-9, 1e9),
        "max_train_rows": (100, 10**9),
    }

    def __init__(
        self,
        kind: Kind = "boosted",
        calibration: Calibration = "auto",
        ece_tolerance: float = 0.01,
        isotonic_min_positives: int = 200,
        learning_rate: float = 0.06,
        max_iter: int = 400,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 100,
        l2_regularization: float = 1.0,
        C: float = 1.0,
        max_train_rows: int = 1_000_000,
        random_state: int = 0,
    ) -> None:
        self.kind = kind
        self.calibration = calibration
        self.ece_tolerance = ece_tolerance
        self.isotonic_min_positives = isotonic_min_positives
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.C = C
        self.max_train_rows = max_train_rows
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        for name, allowed in self._parameter_constraints.items():
            value = getattr(self, name)
            if isinstance(allowed[0], str):
                if value not in allowed:
                    raise ValueError(f"PropensityModel: {name} must be one of {allowed}, got {value!r}")
            elif not allowed[0] <= value <= allowed[1]:
                raise ValueError(f"PropensityModel: {name} must be in [{allowed[0]}, {allowed[1]}], got {value!r}")

    def _base(self, has_holdout: bool) -> Any:
        if self.kind == "logistic":
            logs = tuple(j for j, c in enumerate(self.features_) if c in LOG_FEATURES)
            return Pipeline([("prep", LogPrep(logs)), ("scale", StandardScaler()),
                             ("lr", LogisticRegression(C=self.C, max_iter=2000))])  # fmt: skip
        return HistGradientBoostingClassifier(
            learning_rate=self.learning_rate, max_iter=self.max_iter, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            early_stopping=has_holdout, scoring="loss", n_iter_no_change=20, random_state=self.random_state,
        )  # fmt: skip

    def fit(self, X: pd.DataFrame, y: Any, groups: Any) -> PropensityModel:
        """Fit on the rows of ``X`` (feature columns), labels ``y`` (0/1) and their cutoff ``groups``."""
        self._check_params()
        y = np.asarray(y, dtype=int)
        groups = np.asarray(groups)
        if len(y) != len(X) or len(groups) != len(X):
            raise ValueError("PropensityModel.fit: X, y and groups must have the same length")
        if not np.isin(y, (0, 1)).all() or y.max(initial=0) == 0:
            raise ValueError("PropensityModel.fit: no positive labels (no purchase after any training cutoff)")
        self.features_ = tuple(MODEL_FEATURES)
        A = design_matrix(X, self.features_)
        cuts = np.unique(groups)
        holdout = cuts[-1] if len(cuts) > 1 else None
        is_hold = groups == holdout if holdout is not None else np.zeros(len(y), dtype=bool)
        fit_rows = np.flatnonzero(~is_hold)
        if holdout is None:
            warnings.warn("one training cutoff only: no held-out cutoff for early stopping or calibration",
                          PropensityWarning, stacklevel=2)  # fmt: skip
        if y[fit_rows].max(initial=0) == 0:
            raise ValueError("PropensityModel.fit: no positive labels in the cutoffs before the held-out one")
        if len(fit_rows) > self.max_train_rows:
            rng = np.random.default_rng(self.random_state)
            fit_rows = np.sort(rng.choice(fit_rows, size=self.max_train_rows, replace=False))
        base = self._base(holdout is not None)
        if self.kind == "boosted" and holdout is not None:
            base.fit(A[fit_rows], y[fit_rows], X_val=A[is_hold], y_val=y[is_hold])
        else:
            base.fit(A[fit_rows], y[fit_rows])
        self.base_ = base
        self.n_train_ = len(fit_rows)
        self.classes_ = np.array([0, 1])
        self.calibrator_, self.calibration_, self.holdout_ = None, None, None
        if holdout is not None:
            self._calibrate(A[is_hold], y[is_hold], holdout)
        return self

    def _calibrate(self, A: np.ndarray, y: np.ndarray, holdout: Any) -> None:
        before = expected_calibration_error(y, base_proba(self.base_, A))
        method = self.calibration
        if method == "auto":
            method = "none" if before <= self.ece_tolerance else (
                "isotonic" if y.sum() >= self.isotonic_min_positives else "sigmoid")  # fmt: skip
        if method != "none" and 0 < y.sum() < len(y):
            cal = CalibratedClassifierCV(FrozenEstimator(self.base_), method=method).fit(A, y)
            self.calibrator_ = cal.calibrated_classifiers_[0].calibrators[0]
            self.calibration_ = method
        after = expected_calibration_error(y, self._proba(A))
        self.holdout_ = {"cutoff": str(holdout), "rows": len(y), "buyers": int(y.sum()),
                         "ece_uncalibrated": before, "ece_calibrated": after}  # fmt: skip

    # ------------------------------------------------------------------ scoring
    def _proba(self, A: np.ndarray) -> np.ndarray:
        """Guts of predict_proba on a design matrix (no validation): P(buy) per row."""
        if self.calibrator_ is None:
            return base_proba(self.base_, A)
        return np.clip(self.calibrator_.predict(self.base_.decision_function(A)), 0.0, 1.0)

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """(n, 2) probabilities; ``X`` is a frame with the feature columns or a design matrix."""
        check_is_fitted(self, "base_")
        A = X if isinstance(X, np.ndarray) else design_matrix(X, self.features_)
        p = self._proba(A)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def coefficients(self) -> pd.DataFrame:
        """Standardized coefficients of the logistic model (input name, coefficient), largest |coef| first."""
        check_is_fitted(self, "base_")
        if self.kind != "logistic":
            raise ValueError("coefficients() is for kind='logistic'")
        prep: LogPrep = self.base_.named_steps["prep"]
        names = [*self.features_, *(f"{self.features_[j]}_missing" for j in prep.missing_columns_)]
        coef = self.base_.named_steps["lr"].coef_[0]
        df = pd.DataFrame({"feature": names, "coefficient": coef})
        return df.reindex(df["coefficient"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def base_proba(base: Any, A: np.ndarray) -> np.ndarray:
    return base.predict_proba(A)[:, 1]


__all__ = ["LogPrep", "PropensityModel", "PropensityWarning", "base_proba", "prep_transform"]
