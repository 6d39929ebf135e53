"""``clv/<version>/result.json``: one lifetime-value fit, what it says and how it was judged.

Written by ``shoplens clv fit`` and the ``clv`` stage (services/jobs/clv.py); read by ``shoplens clv
show``, the report, the dossier and the dashboard's Lifetime value page; built by the dashboard's
fixture lake through the same type.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from services.core.catalog import CLV
from services.core.documents import Document, Part


class Totals(Part):
    clv_sum: float
    clv_median: float
    revenue_sum: float
    p_alive_median: float


class Holdout(Part):
    """The models fitted before ``from`` and judged on the days ``from``..``to`` (model.clv.evaluation)."""

    start: str = Field(alias="from")
    end: str = Field(alias="to")
    days: int
    calibration_end: str
    customers: int
    repeat_customers: int
    actual_purchases: float
    predicted_purchases: float
    naive_purchases: float
    mae: float
    mae_naive: float
    correlation: float | None
    parameters: dict[str, float]
    by_frequency: list[dict[str, Any]]


class ClvResult(Document):
    """``result.json`` of one lifetime-value version."""

    DATASET: ClassVar[str] = CLV
    FILE: ClassVar[str] = "result.json"

    version: str
    computed_at: str
    run_ids: list[str]
    segments_version: str | None
    model: str
    method: str
    time_unit: str
    observation_end: str
    horizon_months: int
    monthly_discount: float
    customers: int
    repeat_customers: int
    spend_customers: int
    parameters: dict[str, float]
    spend_frequency_correlation: float | None
    totals: Totals
    groups: list[dict[str, Any]]
    top_customers: list[dict[str, Any]]
    holdout: Holdout | None
    warnings: list[str]
    semantics: list[str]


__all__ = ["ClvResult", "Holdout", "Totals"]
