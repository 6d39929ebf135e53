"""Light propensity scorer: a fitted :class:`PropensityModel` as plain JSON, applied with numpy only.

No pickle anywhere: the artifact holds numbers, and loading it runs no code from the file.

* ``logistic``: imputation medians, the columns that get a missing flag, which inputs are log1p'd,
  the StandardScaler mean/scale and the (standardized) coefficients and intercept.
* ``boosted``: HistGradientBoosting's trees as arrays (feature, threshold, missing-goes-left, left,
  right, leaf value per node) and the baseline; the raw score is baseline + the sum of the leaves
  reached, with scikit-learn's rule (``x <= threshold`` goes left; NaN follows ``missing_left``).
* ``calibrator``: none, isotonic (the step points, interpolated and clipped as
  ``IsotonicRegression(out_of_bounds="clip")``) or sigmoid (``1 / (1 + exp(a * f + b))``), applied to
  the raw score (decision function), as ``CalibratedClassifierCV`` does.
* ``deciles``: the 9 cut points of the batch scores' deciles (added by the scoring job), so a single
  user gets the decile the batch would give them: decile = 1 + #(cut points < p).

Scoring is chunked (:data:`CHUNK` rows of the frame at a time, so memory stays bounded whatever the
number of users). Trees with at most 64 leaves (the default model has 31) are applied without walking
them row by row, with the bit-vector rule of QuickScorer (Lucchese et al., SIGIR 2015): number the
leaves left to right; every internal node whose test sends a row right rules out the leaves of its
left subtree; the leaf reached is the leftmost one not ruled out. Each node is then a vectorized
comparison of one contiguous column over a block of rows and an OR of the bits it rules out (three
SIMD passes, about 0.6 ns per node and row), instead of gathers per row and level.
The comparison is exact: a float32 ``x`` satisfies ``x <= t`` (t float64, as scikit-learn compares
after widening) iff ``x <= t32`` with ``t32`` the largest float32 not above ``t``. Larger trees are
walked level by level.

JSON floats round-trip exactly, so :meth:`LightPropensityScorer.predict_proba` equals
``PropensityModel.predict_proba`` (tests/model/test_propensity.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from model.propensity.estimator import PropensityModel, prep_transform
from model.propensity.features import design_matrix

ARTIFACT_KIND = "shoplens.propensity.light"
SCHEMA_VERSION = 1
#: Rows of the frame turned into a design matrix at a time; trees are applied to BLOCK rows at a time
#: (column-major, so a node's column is contiguous and a block's work stays in cache).
CHUNK = 1 << 18
BLOCK = 1 << 15


def _calibrator_dict(model: PropensityModel) -> dict[str, Any] | None:
    cal = model.calibrator_
    if cal is None:
        return None
    if model.calibration_ == "isotonic":
        return {"method": "isotonic", "x": cal.X_thresholds_.tolist(), "y": cal.y_thresholds_.tolist()}
    return {"method": "sigmoid", "a": float(cal.a_), "b": float(cal.b_)}


def _finite(t: np.ndarray) -> np.ndarray:
    """Thresholds as finite floats for strict JSON: +inf ("every number goes left") -> the largest float."""
    big = np.finfo(np.float64).max
    return np.nan_to_num(t.astype(np.float64), nan=0.0, posinf=big, neginf=-big)


def _trees(model: PropensityModel) -> list[dict[str, list]]:
    out = []
    for (predictor,) in model.base_._predictors:  # binary: one tree per iteration
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported by the light scorer")
        out.append({
            "feature": nodes["feature_idx"].astype(int).tolist(), "threshold": _finite(nodes["num_threshold"]).tolist(),
            "missing_left": nodes["missing_go_to_left"].astype(bool).tolist(), "left": nodes["left"].astype(int).tolist(),
            "right": nodes["right"].astype(int).tolist(), "leaf": nodes["is_leaf"].astype(bool).tolist(),
            "value": nodes["value"].astype(float).tolist(),
        })  # fmt: skip
    return out


def _floor32(t: np.ndarray) -> np.ndarray:
    """The largest float32 not above each float64 ``t`` (so float32 ``x <= t`` iff ``x <= _floor32(t)``)."""
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    up = t32.astype(np.float64) > t
    t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
    return t32


def _leaf_spans(leaf: np.ndarray, left: np.ndarray, right: np.ndarray) -> tuple[list[int], dict[int, tuple]]:
    """(the leaves left to right, node -> (first, last + 1) of the leaf numbers under it)."""
    order: list[int] = []
    span: dict[int, tuple[int, int]] = {}
    stack: list[tuple[int, bool]] = [(0, False)]
    while stack:  # iterative depth-first walk, left child first: (node, children done)
        node, done = stack.pop()
        if leaf[node]:
            span[node] = (len(order), len(order) + 1)
            order.append(node)
        elif done:
            span[node] = (span[int(left[node])][0], span[int(right[node])][1])
        else:
            stack += [(node, True), (int(right[node]), False), (int(left[node]), False)]
    return order, span


class _BitTree:
    """One tree compiled for the QuickScorer rule (module docstring): internal nodes and leaf values."""

    def __init__(self, t: Mapping[str, np.ndarray]) -> None:
        order, span = _leaf_spans(t["leaf"], t["left"], t["right"])
        self.n_leaves = len(order)
        word = np.uint32 if self.n_leaves <= 32 else np.uint64
        inner = np.flatnonzero(~t["leaf"])
        self.feature = t["feature"][inner].astype(np.int64)
        self.threshold = t["threshold"][inner].astype(np.float64)
        self.threshold32 = _floor32(self.threshold)
        self.missing_left = t["missing_left"][inner].astype(bool)
        # a row sent right by node n cannot end in n's left subtree: those bits (a contiguous range) are cleared
        lo_hi = [span[int(t["left"][n])] for n in inner]
        self.clear = np.array([((1 << (hi - lo)) - 1) << lo for lo, hi in lo_hi], dtype=word)
        self.word = word
        self.values = t["value"][np.asarray(order, dtype=np.int64)].astype(np.float64)

    def add_raw(self, cols: np.ndarray, nan: np.ndarray | None, out: np.ndarray) -> None:
        """Add this tree's leaf value to ``out`` for a column-major block ``cols`` (p, b).

        ``nan``: ``isnan(cols)`` as 0/1 of the bit-vector dtype, or None when the block has no NaN.
        """
        thr = self.threshold32 if cols.dtype == np.float32 else self.threshold
        cleared = np.zeros(cols.shape[1], dtype=self.word)
        right = np.empty(cols.shape[1], dtype=self.word)
        nodes = zip(self.feature.tolist(), thr, self.missing_left.tolist(), self.clear, strict=True)
        for f, tv, ml, bits in nodes:
            np.greater(cols[f], tv, out=right, casting="unsafe")  # 0/1; NaN compares False, so goes left ...
            if nan is not None and not ml:
                np.bitwise_or(right, nan[f], out=right)  # ... unless missing values go right at this node
            np.multiply(right, bits, out=right)
            np.bitwise_or(cleared, right, out=cleared)
        # the leftmost surviving leaf is the lowest set bit of ~cleared: popcount(lowest bit - 1)
        alive = ~cleared
        low = alive & (~alive + self.word(1))
        out += self.values[np.bitwise_count(low - self.word(1))]


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
        art["boosted"] = {"baseline": float(np.ravel(model.base_._baseline_prediction)[0]), "trees": _trees(model)}
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
            self._baseline = float(bt["baseline"])
            self._trees = [
                {k: np.asarray(v, dtype=float if k in ("threshold", "value") else (bool if k in ("missing_left", "leaf") else np.int64))
                 for k, v in t.items()}
                for t in bt["trees"]
            ]  # fmt: skip
            self._bit_trees = [_BitTree(t) for t in self._trees] if all(
                int((~t["leaf"]).sum()) < 64 for t in self._trees) else None  # fmt: skip

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
        if self._bit_trees is not None:
            return self._decision_bits(A)
        return self._decision_walk(A)

    def _decision_bits(self, A: np.ndarray) -> np.ndarray:
        raw = np.full(len(A), self._baseline)
        if A.dtype not in (np.float32, np.float64):
            A = A.astype(np.float64)
        for i in range(0, len(A), BLOCK):
            cols = np.ascontiguousarray(A[i : i + BLOCK].T)  # (p, b): one feature's block is contiguous
            nan = np.isnan(cols)
            nans = {w: nan.astype(w) for w in {t.word for t in self._bit_trees}} if nan.any() else None
            out = raw[i : i + BLOCK]
            for tree in self._bit_trees:
                tree.add_raw(cols, None if nans is None else nans[tree.word], out)
        return raw

    def _decision_walk(self, A: np.ndarray) -> np.ndarray:
        raw = np.full(len(A), self._baseline)
        rows = np.arange(len(A))
        for t in self._trees:
            node = np.zeros(len(A), dtype=np.int64)
            active = ~t["leaf"][node]
            while active.any():
                r, nd = rows[active], node[active]
                x = A[r, t["feature"][nd]]
                go_left = np.where(np.isnan(x), t["missing_left"][nd], x <= t["threshold"][nd])
                node[active] = np.where(go_left, t["left"][nd], t["right"][nd])
                active = ~t["leaf"][node]
            raw += t["value"][node]
        return raw

    def proba_matrix(self, A: np.ndarray) -> np.ndarray:
        """P(buy) of each row of a design matrix."""
        f = self.decision(A)
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
