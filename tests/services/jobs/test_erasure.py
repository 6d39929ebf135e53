"""Verified erasure, end to end: a generated lake where a target and a canary share days, products and
categories; erase the target; an independent scan (tests/erasure_scan.py) of every file and every
warehouse table finds neither the raw id nor the key; the canary is unchanged; every other user's
features equal a rebuild from events without the target; re-ingesting suppresses and counts the
target; an erasure killed with SIGKILL at several points and rerun completes with nothing half-visible.

Real parts: Spark (local), PostgreSQL (tests/pgserver.py), the SeaweedFS S3 server (tests/s3server.py).
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from etl.erasure import ERASED, key_digest, person_mask, suppress
from etl.pseudonymize import pseudonymize
from services.core import erasure_ledger
from services.core.catalog import EVENTS, FEATURES, SEGMENTS
from services.core.lake import Lake
from services.core.storage import LocalStore
from tests.conftest import TEST_KEY
from tests.erasure_scan import patterns_of, scan_bucket, scan_bytes, scan_tree, scan_warehouse
from tests.pgserver import pg_server  # noqa: F401 (fixture)

KEY = TEST_KEY.encode()
HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
CANARY = "599000001"


# ------------------------------------------------------------------------------------ pure parts
def test_digests_match_keys_inside_text_and_nowhere_else() -> None:
    k1, k2 = pseudonymize("1", KEY), pseudonymize("2", KEY)
    digests = {key_digest(k1)}
    col = pd.Series([k1, k2, None, f"2019-10-01,view,1,2,,,3.0,{k1},{k2}", "no key"])
    import pyarrow as pa

    assert person_mask(pa.array(col, pa.string()), digests).tolist() == [True, False, False, True, False]
    assert person_mask(pa.array(col, pa.string()), set()).tolist() == [False] * 5


def test_suppression_drops_events_quarantine_and_copies_and_counts_them() -> None:
    from etl.lines import classify_batch

    target = "512000111"
    lines = [
        f"2019-10-01 00:00:01 UTC,view,1,2,a.b,x,1.0,{target},s1",
        f"2019-10-01 00:00:01 UTC,view,1,2,a.b,x,1.0,{target},s1",  # a copy of the line above
        f"2019-10-01 00:00:02 UTC,fly,1,2,a.b,x,1.0,{target},s1",  # quarantined: bad event type
        "2019-10-01 00:00:03 UTC,view,1,2,a.b,x,1.0,512000222,s2",
        "2019-10-01 00:00:03 UTC,view,1,2,a.b,x,1.0,512000222,s2",
    ]
    out = classify_batch(("\n".join(lines) + "\n").encode(), KEY, "f.csv", 2)
    kept, n = suppress(out, frozenset({key_digest(pseudonymize(target, KEY))}))
    assert n == 3
    assert kept.events.num_rows == 1 and kept.quarantine.num_rows == 0 and kept.duplicates.num_rows == 1
    assert kept.events.num_rows + kept.quarantine.num_rows + kept.duplicates.num_rows + n == len(lines)
    assert kept.hashes.shape[0] == kept.events.num_rows


def test_raw_files_lose_exactly_the_persons_lines(tmp_path: Path) -> None:
    """The person's valid lines (by the user-id column), their malformed lines (anywhere), nothing else:
    a line where the same number is a product id stays."""
    from etl.erasure import RawMatcher
    from services.jobs.erasure_raw import filter_raw

    target = "512000111"
    lines = [
        HEADER,
        f"2019-10-01 00:00:01 UTC,view,1,2,a.b,x,1.0,{target},s1",
        f"2019-10-01 00:00:02 UTC,view,{target},2,a.b,x,{target}.5,512000222,s2",  # someone else's
        f"2019-10-01 00:00:03 UTC,view,1,2,a.b,x,1.0,{target},s1,extra",  # malformed, holds the id
        "2019-10-01 00:00:04 UTC,view,1,2,a.b,x,1.0,512000222,s2",
    ]
    src = tmp_path / "f.csv.gz"
    src.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    matcher = RawMatcher(KEY, frozenset({key_digest(pseudonymize(target, KEY))}))
    assert filter_raw(src, matcher) == 2
    out = tmp_path / "out.csv.gz"
    assert filter_raw(src, matcher, out) == 2
    assert gzip.decompress(out.read_bytes()).decode() == "\n".join([lines[0], lines[2], lines[4]]) + "\n"
    assert filter_raw(out, matcher) == 0
    unknown = tmp_path / "bad.csv"  # a rejected file: no known header, the id anywhere counts
    unknown.write_text(f"a,b\n{target},x\ny,z\n")
    assert filter_raw(unknown, matcher) == 1


# ------------------------------------------------------------------------------------ the lake
@dataclass
class Built:
    root: Path
    files: list[Path]  # what was ingested (the original month and the extra file)
    target: str
    lake_uri: str


def _fields(line: str) -> list[str]:
    return line.split(",")


def make_inputs(root: Path) -> tuple[list[Path], str]:
    """A generated month, and a second file: the canary's copies of the target's events (same days,
    products, categories; its own sessions, one second later), plus a quarantined line, a duplicate and
    a malformed line of the target."""
    from etl.generate import generate

    generate(root / "raw", users=300, start=date(2019, 10, 1), months=1, seed=11, dirty_rate=0.01)
    month = root / "raw" / "2019-Oct.csv.gz"
    lines = gzip.decompress(month.read_bytes()).decode().splitlines()[1:]
    rows = [_fields(x) for x in lines if len(_fields(x)) == 9]
    per_user = pd.Series([r[7] for r in rows]).value_counts()
    last = max(r[0] for r in rows)
    target = next(u for u in per_user.index[5:] if max(r[0] for r in rows if r[7] == u) < last[:10])
    mine = [r for r in rows if r[7] == target and r[1] in ("view", "cart", "purchase")]
    extra = []
    for r in mine:
        t = pd.Timestamp(r[0].replace(" UTC", "")) + pd.Timedelta(seconds=1)
        extra.append(",".join([t.strftime("%Y-%m-%d %H:%M:%S UTC"), *r[1:7], CANARY, "c-" + r[8]]))
    extra.append(",".join([mine[0][0], "teleport", *mine[0][2:]]))  # quarantined, holds the target
    extra.append(",".join(mine[1]))  # the same line twice in this file: one is a duplicate
    extra.append(",".join(mine[1]))
    extra.append(",".join([*mine[2], "extra-field"]))  # malformed: the id is masked in quarantine
    path = root / "raw" / "extra.csv.gz"
    path.write_bytes(gzip.compress(("\n".join([HEADER, *extra]) + "\n").encode(), mtime=0))
    return [month, path], target


def place_raw(files: list[Path], incoming: Path, failed: Path, target: str) -> None:
    """What the watcher leaves: processed files under _processed/<run>/, a rejected one in failed/."""
    for i, f in enumerate(files):
        (incoming / "_processed" / f"run{i}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, incoming / "_processed" / f"run{i}" / f.name)
    failed.mkdir(parents=True, exist_ok=True)
    (failed / "bad.csv").write_text(f"not,a,header\n2019-10-01 00:00:00 UTC,view,1,2,,,1.0,{target},s\n")
    (failed / "bad.csv.error.json").write_text('{"reason": "bad header"}')


def without_target(files: list[Path], out: Path, target: str) -> list[Path]:
    """The input files as if the target had never been ingested (for the rebuild reference)."""
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for f in files:
        lines = gzip.decompress(f.read_bytes()).decode().splitlines()
        kept = [lines[0]] + [x for x in lines[1:] if target not in _fields(x)]
        (out / f.name).write_bytes(gzip.compress(("\n".join(kept) + "\n").encode(), mtime=0))
        done.append(out / f.name)
    return done


def _features(lake: Lake) -> pd.DataFrame:
    from services.core.readers import parquet_dataset

    found = parquet_dataset(lake, f"{FEATURES}/{lake.current_version(FEATURES)}")
    return found.to_table().to_pandas().sort_values("user_key", ignore_index=True)


def _segments(lake: Lake) -> pd.DataFrame:
    from services.core.readers import parquet_dataset

    found = parquet_dataset(lake, f"{SEGMENTS}/{lake.current_version(SEGMENTS)}")
    return found.to_table().to_pandas().set_index("user_key")


#: Features computed against the whole lake (docs/features.md): ``price_level`` compares a user's prices
#: with each category's mean over all events, so erasing someone who bought in the same categories
#: moves it for everyone there (and the rebuild without the target moves it the same way).
WHOLE_LAKE_FEATURES = ("price_level",)


def assert_segments_are_the_rebuilds(lake: Lake, rebuilt: pd.DataFrame) -> None:
    """Every published segment equals what the current model gives the rebuilt features."""
    from services.core.readers import load_model

    expected = load_model(lake).scorer.predict_frame(rebuilt)
    published = _segments(lake).loc[rebuilt["user_key"]]
    assert list(published.index) == list(rebuilt["user_key"])
    got = published["segment_id"].astype("float").to_numpy()
    want = expected["segment_id"].astype("float").to_numpy()
    assert ((got == want) | (pd.isna(got) & pd.isna(want))).all()


def _pg_files(pg, url: str) -> list[Path]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        oid = conn.execute(sa.text("SELECT oid FROM pg_database WHERE datname = current_database()")).scalar()
    engine.dispose()
    return [pg.data / "base" / str(oid), pg.data / "global"]


FAST = dict(k_range=(3, 5), n_bootstrap=2, threshold_grid=(5, 10, 20), sample_size=20_000)


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1800)  # two full pipeline runs, the erasure, a reference lake and a re-ingest
def test_verified_erasure_on_local_disk(spark, tmp_path: Path, pg_server, cli_env, monkeypatch) -> None:  # noqa: F811
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.erasure import RAW_PROCESSED, RAW_REJECTED, RawLocation, Targets
    from services.jobs.erasure_verify import verify
    from services.jobs.features import run_features
    from services.jobs.ingest import ingest_files
    from services.jobs.segmentation import TrainConfig
    from services.jobs.stages import PipelineConfig, run_pipeline

    files, target = make_inputs(tmp_path)
    settings = Settings(lake=str(tmp_path / "lake"), work_dir=tmp_path / "work", pseudonym_key=TEST_KEY)
    lake = open_lake(settings)
    url = pg_server.new_database("erasure")
    cfg = PipelineConfig(train=TrainConfig(**FAST), warehouse_url=url, erasure_max_age_hours=0)
    for f in files:  # two runs, so every versioned dataset keeps an older version too
        ingest_files(spark, lake, [f], KEY)
        run_pipeline(spark, lake, cfg)
    incoming, failed = tmp_path / "incoming", tmp_path / "failed"
    place_raw(files, incoming, failed, target)
    user_key, canary_key = pseudonymize(target, KEY), pseudonymize(CANARY, KEY)
    needles = [target, user_key]
    assert scan_tree(tmp_path / "lake", needles), "the scan must see the target before erasure"
    assert scan_warehouse(url, needles)
    before_f = _features(lake).set_index("user_key")
    assert canary_key in before_f.index and user_key in before_f.index

    erasure_ledger.record(lake, [key_digest(user_key)], "user_id")
    targets = Targets((RawLocation(RAW_PROCESSED, LocalStore(incoming), "_processed"),
                       RawLocation(RAW_REJECTED, LocalStore(failed))), url)  # fmt: skip
    import services.jobs.stages as stages

    monkeypatch.setattr(stages, "targets_from", lambda _settings, _url: targets)  # this test's raw locations
    out = run_pipeline(spark, lake, cfg)
    assert out["ran"][0] == "erasure" and {"score", "publish"} <= set(out["ran"])
    summary = out["erasure"]
    assert summary["rebuilt"] == ["features"]
    assert 0 < summary["events_files_rewritten"] < summary["events_files"]
    assert summary["rows_removed"][RAW_PROCESSED] > 0 and summary["rows_removed"][RAW_REJECTED] == 1

    # the independent scan: every file of the lake, the work dir, the raw files, every warehouse table
    for where in (tmp_path / "lake", tmp_path / "work", incoming, failed):
        assert scan_tree(where, needles) == [], where
    assert scan_warehouse(url, needles) == []
    for folder in [*_pg_files(pg_server, url), pg_server.data / "pg_wal"]:  # the WAL too (checkpointed)
        assert scan_tree(folder, [user_key]) == [], folder
    assert verify(lake, KEY, targets)["clean"]
    (req,) = [r for s in erasure_ledger.submissions(lake) for r in s.requests]
    assert req.state == "completed" and req.verified_at and req.stores["events"]["rows_removed"] > 0

    # everyone left, the canary included: features equal a rebuild from events without the target, and
    # segments equal the Spark-free scorer's on those rebuilt features with the same model
    ref = open_lake(Settings(lake=str(tmp_path / "ref"), work_dir=tmp_path / "refwork", pseudonym_key=TEST_KEY))
    for f in without_target(files, tmp_path / "clean", target):
        ingest_files(spark, ref, [f], KEY)
    run_features(spark, ref, full=True)
    rebuilt = _features(ref)
    pd.testing.assert_frame_equal(_features(lake), rebuilt, check_exact=False, rtol=1e-9)
    assert_segments_are_the_rebuilds(lake, rebuilt)
    # the canary's own features are unchanged; only the whole-lake ones move with the target's events
    after = _features(lake).set_index("user_key").loc[canary_key]
    own = [c for c in after.index if c not in WHOLE_LAKE_FEATURES]
    pd.testing.assert_series_equal(after[own], before_f.loc[canary_key, own], check_names=False)

    # re-ingesting the original files (new bytes, same lines) suppresses the target and counts it
    again = tmp_path / "again"
    again.mkdir()
    expected = 0
    for f in files:
        text = gzip.decompress(f.read_bytes())
        (again / f.name).write_bytes(gzip.compress(text, compresslevel=1, mtime=1))
        expected += sum(1 for x in text.decode().splitlines()[1:] if len(_fields(x)) == 9 and _fields(x)[7] == target)
    run = ingest_files(spark, lake, sorted(again.iterdir()), KEY)
    assert run["status"] == "committed" and run[ERASED] == expected > 0
    assert run["rows_read"] == run["rows_accepted"] + run["rows_quarantined"] + run["duplicates_removed"] + expected
    assert scan_tree(tmp_path / "lake", needles) == []


# ------------------------------------------------------------------------------------ kill -9
_CHILD = """
import os, signal, sys
from services.core.lake import Lake
from services.core.storage import LocalStore
from services.jobs.erasure import run_erasure
lake = Lake(LocalStore(sys.argv[1]), sys.argv[2])
calls, die_at = [0], int(sys.argv[3])
write = LocalStore.write_bytes
def dying(self, key, data):
    calls[0] += 1
    if calls[0] == die_at:
        os.kill(os.getpid(), signal.SIGKILL)
    write(self, key, data)
