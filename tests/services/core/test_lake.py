"""The lake's layout and commit protocol on both backends (local disk and a real S3 server)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from etl.contract import EVENT_SCHEMA
from services.core.catalog import EVENTS, QUARANTINE
from services.core.lake import Lake, new_run_id
from services.core.storage import LocalStore


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path: Path) -> Lake:
    if request.param == "local":
        return Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    return request.getfixturevalue("s3_lake")


def _files(root: Path, rels: list[str]) -> Path:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode())
    return root


def _run(run_id: str, status: str, files: list[tuple[str, str]] = ()) -> dict:
    return {
        "run_id": run_id,
        "status": status,
        "files": [{"path": p, "sha256": h, "status": "ingested"} for p, h in files],
    }


def test_only_committed_runs_count_and_enter_the_ledger(lake: Lake) -> None:
    lake.write_run(_run("r1", "committed", [("a.csv", "h-a")]))
    lake.write_run(_run("r2", "running", [("b.csv", "h-b")]))
    lake.write_run(_run("r3", "failed", [("c.csv", "h-c")]))
    lake.write_run(_run("r4", "committed", [("a-again.csv", "h-a"), ("d.csv", "h-d")]))
    assert lake.committed_run_ids() == ["r1", "r4"]
    ledger = lake.ledger()
    assert set(ledger) == {"h-a", "h-d"}
    assert ledger["h-a"]["run_id"] == "r1"  # the first committed run that saw the content wins
    assert ledger["h-d"]["run_id"] == "r4"


def test_ledger_skips_files_not_ingested(lake: Lake) -> None:
    run = _run("r1", "committed", [("a.csv", "h-a")])
    run["files"].append({"path": "bad.csv", "sha256": "h-bad", "status": "failed"})
    lake.write_run(run)
    assert set(lake.ledger()) == {"h-a"}


def test_publish_run_dataset_layout_moves_files(lake: Lake, tmp_path: Path) -> None:
    staged = _files(
        tmp_path / "stage-events",
        [
            "event_date=2019-10-01/part-0.parquet",
            "event_date=2019-10-02/part-1.parquet",
            "event_date=2019-10-02/.part-1.parquet.crc",
            "_SUCCESS",
        ],
    )
    assert lake.publish_run_dataset(staged, EVENTS, "R1") == 2
    assert lake.store.list(EVENTS) == [
        "events/event_date=2019-10-01/run_id=R1/part-0.parquet",
        "events/event_date=2019-10-02/run_id=R1/part-1.parquet",
    ]
    assert lake.store.read_bytes("events/event_date=2019-10-02/run_id=R1/part-1.parquet") == (
        b"event_date=2019-10-02/part-1.parquet"
    )
    assert not list(staged.rglob("*.parquet")), "published parquet files are moved, not copied"

    flat = _files(tmp_path / "stage-q", ["part-0.parquet"])
    assert lake.publish_run_dataset(flat, QUARANTINE, "R1") == 1
    assert lake.store.list(QUARANTINE) == ["quarantine/run_id=R1/part-0.parquet"]
    assert lake.publish_run_dataset(tmp_path / "missing", QUARANTINE, "R1") == 0


def test_committed_files_since_a_day_keep_that_day_on(lake: Lake, tmp_path: Path) -> None:
    days = ["2019-10-01", "2019-10-28", "2019-10-29", "2019-11-30"]
    lake.publish_run_dataset(_files(tmp_path / "ev", [f"event_date={d}/part-{i}.parquet" for i, d in enumerate(days)]),
                             EVENTS, "r1")  # fmt: skip
    lake.publish_run_dataset(_files(tmp_path / "q", ["part-0.parquet"]), QUARANTINE, "r1")
    lake.write_run(_run("r1", "committed"))
    since = [k.split("/")[1] for k in lake.committed_files(EVENTS, since=dt.date(2019, 10, 28))]
    assert since == ["event_date=2019-10-28", "event_date=2019-10-29", "event_date=2019-11-30"]
    assert len(lake.committed_files(EVENTS)) == 4
    assert lake.committed_files(QUARANTINE, since=dt.date(2030, 1, 1)) == ["quarantine/run_id=r1/part-0.parquet"]


def test_vacuum_removes_only_uncommitted_run_dirs(lake: Lake, tmp_path: Path) -> None:
    for run_id in ("r1", "r10", "r2"):
        stage = _files(tmp_path / run_id / "ev", ["event_date=2019-10-01/part-0.parquet"])
        lake.publish_run_dataset(stage, EVENTS, run_id)
        lake.publish_run_dataset(_files(tmp_path / run_id / "q", ["part-0.parquet"]), QUARANTINE, run_id)
    lake.write_run(_run("r1", "committed"))
    lake.write_run(_run("r10", "running"))  # crashed mid-run: never committed
    lake.staging_dir("r10")
    assert (lake.work_dir / "staging" / "r10").exists()

    # r2 has no summary at all but is protected explicitly (a run in progress).
    assert lake.vacuum(keep={"r2"}) == 2
    assert lake.store.list(EVENTS) == [
        "events/event_date=2019-10-01/run_id=r1/part-0.parquet",
        "events/event_date=2019-10-01/run_id=r2/part-0.parquet",
    ]
    assert lake.store.list(QUARANTINE) == [
        "quarantine/run_id=r1/part-0.parquet",
        "quarantine/run_id=r2/part-0.parquet",
    ]
    assert not (lake.work_dir / "staging" / "r10").exists()
    assert lake.vacuum() == 2  # now r2 goes as well; r1 stays
    assert lake.store.list(QUARANTINE) == ["quarantine/run_id=r1/part-0.parquet"]


def test_vacuum_leaves_uncommitted_runs_younger_than_the_grace_period(lake: Lake, tmp_path: Path) -> None:
    """A run that began a minute ago may be another writer's, in progress; one from two hours ago is not."""
    young, old = new_run_id(), "20200101T000000Z-abcdef"
    for run_id in (young, old):
        lake.publish_run_dataset(_files(tmp_path / run_id, ["part-0.parquet"]), QUARANTINE, run_id)
        lake.staging_dir(run_id)
    lake.vacuum_grace_seconds = 3600
    assert lake.vacuum() == 1
    assert lake.store.list(QUARANTINE) == [f"quarantine/run_id={young}/part-0.parquet"]
    assert (lake.work_dir / "staging" / young).exists() and not (lake.work_dir / "staging" / old).exists()
    lake.vacuum_grace_seconds = 0
    assert lake.vacuum() == 1 and lake.store.list(QUARANTINE) == []


