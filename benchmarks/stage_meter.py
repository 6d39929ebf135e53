"""Wall time, CPU time and peak memory of a process tree (the Python driver, its JVM and Spark's Python
workers), for benchmarks that time the CLI's commands and ``shoplens run``'s stages one by one.

CPU seconds are reported beside wall seconds because they say where the work goes even when the
machine is shared; peak RSS is the largest sum over the tree seen by a sampler every half second.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psutil

SAMPLE_SECONDS = 0.5


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _rss(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


@contextmanager
def metered(pid: int | None = None) -> Iterator[dict[str, float]]:
    """Measure the tree under ``pid`` (default: this process) while the block runs; the dict is filled on exit.

    CPU time of processes that exit inside the block counts only where their parent reaps them (Spark's
    Python workers are reaped by its daemon, which stays), so it is a floor for short-lived children.
    """
    root = psutil.Process(pid)
    out: dict[str, float] = {}
    peak = [_rss(_tree(root))]
    cpu_seen: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_SECONDS):
            procs = _tree(root)
            peak[0] = max(peak[0], _rss(procs))
            for proc in procs:
                cpu_seen[proc.pid] = _cpu([proc])

    start_procs = _tree(root)
    cpu_start = {proc.pid: _cpu([proc]) for proc in start_procs}
    t0 = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield out
    finally:
        stop.set()
        sampler.join()
        for proc in _tree(root):
            cpu_seen[proc.pid] = _cpu([proc])
        out["wall_s"] = round(time.monotonic() - t0, 1)
        out["cpu_s"] = round(sum(v - cpu_start.get(pid_, 0.0) for pid_, v in cpu_seen.items()), 1)
        out["peak_rss_mb"] = round(peak[0] / 2**20)


def metered_command(cmd: Sequence[str], **kwargs: Any) -> dict[str, float]:
    """Run one command to completion (raising on failure) and measure its whole tree."""
    with subprocess.Popen(cmd, **kwargs) as proc, metered(proc.pid) as figures:
        proc.wait()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return figures


def run_stages() -> None:
    """``shoplens run``'s loop in this process, each due stage measured; prints one JSON object per line."""
    from services.core.runtime import open_lake
    from services.core.settings import get_settings
    from services.core.spark import get_spark
    from services.jobs.stages import STAGES, PipelineConfig

    settings = get_settings()
    lake = open_lake(settings)
    cfg = PipelineConfig(settings.retrain_new_runs, settings.retrain_age_days)
    with metered() as figures:
        spark = get_spark(settings, "shoplens-run")
    print(json.dumps({"stage": "spark_start", **figures}), flush=True)
    for stage in STAGES:
        due, _why = stage.due(lake, cfg)
        if due:
            with metered() as figures:
                stage.run(spark if stage.spark else None, lake, cfg)
            print(json.dumps({"stage": stage.name, **figures}), flush=True)
