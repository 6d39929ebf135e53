"""Model tests run single-threaded: on a shared 2-core machine OpenMP's spin-waiting threads in
K-Means make small fits 10x slower (0.8 s vs 10 s for the same fit)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="session", autouse=True)
def _single_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield
