"""Hostile files through ingestion and the watcher (issue 28): each gets a named reason, memory stays
bounded, the other files go on, no raw id reaches any output, and our own I/O errors are not blamed on
the file. The corpus is tests/hostile_corpus.py."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import services.jobs.watch as watcher_module
from etl.contract import ContractError
from services.core.lake import Lake
from services.core.storage import LocalStore, ObjectInfo, S3Store, Store
from services.jobs.ingest import CHUNK_BYTES, ingest_files, split_into_chunks
from services.jobs.watch import ARCHIVE_PREFIX, WatchConfig, Watcher
from tests.hostile_corpus import RAW_IDS, ROW, write_corpus
from tests.services.jobs.test_watch import Clock

REPO = Path(__file__).resolve().parents[3]


def _no_raw_id(*texts: str) -> None:
    for text in texts:
        for raw in RAW_IDS:
            assert raw not in text


@pytest.mark.spark
@pytest.mark.slow
def test_each_hostile_file_gets_its_named_reason_and_the_good_file_goes_on(
        spark, local_lake, key, rees46_sample, tmp_path, caplog):  # fmt: skip
    expected = write_corpus(tmp_path / "corpus")
    caplog.set_level(logging.INFO)
    paths = [tmp_path / "corpus" / name for name in expected]
    summary = ingest_files(spark, local_lake, [*paths, rees46_sample], key)
    files = {f["name"]: f for f in summary["files"]}
    assert {n: (f["status"], f["reason_code"]) for n, f in files.items() if n in expected} == {
        n: ("failed", code) for n, code in expected.items()}
    assert files[rees46_sample.name]["status"] == "ingested" and summary["status"] == "committed"
    assert summary["rows_read"] == files[rees46_sample.name]["rows_read"] == 5000
    run_doc = local_lake.store.read_bytes(f"runs/{summary['run_id']}.json").decode()
    _no_raw_id(json.dumps(summary), run_doc, caplog.text)


@pytest.fixture(params=["local", "s3"])
def watched(request, tmp_path, local_lake) -> tuple[Lake, Store, Store]:
    """(lake, incoming, quarantine) on local disk, or all three on the real S3 server."""
    if request.param == "local":
        return local_lake, LocalStore(tmp_path / "in"), LocalStore(tmp_path / "q")
    server = request.getfixturevalue("s3_server")
    client = server.client()
    return (request.getfixturevalue("s3_lake"), S3Store(client, server.new_bucket("incoming")),
            S3Store(client, server.new_bucket("quarantine-files")))  # fmt: skip


@pytest.mark.spark
@pytest.mark.slow
def test_the_watcher_sets_each_hostile_file_aside_with_its_reason(spark, watched, key, rees46_sample, tmp_path,
                                                                   caplog):  # fmt: skip
    lake, incoming, quarantine = watched
    expected = write_corpus(tmp_path / "corpus")
    for name in expected:
        incoming.put_file(tmp_path / "corpus" / name, name)
    incoming.put_file(rees46_sample, "evil\nname.csv")
    expected["evil\nname.csv"] = "unsafe_name"
    incoming.put_file(rees46_sample, "z-good.csv")
    caplog.set_level(logging.INFO)
    clock = Clock()
    w = Watcher(lake, incoming, quarantine, lambda: spark, key, WatchConfig(poll_seconds=0.1, settle_seconds=2.0),
                clock=clock)  # fmt: skip
    w.refresh = lambda: None
    w.ready()
    clock.now += 3
    outcomes = {f["key"]: f for f in w.tick().files}
    assert outcomes["z-good.csv"]["status"] == "ingested"
    reports = {}
    for name, code in expected.items():
        assert outcomes[name]["status"] == "failed" and outcomes[name]["reason_code"] == code
        reports[name] = quarantine.read_bytes(f"{name}.error.json").decode()
        assert json.loads(reports[name])["reason_code"] == code
        assert quarantine.exists(name)  # kept, not lost
    # the good file archived; no attempt count left behind
    assert incoming.list("") == [f"{ARCHIVE_PREFIX}/{outcomes['z-good.csv']['run_id']}/z-good.csv"]
    _no_raw_id(*reports.values(), json.dumps(list(outcomes.values())), caplog.text)


_MEASURE = """
import resource, sys
from pathlib import Path
from etl.contract import ContractError
from services.jobs.ingest import split_into_chunks
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
codes = []
for name in sys.argv[2:]:
    try:
        split_into_chunks(Path(sys.argv[1]) / name, name, Path(sys.argv[1]) / "out")
    except ContractError as err:
        codes.append(err.code)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, *codes)
