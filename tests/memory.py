"""Peak memory of a process during a block, for the tests that bound what hostile input may cost."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil


@contextmanager
def peak_rss(pid: int | None = None) -> Iterator[dict[str, int]]:
    """The process's RSS before and its peak during the block (sampled every 5 ms); this process by default."""
    proc = psutil.Process(pid or os.getpid())
    seen = {"before": proc.memory_info().rss, "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen["peak"] = max(seen["peak"], proc.memory_info().rss)
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
