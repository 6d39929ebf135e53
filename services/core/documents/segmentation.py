"""``models/segmentation/<version>/model.json``: what a trained segmentation model says about itself.

Written by ``shoplens train`` (services/jobs/segmentation.py); read by scoring's staleness rule, the
model comparison, the model report, the dossier and the dashboard's Model and Segments pages; built by
the dashboard's fixture lake through :meth:`SegmentationModelDocument.build` like the job.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd

from model.segmentation import SegmentationModel, lifecycle_stages_doc
from services.core.catalog import SEGMENTATION_MODEL
from services.core.documents import Document, Part


class DataWindow(Part):
    """What the model was trained on."""

    event_date_min: str
    event_date_max: str
    as_of: str
    features_version: str
    #: Models trained before features came from timelines name the Spark aggregates they were built on.
    aggregates_version: str | None = None
    folded_run_ids: list[str]
    users_trained: int
    users_total: int


class Metrics(Part):
    silhouette: float | None
    davies_bouldin: float | None
    calinski_harabasz: float | None
    stability_ari: float | None


class KChoice(Part):
    """One candidate k of the selection."""

    k: int
    silhouette: float | None
    davies_bouldin: float | None
    calinski_harabasz: float | None
    stability_ari: float | None
    inertia: float | None
    eligible: bool


class FeatureWeight(Part):
    feature: str
    weight: float
    truncation_noise: float | None


class DroppedFeature(Part):
    name: str
    reason: str


class FeatureImportance(Part):
    """Permutation importance of one feature for the surrogate forest (higher: separates more)."""

    feature: str
    importance: float


class ThresholdPoint(Part):
    """First-n vs all-events agreement at one n of the event-threshold study."""

    n: int
    agreement: float | None
    ari: float | None
    lower: float | None
    users: int


class CalibrationRow(Part):
    trust_mean: float
    agreement: float
    users: int


class Trust(Part):
    """The logistic trust model (``model.segmentation.trust``) and its calibration on the study rows."""

    intercept: float
    coef_log_n: float
    coef_confidence: float
    calibration: list[CalibrationRow]


class Threshold(Part):
    """The event threshold below which a user is "not enough activity yet", and the study behind it."""

    chosen_min_events: int
    target: float
    metric: str
    confidence: float | None
    study_threshold: int | None
    error: str | None
    long_factor: float
    curve: list[ThresholdPoint]
    trust: Trust


class Coverage(Part):
    """Share of users who get a behavioural segment, overall and among users with >= 20 events."""

    users: int
    users_segmented: int
    share_segmented: float
    share_segmented_20_plus: float | None
    users_20_plus: int

    @classmethod
    def of(cls, features: pd.DataFrame, min_events: int) -> Coverage:
        n = features["n_events"].fillna(0)
        scored, twenty = n >= min_events, n >= 20
        return cls(users=len(features), users_segmented=int(scored.sum()),
                   share_segmented=float(scored.mean()) if len(features) else 0.0,
                   share_segmented_20_plus=float(scored[twenty].mean()) if twenty.any() else None,
                   users_20_plus=int(twenty.sum()))  # fmt: skip


class LifecycleStage(Part):
    key: str
    label: str
    rule: str
    action: str


class AriBand(Part):
    band: str
    ari: float
    users: int


class SegmentationModelDocument(Document):
    """``model.json`` of one segmentation model version."""

    DATASET: ClassVar[str] = SEGMENTATION_MODEL
    FILE: ClassVar[str] = "model.json"

    version: str
    trained_at: str
    data: DataWindow
    k: int
    metrics: Metrics
    k_selection: list[KChoice]
    k_rule: str
    explained_variance_ratio: list[float]
    features: list[str]
    feature_weights: list[FeatureWeight]
    log_features: list[str]
    dropped_features: list[DroppedFeature]
    feature_importance: list[FeatureImportance]
    tree_rules: str
    tree_fidelity: float
    threshold: Threshold
    coverage: Coverage
    derived_features: list[str]
    priors: dict[str, Any]
    lifecycle_stages: list[LifecycleStage]
    params: dict[str, Any]
    warnings: list[str]
    segment_ids: list[int]
    segment_names: list[str]
    ari_vs_truth: float | None = None
    ari_vs_truth_by_events: list[AriBand] | None = None
    previous_version: str | None

    @classmethod
    def build(cls, model: SegmentationModel, *, params: dict[str, Any], **fields: Any) -> SegmentationModelDocument:
        """The document of a fitted ``model``: what the model says of itself is taken here, once;
        the caller gives the rest (version, data window, threshold, coverage, segment ids and names, ...).
        ``params`` are added to the model's own parameters."""
        s = model.summary()
        scores = s["selection"]["scores"]
        row_k = next(r for r in scores if r["k"] == model.k_)
        imp = s["feature_importance"]
        noise = s["truncation_noise"] or {}
        return cls.model_validate({
            "k": model.k_,
            "metrics": {"silhouette": row_k["silhouette"], "davies_bouldin": row_k["davies_bouldin"],
                        "calinski_harabasz": row_k["calinski_harabasz"], "stability_ari": row_k["stability_mean"]},
            "k_selection": [{"k": r["k"], "silhouette": r["silhouette"], "davies_bouldin": r["davies_bouldin"],
                             "calinski_harabasz": r["calinski_harabasz"], "stability_ari": r["stability_mean"],
                             "inertia": r["inertia"], "eligible": bool(r["eligible"])} for r in scores],
            "k_rule": s["selection"]["rule"],
            "explained_variance_ratio": s["explained_variance_ratio"],
            "features": s["features"],
            "feature_weights": [{"feature": f, "weight": w, "truncation_noise": noise.get(f)}
                                for f, w in s["feature_weights"].items()],
            "log_features": s["log_features"],
            "dropped_features": [{"name": n, "reason": r} for n, r in s["dropped_features"].items()],
            "feature_importance": imp["ranked"],
            "tree_rules": imp["tree_rules"],
            "tree_fidelity": imp["fidelity"],
            "derived_features": s["derived_features"],
            "priors": s["priors"],
            "lifecycle_stages": lifecycle_stages_doc(),
            "params": {**s["params"], **params},
            **fields,
        })  # fmt: skip


__all__ = [
    "AriBand",
    "Coverage",
    "DataWindow",
    "FeatureImportance",
    "SegmentationModelDocument",
    "Threshold",
    "ThresholdPoint",
    "Trust",
]
