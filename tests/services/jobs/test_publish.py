"""The warehouse publish against a real PostgreSQL (started natively, tests/pgserver.py) and SQLite.

Every table is compared with an independent pandas read of the lake; keys, types and indexes are
read back from the database's catalog; a reader thread polls counts while a publish swaps tables.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from threadpoolctl import threadpool_limits

from services.core.catalog import CLV, FEATURES, OVERVIEW_VIEWS, RETENTION, SEGMENTATION_MODEL, SEGMENTS
from services.core.lake import Lake
from services.core.publish import new_version
from services.core.storage import LocalStore
from services.core.warehouse import PUBLICATIONS, WarehouseError
from services.jobs.publish import CUSTOMER_VALUE_COLUMNS, TABLES, publish, publish_due, table_named
from services.jobs.stages import PipelineConfig, stage_named
from tests.conftest import TEST_KEY
from tests.dashboard.fixtures import build_lake
from tests.pgserver import pg_server  # noqa: F401  (the session fixture)
from tests.promserver import free_port

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A contract-shaped lake (segments, features, models, views), built once; tests copy it to change it."""
    root = tmp_path_factory.mktemp("wh") / "lake"
    with threadpool_limits(limits=1):
        fixture = build_lake(root, TEST_KEY.encode())
    return fixture


@pytest.fixture
def lake(source, tmp_path) -> Lake:
    """A private copy of the source lake."""
    root = tmp_path / "lake"
    shutil.copytree(source.root, root)
    return Lake(LocalStore(root), tmp_path / "work")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    server = request.getfixturevalue("pg_server")
    return server.new_database("wh")


