"""The API's and the dashboard's local mirrors of an S3 lake (real SeaweedFS) keep only the versions
they read now: replaced segment versions are pruned when the readers refresh their pointers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from etl.pseudonymize import pseudonymize
from services.core.catalog import SEGMENTS
from services.core.lake import Lake
from services.core.storage import LocalStore, S3Store
from services.jobs.api import ApiState, lookup_customer
from tests.conftest import TEST_KEY
from tests.services.jobs.test_api import source  # noqa: F401 - the shared fixture lake

pytestmark = pytest.mark.slow


def _s3_copy(source_root: Path, server, work: Path) -> Lake:
    store = S3Store(server.client(), server.new_bucket("prune"), "lake")
    store.put_dir(source_root, "")
    return Lake(store, work)


def _publish_copy(lake: Lake, source_root: Path, version: str, tmp: Path) -> None:
    """A new segments version with the same rows as the fixture's current one."""
    current = Lake(LocalStore(source_root), tmp / "w").current_version(SEGMENTS)
    staged = tmp / version
    shutil.copytree(source_root / SEGMENTS / current, staged)
    lake.publish_version(staged, SEGMENTS, version)


def _mirrored(work: Path) -> set[str]:
    cache = work / "cache" / SEGMENTS
    return {p.name for p in cache.iterdir()} if cache.is_dir() else set()


def test_the_api_prunes_replaced_versions_on_refresh(source, s3_server, tmp_path):  # noqa: F811
    work = tmp_path / "api-work"
    lake = _s3_copy(source.root, s3_server, work)
    first = lake.current_version(SEGMENTS)
    state = ApiState(lake, TEST_KEY.encode())
    state.refresh()
    raw = source.raw_ids["known"]
    expected = lookup_customer(state, raw)["segment_id"]
    assert _mirrored(work) == {first}
    for version in ("20200101T000000Z-prune2", "20200102T000000Z-prune3"):
        _publish_copy(lake, source.root, version, tmp_path)
        assert state.refresh()
        assert lookup_customer(state, raw)["segment_id"] == expected
    # the current version and the one it replaced (requests in flight may still read it); no older one
    assert _mirrored(work) == {"20200101T000000Z-prune2", "20200102T000000Z-prune3"}
    assert pseudonymize(raw, TEST_KEY.encode()) not in str(sorted(work.rglob("*")))


def test_the_dashboard_prunes_replaced_versions_when_it_rereads_the_pointers(source, s3_server, tmp_path, monkeypatch):  # noqa: F811
    from dashboard import data
    from services.core.settings import get_settings

    work = tmp_path / "dash-work"
    lake = _s3_copy(source.root, s3_server, work)
    uri = lake.store.uri
    monkeypatch.setenv("SHOPLENS_WORK_DIR", str(work))
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    for cached in (data._lake, data.pointers, data._segments_dataset):
        cached.clear()
    try:
        first = data.pointers(uri).segments
        assert data._segments_dataset(uri, first) is not None and _mirrored(work) == {first}
        _publish_copy(lake, source.root, "20200101T000000Z-dprune", tmp_path)
        data.pointers.clear()  # the 15 s ttl, passed
        assert data.pointers(uri).segments == "20200101T000000Z-dprune"
        assert _mirrored(work) == set()  # the replaced version is gone
        dataset = data._segments_dataset(uri, "20200101T000000Z-dprune")  # opened afresh, not the pruned one
        assert dataset is not None and all(Path(f).exists() for f in dataset.files)
        assert _mirrored(work) == {"20200101T000000Z-dprune"}
    finally:
        for cached in (data._lake, data.pointers, data._segments_dataset):
            cached.clear()
        get_settings.cache_clear()
