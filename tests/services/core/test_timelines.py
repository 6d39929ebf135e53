"""User timelines on real lakes: what ingest writes, merged on read, compaction, backfill, the task
runner. Every check compares with the committed ``events`` files read independently by DuckDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from etl.timeline import DICTIONARY_COLUMNS, ORDER, TIMELINE_SCHEMA, bucket_of, to_timeline
from services.core.catalog import EVENTS, TIMELINE_RUNS, TIMELINES
from services.core.lake import Lake
from services.core.timelines import (
    BUCKETS,
    backfill_timelines,
    bucket_sources,
    compact_timelines,
    read_bucket,
    read_written,
    run_on_buckets,
    timeline_groups,
    timelines_status,
)
from services.jobs import ingest
from services.jobs.ingest import ingest_files

pytestmark = pytest.mark.spark

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
COLUMNS = [c for c in TIMELINE_SCHEMA.names]


def later_file(path: Path, raw_users: list[str], seed: int = 4) -> Path:
    """A later file whose users partly return from the sample (so a user spans two runs' timelines)."""
    rng = np.random.default_rng(seed)
    lines, start = [], datetime(2019, 11, 1)
    for i, user in enumerate(raw_users):
        t = start + timedelta(seconds=int(rng.integers(0, 20 * 86400)))
        for _ in range(int(rng.integers(1, 6))):
            t += timedelta(seconds=int(rng.integers(1, 900)))
            kind = rng.choice(["view", "cart", "purchase"])
            lines.append(f"{t:%Y-%m-%d %H:%M:%S} UTC,{kind},{2000 + i},2053013555631882655,"
                         f"electronics.audio.headphone,Sony ,{rng.lognormal(3, 1):.2f},{user},s-{user}\n")  # fmt: skip
    path.write_text(HEADER + "".join(lines))
    return path


def committed_events(lake: Lake) -> pd.DataFrame:
    """The committed events as DuckDB reads their Parquet files (no code shared with the timelines)."""
    root = lake.store.local_path("")
    files = [str(root / k) for k in lake.committed_files(EVENTS)]
    cols = ", ".join(COLUMNS)
    return duckdb.sql(f"select {cols} from read_parquet({files!r}) order by source_file, line_number").df()


def all_timelines(lake: Lake) -> tuple[pd.DataFrame, dict[int, pa.Table]]:
    buckets = {b: read_bucket(lake.store, keys) for b, keys in bucket_sources(lake).items()}
    frame = pa.concat_tables([t.cast(pa.schema([(f.name, pa.string() if f.name in DICTIONARY_COLUMNS else f.type)
                                                for f in TIMELINE_SCHEMA])) for t in buckets.values()]).to_pandas()
    return frame.sort_values(["source_file", "line_number"], ignore_index=True), buckets


def assert_timelines_hold_the_events(lake: Lake) -> None:
    got, buckets = all_timelines(lake)
    want = committed_events(lake)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    seen: set[str] = set()
    for b, table in buckets.items():
        assert table.schema == TIMELINE_SCHEMA  # dictionaries, as stored
        users = table["user_key"].to_pylist()
        assert all(int(u[:15], 16) % BUCKETS == b for u in set(users))  # the HMAC's hex prefix
        assert not seen & set(users)  # every user in one bucket
        seen |= set(users)
        order = pc.sort_indices(table.cast(pa.schema([(f.name, pa.string() if f.name in DICTIONARY_COLUMNS
                                                       else f.type) for f in TIMELINE_SCHEMA])),
                                [(c, "ascending") for c in ORDER])  # fmt: skip
        assert order.to_pylist() == list(range(table.num_rows))  # sorted by user, time, file, line
        for c in DICTIONARY_COLUMNS:  # each dictionary holds its used values only, each once
            column = table[c].combine_chunks()
            assert column.dictionary.to_pylist() == pc.unique(column.cast(pa.string())).drop_null().to_pylist()


def test_the_sort_ranks_text_by_value_even_when_a_dictionary_lists_a_value_twice() -> None:
    """The timeline sort compares text through ranks of dictionary values: a key listed twice in a
    dictionary (two codes, one user) must still sort as one user, by time (Arrow's sort of the plain
    strings is the reference)."""
    rng = np.random.default_rng(5)
    n = 400
    codes = rng.integers(0, 6, n)  # values: u1, u0, u1 (twice), u2, u0 (twice), u3
    keys = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(["u1", "u0", "u1", "u2", "u0", "u3"]))
    files = pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 3, n), pa.int32()), pa.array(["b.csv", "a.csv", "b.csv"]))
    events = pa.table({
        f.name: keys if f.name == "user_key" else files if f.name == "source_file"
        else pa.array(rng.integers(0, 50, n) * 60_000_000, pa.timestamp("us", tz="UTC")) if f.name == "event_time"
        else pa.array(rng.permutation(n), pa.int64()) if f.name == "line_number"
        else pa.nulls(n, pa.string() if pa.types.is_dictionary(f.type) else f.type)
        for f in TIMELINE_SCHEMA
    })  # fmt: skip
    got = to_timeline(events).select(list(ORDER)).cast(pa.schema([(c, pa.string() if c in ("user_key", "source_file")
                                                                   else TIMELINE_SCHEMA.field(c).type) for c in ORDER]))
    plain = events.select(list(ORDER)).cast(got.schema)
    want = plain.take(pc.sort_indices(plain, [(c, "ascending") for c in ORDER]))
    assert got.equals(want)


