"""A lake produced by the real pipeline (generate -> ingest -> features -> train/score, twice), for
the browser test: the dashboard must render whatever the producers actually publish. Built once per run
(the session fixture ``pipeline_lake`` in tests/conftest.py); a test that writes to it works on a copy."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

FAST = dict(k_range=(3, 6), n_bootstrap=2, threshold_grid=(5, 10, 20, 40), sample_size=20_000)


@dataclass(frozen=True)
class PipelineLake:
    uri: str
    known_id: str  # a raw user id with many events (scored)
    low_id: str  # a raw user id with a single event (not enough activity)
    root: Path  # raw/ (the generated files and _truth/), lake/, work/

    def copy(self, dest: Path) -> PipelineLake:
        """The same lake and generated files under ``dest``, for a test that writes to its lake."""
        shutil.copytree(self.root, dest, dirs_exist_ok=True)
        return PipelineLake(uri=str(dest / "lake"), known_id=self.known_id, low_id=self.low_id, root=dest)


def build_pipeline_lake(spark, root: Path, key: str, users: int = 1_500) -> PipelineLake:
    """Two months of generated events; the model is trained after each month (so segments can move)."""
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.ingest import ingest_files
    from services.jobs.segmentation import TrainConfig
    from services.jobs.stages import PipelineConfig, run_pipeline

    generate(root / "raw", users=users, start=date(2019, 10, 1), months=2, seed=5)
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=key)
    lake = open_lake(settings)
    files = sorted((root / "raw").glob("*.csv.gz"))
    cfg = PipelineConfig(train=TrainConfig(**FAST))
    for f in files:
        ingest_files(spark, lake, [f], settings.key_bytes)
        run_pipeline(spark, lake, cfg)  # features, train (stale after each month), score, overview
    counts = pd.concat(pd.read_csv(f, usecols=["user_id"]) for f in files)["user_id"].value_counts()
    return PipelineLake(uri=str(root / "lake"), known_id=str(counts.index[0]), low_id=str(counts.index[-1]), root=root)
