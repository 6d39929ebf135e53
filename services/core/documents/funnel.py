"""``funnel/<version>/result.json``: the default funnel's steps, its drivers and drop-off audiences.

Written by ``shoplens funnel`` and the ``funnel`` stage (services/jobs/funnel.py); read by the report,
the dossier and the dashboard's Funnel page. The rows of the time-to-convert and driver tables are kept
as the job's records (their columns are those of the published tables, docs/outputs.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

from services.core.catalog import FUNNEL
from services.core.documents import Document, Part


class FunnelStep(Part):
    index: int
    step: str
    count: int
    conversion_from_previous: float | None
    conversion_from_first: float | None
    dropoff: int
    dropoff_rate: float | None


class DriversRule(Part):
    """Which attributes the drivers table ranks, and how the odds ratios' intervals are computed."""

    min_units: int
    confidence: float
    interval: str


class DropoffAudience(Part):
    step: int
    label: str
    units: int


class FunnelResult(Document):
    """``result.json`` of one funnel version."""

    DATASET: ClassVar[str] = FUNNEL
    FILE: ClassVar[str] = "result.json"

    version: str
    computed_at: str
    run_ids: list[str]
    segments_version: str | None
    steps: list[FunnelStep]
    unit: str
    order: str
    window_days: float | None
    semantics: list[str]
    breakdowns: list[str]
    top_brands: int
    drivers_rule: DriversRule
    units: int
    time_to_convert: list[dict[str, Any]]
    top_drivers: list[dict[str, Any]]
    dropoff_audiences: list[DropoffAudience]


__all__ = ["DriversRule", "DropoffAudience", "FunnelResult", "FunnelStep"]
