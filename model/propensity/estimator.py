"""The purchase-propensity estimator: logistic regression or gradient boosting, calibrated by time.

``PropensityModel(kind="logistic")`` is the readable baseline (median imputation + missing flags,
log1p of heavy-tailed inputs, StandardScaler, LogisticRegression; its coefficients are standardized,
so their sizes compare); ``kind="boosted"`` is scikit-learn's HistGradientBoostingClassifier (nulls
routed natively). Both read :data:`model.propensity.features.MODEL_FEATURES`.

Time, never chance, separates what is learned from what is checked. ``fit(X, y, groups)`` takes the
cutoff of each row; the most recent training cutoff is held out: the base model is fitted on the
earlier cutoffs, the boosted model's early stopping watches the held-out cutoff (a seeded sample of
at most :data:`EARLY_STOPPING_ROWS` of its rows), and calibration is
decided and fitted there. Calibration rule (``calibration="auto"``): measure the held-out ECE of
the uncalibrated scores; above ``ece_tolerance`` calibrate, with isotonic regression when the
held-out cutoff has at least ``isotonic_min_positives`` buyers (flexible, needs data) and Platt's
sigmoid otherwise (two parameters, safe on few positives), fitted on the frozen base model's raw
scores (decision function) of the held-out cutoff, which is what ``CalibratedClassifierCV`` with a
``FrozenEstimator`` fits (same calibrator classes, same inputs), computed once instead of per fold.
The evaluation cutoff (validation) is never seen by ``fit``.

Memory and time at scale (3M users x 5 cutoffs): the design matrices hold float32 values
(:data:`model.propensity.features.MATRIX_DTYPE`) and are built only for the rows used: the at most
``max_train_rows`` sampled rows of the earlier cutoffs and the held-out cutoff, never the whole
training frame. The boosted raw scores come from :class:`model.propensity.trees.TreeEnsemble` (the
same trees, several times faster than scikit-learn's predict on the 3M rows of a held-out cutoff); the
logistic pipeline runs in chunks of :data:`SCORE_CHUNK` rows, so its float64 copies stay small. The
raw scores of the held-out cutoff are computed once for the ECE before, the calibrator fit and the
ECE after.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.calibration import _SigmoidCalibration
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from model.propensity.evaluation import expected_calibration_error
from model.propensity.features import LOG_FEATURES, MATRIX_DTYPE, MODEL_FEATURES, design_matrix
from model.propensity.trees import TreeEnsemble

Kind = Literal["logistic", "boosted"]
Calibration = Literal["auto", "none", "sigmoid", "isotonic"]

#: Rows per scoring chunk (bounds the float64 copies scikit-learn and the log1p prep make).
SCORE_CHUNK = 1 << 18


class PropensityWarning(UserWarning):
    """A legal but notable outcome (no held-out cutoff, a constant feature, ...)."""


class LogPrep(TransformerMixin, BaseEstimator):
    """Median imputation, a 0/1 flag per column that had nulls, and sign(x) log1p(|x|) of ``log_columns``."""

    def __init__(self, log_columns: tuple[int, ...] = ()) -> None:
        self.log_columns = log_columns

    def fit(self, A: np.ndarray, y: Any = None) -> LogPrep:
        A = np.asarray(A)
        med = np.empty(A.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> nan, replaced below
            for j in range(A.shape[1]):  # column by column: one float64 column at a time, not a copy of A
                med[j] = np.nanmedian(A[:, j].astype(np.float64))
        self.medians_ = np.where(np.isnan(med), 0.0, med)
        self.missing_columns_ = np.flatnonzero([np.isnan(A[:, j]).any() for j in range(A.shape[1])])
        self.log_mask_ = np.isin(np.arange(A.shape[1]), np.asarray(self.log_columns, dtype=int))
        return self

    def transform(self, A: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "medians_")
        return prep_transform(np.asarray(A), self.medians_, self.missing_columns_, self.log_mask_)


def prep_transform(A: np.ndarray, medians: np.ndarray, missing_columns: np.ndarray, log_mask: np.ndarray) -> np.ndarray:
    """The arithmetic of :class:`LogPrep` (shared with the light scorer): a new float64 (n, p + k) array.

    Written into one output array (no hstack of copies): imputed values, sign(x) log1p(|x|) of the
    log columns, then the 0/1 missing flags.
    """
    if A.dtype.kind != "f":
        A = A.astype(np.float64)
    n, p = A.shape
    nan = np.isnan(A)
    out = np.empty((n, p + len(missing_columns)), dtype=np.float64)
    X = out[:, :p]
    X[...] = A
    np.copyto(X, medians, where=nan)
    if log_mask.any():
        L = X[:, log_mask]
        sign = np.sign(L)
        np.abs(L, out=L)
        np.log1p(L, out=L)
        L *= sign
        X[:, log_mask] = L
    out[:, p:] = nan[:, missing_columns]
    return out


#: Held-out rows the boosted model's early stopping evaluates at most (a seeded sample beyond this).
EARLY_STOPPING_ROWS = 250_000


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
        ``learning_rate`` is scikit-learn's default, 0.1: on the generator's 1M-user lake it reached
        the same validation ROC AUC as 0.06 did (0.8976 against 0.8977) with 158 trees instead of
        295, and every tree is paid again by each score.
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
        learning_rate: float = 0.1,
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
            # copy=False: the scaler standardizes LogPrep's fresh output in place (one n x p array fewer)
            return Pipeline([("prep", LogPrep(logs)), ("scale", StandardScaler(copy=False)),
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
        if len(y) != len(X) or len(groups) != len(X):
            raise ValueError("PropensityModel.fit: X, y and groups must have the same length")
        if not np.isin(y, (0, 1)).all() or y.max(initial=0) == 0:
            raise ValueError("PropensityModel.fit: no positive labels (no purchase after any training cutoff)")
        self.features_ = tuple(MODEL_FEATURES)
        codes, cuts = pd.factorize(groups, sort=True)  # integer codes: no object array of Timestamps
        if (codes < 0).any():
            raise ValueError("PropensityModel.fit: groups (the cutoff of each row) has missing values")
        holdout = cuts[-1] if len(cuts) > 1 else None
        is_hold = codes == len(cuts) - 1 if holdout is not None else np.zeros(len(y), dtype=bool)
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
        # float32 values either way; float64 storage for the boosted model, which would widen a copy itself
        dtype = np.float64 if self.kind == "boosted" else MATRIX_DTYPE
        A_fit = design_matrix(X, self.features_, rows=fit_rows, dtype=dtype)
        hold_rows = np.flatnonzero(is_hold)
        A_hold = None
        if self.kind == "boosted" and holdout is not None:
            A_hold = design_matrix(X, self.features_, rows=hold_rows, dtype=dtype)
            # early stopping watches a seeded sample of the held-out cutoff: its loss is evaluated at
            # every iteration, and 3M held-out users cost 15 s of a 70 s fit for no better stopping point
            watch = np.arange(len(hold_rows))
            if len(watch) > EARLY_STOPPING_ROWS:
                watch = np.sort(np.random.default_rng(self.random_state).choice(watch, EARLY_STOPPING_ROWS, replace=False))
            base.fit(A_fit, y[fit_rows], X_val=A_hold[watch], y_val=y[hold_rows][watch])
        else:
            base.fit(A_fit, y[fit_rows])
        del A_fit
        self.base_ = base
        self.n_train_ = len(fit_rows)
        self.classes_ = np.array([0, 1])
        self.calibrator_, self.calibration_, self.holdout_ = None, None, None
        if holdout is not None:
            if A_hold is None:  # built after the fit when the fit does not watch it (less at once in memory)
                A_hold = design_matrix(X, self.features_, rows=hold_rows, dtype=dtype)
            self._calibrate(A_hold, y[hold_rows], holdout)
        return self

    def _calibrate(self, A: np.ndarray, y: np.ndarray, holdout: Any) -> None:
        raw = self._decision(A)  # once: the ECE before, the calibrator's input and the ECE after
        before = expected_calibration_error(y, expit(raw))
        method = self.calibration
        if method == "auto":
            method = "none" if before <= self.ece_tolerance else (
                "isotonic" if y.sum() >= self.isotonic_min_positives else "sigmoid")  # fmt: skip
        if method != "none" and 0 < y.sum() < len(y):
            cal = IsotonicRegression(out_of_bounds="clip") if method == "isotonic" else _SigmoidCalibration()
            self.calibrator_ = cal.fit(raw, y)
            self.calibration_ = method
        after = expected_calibration_error(y, self._from_raw(raw))
        self.holdout_ = {"cutoff": str(holdout), "rows": len(y), "buyers": int(y.sum()),
                         "ece_uncalibrated": before, "ece_calibrated": after}  # fmt: skip

    # ------------------------------------------------------------------ scoring
    def _decision(self, A: np.ndarray) -> np.ndarray:
        """The base model's raw score (log-odds) per row of a design matrix: the boosted trees applied
        by :class:`TreeEnsemble` on one thread per core (equal to scikit-learn's, several times faster), the
        logistic pipeline in chunks of SCORE_CHUNK rows."""
        if self.kind == "boosted":
            return TreeEnsemble.of(self.base_).decision(A, threads=os.cpu_count() or 1)
        if len(A) <= SCORE_CHUNK:
            return self.base_.decision_function(A)
        out = np.empty(len(A), dtype=np.float64)
        for i in range(0, len(A), SCORE_CHUNK):
            out[i : i + SCORE_CHUNK] = self.base_.decision_function(A[i : i + SCORE_CHUNK])
        return out

    def _from_raw(self, raw: np.ndarray) -> np.ndarray:
        """P(buy) from the raw score: the calibrator's, or the base model's own (the logistic link)."""
        if self.calibrator_ is None:
            return expit(raw)
        return np.clip(self.calibrator_.predict(raw), 0.0, 1.0)

    def _proba(self, A: np.ndarray) -> np.ndarray:
        """Guts of predict_proba on a design matrix (no validation): P(buy) per row."""
        return self._from_raw(self._decision(A))

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


__all__ = ["SCORE_CHUNK", "LogPrep", "PropensityModel", "PropensityWarning", "prep_transform"]
