"""Seconds spent per phase of a job, for its summary (where a long run's time goes, at a glance)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Timings(dict):
    """Phase name -> seconds (rounded to ms), summed when a phase runs more than once."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.monotonic() - t0, 3)


__all__ = ["Timings"]
