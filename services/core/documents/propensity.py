"""``models/propensity/<version>/metrics.json``: how the two propensity models were trained and judged.

Written by ``shoplens propensity train`` and the ``propensity_train`` stage (services/jobs/propensity.py,
``metrics_document``); read by the report, the dossier and the dashboard's Propensity page. Each model's
metrics, importance and coefficient rows are kept as ``model.propensity`` reports them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from services.core.catalog import PROPENSITY_MODEL
from services.core.documents import Document, Part


class Cutoff(Part):
    """The examples of one cutoff date: users observed, buyers within the horizon, their share."""

    cutoff: str
    users: int
    buyers: int
    base_rate: float


class PropensityMetrics(Document):
    """``metrics.json`` of one propensity model version."""

    DATASET: ClassVar[str] = PROPENSITY_MODEL
    FILE: ClassVar[str] = "metrics.json"

    version: str
    trained_at: str
    shipped: str
    rule: str
    horizon_days: int
    capacity: float
    threshold_rule: str
    validation_cutoff: str
    train_cutoffs: list[str]
    cutoffs: list[Cutoff]
    population: str
    label: str
    features_version: str | None
    models: dict[str, dict[str, Any]]
    importance: dict[str, list[dict[str, Any]]]
    coefficients: list[dict[str, Any]] | None
    features: list[str]


__all__ = ["Cutoff", "PropensityMetrics"]