@pytest.fixture
def two_runs(spark, local_lake, key, rees46_sample, tmp_path) -> Lake:
    users = pd.read_csv(rees46_sample, dtype=str)["user_id"].drop_duplicates().iloc[:30].tolist()
    assert ingest_files(spark, local_lake, [rees46_sample], key)["status"] == "committed"
    later = later_file(tmp_path / "2019-Nov.csv", [*users, "900000001"])
    assert ingest_files(spark, local_lake, [later], key)["status"] == "committed"
    return local_lake


def test_each_ingest_writes_its_sorted_run_and_reads_merge_them(two_runs: Lake) -> None:
    status = timelines_status(two_runs)
    assert len(status["uncompacted_runs"]) == 2 and status["missing_runs"] == []
    assert all(len(keys) <= 2 for keys in bucket_sources(two_runs).values())
    assert any(len(keys) == 2 for keys in bucket_sources(two_runs).values())  # returning users
    assert_timelines_hold_the_events(two_runs)


def test_a_run_with_many_events_is_sorted_in_more_groups(spark, local_lake, key, rees46_sample, monkeypatch) -> None:
    """A sort task holds at most EVENTS_PER_GROUP events whatever the run's size: the run is staged in
    as many more groups as that takes (up to one per bucket), and the timelines still hold every event."""
    cores = 2 * spark.sparkContext.defaultParallelism
    monkeypatch.setattr("services.core.timelines.EVENTS_PER_GROUP", 100)
    assert timeline_groups(spark, 0) == cores
    assert timeline_groups(spark, 100 * (cores + 3) - 1) == cores + 3
    assert timeline_groups(spark, 10**12) == BUCKETS
    staged: list[int] = []
    sort_groups = ingest.sort_groups

    def counting(spark, store, scratch, out, expected):
        staged.append(len({k[len(scratch):].lstrip("/").split("/", 1)[0] for k in store.list(scratch)}))
        return sort_groups(spark, store, scratch, out, expected)

    monkeypatch.setattr(ingest, "sort_groups", counting)
    summary = ingest_files(spark, local_lake, [rees46_sample], key)
    assert staged == [timeline_groups(spark, summary["rows_read"])] and staged[0] > cores
    assert_timelines_hold_the_events(local_lake)


def test_copies_across_chunks_and_files_stay_out_of_the_timelines(spark, local_lake, key, rees46_sample, tmp_path) -> None:
    """The chunk tasks stage the run's events by bucket group before copies across chunks are known;
    the copies dropped from the event files are dropped from the staged groups too."""
    lines = rees46_sample.read_text().splitlines(keepends=True)
    copy = tmp_path / "2019-Oct-copy.csv"
    copy.write_text(lines[0] + "".join(lines[2000:3500]))  # every line also in the sample
    summary = ingest_files(spark, local_lake, [rees46_sample, copy], key, chunk_bytes=100_000)
    assert summary["duplicates_removed"] >= 1500 and summary["rows_accepted"] > 0
    assert timelines_status(local_lake)["uncompacted_runs"] == local_lake.committed_run_ids()
    assert_timelines_hold_the_events(local_lake)
    assert sum(read_bucket(local_lake.store, k).num_rows for k in bucket_sources(local_lake).values()) == (
        summary["rows_accepted"])  # fmt: skip


def test_an_uncommitted_run_is_invisible(two_runs: Lake) -> None:
    before = sum(read_bucket(two_runs.store, k).num_rows for k in bucket_sources(two_runs).values())
    last = two_runs.runs()[-1]
    two_runs.write_run({**last, "status": "failed"})  # as if it had crashed before its commit point
    after = sum(read_bucket(two_runs.store, k).num_rows for k in bucket_sources(two_runs).values())
    assert after == before - last["rows_accepted"]
    assert_timelines_hold_the_events(two_runs)  # the committed events only, on both sides


def test_compaction_keeps_every_event_and_later_runs_merge_on_top(spark, two_runs: Lake, key, tmp_path) -> None:
    done = compact_timelines(spark, two_runs)
    assert sorted(done["folded_run_ids"]) == sorted(two_runs.committed_run_ids())
    assert two_runs.store.list(TIMELINE_RUNS) == []  # folded runs' files are gone
    assert all(len(keys) == 1 for keys in bucket_sources(two_runs).values())
    assert two_runs.pointer(TIMELINES)["n_events"] == len(committed_events(two_runs))
    assert_timelines_hold_the_events(two_runs)

    third = later_file(tmp_path / "2019-Dec.csv", ["900000001", "900000002"], seed=8)
    assert ingest_files(spark, two_runs, [third], key)["status"] == "committed"
    assert_timelines_hold_the_events(two_runs)
    again = compact_timelines(spark, two_runs)
    assert len(again["folded_run_ids"]) == 3
    assert [k for k in two_runs.store.list(TIMELINES) if done["version"] in k] == []  # previous version removed
    assert_timelines_hold_the_events(two_runs)


