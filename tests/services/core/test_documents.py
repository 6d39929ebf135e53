"""The typed result documents: each belongs to a versioned dataset of the catalog, and the generic
readers (the dashboard's ``data.document``, the dossier) read a typed file through its type only."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.catalog import DATASETS, OVERVIEW_VIEWS
from services.core.documents import OutdatedDocument
from services.core.documents.overview import OverviewFreshness
from services.core.documents.registry import TYPED, TYPES, read_document
from services.core.lake import Lake
from services.core.storage import LocalStore


def test_every_typed_document_is_a_file_of_a_versioned_dataset() -> None:
    assert len(TYPES) == len(TYPED)  # no two types for one file
    for kind in TYPED:
        assert DATASETS[kind.DATASET].layout == "versioned", kind.__name__


def test_a_typed_file_is_read_through_its_type_and_another_as_it_is(tmp_path: Path) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    fresh = OverviewFreshness(latest_event_time="2019-11-30T23:00:00+00:00", last_run_at=None)
    lake.write_json(OverviewFreshness.key("v1"), fresh.to_dict())
    assert read_document(lake, OVERVIEW_VIEWS, "v1", OverviewFreshness.FILE) == fresh.to_dict()
    assert OverviewFreshness.read(lake, "v1") == fresh
    lake.write_json(OverviewFreshness.key("v2"), {**fresh.to_dict(), "latest_event": "typo"})
    with pytest.raises(OutdatedDocument, match=r"v2/freshness\.json does not have this release's fields \(latest_event\)"):
        read_document(lake, OVERVIEW_VIEWS, "v2", OverviewFreshness.FILE)
    lake.write_json(f"{OVERVIEW_VIEWS}/v2/other.json", {"anything": 1})
    assert read_document(lake, OVERVIEW_VIEWS, "v2", "other.json") == {"anything": 1}
