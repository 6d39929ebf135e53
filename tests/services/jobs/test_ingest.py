"""The ingestion job against a real local lake and real Spark."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from etl.contract import RAW_COLUMNS
from etl.pseudonymize import pseudonymize
from services.core.spark import read_run_dataset
from services.jobs.ingest import ingest_files, split_into_chunks

pytestmark = pytest.mark.spark

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"


def _events(spark, lake):
    df = read_run_dataset(spark, lake, "events")
    return None if df is None else df.toPandas()


def test_real_rees46_rows_are_all_accepted_and_match_pandas(spark, local_lake, key, rees46_sample):
    summary = ingest_files(spark, local_lake, [rees46_sample], key)
    raw = pd.read_csv(rees46_sample, dtype=str, keep_default_na=False)
    expected = raw.drop_duplicates()
    assert summary["status"] == "committed"
    assert summary["rows_read"] == len(raw)
    assert summary["rows_quarantined"] == 0
    assert summary["duplicates_removed"] == len(raw) - len(expected)
    assert summary["rows_accepted"] == len(expected)

    events = _events(spark, local_lake)
    assert len(events) == len(expected)
    assert events["event_type"].value_counts().to_dict() == expected["event_type"].value_counts().to_dict()
    assert events["price"].sum() == pytest.approx(expected["price"].astype(float).sum())
    assert set(events["category_id"]) == {int(c) for c in expected["category_id"]}
    assert set(events["user_key"]) == {pseudonymize(u, key) for u in expected["user_id"]}
    assert set(events["session_key"]) == {pseudonymize(s, key) for s in expected["user_session"]}
    # lineage: every event points back at its line in the file
    by_line = raw.reset_index().assign(line_number=lambda d: d["index"] + 2).set_index("line_number")
    sample = events.sample(50, random_state=1)
    for _, e in sample.iterrows():
        assert by_line.loc[e.line_number, "product_id"] == str(e.product_id)


def test_counts_reconcile_per_file_and_per_reason(spark, local_lake, key, tmp_path):
    good = "2019-10-01 00:00:0{i} UTC,view,1,2,,,1.00,10{i},s{i}\n"
    a = tmp_path / "a.csv"
    a.write_text(HEADER + "".join(good.format(i=i) for i in range(5)) + good.format(i=1) + "bad line\n")
    b = tmp_path / "b.csv.gz"
    with gzip.open(b, "wt") as fh:
        fh.write(HEADER + good.format(i=7) + good.format(i=1) + "2019-10-01 00:00:00 UTC,view,1,2,,,-1,1,s\n")
    s = ingest_files(spark, local_lake, [a, b], key)
    assert s["rows_read"] == 10 == s["rows_accepted"] + s["rows_quarantined"] + s["duplicates_removed"]
    assert (s["rows_accepted"], s["duplicates_removed"]) == (6, 2)
    assert s["quarantine_by_reason"] == {"malformed_line": 1, "negative_price": 1}
    files = {f["name"]: f for f in s["files"]}
    assert (files["a.csv"]["rows_read"], files["a.csv"]["duplicates_removed"]) == (7, 1)
    assert (files["b.csv.gz"]["rows_read"], files["b.csv.gz"]["duplicates_removed"]) == (3, 1)
    quarantine = read_run_dataset(spark, local_lake, "quarantine").toPandas()
    assert sorted(zip(quarantine.source_file, quarantine.line_number, quarantine.reason, strict=True)) == [
        ("a.csv", 8, "malformed_line"),
        ("b.csv.gz", 4, "negative_price"),
    ]
    dups = read_run_dataset(spark, local_lake, "duplicates").toPandas()
    assert sorted(zip(dups.source_file, dups.line_number, strict=True)) == [("a.csv", 7), ("b.csv.gz", 3)]


def test_line_numbers_are_exact_across_chunk_boundaries(spark, local_lake, key, rees46_sample, tmp_path):
    lines = rees46_sample.read_text().splitlines()
    broken = lines[:]
    bad_at = [3, 1234, 2500, 4999]  # 0-based list index == 1-based line number - 1
    for i in bad_at:
        broken[i] = broken[i].replace(",view,", ",teleport,").replace(",cart,", ",teleport,")
    src = tmp_path / "broken.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write("\n".join(broken) + "\n")
    s = ingest_files(spark, local_lake, [src], key, chunk_bytes=100_000)
    quarantine = read_run_dataset(spark, local_lake, "quarantine").toPandas()
    assert sorted(quarantine.line_number) == [i + 1 for i in bad_at]
    assert s["rows_read"] == len(lines) - 1


def test_chunks_cover_every_line_once(tmp_path, rees46_sample):
    split = split_into_chunks(rees46_sample, "x.csv", tmp_path, chunk_bytes=50_000)
    assert len(split.chunks) > 5
    text = b"".join(c.path.read_bytes() for c in split.chunks)
    assert text == b"".join(rees46_sample.read_bytes().splitlines(keepends=True)[1:])
    starts = [c.first_line for c in split.chunks]
    sizes = [c.path.read_bytes().count(b"\n") for c in split.chunks]
    assert starts == [2 + sum(sizes[:i]) for i in range(len(sizes))]


@pytest.mark.parametrize("final_newline", [True, False])
@pytest.mark.parametrize("chunk_bytes", [1, 7, 30, 1_000])
def test_chunks_keep_lines_longer_than_a_chunk_and_a_missing_final_newline(tmp_path, chunk_bytes, final_newline):
    header = ",".join(RAW_COLUMNS)
    lines = ["a", "b" * 75, "", "c,d", "e" * 12, "f"]  # a line 10x a chunk, an empty line, short ones
    src = tmp_path / "in.csv"
    src.write_text(header + "\n" + "\n".join(lines) + ("\n" if final_newline else ""))
    (tmp_path / "out").mkdir()
    split = split_into_chunks(src, "in.csv", tmp_path / "out", chunk_bytes=chunk_bytes)
    pieces = [c.path.read_bytes() for c in split.chunks]
    assert b"".join(pieces).decode() == "\n".join(lines) + ("\n" if final_newline else "")
    assert all(p.endswith(b"\n") for p in pieces[:-1])  # chunks are cut between lines only
    assert split.rows == len(lines)
    counts = [p.count(b"\n") + (not p.endswith(b"\n")) for p in pieces]
    assert [c.first_line for c in split.chunks] == [2 + sum(counts[:i]) for i in range(len(pieces))]


def test_reingesting_the_same_file_is_a_noop_that_says_so(spark, local_lake, key, rees46_sample, tmp_path):
    first = ingest_files(spark, local_lake, [rees46_sample], key)
    before = sorted(local_lake.store.list("events"))
    copy = tmp_path / "renamed-copy.csv"
    copy.write_bytes(rees46_sample.read_bytes())
    second = ingest_files(spark, local_lake, [rees46_sample, copy], key)
    assert second["status"] == "nothing_to_do"
    assert [f["status"] for f in second["files"]] == ["skipped", "skipped"]
    assert all(first["run_id"] in f["reason"] for f in second["files"])
    assert sorted(local_lake.store.list("events")) == before
    assert len(_events(spark, local_lake)) == first["rows_accepted"]


def test_bad_header_fails_that_file_only_with_a_clear_reason(spark, local_lake, key, rees46_sample, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER.replace("brand", "maker") + "x\n")
    s = ingest_files(spark, local_lake, [bad, rees46_sample], key)
    files = {f["name"]: f for f in s["files"]}
    assert files["bad.csv"]["status"] == "failed"
    assert "bad.csv" in files["bad.csv"]["reason"] and "missing brand" in files["bad.csv"]["reason"]
    assert "1 unexpected column" in files["bad.csv"]["reason"] and "maker" not in files["bad.csv"]["reason"]
    assert files[rees46_sample.name]["status"] == "ingested"
    assert s["status"] == "committed"
    # a failed file is not in the ledger: once fixed it can be dropped again
    assert all(v["name"] != "bad.csv" for v in local_lake.ledger().values())


@pytest.mark.parametrize("crash_point", ["before_commit", "mid_publish"])
def test_crash_leaves_nothing_visible_and_the_next_run_completes(
    spark, local_lake, key, rees46_sample, monkeypatch, crash_point
):
    class Crash(RuntimeError):
        pass

    if crash_point == "before_commit":
        monkeypatch.setattr(local_lake, "write_run", lambda summary: (_ for _ in ()).throw(Crash()))
    else:
        real = local_lake.publish_run_dataset
        calls = []

        def publish_then_die(local_dir, dataset, run_id):
            calls.append(dataset)
            if len(calls) == 2:
                raise Crash()
            return real(local_dir, dataset, run_id)

        monkeypatch.setattr(local_lake, "publish_run_dataset", publish_then_die)
    with pytest.raises(Crash):
        ingest_files(spark, local_lake, [rees46_sample], key)
    assert local_lake.store.list("events"), "the crashed run did leave files behind"
    assert _events(spark, local_lake) is None, "but none of them is visible"
    assert local_lake.ledger() == {}

    monkeypatch.undo()
    s = ingest_files(spark, local_lake, [rees46_sample], key)
    assert s["status"] == "committed" and s["files"][0]["status"] == "ingested"
    assert len(_events(spark, local_lake)) == s["rows_accepted"] == 4997
    runs_on_disk = {k.split("run_id=")[1].split("/")[0] for k in local_lake.store.list("events")}
    assert len(runs_on_disk) == 2, "the crashed run's orphans are kept for the vacuum's grace period"
    local_lake.vacuum_grace_seconds = 0
    local_lake.vacuum()
    runs_on_disk = {k.split("run_id=")[1].split("/")[0] for k in local_lake.store.list("events")}
    assert runs_on_disk == {s["run_id"]}, "vacuum removed the crashed run's orphans"


def test_no_raw_id_appears_in_any_output(spark, local_lake, key, rees46_sample, tmp_path):
    dirty = tmp_path / "dirty.csv"
    raw = rees46_sample.read_text().splitlines()
    dirty.write_text("\n".join([*raw[:200], raw[5].replace(",view,", ",zzz,"), raw[6][:60]]) + "\n")
    ingest_files(spark, local_lake, [dirty], key)
    frame = pd.read_csv(dirty, dtype=str, keep_default_na=False, on_bad_lines="skip")
    secrets = set(frame["user_id"]) | set(frame["user_session"])
    secrets.discard("")
    root = Path(local_lake.store.uri)
    texts = []
    for path in root.rglob("*"):
        if path.suffix == ".parquet":
            texts.append(pq.read_table(path).to_pandas().to_csv())
        elif path.is_file():
            texts.append(path.read_text(errors="replace"))
    blob = "\n".join(texts)
    assert len(texts) >= 4
    leaked = [s for s in secrets if s in blob]
    assert leaked == []


def test_cli_json_summary_and_exit_codes(cli_env, rees46_sample, tmp_path):
    env = {**os.environ, **cli_env}
    cmd = [sys.executable, "-m", "services", "ingest", "--json", str(rees46_sample)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    for field in (
        "rows_read",
        "rows_accepted",
        "rows_quarantined",
        "duplicates_removed",
        "quarantine_by_reason",
    ):
        assert field in summary
    assert summary["files"][0]["status"] == "ingested"
    assert "541312140" not in done.stdout + done.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    done = subprocess.run([*cmd[:-1], str(bad)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("shoplens: error:") and "bad.csv" in last


@pytest.mark.s3
def test_ingest_into_an_s3_lake_matches_the_local_lake(spark, s3_lake, local_lake, key, rees46_sample):
    """The same file ingested into the real S3 server and onto local disk gives the same lake."""
    s3 = ingest_files(spark, s3_lake, [rees46_sample], key)
    local = ingest_files(spark, local_lake, [rees46_sample], key)
    for field in ("rows_read", "rows_accepted", "rows_quarantined", "duplicates_removed"):
        assert s3[field] == local[field]
    assert s3_lake.store.exists(f"runs/{s3['run_id']}.json")
    assert any("/run_id=" in k for k in s3_lake.store.list("events"))
    s3_events = _events(spark, s3_lake).sort_values("line_number").reset_index(drop=True)
    local_events = _events(spark, local_lake).sort_values("line_number").reset_index(drop=True)
    columns = [c for c in s3_events.columns if c != "run_id"]
    pd.testing.assert_frame_equal(s3_events[columns], local_events[columns])
    again = ingest_files(spark, s3_lake, [rees46_sample], key)
    assert again["status"] == "nothing_to_do"


def test_generated_faults_are_caught_exactly(spark, local_lake, key, tmp_path):
    """Every fault the generator injected is quarantined with the expected reason or removed as a
    duplicate, at the recorded line, and nothing else is."""
    from etl.generate import generate

    out = tmp_path / "feed"
    gen = generate(out, users=600, months=2, seed=3, dirty_rate=0.02)
    truth = pd.read_csv(out / "_truth" / "dirty.csv")
    s = ingest_files(spark, local_lake, sorted(out.glob("*.csv.gz")), key)

    assert s["rows_read"] == gen.events + gen.dirty_rows
    assert s["rows_accepted"] == gen.events
    assert s["rows_quarantined"] + s["duplicates_removed"] == gen.dirty_rows == len(truth)
    expected_q = truth[truth.expected != "duplicate"]
    got_q = read_run_dataset(spark, local_lake, "quarantine").toPandas()
    assert sorted(zip(got_q.source_file, got_q.line_number, got_q.reason, strict=True)) == sorted(
        zip(expected_q.file, expected_q.line_number, expected_q.expected, strict=True)
    )
    expected_d = truth[truth.expected == "duplicate"]
    got_d = read_run_dataset(spark, local_lake, "duplicates").toPandas()
    assert sorted(zip(got_d.source_file, got_d.line_number, strict=True)) == sorted(
        zip(expected_d.file, expected_d.line_number, strict=True)
    )
    assert s["quarantine_by_reason"] == expected_q.expected.value_counts().to_dict()


def test_a_file_truncated_after_some_chunks_leaves_nothing_of_it(spark, local_lake, key, rees46_sample, tmp_path):
    """Chunk tasks start while a file is still being cut; if the file then turns out to be corrupt, the
    outputs of its chunks already processed are dropped with it, and the other files commit as usual."""
    whole = gzip.compress(rees46_sample.read_bytes())
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(whole[: len(whole) * 3 // 4])  # the gzip stream ends early
    s = ingest_files(spark, local_lake, [broken, rees46_sample], key, chunk_bytes=40_000)
    files = {f["name"]: f for f in s["files"]}
    assert files["broken.csv.gz"]["status"] == "failed" and "truncated" in files["broken.csv.gz"]["reason"]
    assert files[rees46_sample.name]["status"] == "ingested" and s["status"] == "committed"
    events = _events(spark, local_lake)
    assert set(events["source_file"]) == {rees46_sample.name}
    assert len(events) == s["rows_accepted"] == 4997
    assert not [k for k in local_lake.store.list("") if "broken" in k]
