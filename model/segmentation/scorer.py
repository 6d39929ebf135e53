"""Light scorer: the fitted segmentation pipeline as a JSON-serialisable dict applied with numpy only.

Scoring one user (``shoplens predict``) or a new file's users must not need Spark or the pickled
scikit-learn objects: the artifact holds every learned number (imputation values, which features
are log1p-transformed, RobustScaler center/scale, PCA mean/components, centroids, segment ids and
names, the ``min_events`` threshold) and ``LightScorer`` replays the same arithmetic in numpy.
JSON floats round-trip exactly (``repr``), so assignments equal ``SegmentationModel.predict``.

Artifact schema (``schema_version`` 2; version 1, without ``derived`` and ``trust``, still loads)::

    {
      "artifact": "shoplens.segmentation.light", "schema_version": 2,
      "model_version": str, "min_events": int,
      "input_features": [str],               # columns read from the features table
      "derived": {"features": [str],         # computed from the inputs (model.segmentation.rates),
                  "priors": {str: float},    #   appended after the inputs, with these priors
                  "strengths": {str: float}},
      "imputation_values": {str: float},     # null -> value, per model column (input or derived)
      "recency": {"column": "recency_days", "flag": "has_purchased"} | null,
      "features": [str],                     # model features in order (may include the flag)
      "log_features": [str],                 # subset of features, log1p(max(x, 0))
      "scaler": {"center": [float], "scale": [float],           # clip((x - center) / scale,
                 "clip": float | null},                         #      -clip, clip)
      "pca": {"mean": [float], "components": [[float]],         # (z - mean) @ components.T, the
              "explained_variance_ratio": [float]},             #   feature weights folded in
      "centroids": [[float]],                # (k, n_components), row i <-> segment_ids[i]
      "segment_ids": [int], "segment_names": [str],
      "feature_centroids": {"columns": [str], "values": [[float]]},  # for matching on retrain
      "trust": {"intercept": float, "coef_log_n": float, "coef_confidence": float} | null,
                                             # model.segmentation.trust: P(segment = full-history one)
      "metadata": {...}                      # free-form: training range, k, metrics, ...
    }
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from model.segmentation.estimator import (
    HAS_PURCHASED,
    RECENCY,
    SegmentationModel,
    assignment_confidence,
    match_segments,
)
from model.segmentation.lifecycle import lifecycle_stage
from model.segmentation.presentation import NOT_ENOUGH_NAME
from model.segmentation.rates import derive_columns, priors_from_dict, priors_to_dict
from model.segmentation.trust import TrustModel, trust_from_dict

__all__ = [
    "ARTIFACT_KIND",
    "NOT_ENOUGH_ACTIVITY",
    "SCHEMA_VERSION",
    "LightScorer",
    "export_artifact",
    "match_to_previous",
    "previous_names",
    "score_frame",
]

ARTIFACT_KIND = "shoplens.segmentation.light"
SCHEMA_VERSION = 2
_READABLE_VERSIONS = (1, 2)
#: Segment id given to users with fewer than ``min_events`` events ("not enough activity yet").
NOT_ENOUGH_ACTIVITY = -1
_CHUNK_ROWS = 100_000


def export_artifact(
    model: SegmentationModel,
    model_version: str,
    segment_ids: Sequence[int] | None = None,
    segment_names: Sequence[str] | None = None,
    min_events: int | None = None,
    metadata: Mapping | None = None,
    trust: TrustModel | None = None,
) -> dict:
    """The fitted ``model`` as a JSON-serialisable dict (schema in the module docstring).

    ``segment_ids`` maps the model's labels 0..k-1 to stable ids (from ``match_to_previous``;
    default: the labels themselves); ``segment_names`` gives one name per label (default
    "Segment <id>"); ``min_events`` defaults to the model's own; ``trust`` is the per-user trust
    model learned from the truncation study (``model.segmentation.trust``).
    """
    model._check_fitted()
    k = model.k_
    ids = list(range(k)) if segment_ids is None else [int(i) for i in segment_ids]
    if len(ids) != k or len(set(ids)) != k:
        raise ValueError(f"segment_ids must be {k} distinct ints, got {ids}")
    names = [f"Segment {i}" for i in ids] if segment_names is None else [str(n) for n in segment_names]
    if len(names) != k:
        raise ValueError(f"segment_names must have {k} entries, got {len(names)}")
    inputs = [str(c) for c in model.feature_names_in_]
    art = {
        "artifact": ARTIFACT_KIND,
        "schema_version": SCHEMA_VERSION,
        "model_version": str(model_version),
        "min_events": int(model.min_events if min_events is None else min_events),
        "input_features": inputs,
        "derived": priors_to_dict(model.derived_features_, model.priors_),
        "imputation_values": {c: float(v) for c, v in model.imputation_values_.items()},
        "recency": {"column": RECENCY, "flag": HAS_PURCHASED} if RECENCY in inputs else None,
        "features": list(model.features_),
        "log_features": list(model.log_features_),
        "scaler": {
            "center": model.scaler_.center_.tolist(),
            "scale": model.scaler_.scale_.tolist(),
            "clip": None if model.clip is None else float(model.clip),
        },
        "pca": {
            "mean": model.projection_mean_.tolist(),
            "components": model.projection_.tolist(),
            "explained_variance_ratio": model.explained_variance_ratio_.tolist(),
        },
        "centroids": model.cluster_centers_.tolist(),
        "segment_ids": ids,
        "segment_names": names,
        "feature_centroids": {
            "columns": list(model.feature_centroids_.columns),
            "values": model.feature_centroids_.to_numpy().tolist(),
        },
        "trust": None if trust is None else trust.to_dict(),
        "metadata": dict(metadata or {}),
    }
    json.dumps(art, allow_nan=False)  # fail here, not at save time, on a non-JSON value
    return art


def previous_names(artifact: Mapping) -> dict[int, str]:
    """Segment id -> name of an artifact (for ``profile_segments(previous_names=...)``)."""
    return dict(zip(artifact["segment_ids"], artifact["segment_names"], strict=True))


def match_to_previous(
    model: SegmentationModel, previous: Mapping, max_distance: float | None = None
) -> np.ndarray:
    """Stable ids for ``model``'s labels, matching its centroids to a previous artifact's.

    Centroids are compared in the (log-transformed) feature space on the features both models use,
    divided by the new model's robust scale so each feature counts in comparable units; the
    Hungarian matching is ``match_segments``. ``max_distance`` (in those units) turns a far match
    into a new segment with a fresh id.
    """
    model._check_fitted()
    prev_fc = pd.DataFrame(previous["feature_centroids"]["values"],
                           columns=previous["feature_centroids"]["columns"])  # fmt: skip
    new_fc = model.feature_centroids_
    common = [c for c in new_fc.columns if c in prev_fc.columns]
    if not common:
        raise ValueError("the previous model shares no feature with the new one; cannot match segments")
    scale = pd.Series(model.scaler_.scale_, index=model.features_)[common].to_numpy()
    ids = match_segments(
        prev_fc[common].to_numpy() / scale,
        new_fc[common].to_numpy() / scale,
        previous_ids=np.asarray(previous["segment_ids"]),
        max_distance=max_distance,
    )
    return ids


@dataclass(frozen=True)
class LightScorer:
    """Applies a light artifact with numpy. Build with ``LightScorer.from_dict(artifact)``."""

    model_version: str
    min_events: int
    input_features: tuple[str, ...]
    derived: tuple[str, ...]  # derived features, appended after the inputs
    priors: Mapping[str, float]
    fill: np.ndarray  # imputation value per input and derived column (NaN: not a model column)
    recency_index: int | None
    recency_flag: str | None
    features: tuple[str, ...]
    source_index: np.ndarray  # per model feature: index in input_features, -1 = recency flag
    log_mask: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    clip: float | None
    pca_mean: np.ndarray
    components: np.ndarray
    centroids: np.ndarray
    segment_ids: np.ndarray
    segment_names: tuple[str, ...]
    trust_model: TrustModel | None = None

    @classmethod
    def from_dict(cls, d: Mapping) -> LightScorer:
        if d.get("artifact") != ARTIFACT_KIND or d.get("schema_version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"not a {ARTIFACT_KIND} v{SCHEMA_VERSION} artifact: "
                f"{d.get('artifact')!r} v{d.get('schema_version')!r}"
            )
        inputs = tuple(d["input_features"])
        derived, priors = priors_from_dict(d.get("derived"))
        columns = inputs + tuple(derived)
        rec = d.get("recency")
        flag = rec["flag"] if rec else None
        src = []
        for f in d["features"]:
            if f == flag:
                src.append(-1)
            elif f in columns:
                src.append(columns.index(f))
            else:
                raise ValueError(f"artifact feature {f!r} is neither an input nor the recency flag")
        log_set = set(d["log_features"])
        return cls(
            model_version=d["model_version"],
            min_events=int(d["min_events"]),
            input_features=inputs,
            derived=tuple(derived),
            priors=priors,
            fill=np.array([d["imputation_values"].get(c, np.nan) for c in columns], dtype=float),
            recency_index=inputs.index(rec["column"]) if rec else None,
            recency_flag=flag,
            features=tuple(d["features"]),
            source_index=np.array(src, dtype=int),
            log_mask=np.array([f in log_set for f in d["features"]]),
            center=np.array(d["scaler"]["center"], dtype=float),
            scale=np.array(d["scaler"]["scale"], dtype=float),
            clip=d["scaler"].get("clip"),
            pca_mean=np.array(d["pca"]["mean"], dtype=float),
            components=np.array(d["pca"]["components"], dtype=float),
            centroids=np.array(d["centroids"], dtype=float),
            segment_ids=np.array(d["segment_ids"], dtype=int),
            segment_names=tuple(d["segment_names"]),
            trust_model=trust_from_dict(d.get("trust")),
        )

    @classmethod
    def from_json(cls, text: str) -> LightScorer:
        return cls.from_dict(json.loads(text))

    # -------------------------------------------------------------- core (numpy only)
    def _transform(self, raw: np.ndarray) -> np.ndarray:
        """Guts of :meth:`transform`; no input validation."""
        if self.derived:
            cols = {c: raw[:, i] for i, c in enumerate(self.input_features)}
            extra = derive_columns(cols, self.derived, self.priors)
            raw = np.column_stack([raw, *(extra[n] for n in self.derived)])
        filled = np.where(np.isnan(raw), self.fill, raw)
        if self.recency_index is not None:
            flag = (~np.isnan(raw[:, self.recency_index])).astype(float)
        else:
            flag = np.zeros(raw.shape[0])
        X = np.where(self.source_index >= 0, filled[:, np.maximum(self.source_index, 0)], flag[:, None])
        X = np.where(self.log_mask, np.log1p(np.clip(X, 0.0, None)), X)
        Z = (X - self.center) / self.scale
        if self.clip is not None:
            Z = np.clip(Z, -self.clip, self.clip)
        return (Z - self.pca_mean) @ self.components.T

    def _check(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if raw.ndim != 2 or raw.shape[1] != len(self.input_features):
            raise ValueError(f"expected shape (n, {len(self.input_features)}), got {raw.shape}")
        return raw

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """PCA coordinates (n, n_components) of a float matrix of ``input_features`` (NaN = null)."""
        return self._transform(self._check(raw))

    def predict_array(
        self, raw: np.ndarray, n_events: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(segment_id, confidence) for a float matrix of ``input_features`` (NaN = null).

        Rows with ``n_events < min_events`` get ``NOT_ENOUGH_ACTIVITY`` and confidence NaN.
        """
        P = self._transform(self._check(raw))
        d = np.empty((len(P), len(self.centroids)))
        for lo in range(0, len(P), _CHUNK_ROWS):  # bounds the (rows, k, components) temporary
            chunk = P[lo : lo + _CHUNK_ROWS]
            d[lo : lo + _CHUNK_ROWS] = np.sqrt(((chunk[:, None, :] - self.centroids[None]) ** 2).sum(axis=2))
        label = d.argmin(axis=1)
        conf = assignment_confidence(d)
        seg = self.segment_ids[label]
        if self.min_events > 0:
            if n_events is None:
                raise ValueError(f"min_events={self.min_events} needs the n_events of every user")
            low = np.nan_to_num(np.asarray(n_events, dtype=float), nan=0.0) < self.min_events
            seg = np.where(low, NOT_ENOUGH_ACTIVITY, seg)
            conf = np.where(low, np.nan, conf)
        return seg.astype(int), conf

    def trust(self, n_events: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Estimated chance that each segment equals the one the full history would give (NaN where
        the confidence is NaN or the artifact has no trust model)."""
        conf = np.asarray(confidence, dtype=float)
        if self.trust_model is None:
            return np.full(conf.shape, np.nan)
        return self.trust_model.predict(n_events, conf)

    # -------------------------------------------------------------- conveniences
    def input_matrix(self, features_df: pd.DataFrame) -> np.ndarray:
        """The float matrix of ``input_features`` of a features table (NaN = null)."""
        missing = [c for c in self.input_features if c not in features_df.columns]
        if missing:
            raise KeyError(f"features table lacks scorer input columns {missing}")
        raw = features_df[list(self.input_features)].apply(pd.to_numeric, errors="coerce")
        return raw.to_numpy(dtype=float)

    def predict(self, features_df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(segment_id, confidence) per row of a features table; see ``predict_array``."""
        n_events = features_df["n_events"].to_numpy(dtype=float) if "n_events" in features_df else None
        return self.predict_array(self.input_matrix(features_df), n_events)

    def predict_one(self, features: Mapping[str, float | None]) -> tuple[int | None, float | None]:
        """One user's (segment_id, confidence) from a feature mapping, without pandas.

        ``(None, None)`` when the user has fewer than ``min_events`` events. This is the function
        the single-user latency benchmark should time.
        """
        row = np.array(
            [[np.nan if features.get(c) is None else float(features[c]) for c in self.input_features]]
        )
        n_ev = features.get("n_events")
        seg, conf = self.predict_array(row, None if n_ev is None else np.array([float(n_ev)]))
        if seg[0] == NOT_ENOUGH_ACTIVITY:
            return None, None
        return int(seg[0]), float(conf[0])

    def name_of(self, segment_id: int) -> str | None:
        """The segment's name, None for ``NOT_ENOUGH_ACTIVITY`` or an unknown id."""
        hits = np.flatnonzero(self.segment_ids == segment_id)
        return self.segment_names[hits[0]] if len(hits) else None

    def names_of(self, segment_ids: np.ndarray) -> list[str | None]:
        """The name of each segment id (None for ``NOT_ENOUGH_ACTIVITY`` or an unknown id)."""
        names = dict(zip(self.segment_ids.tolist(), self.segment_names, strict=True))
        return [names.get(int(s)) for s in segment_ids]

    def labels_of(self, segment_ids: np.ndarray) -> list[str | None]:
        """The name of each segment id, :data:`NOT_ENOUGH_NAME` for ``NOT_ENOUGH_ACTIVITY``."""
        return [NOT_ENOUGH_NAME if s == NOT_ENOUGH_ACTIVITY else n
                for n, s in zip(self.names_of(segment_ids), segment_ids.tolist(), strict=True)]  # fmt: skip

    def predict_frame(self, features_df: pd.DataFrame) -> pd.DataFrame:
        """user_key (if present), segment_id (nullable Int64), segment_name, confidence, model_version."""
        seg, conf = self.predict(features_df)
        out = pd.DataFrame(index=features_df.index)
        if "user_key" in features_df:
            out["user_key"] = features_df["user_key"]
        out["segment_id"] = pd.array(np.where(seg == NOT_ENOUGH_ACTIVITY, None, seg), dtype="Int64")
        out["segment_name"] = self.names_of(seg)
        out["confidence"] = conf
        out["model_version"] = self.model_version
        return out


def score_frame(scorer: LightScorer, features: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """The published segments table (docs/outputs.md) for a features frame, with the light scorer only.

    Users below the trust threshold get a null segment, the name :data:`NOT_ENOUGH_NAME` and null
    confidence, trust and coordinates; every user gets a lifecycle stage
    (``model.segmentation.lifecycle``).
    """
    raw = scorer.input_matrix(features)
    n_events = features["n_events"].to_numpy(dtype=float)
    seg, conf = scorer.predict_array(raw, n_events)
    P = scorer.transform(raw)
    scored = seg != NOT_ENOUGH_ACTIVITY
    ts = pd.Timestamp(as_of)
    return pd.DataFrame(
        {
            "user_key": features["user_key"].to_numpy(),
            "segment_id": pd.array(np.where(scored, seg, None), dtype="Int64"),
            "segment_name": scorer.labels_of(seg),
            "confidence": np.where(scored, conf, np.nan),
            "trust": np.where(scored, scorer.trust(n_events, conf), np.nan),
            "lifecycle_stage": lifecycle_stage(features),
            "n_events": features["n_events"].fillna(0).astype("int64").to_numpy(),
            "model_version": scorer.model_version,
            "as_of": ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC"),
            "pc1": np.where(scored, P[:, 0], np.nan),
            "pc2": np.where(scored, P[:, 1] if P.shape[1] > 1 else 0.0, np.nan),
        }
    )
