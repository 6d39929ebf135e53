"""One writer at a time: a lease on the lake, taken by a conditional write on its own store.

Why: every ingestion vacuums what uncommitted runs left behind, so a second writer (a manual
``shoplens ingest`` beside the watcher) could delete the files of a run in progress, which would then
commit a run whose files are gone. A writer takes the lease, a small document at
``catalog.WRITER_LEASE`` naming its holder and when it expires; a second writer waits for it or
refuses with a message naming the holder. A thread renews the lease while its holder lives; a holder
that dies stops renewing, so its lease expires after ``ttl_seconds`` and the next writer takes it over;
on the holder's own host a writer need not wait for that: a holder whose process is gone (``kill -9``, a
crash) is taken over at once.
The holder checks that it still holds the lease right before its commit point (:meth:`WriterLease.check`).

Why a conditional write and not a lock file: the lake may be a bucket, shared by hosts. On S3 the lease is
created with ``If-None-Match: *`` and renewed or taken over with ``If-Match: <etag>`` (a PUT that fails
when someone else wrote in between); on local disk the same compare-and-swap runs under ``flock``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from minio.error import S3Error

from services.core.catalog import WRITER_LEASE
from services.core.storage import LocalStore, S3Store, StorageError, Store

log = logging.getLogger("shoplens.lease")


class LeaseHeld(StorageError):
    """Another writer holds the lake's lease (or took it over from us)."""


# -- compare-and-swap on a store --------------------------------------------------------------------


#: An etag on local disk is the MD5 of the content, as S3's is for a single PUT (an identity, not security).
def _local_cas(store: LocalStore, key: str, data: bytes | None, expect: str | None) -> tuple[bool, str | None]:
    """Under flock: write ``data`` (None: delete) if the current etag is ``expect`` (None: absent)."""
    path = store.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else None
            if current != expect:
                return False, current
            if data is None:
                path.unlink()
                return True, None
            store.write_bytes(key, data)
            return True, hashlib.md5(data).hexdigest()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _s3_cas(store: S3Store, key: str, data: bytes | None, expect: str | None) -> tuple[bool, str | None]:
    """The same on S3, with the precondition headers (minio's lower-level calls: its put_object would
    send them as user metadata, ``x-amz-meta-if-match``, which no server checks)."""
    name = store._key(key)
    headers = {"If-Match": f'"{expect}"'} if expect else {"If-None-Match": "*"}
    try:
        if data is None:
            store.client._execute("DELETE", store.bucket, name, headers=headers)
            return True, None
        written = store.client._put_object(store.bucket, name, data, headers=headers)
        return True, written.etag.strip('"')
    except S3Error as err:
        if err.code in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"):
            return False, None
        raise StorageError(f"{store.uri}/{key}: {err.code}: {err.message}") from err


def _read(store: Store, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """The lease document and its etag, or (None, None)."""
    if isinstance(store, S3Store):
        try:
            response = store.client.get_object(store.bucket, store._key(key))
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket"):
                return None, None
            raise StorageError(f"{store.uri}/{key}: {err.code}: {err.message}") from err
        try:
            data, etag = response.read(), response.headers.get("ETag", "").strip('"')
        finally:
            response.close()
            response.release_conn()
        return json.loads(data), etag
    try:
        data = store.read_bytes(key)
    except FileNotFoundError:
        return None, None
    return json.loads(data), hashlib.md5(data).hexdigest()


def _cas(store: Store, key: str, data: bytes | None, expect: str | None) -> tuple[bool, str | None]:
    if isinstance(store, S3Store):
        return _s3_cas(store, key, data, expect)
    if isinstance(store, LocalStore):
        return _local_cas(store, key, data, expect)
    raise TypeError(f"no conditional write for {type(store).__name__}")


# -- the lease --------------------------------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _holder_gone(doc: dict[str, Any]) -> bool:
    """True when the holder ran on this host and its process no longer exists."""
    if doc.get("host") != socket.gethostname() or not isinstance(doc.get("pid"), int):
        return False
    try:
        os.kill(doc["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


@dataclass
class WriterLease:
    """The lake's writer lease for one ``purpose`` (a context manager: taken on enter, given back on exit)."""

    store: Store
    purpose: str
    ttl_seconds: float = 60.0
    wait_seconds: float = 0.0
    poll_seconds: float = 1.0
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _etag: str | None = None
    _lost: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _renewer: threading.Thread | None = None

    @property
    def holder(self) -> str:
        return f"{self.purpose} (pid {os.getpid()} on {socket.gethostname()})"

    def _doc(self) -> bytes:
        now = time.time()
        return json.dumps({"holder": self.holder, "token": self.token, "host": socket.gethostname(),
                           "pid": os.getpid(), "acquired_at": _iso(now),
                           "expires_at": now + self.ttl_seconds}).encode()  # fmt: skip

    def acquire(self) -> WriterLease:
        """Take the lease, waiting up to ``wait_seconds`` for another holder; LeaseHeld when it stays taken."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            doc, etag = _read(self.store, WRITER_LEASE)
            gone = doc is not None and _holder_gone(doc)
            if doc is None or doc["expires_at"] < time.time() or gone:
                if doc is not None:
                    log.warning("taking over the writer lease of %s (%s)", doc["holder"],
                                "its process is gone" if gone else "expired", extra={"stage": "lease"})  # fmt: skip
                ok, self._etag = _cas(self.store, WRITER_LEASE, self._doc(), etag)
                if ok:
                    self._renewer = threading.Thread(target=self._renew, name="writer-lease", daemon=True)
                    self._renewer.start()
                    return self
                continue  # someone else wrote in between: look again
            if time.monotonic() >= deadline:
                raise LeaseHeld(f"{self.store.uri} is being written by {doc['holder']} (lease until "
                                f"{_iso(doc['expires_at'])}); try again when it is done")  # fmt: skip
            time.sleep(max(0.05, min(self.poll_seconds, deadline - time.monotonic())))

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 3):
            try:
                ok, etag = _cas(self.store, WRITER_LEASE, self._doc(), self._etag)
            except Exception as err:  # the store is down: try again; the lease may expire meanwhile
                log.warning("could not renew the writer lease: %s", err, extra={"stage": "lease"})
                continue
            if not ok:
                self._lost = "another writer took the lease over (this process stalled past its expiry)"
                log.error("writer lease lost: %s", self._lost, extra={"stage": "lease"})
                return
            self._etag = etag

    def check(self) -> None:
        """Raise LeaseHeld unless this process still holds the lease (call right before a commit)."""
        doc, _ = _read(self.store, WRITER_LEASE)
        if self._lost or doc is None or doc["token"] != self.token:
            raise LeaseHeld(f"{self.store.uri}: the writer lease was lost ({self._lost or 'expired'}); "
                            "nothing was committed")  # fmt: skip

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        doc, etag = _read(self.store, WRITER_LEASE)
        if doc is not None and doc["token"] == self.token:
            _cas(self.store, WRITER_LEASE, None, etag)

    def __enter__(self) -> WriterLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LeaseHeld", "WriterLease"]
