"""Wall time, CPU time and peak memory of a process (or its whole tree: the Python driver, its JVM and
Spark's Python workers) while a block runs.

One sampler for the benchmarks that time commands and pipeline stages (benchmarks/stage_meter.py) and
for the tests that bound what hostile input may cost (a benchmark must not import the test package).
CPU seconds are reported beside wall seconds because they say where the work goes even when the
machine is shared; peak RSS is the largest sum over the processes seen by the sampler. Only benchmarks
and tests import this module (psutil is in the ``test`` and ``bench`` extras).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psutil


@dataclass
class Meter:
    """What :func:`metered` saw: RSS in bytes at the start and at its peak (sampled while the block
    runs); wall and CPU seconds, filled when the block ends."""

    before: int
    peak: int
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def grown(self) -> int:
        """Bytes the peak lay above the start."""
        return self.peak - self.before

    def figures(self) -> dict[str, float]:
        """The benchmarks' row: wall and CPU seconds (0.1 s) and the peak in MiB."""
        return {"wall_s": round(self.wall_s, 1), "cpu_s": round(self.cpu_s, 1), "peak_rss_mb": round(self.peak / 2**20)}


def _processes(root: psutil.Process, tree: bool) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)] if tree else [root]
    except psutil.NoSuchProcess:
        return []


def _cpu(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
    except psutil.NoSuchProcess:
        return None
    return t.user + t.system + t.children_user + t.children_system


def _rss(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


@contextmanager
def metered(pid: int | None = None, *, tree: bool = True, interval: float = 0.5) -> Iterator[Meter]:
    """Measure ``pid`` (default: this process) and, with ``tree``, all its descendants while the block
    runs, sampling every ``interval`` seconds (a test bounding a short burst samples every few ms).

    CPU time of processes that exit inside the block counts only where their parent reaps them (Spark's
    Python workers are reaped by its daemon, which stays), so it is a floor for short-lived children.
    """
    root = psutil.Process(pid)
    start = _processes(root, tree)
    meter = Meter(before=_rss(start), peak=_rss(start))
    cpu_start = {p.pid: c for p in start if (c := _cpu(p)) is not None}
    cpu_seen: dict[int, float] = {}
    stop = threading.Event()

    def look() -> None:
        procs = _processes(root, tree)
        meter.peak = max(meter.peak, _rss(procs))
        for proc in procs:
            if (c := _cpu(proc)) is not None:
                cpu_seen[proc.pid] = c

    def sample() -> None:
        while not stop.wait(interval):
            look()

    t0 = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield meter
    finally:
        stop.set()
        sampler.join()
        look()
        meter.wall_s = time.monotonic() - t0
        meter.cpu_s = sum(v - cpu_start.get(p, 0.0) for p, v in cpu_seen.items())


__all__ = ["Meter", "metered"]