"""


@pytest.mark.slow
def test_memory_stays_bounded_on_a_gigabyte_line_and_a_gzip_bomb(tmp_path):
    """Peak resident memory of reading them with the default limits (64 MiB blocks, 1 MiB lines), in a
    fresh process: at most two blocks and one line (the bound in services/core/bounded_read.py) plus
    16 MiB. Without the caps the 1 GiB line alone was held whole."""
    write_corpus(tmp_path)
    (tmp_path / "out").mkdir()
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path), "long-line.csv.gz", "bomb.csv.gz"],
                         capture_output=True, text=True, check=True, cwd=REPO, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()  # fmt: skip
    growth_kib, codes = int(out[0]), out[1:]
    assert codes == ["line_too_long", "decompression_bomb"]
    assert growth_kib * 1024 < 2 * CHUNK_BYTES + (1 << 20) + (16 << 20)


def test_a_full_disk_is_our_error_not_a_corrupt_input(tmp_path, rees46_sample):
    """The chunk being written is /dev/full: a real ENOSPC, which must not become a ContractError."""
    out = tmp_path / "out"
    out.mkdir()
    (out / f"00000-{rees46_sample.name}.txt").symlink_to("/dev/full")
    with pytest.raises(OSError) as err:
        split_into_chunks(rees46_sample, rees46_sample.name, out)
    assert err.value.errno == errno.ENOSPC and not isinstance(err.value, ContractError)


def _one_file_watcher(tmp_path, local_lake, key, max_attempts=2) -> tuple[Watcher, Clock, Path]:
    inbox = tmp_path / "in"
    inbox.mkdir(exist_ok=True)
    if not (inbox / "a.csv").exists():
        (inbox / "a.csv").write_text(f"{ROW}\n")
    clock = Clock()
    w = Watcher(local_lake, LocalStore(inbox), LocalStore(tmp_path / "q"), lambda: None, key,
                WatchConfig(poll_seconds=0.1, settle_seconds=2.0, max_attempts=max_attempts), clock=clock)  # fmt: skip
    w.refresh = lambda: None
    w.ready()
    clock.now += 3
    return w, clock, inbox


class Killed(BaseException):
    """Stands in for the kernel's OOM kill: nothing after it runs in the watcher."""


def test_attempts_are_counted_in_the_store_so_a_file_that_kills_the_watcher_is_set_aside(
        tmp_path, local_lake, key, monkeypatch):  # fmt: skip
    calls = []

    def kill(*_a, **_kw):
        calls.append(1)
        raise Killed

    monkeypatch.setattr(watcher_module, "ingest_files", kill)
    for _restart in range(2):  # each restart is a new watcher process with nothing in memory
        w, _, inbox = _one_file_watcher(tmp_path, local_lake, key)
        with pytest.raises(Killed):
            w.tick()
    w, _, inbox = _one_file_watcher(tmp_path, local_lake, key)
    (outcome,) = w.tick().files
    assert outcome["status"] == "failed" and outcome["reason_code"] == "too_many_attempts"
    assert len(calls) == 2  # the third watcher did not try the file again
    report = json.loads((tmp_path / "q" / "a.csv.error.json").read_text())
    assert report["reason_code"] == "too_many_attempts" and "2 times" in report["reason"]
    assert not (inbox / "a.csv").exists()


def test_our_io_errors_are_retried_and_never_set_the_file_aside(tmp_path, local_lake, key, monkeypatch):
    def full_disk(*_a, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(watcher_module, "ingest_files", full_disk)
    w, clock, inbox = _one_file_watcher(tmp_path, local_lake, key, max_attempts=2)
    for _ in range(4):
        (outcome,) = w.tick().files
        assert outcome["status"] == "retry" and outcome["reason_code"] == "io_error"
        clock.now += 1
    info = ObjectInfo("a.csv", (inbox / "a.csv").stat().st_size, (inbox / "a.csv").stat().st_mtime)
    assert w.attempts(info)[0] == 0
    assert (inbox / "a.csv").is_file() and not (tmp_path / "q" / "a.csv").exists()


def test_keys_with_dot_dot_or_hidden_parts_are_never_input():
    """``..`` cannot be addressed in a store (and minio refuses to write it); such keys are skipped."""
    from services.jobs.watch import is_input_key

    for key in ("x/../y.csv", "../y.csv", "..", "a/./b.csv", "a//b.csv"):
        assert not is_input_key(key)
    assert is_input_key("a..b.csv")
