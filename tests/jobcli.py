"""The job tests' shared steps: a lake of generated events ingested for real, and ``shoplens`` commands
run in process against it (the funnel, lifetime value and retention tests)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import TEST_KEY

runner = CliRunner()


def lake_env(root: Path) -> dict[str, str]:
    """The settings of a command on the lake at ``root/lake`` (the test key, Spark ``local[2]``)."""
    return {"SHOPLENS_LAKE": str(root / "lake"), "SHOPLENS_WORK_DIR": str(root / "work"),
            "SHOPLENS_PSEUDONYM_KEY": TEST_KEY, "SHOPLENS_SPARK_MASTER": "local[2]",
            "SHOPLENS_SPARK_DRIVER_MEMORY": "2g", "SHOPLENS_LOG_FORMAT": "json"}  # fmt: skip


def invoke(root: Path, *args: str, as_json: bool = True) -> Any:
    """``shoplens ARGS [--json]`` in this process on the lake at ``root/lake``: the JSON answer (the last
    line), or the printed text without ``as_json``. A non-zero exit fails the test."""
    from services.cli import app
    from services.core.settings import get_settings

    with pytest.MonkeyPatch.context() as mp:
        for k, v in lake_env(root).items():
            mp.setenv(k, v)
        get_settings.cache_clear()
        result = runner.invoke(app, [*args, *(["--json"] if as_json else [])], catch_exceptions=False)
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1]) if as_json else result.stdout


def generated_lake(spark: Any, root: Path, users: int, start: date, months: int, seed: int) -> tuple[Any, pd.DataFrame]:
    """``root/lake`` holding one ingestion run of generated events (written to ``root/raw``), and those
    events read back by pandas (raw user ids as text): the independent side of the job tests."""
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.ingest import ingest_files

    generate(root / "raw", users=users, start=start, months=months, seed=seed)
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=TEST_KEY)
    lake = open_lake(settings)
    files = sorted((root / "raw").glob("*.csv.gz"))
    ingest_files(spark, lake, files, settings.key_bytes)
    return lake, pd.concat(pd.read_csv(f, dtype={"user_id": str}) for f in files)


__all__ = ["generated_lake", "invoke", "lake_env"]
