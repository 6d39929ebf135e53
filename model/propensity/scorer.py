"""Light propensity scorer: a fitted :class:`PropensityModel` as plain JSON, applied with numpy only.

No pickle anywhere: the artifact holds numbers, and loading it runs no code from the file.

* ``logistic``: imputation medians, the columns that get a missing flag, which inputs are log1p'd,
  the StandardScaler mean/scale and the (standardized) coefficients and intercept.
* ``boosted``: HistGradientBoosting's trees as arrays and the baseline, applied by
  :class:`model.propensity.trees.TreeEnsemble` (its docstring: scikit-learn's rule, exactly, and fast).
* ``calibrator``: none, isotonic (the step points, interpolated and clipped as
  ``IsotonicRegression(out_of_bounds="clip")``) or sigmoid (``1 / (1 + exp(a * f + b))``), applied to
  the raw score (decision function), as ``CalibratedClassifierCV`` does.
* ``deciles``: the 9 cut points of the batch scores' deciles (added by the scoring job), so a single
  user gets the decile the batch would give them: decile = 1 + #(cut points < p).

Scoring is chunked (:data:`CHUNK` rows of the frame at a time, so memory stays bounded whatever the
number of users).

JSON floats round-trip exactly, so :meth:`LightPropensityScorer.predict_proba` equals
``PropensityModel.predict_proba`` (tests/model/test_propensity.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from model.propensity.estimator import PropensityModel, prep_transform
from model.propensity.features import design_matrix
from model.propensity.trees import TreeEnsemble, hgb_baseline, hgb_trees

ARTIFACT_KIND = "shoplens.propensity.light"
SCHEMA_VERSION = 1
#: Rows of the frame turned into a design matrix and scored at a time.
CHUNK = 1 << 18


def _calibrator_dict(model: PropensityModel) -> dict[str, Any] | None:
    cal = model.calibrator_
    if cal is None:
        return None
    if model.calibration_ == "isotonic":
        return {"method": "isotonic", "x": cal.X_thresholds_.tolist(), "y": cal.y_thresholds_.tolist()}
    return {"method": "sigmoid", "a": float(cal.a_), "b": float(cal.b_)}


def export_artifact(model: PropensityModel, model_version: str, metadata: Mapping[str, Any] | None = None) -> dict:
    """The fitted ``model`` as a JSON-serialisable dict (see the module docstring)."""
    art: dict[str, Any] = {
        "artifact": ARTIFACT_KIND, "schema_version": SCHEMA_VERSION, "model_version": model_version,
        "kind": model.kind, "features": list(model.features_), "calibrator": _calibrator_dict(model),
        "deciles": None, "metadata": dict(metadata or {}),
    }  # fmt: skip
    if model.kind == "logistic":
        prep, scale, lr = (model.base_.named_steps[k] for k in ("prep", "scale", "lr"))
        art["logistic"] = {
            "medians": prep.medians_.tolist(), "missing_columns": prep.missing_columns_.astype(int).tolist(),
            "log_features": [c for c, m in zip(model.features_, prep.log_mask_, strict=True) if m],
            "mean": scale.mean_.tolist(), "scale": scale.scale_.tolist(),
            "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0]),
        }  # fmt: skip
    else:
        art["boosted"] = {"baseline": hgb_baseline(model.base_), "trees": hgb_trees(model.base_)}
    return art


class LightPropensityScorer:
    """Applies an artifact of :func:`export_artifact` with numpy (no scikit-learn objects)."""

    def __init__(self, artifact: Mapping[str, Any]) -> None:
        if artifact.get("artifact") != ARTIFACT_KIND or artifact.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"not a {ARTIFACT_KIND} v{SCHEMA_VERSION} artifact")
        self.artifact = artifact
        self.kind: str = artifact["kind"]
        self.features: tuple[str, ...] = tuple(artifact["features"])
        self.model_version: str = artifact["model_version"]
        self.calibrator = artifact.get("calibrator")
        cuts = artifact.get("deciles")
        self.decile_cuts = None if cuts is None else np.asarray(cuts, dtype=float)
        if self.kind == "logistic":
            lg = artifact["logistic"]
            self._medians = np.asarray(lg["medians"], dtype=float)
            self._missing = np.asarray(lg["missing_columns"], dtype=int)
            self._log_mask = np.isin(np.asarray(self.features), lg["log_features"])
            self._mean, self._scale = np.asarray(lg["mean"], dtype=float), np.asarray(lg["scale"], dtype=float)
            self._coef, self._intercept = np.asarray(lg["coef"], dtype=float), float(lg["intercept"])
        else:
            bt = artifact["boosted"]
            self._ensemble = TreeEnsemble(bt["baseline"], bt["trees"])

    @classmethod
    def from_dict(cls, artifact: Mapping[str, Any]) -> LightPropensityScorer:
        return cls(artifact)

    def with_deciles(self, cuts: Sequence[float]) -> LightPropensityScorer:
        return LightPropensityScorer({**self.artifact, "deciles": [float(c) for c in cuts]})

    def decision(self, A: np.ndarray) -> np.ndarray:
        """The raw score (log-odds before calibration) of each row of a design matrix."""
        if len(A) > CHUNK:
            return np.concatenate([self.decision(A[i : i + CHUNK]) for i in range(0, len(A), CHUNK)])
        if self.kind == "logistic":
            Z = (prep_transform(A, self._medians, self._missing, self._log_mask) - self._mean) / self._scale
            return Z @ self._coef + self._intercept
        return self._ensemble.decision(A)

    def proba_matrix(self, A: np.ndarray) -> np.ndarray:
        """P(buy) of each row of a design matrix."""
        return self._calibrated(self.decision(A))

    def column_change(self, A: np.ndarray) -> Callable[[np.ndarray, int], np.ndarray]:
        """``(B, j) -> proba_matrix(B)`` for matrices that differ from ``A`` in column ``j`` only, bit for
        bit; the boosted model applies again only the trees that read that column
        (:meth:`TreeEnsemble.column_change`): what a permutation importance's re-scorings need."""
        if self.kind == "logistic":
            return lambda B, _j: self.proba_matrix(B)
        decision = self._ensemble.column_change(A)
        return lambda B, j: self._calibrated(decision(B, j))

    def _calibrated(self, f: np.ndarray) -> np.ndarray:
        """P(buy) from the raw scores."""
        cal = self.calibrator
        if cal is None:
            return expit(f)
        if cal["method"] == "isotonic":
            return np.clip(np.interp(f, cal["x"], cal["y"]), 0.0, 1.0)
        return expit(-(cal["a"] * f + cal["b"]))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(buy) of each row of a frame with the feature columns (a 1-d array), CHUNK rows at a time,
        the chunks on one thread per core: the per-tree numpy work releases the GIL."""
        if len(frame) <= CHUNK:
            return self.proba_matrix(design_matrix(frame, self.features))
        out = np.empty(len(frame), dtype=np.float64)

        def chunk(start: int) -> None:
            rows = slice(start, start + CHUNK)
            out[rows] = self.proba_matrix(design_matrix(frame, self.features, rows=rows))

        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(chunk, range(0, len(frame), CHUNK)))
        return out

    def deciles_of(self, p: np.ndarray) -> np.ndarray:
        """Decile 1..10 (10 = best) from the batch cut points; needs :meth:`with_deciles` or an artifact with them."""
        if self.decile_cuts is None:
            raise ValueError("this artifact has no decile cut points (they come with the batch scores)")
        return 1 + np.searchsorted(self.decile_cuts, p, side="left")


def decile_cuts(p: np.ndarray) -> np.ndarray:
    """The 9 cut points (10%..90% quantiles) of the batch scores."""
    return np.quantile(np.asarray(p, dtype=float), np.arange(1, 10) / 10)


__all__ = ["ARTIFACT_KIND", "SCHEMA_VERSION", "LightPropensityScorer", "decile_cuts", "export_artifact"]
