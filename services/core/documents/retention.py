"""``retention/<version>/result.json``: the retention view's definition and its cohorts (counts only).

Written by ``shoplens retention`` and the ``retention`` stage (services/jobs/retention.py); read by the
report, the dossier and the dashboard's Retention page; built by the dashboard's fixture lake through
the same type.
"""

from __future__ import annotations

from typing import ClassVar

from services.core.catalog import RETENTION
from services.core.documents import Document, Part


class CohortPeriod(Part):
    period: int
    users: int
    rate: float
    revenue: float
    complete: bool


class Cohort(Part):
    cohort: str
    size: int
    periods: list[CohortPeriod]


class CohortGroup(Part):
    group: str
    cohorts: list[Cohort]


class RetentionResult(Document):
    """``result.json`` of one retention version: the spec (``etl.retention.RetentionSpec``), then cohorts."""

    DATASET: ClassVar[str] = RETENTION
    FILE: ClassVar[str] = "result.json"

    version: str
    computed_at: str
    run_ids: list[str]
    segments_version: str | None
    cohort: str
    cohort_event: str
    period: str
    mode: str
    event: str
    periods: str
    by: str | None
    end: str
    breakdowns: list[str]
    semantics: list[str]
    cohorts: list[Cohort]
    groups: list[CohortGroup] | None = None


__all__ = ["Cohort", "CohortGroup", "CohortPeriod", "RetentionResult"]
