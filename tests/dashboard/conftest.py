"""Fixtures for the dashboard tests: a contract-shaped lake and an environment pointing at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

from tests.conftest import TEST_KEY
from tests.dashboard.fixtures import FixtureLake, build_lake, open_page


@pytest.fixture(scope="session")
def fixture_lake(tmp_path_factory: pytest.TempPathFactory) -> FixtureLake:
    with threadpool_limits(limits=1):
        return build_lake(tmp_path_factory.mktemp("dash") / "lake", TEST_KEY.encode())


def _clear_caches() -> None:
    import streamlit as st

    from services.core.settings import get_settings

    st.cache_data.clear()
    st.cache_resource.clear()
    get_settings.cache_clear()


@pytest.fixture
def use_lake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """``use_lake(uri)`` points the dashboard at a lake (fresh caches, the test key)."""

    def point(uri: str, **extra: str) -> None:
        monkeypatch.setenv("SHOPLENS_LAKE", uri)
        monkeypatch.setenv("SHOPLENS_WORK_DIR", str(tmp_path / "work"))
        monkeypatch.setenv("SHOPLENS_PSEUDONYM_KEY", TEST_KEY)
        for k, v in extra.items():
            monkeypatch.setenv(k, v)
        _clear_caches()

    yield point
    _clear_caches()


@pytest.fixture
def app(use_lake, fixture_lake):
    """An AppTest of the whole app (navigation included) on the fixture lake; ``app(page)`` opens a page."""
    use_lake(fixture_lake.uri)
    return open_page
