"""Behavioural segmentation: PCA + K-Means on per-user features, profiles and names, the light scorer
that applies a fitted model with numpy only, the event-threshold study, and the views built from
the scores. Pure: frames and arrays in, frames, arrays and small dataclasses out.

Callers import from this package; the modules behind it may move.
"""

from model.segmentation.estimator import (
    CANDIDATE_FEATURES,
    DEFAULT_FEATURES,
    LEGACY_FEATURES,
    NON_FEATURE_COLUMNS,
    FeatureImportance,
    SegmentationModel,
    SegmentationWarning,
    assignment_confidence,
    match_segments,
)
from model.segmentation.lifecycle import (
    LIFECYCLE_COLUMNS,
    LIFECYCLE_STAGES,
    LifecycleRules,
    LifecycleStage,
    lifecycle_action,
    lifecycle_label,
    lifecycle_stage,
    lifecycle_stages_doc,
)
from model.segmentation.presentation import (
    NOT_ENOUGH_COLOR,
    NOT_ENOUGH_NAME,
    PALETTE,
    RADAR_FEATURES,
    segment_color,
)
from model.segmentation.profiles import (
    ACTIONS,
    NAMING_RULES,
    NamingRule,
    SegmentProfile,
    name_segment,
    profile_documents,
    profile_segments,
    profiles_frame,
)
from model.segmentation.rates import DERIVED, DERIVED_NAMES, DerivedFeature
from model.segmentation.scorer import (
    ARTIFACT_KIND,
    NOT_ENOUGH_ACTIVITY,
    SCHEMA_VERSION,
    LightScorer,
    export_artifact,
    match_to_previous,
    previous_names,
    score_frame,
)
from model.segmentation.threshold import ThresholdPoint, ThresholdStudy, threshold_study
from model.segmentation.trust import TrustModel, calibration_table, fit_trust, trust_from_dict
from model.segmentation.views import PCA_SAMPLE_MAX, pca_sample, segment_flow, segment_summary

__all__ = [
    "ACTIONS",
    "ARTIFACT_KIND",
    "CANDIDATE_FEATURES",
    "DEFAULT_FEATURES",
    "DERIVED",
    "DERIVED_NAMES",
    "LEGACY_FEATURES",
    "LIFECYCLE_COLUMNS",
    "LIFECYCLE_STAGES",
    "NAMING_RULES",
    "NON_FEATURE_COLUMNS",
    "NOT_ENOUGH_ACTIVITY",
    "NOT_ENOUGH_COLOR",
    "NOT_ENOUGH_NAME",
    "PALETTE",
    "PCA_SAMPLE_MAX",
    "RADAR_FEATURES",
    "SCHEMA_VERSION",
    "DerivedFeature",
    "FeatureImportance",
    "LifecycleRules",
    "LifecycleStage",
    "LightScorer",
    "NamingRule",
    "SegmentProfile",
    "SegmentationModel",
    "SegmentationWarning",
    "ThresholdPoint",
    "ThresholdStudy",
    "TrustModel",
    "assignment_confidence",
    "calibration_table",
    "export_artifact",
    "fit_trust",
    "lifecycle_action",
    "lifecycle_label",
    "lifecycle_stage",
    "lifecycle_stages_doc",
    "match_segments",
    "match_to_previous",
    "name_segment",
    "pca_sample",
    "previous_names",
    "profile_documents",
    "profile_segments",
    "profiles_frame",
    "score_frame",
    "segment_color",
    "segment_flow",
    "segment_summary",
    "threshold_study",
    "trust_from_dict",
]