def lake_frame(lake: Lake, dataset: str, name: str | None = None) -> pd.DataFrame:
    """The current version of a dataset, read with pandas alone (not the code under test)."""
    base = Path(lake.store.local_path(f"{dataset}/{lake.current_version(dataset)}"))
    files = [base / f"{name}.parquet"] if name else sorted(base.glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def sql_frame(url: str, table: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql_table(table, conn)
    finally:
        engine.dispose()


def normalized(df: pd.DataFrame, key: str) -> pd.DataFrame:
    out = df.sort_values(key, ignore_index=True).copy()
    for col in out.columns:
        s = out[col]
        if col == "event_date":  # a DATE may come back as a datetime
            out[col] = pd.to_datetime(s).dt.date
        elif pd.api.types.is_datetime64_any_dtype(s):
            out[col] = (s.dt.tz_convert("UTC") if s.dt.tz is not None else s.dt.tz_localize("UTC")).dt.as_unit("us")
        elif pd.api.types.is_bool_dtype(s):
            out[col] = s.astype(bool)
        elif pd.api.types.is_numeric_dtype(s):
            out[col] = s.astype(float)
    return out


def count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()
    finally:
        engine.dispose()


def publish_segments(lake: Lake, df: pd.DataFrame, model_version: str) -> str:
    with new_version(lake, SEGMENTS, model_version=model_version) as staged:
        staged.write_table("part-00000", df)
    return staged.version


# ------------------------------------------------------------------------------------ contents
def test_every_table_equals_the_lake(lake, url):
    summary = publish(lake, url)
    assert summary["status"] == "published"
    assert {t["table"]: t["status"] for t in summary["tables"]} == {t.name: "published" for t in TABLES}

    seg = lake_frame(lake, SEGMENTS)[["user_key", "segment_id", "segment_name", "confidence", "model_version", "as_of",
                                      "lifecycle_stage"]]
    got = sql_frame(url, "segments")
    assert list(got.columns) == list(seg.columns)
    pd.testing.assert_frame_equal(normalized(got, "user_key"), normalized(seg, "user_key"), check_exact=True)
    assert got["segment_id"].isna().sum() == seg["segment_id"].isna().sum() > 0  # NULL, not NaN or 0

    feats = lake_frame(lake, FEATURES)
    got = sql_frame(url, "features")
    assert list(got.columns) == list(feats.columns)
    pd.testing.assert_frame_equal(normalized(got, "user_key"), normalized(feats, "user_key"), check_exact=True)

    kpi = lake_frame(lake, OVERVIEW_VIEWS, "kpi_daily")
    got = sql_frame(url, "kpi_daily")
    pd.testing.assert_frame_equal(normalized(got, "event_date"), normalized(kpi, "event_date"), check_exact=True)

    value = pd.read_parquet(Path(lake.store.local_path(f"{CLV}/{lake.current_version(CLV)}")) / "customers")
    got = sql_frame(url, "customer_value")
    assert list(got.columns) == CUSTOMER_VALUE_COLUMNS
    value = value[CUSTOMER_VALUE_COLUMNS].assign(first_purchase=pd.to_datetime(value["first_purchase"]).dt.date)
    got = got.assign(first_purchase=pd.to_datetime(got["first_purchase"]).dt.date)
    pd.testing.assert_frame_equal(normalized(got, "user_key"), normalized(value, "user_key"), check_exact=True)

    cohorts = lake_frame(lake, RETENTION, "cohorts")
    got = sql_frame(url, "retention")
    assert list(got.columns) == list(cohorts.columns)
    pd.testing.assert_frame_equal(normalized(got.assign(cohort=got["cohort"].astype(str)), "period").sort_values(
        ["breakdown", "group", "cohort", "period"], ignore_index=True),
        normalized(cohorts.assign(cohort=cohorts["cohort"].astype(str)), "period").sort_values(
        ["breakdown", "group", "cohort", "period"], ignore_index=True), check_exact=True)  # fmt: skip

    model_version = lake.current_version(SEGMENTATION_MODEL)
    profiles = json.loads((Path(lake.store.local_path(f"{SEGMENTATION_MODEL}/{model_version}")) / "profiles.json")
                          .read_text())  # fmt: skip
    got = sql_frame(url, "segment_profiles").set_index("segment_id")
    assert sorted(got.index) == sorted(p["segment_id"] for p in profiles)
    for p in profiles:
        row = got.loc[p["segment_id"]]
        assert row["segment_name"] == p["name"] and row["description"] == p["description"]
        assert row["size"] == p["size"] and row["share_revenue"] == pytest.approx(p["share_revenue"], abs=0)
        assert row["actions"].split("\n") == p["actions"]
        assert json.loads(row["lifts"]) == p["lifts"] and json.loads(row["top_categories"]) == p["top_categories"]
        assert row["model_version"] == model_version

    pubs = sql_frame(url, PUBLICATIONS).set_index("table_name")
    for t in TABLES:
        assert pubs.loc[t.name, "lake_version"] == lake.current_version(t.dataset)
        assert pubs.loc[t.name, "rows"] == count(url, t.name)


def test_keys_types_and_indexes_are_declared(lake, url):
    publish(lake, url)
    engine = sa.create_engine(url)
    try:
        insp = sa.inspect(engine)
        for t in TABLES:
            assert insp.get_pk_constraint(t.name)["constrained_columns"] == list(t.key), t.name
            assert {tuple(ix["column_names"]) for ix in insp.get_indexes(t.name)} >= set(t.indexes), t.name
        cols = {c["name"]: c for c in insp.get_columns("segments")}
        assert isinstance(cols["segment_id"]["type"], sa.BigInteger)
        assert isinstance(cols["confidence"]["type"], sa.Float)
        assert isinstance(cols["user_key"]["type"], sa.Text) and not cols["user_key"]["nullable"]
        assert isinstance(cols["as_of"]["type"], sa.DateTime)
        if engine.dialect.name == "postgresql":
            assert cols["as_of"]["type"].timezone  # timestamptz: BI tools see UTC instants
            names = {ix["name"] for ix in insp.get_indexes("segments")}
            assert names == {"ix_segments_segment_id"}  # staging names are renamed at the swap
        feats = {c["name"]: c for c in insp.get_columns("features")}
        assert isinstance(feats["n_events"]["type"], sa.BigInteger)
        assert isinstance(feats["recency_days"]["type"], sa.Float | sa.Integer)
        assert isinstance(insp.get_columns("kpi_daily")[0]["type"], sa.Date)
        assert not [n for n in insp.get_table_names() if n.endswith("__next")]
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------ idempotency
def test_publishing_the_same_versions_twice_changes_nothing(lake, url):
    first = publish(lake, url)
    before = sql_frame(url, PUBLICATIONS).sort_values("table_name", ignore_index=True)
    engine = sa.create_engine(url)
    oid_sql = ("SELECT 'segments'::regclass::oid" if engine.dialect.name == "postgresql"
               else "SELECT rootpage FROM sqlite_master WHERE name = 'segments'")  # fmt: skip
    with engine.connect() as conn:
        oid = conn.execute(sa.text(oid_sql)).scalar_one()
    assert publish_due(lake, url) == (False, "up to date")
    second = publish(lake, url)
    assert first["status"] == "published" and second["status"] == "up_to_date"
    assert {t["status"] for t in second["tables"]} == {"unchanged"}
    after = sql_frame(url, PUBLICATIONS).sort_values("table_name", ignore_index=True)
    pd.testing.assert_frame_equal(before, after)
    with engine.connect() as conn:
        assert conn.execute(sa.text(oid_sql)).scalar_one() == oid  # the very same table, not a reload
    engine.dispose()


def test_only_tables_whose_lake_version_moved_are_reloaded(lake, url, source):
    publish(lake, url)
    fewer = source.segments.iloc[:100]
    version = publish_segments(lake, fewer, "m-new")
    due, why = publish_due(lake, url)
    assert due and why == "new lake versions for segments"
    summary = publish(lake, url)
    status = {t["table"]: t["status"] for t in summary["tables"]}
    assert status == {"segments": "published", "segment_profiles": "unchanged", "features": "unchanged",
                      "kpi_daily": "unchanged", "customer_value": "unchanged",
                      "retention": "unchanged"}  # fmt: skip
    assert count(url, "segments") == 100
    pubs = sql_frame(url, PUBLICATIONS).set_index("table_name")
    assert pubs.loc["segments", "lake_version"] == version and pubs.loc["segments", "rows"] == 100


def test_a_leftover_staging_table_from_a_crash_is_replaced(lake, url):
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE TABLE "segments__next" (junk integer)'))
    engine.dispose()
    publish(lake, url)
    assert count(url, "segments") == len(lake_frame(lake, SEGMENTS))


# ------------------------------------------------------------------------------------ atomicity
def test_a_reader_sees_the_old_table_or_the_new_one_never_part_of_one(lake, url, source):
    publish(lake, url)
    old = count(url, "segments")
    big = source.segments.loc[source.segments.index.repeat(300)].reset_index(drop=True)  # 210,000 rows
    big["user_key"] = [f"{k}-{i}" for i, k in enumerate(big["user_key"])]
    publish_segments(lake, big, "m-big")
    new = len(big)

    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
        try:
            with engine.connect() as conn:
                while not stop.is_set():
                    seen.append(conn.execute(sa.text("SELECT count(*) FROM segments")).scalar_one())
                    conn.commit()  # a new snapshot for every poll
        except BaseException as err:  # surfaced below
            errors.append(err)
        finally:
            engine.dispose()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        while not seen:
            time.sleep(0.01)
        publish(lake, url)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert set(seen) <= {old, new}, sorted(set(seen) - {old, new})[:5]
    assert seen[0] == old and seen[-1] == new and len(seen) > 10


# ------------------------------------------------------------------------------------ failures
def test_a_dead_database_fails_with_one_clear_line_and_leaves_the_lake_alone(lake):
    url = f"postgresql+psycopg://shoplens:pw-very-secret@127.0.0.1:{free_port()}/warehouse"
    before = sorted((p.relative_to(lake.store.local_path("")), p.stat().st_mtime_ns)
                    for p in Path(lake.store.local_path("")).rglob("*") if p.is_file())  # fmt: skip
    with pytest.raises(WarehouseError) as caught:
        publish(lake, url)
    message = str(caught.value)
    assert "\n" not in message and "pw-very-secret" not in message
    assert message.startswith(f"warehouse postgresql+psycopg://shoplens:***@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}")
    assert "refused" in message.lower() or "connect" in message.lower()
    due, why = publish_due(lake, url)
    assert due and why.startswith("warehouse unreachable")  # the stage runs, fails, and is retried later
    after = sorted((p.relative_to(lake.store.local_path("")), p.stat().st_mtime_ns)
                   for p in Path(lake.store.local_path("")).rglob("*") if p.is_file())  # fmt: skip
    assert before == after


def test_the_cli_says_what_failed_in_one_line(lake, tmp_path):
    dead = f"postgresql+psycopg://u:secret-pw@127.0.0.1:{free_port()}/db"
    env = {"PATH": "/usr/bin:/bin", "SHOPLENS_PSEUDONYM_KEY": TEST_KEY, "SHOPLENS_WORK_DIR": str(tmp_path / "w"),
           "SHOPLENS_LOG_LEVEL": "ERROR"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "services", "publish", "--url", dead, "--lake",
                           str(lake.store.local_path(""))], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("shoplens: error: warehouse postgresql+psycopg://u:***@127.0.0.1:"), done.stderr
    assert "secret-pw" not in done.stderr and "Traceback" not in done.stderr

    ok = f"sqlite:///{tmp_path / 'wh.db'}"
    done = subprocess.run([sys.executable, "-m", "services", "publish", "--url", ok, "--lake",
                           str(lake.store.local_path("")), "--json"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "published"


# ------------------------------------------------------------------------------------ the stage
def test_publish_is_a_spark_free_pipeline_stage(lake, tmp_path):
    stage = stage_named("publish")
    cfg = PipelineConfig(warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}")
    assert stage.spark is False
    assert stage.due(lake, cfg)[0]
    out = stage.run(None, lake, cfg)
    assert out["status"] == "published"
    assert stage.due(lake, cfg) == (False, "up to date")


def test_an_empty_lake_has_nothing_to_publish(tmp_path):
    empty = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    assert publish_due(empty, url) == (False, "nothing published in the lake yet")
    assert {t["status"] for t in publish(empty, url)["tables"]} == {"absent"}


def test_each_table_is_declared_once_with_a_key():
    names = [t.name for t in TABLES]
    assert len(names) == len(set(names)) and PUBLICATIONS not in names
    for t in TABLES:
        assert t.key and t is table_named(t.name)
        if t.columns is not None:
            declared = {c.name for c in t.columns}
            assert set(t.key) <= declared and all(set(ix) <= declared for ix in t.indexes)
    doc = (REPO / "docs" / "outputs.md").read_text()
    part = doc.split("## Warehouse tables", 1)[1]
    for t in TABLES:
        assert f"### `{t.name}`" in part, t.name
    assert f"### `{PUBLICATIONS}`" in part
    assert np.isfinite(len(part))