def test_backfill_builds_the_runs_ingested_before_timelines(spark, two_runs: Lake) -> None:
    run = two_runs.committed_run_ids()[0]
    two_runs.store.delete_prefix(TIMELINE_RUNS)  # as a lake ingested before timelines existed
    assert timelines_status(two_runs)["missing_runs"] == sorted(two_runs.committed_run_ids())
    built = backfill_timelines(spark, two_runs)
    assert built[run] == two_runs.runs()[0]["rows_accepted"]
    assert timelines_status(two_runs)["missing_runs"] == []
    assert_timelines_hold_the_events(two_runs)


_COUNTS = pa.schema([("user_key", pa.string()), ("events", pa.int64()), ("last", pa.timestamp("us", tz="UTC"))])


def _per_user(buckets: list[int], timeline: pa.Table) -> pa.Table:
    """A Spark-free per-user function: events and last event time (the last row of each user); the
    runner's bucket numbers are the users' own."""
    assert set(bucket_of(timeline["user_key"]).tolist()) <= set(buckets)
    users = timeline["user_key"].to_numpy(zero_copy_only=False)
    ends = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
    counts = np.diff(np.r_[-1, ends])
    return pa.table({"user_key": users[ends], "events": counts, "last": timeline["event_time"].take(ends)}, _COUNTS)


def test_the_runner_hands_each_function_whole_sorted_users(spark, two_runs: Lake) -> None:
    got = run_on_buckets(spark, two_runs, _per_user, _COUNTS, columns=["user_key", "event_time"])
    root = two_runs.store.local_path("")
    files = [str(root / k) for k in two_runs.committed_files(EVENTS)]
    want = duckdb.sql(f"select user_key, count(*) as events, max(event_time) as last from read_parquet({files!r}) "
                      "group by user_key order by user_key").fetch_arrow_table()  # fmt: skip
    assert got.sort_by("user_key").to_pylist() == want.cast(_COUNTS).to_pylist()

    written = run_on_buckets(spark, two_runs, _per_user, _COUNTS, columns=["user_key", "event_time"], out="scratch/x")
    assert sorted(written["bucket"].to_pylist()) == sorted(bucket_sources(two_runs))
    stored = duckdb.sql(f"select * from read_parquet('{root}/scratch/x/*.parquet') order by user_key").fetch_arrow_table()
    assert stored.cast(_COUNTS).to_pylist() == want.cast(_COUNTS).to_pylist()


@pytest.mark.s3
def test_timelines_on_a_real_s3_lake_are_read_and_written_by_the_tasks(spark, s3_lake, key, rees46_sample) -> None:
    summary = ingest_files(spark, s3_lake, [rees46_sample], key)
    keys = s3_lake.store.list(TIMELINE_RUNS)
    assert keys and all("/run_id=" in k for k in keys)
    got = run_on_buckets(spark, s3_lake, _per_user, _COUNTS, columns=["user_key", "event_time"])
    assert sum(got["events"].to_pylist()) == summary["rows_accepted"]
    assert len(set(got["user_key"].to_pylist())) == got.num_rows
    compact_timelines(spark, s3_lake)
    again = run_on_buckets(spark, s3_lake, _per_user, _COUNTS, columns=["user_key", "event_time"])
    assert again.sort_by("user_key").to_pylist() == got.sort_by("user_key").to_pylist()
    assert datetime(2019, 10, 1, tzinfo=UTC) <= max(got["last"].to_pylist())


def test_what_the_tasks_wrote_is_read_back_and_checked(spark, two_runs: Lake) -> None:
    written = run_on_buckets(spark, two_runs, _per_user, _COUNTS, columns=["user_key", "event_time"], out="scratch/r")
    collected = run_on_buckets(spark, two_runs, _per_user, _COUNTS, columns=["user_key", "event_time"])
    got = read_written(two_runs.store, "scratch/r", written, _COUNTS)
    assert got.num_rows == sum(written["rows"].to_pylist()) == collected.num_rows
    assert got.sort_by("user_key").to_pylist() == collected.sort_by("user_key").to_pylist()
    short = written.set_column(1, "rows", pc.add(written["rows"], pa.array([1] + [0] * (written.num_rows - 1))))
    with pytest.raises(RuntimeError, match="rows where its task wrote"):
        read_written(two_runs.store, "scratch/r", short, _COUNTS)
    assert read_written(two_runs.store, "scratch/r", written.slice(0, 0), _COUNTS).num_rows == 0
