"""Ingestion and every pipeline stage on a real standalone cluster (master + 2 workers) whose workers
cannot see the driver's disk.

Each worker runs in a mount namespace of its own with an empty tmpfs over the driver's work directory
(tests/sparkcluster.py ``hide``), as if it ran on another host: the chunks it reads, the events and
timelines the jobs read and the files they write go through the S3 lake only. The lake it writes must
equal, row for row, the lake written by ``local[*]`` from the same files, and so must what every
pipeline stage (``shoplens run``) publishes from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from services.core.catalog import OVERVIEW_VIEWS
from services.core.lake import Lake
from services.core.readers import (
    read_customer_values,
    read_features,
    read_frame,
    read_propensity,
    read_segments,
)
from services.core.storage import LocalStore
from services.jobs.stages import run_pipeline
from tests.conftest import TEST_KEY
from tests.sparkcluster import spark_class, start_cluster

pytestmark = [pytest.mark.spark, pytest.mark.s3, pytest.mark.slow]


def _table(lake: Lake, dataset: str, tmp: Path) -> pd.DataFrame:
    local = tmp / dataset.replace("/", "_")
    lake.store.get_dir(dataset, local) if lake.store.local_path(dataset) is None else shutil.copytree(
        lake.store.local_path(dataset), local)
    frame = pd.read_parquet(local).drop(columns=["run_id"])
    return frame.sort_values(["source_file", "line_number"]).reset_index(drop=True)


def _ran_on(cluster, app: str, timeout: float = 20.0) -> bool:
    """Whether the master lists ``app`` (it moves a finished app from active to completed a little late)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = cluster.status()
        if any(a["name"] == app for a in status["completedapps"] + status["activeapps"]):
            return True
        time.sleep(0.5)
    return False


def test_cluster_lake_equals_the_local_lake(spark, s3_server, s3_lake, local_lake, key, tmp_path):
    if spark_class() is None or shutil.which("unshare") is None:
        pytest.skip("needs pyspark's spark-class, java and unshare")
    from etl.generate import generate
    from services.jobs.ingest import ingest_files

    gen = generate(tmp_path / "feed", users=300, months=2, seed=5, dirty_rate=0.02)
    files = sorted((tmp_path / "feed").glob("*.csv.gz"))
    local = ingest_files(spark, local_lake, files, key, chunk_bytes=1 << 20)

    driver_work = tmp_path / "driver-work"
    driver_work.mkdir()
    try:
        probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {driver_work}"],
                               capture_output=True, timeout=10)  # fmt: skip
    except OSError:
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip("no mount namespaces here (unshare -m needs CAP_SYS_ADMIN)")
    cluster = start_cluster(cores=1, memory="1g", workers=2, hide=[driver_work])
    try:
        env = {**os.environ, "SHOPLENS_PSEUDONYM_KEY": TEST_KEY, "SHOPLENS_SPARK_MASTER": cluster.url,
               "SHOPLENS_SPARK_EXECUTOR_MEMORY": "768m", "SHOPLENS_WORK_DIR": str(driver_work),
               "SHOPLENS_LAKE": s3_lake.store.uri, "SHOPLENS_S3_ENDPOINT": s3_server.endpoint,
               "SHOPLENS_S3_ACCESS_KEY": s3_server.access_key, "SHOPLENS_S3_SECRET_KEY": s3_server.secret_key,
               "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "services", "ingest", "--json", *map(str, files)],
                              env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        remote = json.loads(done.stdout)
        assert _ran_on(cluster, "shoplens-ingest"), "the run used the cluster"
        pipeline = subprocess.run([sys.executable, "-m", "services", "run", "--json"], env=env, capture_output=True,
                                  text=True, timeout=900)  # fmt: skip
        assert pipeline.returncode == 0, pipeline.stderr[-3000:]
        assert _ran_on(cluster, "shoplens-run"), "the pipeline used the cluster"
    finally:
        cluster.stop()

    assert gen.events == local["rows_accepted"] == remote["rows_accepted"]
    for k in ("rows_read", "rows_quarantined", "duplicates_removed", "quarantine_by_reason"):
        assert remote[k] == local[k]
    for dataset in ("events", "quarantine", "duplicates"):
        pd.testing.assert_frame_equal(_table(s3_lake, dataset, tmp_path / "s3"),
                                      _table(local_lake, dataset, tmp_path / "local"), check_dtype=False)
    assert not s3_lake.store.list("_staging"), "the run's staging prefix is gone"
    assert isinstance(local_lake.store, LocalStore)

    # Every pipeline stage on the cluster publishes what it publishes from the same files in local[2].
    ran = json.loads(pipeline.stdout)
    local_ran = run_pipeline(spark, local_lake)
    assert ran["ran"] == local_ran["ran"] and {"features", "train", "score", "propensity_train", "funnel", "clv",
                                               "retention", "overview"} <= set(ran["ran"])  # fmt: skip
    for read in (lambda lake: read_features(lake)[0], read_segments, read_propensity, read_customer_values,
                 lambda lake: read_frame(lake, f"{OVERVIEW_VIEWS}/{lake.current_version(OVERVIEW_VIEWS)}/kpi_daily.parquet")):
        remote_table, local_table = (_by_key(read(lake)) for lake in (s3_lake, local_lake))
        pd.testing.assert_frame_equal(remote_table, local_table, check_dtype=False, rtol=1e-6)
    for stage in ("funnel", "retention"):  # their documents: counts, rates, times to convert
        assert _doc(ran[stage]) == _doc(json.loads(json.dumps(local_ran[stage], default=str))), stage
    assert not (driver_work / "cache" / "events").exists(), "no event file was mirrored to the driver's disk"


def _doc(summary: dict) -> dict:
    """A stage's summary without what names its version, its input runs or its timing."""
    return {k: v for k, v in summary.items() if not any(w in k for w in ("version", "duration", "_at", "lake", "run_ids"))}


def _by_key(frame: pd.DataFrame) -> pd.DataFrame:
    """A published table in a fixed row order (by its key columns), without its version columns."""
    frame = frame.drop(columns=[c for c in frame.columns if c.endswith("version")])
    keys = [c for c in ("user_key", "date", "event_date", "day") if c in frame.columns] or list(frame.columns)
    return frame.sort_values(keys).reset_index(drop=True)
