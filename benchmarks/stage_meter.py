"""Wall time, CPU time and peak memory of a process tree (services.core.process_meter), for benchmarks
that time the CLI's commands and ``shoplens run``'s stages one by one.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.core.process_meter import metered


def bench_env(src: Path, root: Path, **settings: str) -> dict[str, str]:
    """The environment a benchmark runs the CLI in: ``src``'s code, a lake (``root/lake``) and work
    directory (``root/work``) of its own, warnings only in the logs, and the benchmark's ``settings``
    (``SHOPLENS_*`` variables: the pseudonymization key or demo mode)."""
    return {**os.environ, "PYTHONPATH": str(src), "SHOPLENS_LOG_LEVEL": "WARNING",
            "SHOPLENS_LAKE": str(root / "lake"), "SHOPLENS_WORK_DIR": str(root / "work"), **settings}  # fmt: skip


def metered_command(cmd: Sequence[str], **kwargs: Any) -> dict[str, float]:
    """Run one command to completion (raising on failure) and measure its whole tree."""
    with subprocess.Popen(cmd, **kwargs) as proc, metered(proc.pid) as meter:
        proc.wait()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return meter.figures()


def run_stages() -> None:
    """``shoplens run``'s loop in this process, each due stage measured; prints one JSON object per line."""
    from services.core.runtime import open_lake
    from services.core.settings import get_settings
    from services.core.spark import get_spark
    from services.jobs.stages import STAGES, PipelineConfig

    settings = get_settings()
    lake = open_lake(settings)
    cfg = PipelineConfig(settings.retrain_new_runs, settings.retrain_age_days)
    with metered() as meter:
        spark = get_spark(settings, "shoplens-run")
    print(json.dumps({"stage": "spark_start", **meter.figures()}), flush=True)
    for stage in STAGES:
        due, _why = stage.due(lake, cfg)
        if due:
            with metered() as meter:
                stage.run(spark if stage.spark else None, lake, cfg)
            print(json.dumps({"stage": stage.name, **meter.figures()}), flush=True)