def test_publish_version_and_current_version(lake: Lake, tmp_path: Path) -> None:
    assert lake.current_version("segments") is None
    lake.publish_version(_files(tmp_path / "v1", ["a.parquet", "sub/b.json"]), "segments", "v1", k=4)
    lake.publish_version(_files(tmp_path / "v2", ["a.parquet"]), "segments", "v2", k=5)
    assert lake.current_version("segments") == "v2"
    pointer = lake.read_json("segments/_current.json")
    assert pointer["k"] == 5 and pointer["version"] == "v2" and "published_at" in pointer
    assert lake.store.list("segments/v1") == ["segments/v1/a.parquet", "segments/v1/sub/b.json"]
    assert lake.store.list("segments/v2") == ["segments/v2/a.parquet"]
    assert (tmp_path / "v1" / "a.parquet").exists(), "publish_version copies; the caller owns local_dir"


def test_local_mirror_is_a_local_directory_on_both_backends(lake: Lake, tmp_path: Path) -> None:
    assert lake.local_mirror(EVENTS) is None
    lake.publish_run_dataset(_files(tmp_path / "s", ["event_date=2019-10-01/part-0.parquet"]), EVENTS, "r1")
    path = Path(lake.local_mirror(EVENTS))
    assert path.is_dir()
    assert (path / "event_date=2019-10-01/run_id=r1/part-0.parquet").read_bytes() == (
        b"event_date=2019-10-01/part-0.parquet"
    )
    if lake.store.local_path(EVENTS) is None:
        assert path == lake.work_dir / "cache" / EVENTS


def test_prune_cache_keeps_only_current_versions_of_the_mirror(lake: Lake, tmp_path: Path) -> None:
    for version in ("v1", "v2"):
        lake.publish_version(_files(tmp_path / version, ["part-0.parquet"]), "features", version)
        assert lake.local_mirror(f"features/{version}")
    lake.publish_run_dataset(_files(tmp_path / "s", ["event_date=2019-10-01/part-0.parquet"]), EVENTS, "r1")
    events = lake.local_mirror(EVENTS)
    removed = lake.prune_cache()
    if lake.store.local_path(EVENTS) is not None:
        assert removed == 0  # a local lake is read in place: nothing is mirrored
        return
    cache = lake.work_dir / "cache"
    assert removed == 1 and sorted(p.name for p in (cache / "features").iterdir()) == ["v2"]
    assert Path(events, "event_date=2019-10-01/run_id=r1/part-0.parquet").exists()  # run data stays
    assert lake.local_mirror("features/v1")  # an old version read again is mirrored again


