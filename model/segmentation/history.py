"""Scoring a raw event history without Spark: typed REES46 rows -> per-user features -> segments.

The features come from the Spark-free twin of the batch features (:mod:`etl.local_features`) with
the lake-wide category price reference stored with the model, so a user scored here gets the segment
the batch path gives them. Used by ``shoplens predict``, the dashboard's upload and the scoring API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from etl.local_features import compute_features_local, raw_feature_columns, raw_to_events, reference_means
from model.segmentation.lifecycle import lifecycle_action, lifecycle_label, lifecycle_stage
from model.segmentation.scorer import NOT_ENOUGH_ACTIVITY, LightScorer

REFERENCE_KEY = "category_price_reference"
STATUS_SCORED = "scored"
STATUS_NOT_ENOUGH = "not_enough_activity"


@dataclass(frozen=True)
class LoadedModel:
    """A segmentation artifact, ready to score."""

    version: str
    scorer: LightScorer
    artifact: Mapping[str, Any]
    category_means: pd.Series | None  # mean ln(price) per category_id; None if price_level is unused

    @property
    def min_events(self) -> int:
        return self.scorer.min_events


def model_from_artifact(
    artifact: Mapping[str, Any],
    version: str | None = None,
    sibling: Callable[[], pd.DataFrame | None] | None = None,
) -> LoadedModel:
    """A :class:`LoadedModel` from an artifact dict; ``sibling()`` may supply the reference table."""
    scorer = LightScorer.from_dict(artifact)
    means = None
    if "price_level" in scorer.input_features:
        ref = artifact.get(REFERENCE_KEY)
        if ref is None and sibling is not None:
            ref = sibling()
        if ref is None:
            raise ValueError(
                f"model {version or scorer.model_version}: the artifact has no {REFERENCE_KEY} (nor a "
                "category reference file); price_level of new users cannot be computed like the batch path"
            )
        means = reference_means(ref)
    return LoadedModel(
        version=str(version or scorer.model_version), scorer=scorer, artifact=artifact, category_means=means
    )


def not_enough_reason(n_events: int, min_events: int) -> str:
    return f"not enough activity yet ({n_events} of {min_events} events)"


def history_features(rows: pd.DataFrame, model: LoadedModel, as_of: datetime | str | None = None) -> pd.DataFrame:
    """Per-user features (docs/features.md) of typed REES46 rows, as the batch path computes them."""
    return compute_features_local(raw_to_events(rows), as_of=as_of, category_reference=model.category_means)


def history_feature_columns(
    rows: pa.Table, model: LoadedModel, as_of: datetime | str | None = None
) -> dict[str, np.ndarray]:
    """:func:`history_features` of typed REES46 rows in Arrow (``etl.lines.History.table``), as numpy
    columns (:func:`etl.local_features.raw_feature_columns`): one small history without pandas frames."""
    return raw_feature_columns(rows, as_of=as_of, category_reference=model.category_means)


def score_features(features: pd.DataFrame, model: LoadedModel) -> list[dict[str, Any]]:
    """One result per row of ``features``: segment, confidence, trust, lifecycle stage, status and why."""
    scorer = model.scorer
    n_events = features["n_events"].to_numpy(dtype=np.int64)
    seg, conf = scorer.predict_array(scorer.input_matrix(features), n_events.astype(float))
    trust = scorer.trust(n_events, conf)
    names = scorer.names_of(seg)
    stages = lifecycle_stage(features)
    out = []
    for key, n, sid, c, tr, name, stage, when in zip(
        features["user_key"].tolist(), n_events.tolist(), seg.tolist(), conf.tolist(), trust.tolist(), names,
        stages.tolist(), features["as_of"], strict=True,
    ):  # fmt: skip
        scored = sid != NOT_ENOUGH_ACTIVITY
        out.append({
            "user_id": key,
            "segment_id": sid if scored else None,
            "segment_name": name if scored else None,
            "confidence": c if scored else None,
            "trust": tr if scored and np.isfinite(tr) else None,
            "lifecycle_stage": stage,
            "lifecycle_label": lifecycle_label(stage),
            "lifecycle_action": lifecycle_action(stage),
            "model_version": scorer.model_version,
            "n_events": n,
            "status": STATUS_SCORED if scored else STATUS_NOT_ENOUGH,
            "reason": None if scored else not_enough_reason(n, model.min_events),
            "as_of": when.isoformat(),
        })  # fmt: skip
    return out


def score_rows(rows: pd.DataFrame, model: LoadedModel, as_of: datetime | str | None = None) -> list[dict]:
    """One result per user of typed REES46 rows, in order of first appearance."""
    if rows.empty:
        return []
    by_user = {r["user_id"]: r for r in score_features(history_features(rows, model, as_of), model)}
    return [by_user[u] for u in pd.unique(rows["user_id"].astype(str))]


__all__ = [
    "STATUS_NOT_ENOUGH",
    "STATUS_SCORED",
    "LoadedModel",
    "history_feature_columns",
    "history_features",
    "model_from_artifact",
    "not_enough_reason",
    "score_features",
    "score_rows",
]
