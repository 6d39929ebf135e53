"""One writer at a time (issue 28): the lake's writer lease between real processes, on local disk and on
the real S3 server (conditional PUTs), and what ingestion does when another writer holds it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.core.catalog import RUNS, WRITER_LEASE
from services.core.lake import Lake
from services.core.lease import LeaseHeld, WriterLease
from services.core.storage import LocalStore
from services.jobs.ingest import ingest_files

REPO = Path(__file__).resolve().parents[3]
#: One writer process: take the lease (ttl, wait), say when, hold it, give it back.
_WRITER = """
import json, sys, time
from services.core.lease import LeaseHeld, WriterLease
from services.core.runtime import open_location
from services.core.settings import Settings
uri, name, ttl, wait, hold = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:6])
lease = WriterLease(open_location(Settings(), uri), name, ttl, wait, poll_seconds=0.1)
try:
    lease.acquire()
except LeaseHeld as err:
    print(json.dumps({"refused": str(err), "at": time.time()}), flush=True)
    sys.exit(3)
print(json.dumps({"acquired": time.time()}), flush=True)
time.sleep(hold)
lease.release()
print(json.dumps({"released": time.time()}), flush=True)
"""


@pytest.fixture(params=["local", "s3"])
def lake_uri(request, tmp_path) -> tuple[str, dict[str, str]]:
    if request.param == "local":
        return str(tmp_path / "lake"), {}
    server = request.getfixturevalue("s3_server")
    return f"s3://{server.new_bucket('lease')}/lake", server.env


def _writer(uri_env: tuple[str, dict[str, str]], name: str, ttl: float, wait: float, hold: float) -> subprocess.Popen:
    uri, env = uri_env
    return subprocess.Popen([sys.executable, "-c", _WRITER, uri, name, str(ttl), str(wait), str(hold)], cwd=REPO,
                            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)  # fmt: skip


def _events(proc: subprocess.Popen) -> dict[str, float | str]:
    out, _ = proc.communicate(timeout=120)
    return {k: v for line in out.splitlines() for k, v in json.loads(line).items()}


def _first_event(proc: subprocess.Popen) -> dict:
    return json.loads(proc.stdout.readline())


@pytest.mark.slow
def test_a_second_writer_refuses_or_waits_and_a_dead_holders_lease_expires(lake_uri):
    first = _writer(lake_uri, "first", ttl=30, wait=0, hold=4)
    assert "acquired" in _first_event(first)
    refused = _events(_writer(lake_uri, "second", ttl=30, wait=0, hold=0))
    assert "is being written by first (pid" in refused["refused"] and "try again" in refused["refused"]
    waiter = _writer(lake_uri, "third", ttl=30, wait=60, hold=0)
    released = _events(first)["released"]
    assert _events(waiter)["acquired"] >= released  # it waited for the first to finish

    # A holder killed outright on this host is taken over at once: its process is gone.
    doomed = _writer(lake_uri, "doomed", ttl=30, wait=0, hold=600)
    acquired = _first_event(doomed)["acquired"]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    successor = _events(_writer(lake_uri, "successor", ttl=30, wait=0, hold=0))
    assert acquired <= successor["acquired"] < acquired + 30

    # On another host nobody can tell: the holder stops renewing and its lease expires after its ttl.
    remote = _writer(lake_uri, "remote", ttl=3, wait=0, hold=600)
    acquired = _first_event(remote)["acquired"]
    remote.send_signal(signal.SIGSTOP)  # alive but silent, as a holder on a host that went away
    try:
        successor = _events(_writer(lake_uri, "successor", ttl=30, wait=60, hold=0))
        assert successor["acquired"] >= acquired + 3
    finally:
        remote.kill()
        remote.wait()


def test_ingestion_refuses_while_another_writer_holds_the_lease(tmp_path, key, rees46_sample):
    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    with WriterLease(lake.store, "shoplens erase"), pytest.raises(LeaseHeld, match="is being written by shoplens erase"):
        ingest_files(lambda: None, lake, [rees46_sample], key)  # no Spark: refused before any work
    assert lake.store.list(RUNS) == [] and not lake.store.exists(WRITER_LEASE)


def test_a_holder_whose_lease_was_taken_over_cannot_commit(tmp_path):
    store = LocalStore(tmp_path)
    lease = WriterLease(store, "stalled", ttl_seconds=30).acquire()
    lease.check()
    doc = json.loads(store.read_bytes(WRITER_LEASE))
    store.write_bytes(WRITER_LEASE, json.dumps({**doc, "token": "someone else"}).encode())
    with pytest.raises(LeaseHeld, match="the writer lease was lost"):
        lease.check()
    lease.release()
    assert json.loads(store.read_bytes(WRITER_LEASE))["token"] == "someone else"  # not ours to delete


def test_the_lease_is_renewed_while_its_holder_lives(tmp_path):
    store = LocalStore(tmp_path)
    with WriterLease(store, "long run", ttl_seconds=0.6) as lease:
        time.sleep(1.5)  # well past the first expiry: the renewer kept it
        lease.check()
        assert json.loads(store.read_bytes(WRITER_LEASE))["expires_at"] > time.time()
    assert not store.exists(WRITER_LEASE)


@pytest.mark.slow
def test_a_second_shoplens_ingest_beside_a_running_one_refuses_in_one_line(tmp_path, key, rees46_sample):
    """Two real `shoplens ingest` processes on one lake: the second refuses while the first holds the
    lease, and the first commits its run untouched."""
    lake_dir = tmp_path / "lake"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SHOPLENS_LAKE": str(lake_dir), "SHOPLENS_PSEUDONYM_KEY": key.decode(),
           "SHOPLENS_SPARK_MASTER": "local[1]", "SHOPLENS_LOG_LEVEL": "WARNING"}  # fmt: skip
    env.pop("SHOPLENS_DEMO", None)

    def shoplens(work: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "services", "ingest", *args], cwd=REPO, text=True,
                                env={**env, "SHOPLENS_WORK_DIR": str(tmp_path / work)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    first = shoplens("w1", str(rees46_sample))
    deadline = time.monotonic() + 120
    while not (lake_dir / WRITER_LEASE).exists():
        assert first.poll() is None and time.monotonic() < deadline, "the first ingest never took the lease"
        time.sleep(0.05)
    second = shoplens("w2", str(rees46_sample))
    _, err = second.communicate(timeout=300)
    assert second.returncode == 1
    assert err.strip().splitlines()[-1].startswith("shoplens: error: ") and "Traceback" not in err
    assert "is being written by ingest (pid" in err
    first.communicate(timeout=600)
    assert first.returncode == 0
    [run] = Lake(LocalStore(lake_dir), tmp_path / "w1").runs()
    assert run["status"] == "committed" and run["rows_read"] == 5000
    assert not (lake_dir / WRITER_LEASE).exists()
