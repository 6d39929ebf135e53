"""A published segmentation model ready for Spark-free scoring (:mod:`model.scoring` scores with it).

The model carries the lake-wide category price reference it was trained with, so the features of a
new history (:mod:`etl.local_features`) are computed as the batch path computes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from etl.local_features import reference_means
from model.segmentation.scorer import LightScorer

REFERENCE_KEY = "category_price_reference"


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


__all__ = ["REFERENCE_KEY", "LoadedModel", "model_from_artifact", "not_enough_reason"]
