"""A published propensity model ready for Spark-free scoring (:mod:`model.scoring` scores with it).

The per-user features and recent-activity windows of a new history are computed as the batch path
computes them (:mod:`etl.local_features`, :mod:`etl.activity`), ``price_level`` with the category
price reference the model was trained with, and the batch scores' decile cut points give the decile.
So a user scored there gets the probability and decile the batch scores give them
(tests/services/jobs/test_propensity.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from model.propensity.scorer import LightPropensityScorer


@dataclass(frozen=True)
class LoadedPropensity:
    """A propensity artifact ready to score (deciles from the current batch scores, if any)."""

    version: str
    scorer: LightPropensityScorer
    category_means: pd.Series | None


__all__ = ["LoadedPropensity"]
