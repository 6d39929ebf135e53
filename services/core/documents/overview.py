"""``views/overview/<version>/freshness.json``: how recent the lake's data is (the Overview page's header).

Written by the ``overview`` stage (services/jobs/overview.py); read by the Overview page; built by the
dashboard's fixture lake through the same type.
"""

from __future__ import annotations

from typing import ClassVar

from services.core.catalog import OVERVIEW_VIEWS
from services.core.documents import Document


class OverviewFreshness(Document):
    """The newest event time of the committed events and when the last committed run ended (or began)."""

    DATASET: ClassVar[str] = OVERVIEW_VIEWS
    FILE: ClassVar[str] = "freshness.json"

    latest_event_time: str | None
    last_run_at: str | None


__all__ = ["OverviewFreshness"]