LocalStore.write_bytes = dying
run_erasure(lake, sys.argv[4].encode())
"""


def _all_readable(root: Path) -> None:
    """Nothing half-written: every Parquet file opens and every JSON parses."""
    import json

    for p in root.rglob("*"):
        if p.is_file() and p.suffix == ".parquet":
            pq.read_table(p)
        elif p.is_file() and p.suffix == ".json":
            json.loads(p.read_text())
        assert not p.name.endswith(".tmp"), p


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1800)
def test_erasure_killed_at_any_point_completes_on_rerun(spark, tmp_path: Path) -> None:
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.erasure import run_erasure
    from services.jobs.erasure_index import refresh as refresh_key_index
    from services.jobs.features import run_features
    from services.jobs.ingest import ingest_files

    files, target = make_inputs(tmp_path)
    base = tmp_path / "base"
    lake = open_lake(Settings(lake=str(base / "lake"), work_dir=base / "work", pseudonym_key=TEST_KEY))
    for f in files:
        ingest_files(spark, lake, [f], KEY)
        run_features(spark, lake)
    refresh_key_index(lake)  # as the pipeline's last stage does: the kills land in the rewrites
    user_key = pseudonymize(target, KEY)
    erasure_ledger.record(lake, [key_digest(user_key)], "user_id")

    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    reference = run_erasure(Lake(LocalStore(clean / "lake"), clean / "work"), KEY)["rows_removed"]
    assert reference[EVENTS] > 0

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = 0
    for die_at in (1, 2, 3, 5, 8, 13, 21):
        trial = tmp_path / f"kill{die_at}"
        shutil.copytree(base, trial)
        done = subprocess.run([sys.executable, "-c", _CHILD, str(trial / "lake"), str(trial / "work"), str(die_at),
                               TEST_KEY],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        if done.returncode == -signal.SIGKILL:
            killed += 1
            _all_readable(trial / "lake")
        else:
            assert done.returncode == 0, done.stderr[-2000:]
        again = Lake(LocalStore(trial / "lake"), trial / "work")
        rerun = run_erasure(again, KEY)
        if done.returncode == -signal.SIGKILL:
            assert rerun["status"] == "completed"
            assert rerun["rows_removed"] == reference, die_at
        assert scan_tree(trial / "lake", [target, user_key]) == [], die_at
        (req,) = [r for s in erasure_ledger.submissions(again) for r in s.requests]
        assert req.state == "completed"
        assert not again.store.exists("erasure/_batch.json")
    assert killed >= 5  # the kills did land mid-batch


# ------------------------------------------------------------------------------------ S3
@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.s3
@pytest.mark.timeout(1800)
def test_verified_erasure_on_the_s3_server(spark, tmp_path: Path, s3_server) -> None:
    from services.core.storage import S3Store
    from services.jobs.erasure import RAW_PROCESSED, RawLocation, Targets, run_erasure
    from services.jobs.erasure_verify import verify
    from services.jobs.features import run_features
    from services.jobs.ingest import ingest_files
    from services.jobs.segmentation import TrainConfig, score, train

    files, target = make_inputs(tmp_path)
    bucket, raw_bucket = s3_server.new_bucket("lake"), s3_server.new_bucket("incoming")
    client = s3_server.client()
    lake = Lake(S3Store(client, bucket, "lake"), tmp_path / "s3work")
    for f in files:
        ingest_files(spark, lake, [f], KEY)
        run_features(spark, lake)
    train(spark, lake, TrainConfig(**FAST), do_score=False)
    score(spark, lake, refresh_features=False)
    incoming = S3Store(client, raw_bucket, "")
    for i, f in enumerate(files):
        incoming.put_file(f, f"_processed/run{i}/{f.name}")
    user_key, canary_key = pseudonymize(target, KEY), pseudonymize(CANARY, KEY)
    needles = [target, user_key]
    lake.local_mirror(FEATURES)  # the local mirror the API and dashboard read on S3
    assert scan_bucket(client, bucket, needles) and scan_tree(tmp_path / "s3work", needles)
    before = _features(lake).set_index("user_key").loc[canary_key]

    erasure_ledger.record(lake, [key_digest(user_key)], "key")
    targets = Targets((RawLocation(RAW_PROCESSED, incoming, "_processed"),))
    summary = run_erasure(lake, KEY, targets)
    assert 0 < summary["events_files_rewritten"] < summary["events_files"]
    run_features(spark, lake, full=True)
    score(spark, lake, refresh_features=False)
    assert scan_bucket(client, bucket, needles) == []
    assert scan_bucket(client, raw_bucket, needles) == []
    assert scan_tree(tmp_path / "s3work", needles) == []
    assert verify(lake, KEY, targets)["clean"]
    after = _features(lake).set_index("user_key").loc[canary_key]
    own = [c for c in after.index if c not in WHOLE_LAKE_FEATURES]
    pd.testing.assert_series_equal(after[own], before[own], check_names=False)
    rebuilt = _features(lake)
    assert user_key not in set(rebuilt["user_key"]) and canary_key in set(rebuilt["user_key"])
    assert_segments_are_the_rebuilds(lake, rebuilt)


def _warehouse_with(url: str, keys: list[str]) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE features (user_key text, n int)"))
        conn.execute(sa.text("INSERT INTO features SELECT CASE WHEN i % 2 = 0 THEN :a ELSE :b END, i "
                             "FROM generate_series(1, 2000) i"), {"a": keys[0], "b": keys[1]})  # fmt: skip
    engine.dispose()


@pytest.mark.timeout(120)
def test_the_warehouse_erasure_clears_the_write_ahead_log(tmp_path: Path, pg_server) -> None:  # noqa: F811
    """The rows' bytes leave pg_wal too (their inserts, the deletes' full-page images): with the
    warehouse's setting (wal_recycle off, as docker-compose.yml starts it) and with the default (on),
    where the recycled segment keeps them and the summary says so."""
    import yaml

    from services.jobs.erasure import Targets, run_erasure
    from tests.pgserver import WAREHOUSE_SETTINGS, start_server, stop_server

    compose = yaml.safe_load((Path(__file__).parents[3] / "docker-compose.yml").read_text())
    assert [f"{k}={v}" for k, v in WAREHOUSE_SETTINGS.items()] == compose["services"]["warehouse"]["command"][2::2]
    default = start_server()
    try:
        for n, (pg, wal) in enumerate([(pg_server, "cleared"), (default, "not cleared: wal_recycle is on")]):
            target, other = pseudonymize(f"51200090{n}", KEY), pseudonymize("512000999", KEY)
            url = pg.new_database("wal")
            _warehouse_with(url, [target, other])
            assert scan_tree(pg.data / "pg_wal", [target]), "the WAL logged the rows"
            lake = Lake(LocalStore(tmp_path / f"lake{n}"), tmp_path / f"work{n}")
            erasure_ledger.record(lake, [key_digest(target)], "key")
            out = run_erasure(lake, KEY, Targets((), url))
            assert out["rows_removed"]["warehouse"] == 1000 and out["warehouse_wal"].startswith(wal)
            assert scan_warehouse(url, [other]) and scan_warehouse(url, [target]) == []
            assert [f for p in _pg_files(pg, url) for f in scan_tree(p, [target])] == []
            assert bool(scan_tree(pg.data / "pg_wal", [target])) == (wal != "cleared")
    finally:
        stop_server(default)


def test_verify_finds_a_person_left_behind(tmp_path: Path) -> None:
    """--verify must be able to fail: a completed request whose key is still in a file is found."""
    from services.jobs.erasure_verify import verify

    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    k = pseudonymize("512345678", KEY)
    lake.store.write_bytes("reports/describe/v1/report.json", f'{{"example": "{k}"}}'.encode())
    sub = erasure_ledger.record(lake, [key_digest(k)], "key")
    sub.requests[0].state = "completed"
    erasure_ledger.save(lake, sub)
    out = verify(lake, KEY)
    assert not out["clean"] and out["found"] == {"lake": ["reports/describe/v1/report.json"]}
    assert erasure_ledger.submissions(lake)[0].requests[0].found_at_verification == ["lake"]
    assert scan_bytes("report.json", lake.store.read_bytes("reports/describe/v1/report.json"), patterns_of([k]))


def test_cli_records_digests_only_and_verify_exits_1_when_someone_is_found(tmp_path: Path, cli_env) -> None:
    """`shoplens erase --defer`, `--status`, `--verify` (no Spark: the batch is run directly)."""
    import json

    from typer.testing import CliRunner

    from services.cli import app
    from services.jobs.erasure import run_erasure

    runner = CliRunner()
    ids = tmp_path / "ids.txt"
    ids.write_text("512000333\n\n512000444\n")
    out = runner.invoke(app, ["erase", "--user-id", "512000111", "--file", str(ids), "--defer", "--json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)["request_ids"]) == 3
    lake = Lake(LocalStore(Path(cli_env["SHOPLENS_LAKE"])), Path(cli_env["SHOPLENS_WORK_DIR"]))
    status = runner.invoke(app, ["erase", "--status", "--json"])
    rows = json.loads(status.stdout)
    assert [r["state"] for r in rows] == ["pending"] * 3
    for raw in ("512000111", "512000333", "512000444"):
        assert raw not in status.output and raw not in out.output
        assert pseudonymize(raw, KEY) not in status.output
        assert scan_tree(Path(cli_env["SHOPLENS_LAKE"]), [raw, pseudonymize(raw, KEY)]) == []
    assert {r.key_digest for s in erasure_ledger.submissions(lake) for r in s.requests} == {
        key_digest(pseudonymize(u, KEY)) for u in ("512000111", "512000333", "512000444")}
    deadline = pd.Timestamp(rows[0]["deadline"]) - pd.Timestamp(rows[0]["requested_at"])
    assert deadline == pd.Timedelta(days=30)

    assert run_erasure(lake, KEY)["requests"] == 3
    assert runner.invoke(app, ["erase", "--verify"]).exit_code == 0
    lake.store.write_bytes("funnel/v1/report.html", f"<p>{pseudonymize('512000333', KEY)}</p>".encode())
    found = runner.invoke(app, ["erase", "--verify", "--json"])
    assert found.exit_code == 1 and json.loads(found.stdout)["found"] == {"lake": ["funnel/v1/report.html"]}
    bad = runner.invoke(app, ["erase", "--key", "not-a-key"])
    assert bad.exit_code != 0 and "not-a-key" not in bad.output


def test_api_accepts_erasure_requests_with_the_bearer_key(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from services.core.settings import Settings
    from services.jobs.api import create_app

    settings = Settings(lake=str(tmp_path / "lake"), work_dir=tmp_path / "work", pseudonym_key=TEST_KEY,
                        api_key="erasure-test-token")  # fmt: skip
    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    k = pseudonymize("512000999", KEY)
    with TestClient(create_app(settings, lake, check_seconds=0.2)) as client:
        body = {"user_ids": ["512000111"], "keys": [k]}
        assert client.post("/v1/erasure-requests", json=body).status_code == 401
        auth = {"Authorization": "Bearer erasure-test-token"}
        done = client.post("/v1/erasure-requests", json=body, headers=auth)
        assert done.status_code == 202 and len(done.json()["request_ids"]) == 2
        assert "512000111" not in done.text and k not in done.text
        assert client.post("/v1/erasure-requests", json={"user_ids": ["x y"]}, headers=auth).status_code == 422
        assert client.post("/v1/erasure-requests", json={}, headers=auth).status_code == 422
    assert erasure_ledger.suppressed(lake) == {key_digest(pseudonymize("512000111", KEY)), key_digest(k)}
    assert scan_tree(tmp_path / "lake", ["512000111", k, pseudonymize("512000111", KEY)]) == []


def test_the_watcher_records_files_dropped_under_erasure_and_deletes_them(tmp_path: Path) -> None:
    from services.jobs.watch import WatchConfig, Watcher

    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    inbox = tmp_path / "in"
    (inbox / "erasure").mkdir(parents=True)
    k = pseudonymize("512000777", KEY)
    (inbox / "erasure" / "requests.txt").write_text(f"512000666\n\n{k.upper()}\n")
    now = [0.0]
    w = Watcher(lake, LocalStore(inbox), LocalStore(tmp_path / "q"), lambda: None, KEY,
                WatchConfig(poll_seconds=0.1, settle_seconds=1.0), clock=lambda: now[0])  # fmt: skip
    assert w.tick().files == []
    now[0] += 2
    (outcome,) = w.tick().files
    assert outcome["status"] == "erasure_requests" and outcome["requests"] == 2
    assert not (inbox / "erasure" / "requests.txt").exists()
    assert erasure_ledger.suppressed(lake) == {key_digest(pseudonymize("512000666", KEY)), key_digest(k)}
    assert scan_tree(tmp_path, ["512000666", "512000777", k, pseudonymize("512000666", KEY)]) == []


def test_the_descriptive_report_counts_requests_carried_out_in_its_period(tmp_path: Path) -> None:
    from services.reports.describe import _quality_section

    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    erasure_ledger.record(lake, ["a" * 64], "key")
    done = erasure_ledger.record(lake, ["b" * 64, "c" * 64], "key")
    for r in done.requests:
        r.state, r.completed_at = "completed", "2026-12-05T10:00:00+00:00"
    erasure_ledger.save(lake, done)
    assert erasure_ledger.period_counts(lake, None) == {"since": None, "completed": 2, "pending": 1}
    counts = erasure_ledger.period_counts(lake, "2026-12-06T00:00:00+00:00")
    assert counts["completed"] == 0 and counts["pending"] == 1
    stats = {"quarantine": None, "duplicates": None, "suspicious_users": None,
             "erasure": erasure_ledger.period_counts(lake, "2026-12-01T00:00:00+00:00")}  # fmt: skip
    row = _quality_section(stats).rows[-1]
    assert row[0] == "people erased on request, since the previous report (2026-12-01)" and row[2] == "1 pending"
    assert row[1] == "2"


@pytest.mark.spark
def test_order_exports_suppress_the_erased_customer_too(spark, tmp_path: Path, local_lake) -> None:
    """`--format online-retail`: the customer's purchases, rejected lines and copies are counted as
    erased_user and kept nowhere; everyone else's lines are untouched."""
    import csv

    from services.jobs.ingest import ingest_files
    from tests.services.jobs.test_online_retail import build_sample

    path = tmp_path / "orders.csv"
    lines = build_sample(path)
    target = "12350"
    mine = sum(1 for r in csv.reader(lines) if len(r) == 8 and r[6].split(".")[0] == target)
    user_key = pseudonymize(target, KEY)
    erasure_ledger.record(local_lake, [key_digest(user_key)], "user_id")
    run = ingest_files(spark, local_lake, [path], KEY, input_format="online-retail")
    assert run["status"] == "committed" and run[ERASED] == mine > 0
    assert run["rows_read"] == run["rows_accepted"] + run["rows_quarantined"] + run["duplicates_removed"] + mine
    assert scan_tree(Path(local_lake.store.uri), [user_key]) == []
    assert scan_tree(local_lake.work_dir, [user_key, target]) == []
