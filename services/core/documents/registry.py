"""Which published JSON documents have a type, so a generic reader (the dashboard's ``document``, the
dossier's ``published``) reads each of them through it: validated, in its one serialized form."""

from __future__ import annotations

from typing import Any

from services.core.documents import Document
from services.core.documents.clv import ClvResult
from services.core.documents.funnel import FunnelResult
from services.core.documents.overview import OverviewFreshness
from services.core.documents.propensity import PropensityMetrics
from services.core.documents.retention import RetentionResult
from services.core.documents.segmentation import SegmentationModelDocument
from services.core.lake import Lake

#: (dataset, file name) -> the document's type.
TYPED: tuple[type[Document], ...] = (
    SegmentationModelDocument, ClvResult, FunnelResult, RetentionResult, OverviewFreshness, PropensityMetrics,
)  # fmt: skip
TYPES: dict[tuple[str, str], type[Document]] = {(t.DATASET, t.FILE): t for t in TYPED}


def read_document(lake: Lake, dataset: str, version: str, name: str) -> Any:
    """``<dataset>/<version>/<name>`` as JSON values; through its type when it has one."""
    key, kind = f"{dataset}/{version}/{name}", TYPES.get((dataset, name))
    return lake.read_json(key) if kind is None else kind.read_key(lake, key).to_dict()


__all__ = ["TYPED", "TYPES", "read_document"]