def _events_pdf(n: int, day: dt.date, offset: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        ts = dt.datetime.combine(day, dt.time(hour=i % 24))
        rows.append(
            {
                "event_time": ts,
                "event_hour": ts.hour,
                "event_type": "view",
                "product_id": offset + i,
                "category_id": 1,
                "category_code": "electronics.smartphone",
                "category_l1": "electronics",
                "category_l2": "smartphone",
                "category_l3": None,
                "brand": "acme",
                "price": 10.0 + i,
                "user_key": f"u{i % 3}",
                "session_key": f"s{i % 5}",
                "source_file": "f.csv",
                "event_date": day,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.spark
def test_read_run_dataset_returns_only_committed_rows(spark, lake: Lake) -> None:
    from pyspark.sql import functions as F

    from services.core.spark import read_run_dataset

    assert read_run_dataset(spark, lake, EVENTS) is None
    runs = {new_run_id(): 7, new_run_id(): 5, new_run_id(): 3}
    (good, crashed, other) = runs
    offset = 0
    for run_id, n in runs.items():
        pdf = pd.concat(
            [_events_pdf(n, dt.date(2019, 10, 1), offset), _events_pdf(n, dt.date(2019, 10, 2), offset + n)]
        )
        offset += 2 * n
        stage = lake.staging_dir(run_id) / "events"
        events = spark.createDataFrame(pdf, EVENT_SCHEMA).withColumn("line_number", F.col("product_id") + 2)
        events.write.partitionBy("event_date").parquet(str(stage))
        lake.publish_run_dataset(stage, EVENTS, run_id)
    lake.write_run(_run(good, "committed"))
    lake.write_run(_run(crashed, "running"))
    assert read_run_dataset(spark, lake, EVENTS).count() == 14

    lake.write_run(_run(other, "committed"))
    df = read_run_dataset(spark, lake, EVENTS)
    got = df.groupBy("run_id").count().toPandas().set_index("run_id")["count"].to_dict()
    assert got == {good: 14, other: 6}
    ids = sorted(r.product_id for r in df.select("product_id").collect())
    assert ids == list(range(0, 14)) + list(range(24, 30))
    assert {f.name for f in df.schema.fields} >= {*(f.name for f in EVENT_SCHEMA.fields), "run_id"}


@pytest.mark.spark
def test_spark_tasks_write_and_read_the_store_on_both_backends(spark, lake: Lake) -> None:
    """What tasks write under a prefix (write_to_store: by day, and one file even when unpartitioned and
    empty) reads back (read_parquet: in tasks on S3) as the rows written, the day typed as a date."""
    from services.core.spark import read_parquet, write_to_store

    rows = pd.DataFrame({"event_date": [dt.date(2020, 1, 1), dt.date(2020, 1, 1), dt.date(2020, 1, 2)],
                         "n": [1, 2, 3], "who": ["a", None, "c"]})  # fmt: skip
    df = spark.createDataFrame(rows).repartition(2)
    assert write_to_store(df, lake.store, "_staging/t/out", "event_date") == 3
    assert {k.split("/")[3] for k in lake.store.list("_staging/t/out")} == {"event_date=2020-01-01",
                                                                           "event_date=2020-01-02"}
    back = read_parquet(spark, lake, "_staging/t/out")
    assert dict(back.dtypes)["event_date"] == "date"
    got = back.toPandas()[["event_date", "n", "who"]].sort_values("n").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, rows, check_dtype=False)

    assert write_to_store(df.where("n > 5").coalesce(1), lake.store, "_staging/t/empty") == 0
    assert len(lake.store.list("_staging/t/empty")) == 1
    empty = read_parquet(spark, lake, "_staging/t/empty")
    assert empty.count() == 0 and sorted(empty.columns) == ["event_date", "n", "who"]
    assert read_parquet(spark, lake, "_staging/none") is None
