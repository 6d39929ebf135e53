"""Object storage behind one small interface: local disk (the embedded default) or S3/MinIO.

Keys are ``/``-separated paths relative to the store's root. Writes of a single object are atomic on
both backends (rename on disk, one PUT on S3); that is what the lake's commit protocol relies on.
Spark's tasks use a store directly (ingestion, the timeline runner, services.core.spark.read_parquet and
write_to_store): an :class:`S3Store` pickles to its endpoint and credentials so that a task on another
host can. :meth:`Store.put_dir` / :meth:`Store.get_dir` move whole trees between the driver's disk and
the store (publishing a version, the driver-side readers' mirror).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_before_delay,
    wait_exponential,
)


class StorageError(RuntimeError):
    """The store could not be reached or refused an operation."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as a listing sees it: enough to tell whether it is still being written."""

    key: str
    size: int
    modified: float  # Unix seconds


class Store(Protocol):
    """What the lake needs from a storage backend."""

    uri: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def list_info(self, prefix: str) -> list[ObjectInfo]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def put_file(self, local_file: Path, key: str, *, move: bool = False) -> None: ...
    def put_dir(self, local_dir: Path, prefix: str, *, move: bool = False) -> int: ...
    def get_dir(self, prefix: str, local_dir: Path) -> int: ...
    def get_file(self, key: str, local_file: Path) -> None: ...
    def move(self, key: str, dst: Store, dst_key: str) -> None: ...
    def local_path(self, key: str) -> Path | None: ...


def _clean(key: str) -> str:
    key = key.strip("/")
    if any(part in ("..", "") for part in key.split("/")) and key:
        raise ValueError(f"invalid storage key: {key!r}")
    return key


def _put_dir(store: Store, local_dir: Path, prefix: str, move: bool) -> int:
    """Upload (or move) every file below ``local_dir`` to ``prefix``, keeping relative paths."""
    files = list(_files_under(Path(local_dir)))
    for src, rel in files:
        store.put_file(src, f"{_clean(prefix)}/{rel}", move=move)
    return len(files)


def _files_under(local_dir: Path) -> Iterator[tuple[Path, str]]:
    """Files below ``local_dir`` with their relative keys; Spark's checksum and marker files skipped."""
    for path in sorted(local_dir.rglob("*")):
        if path.is_file() and not path.name.endswith(".crc") and path.name != "_SUCCESS":
            yield path, path.relative_to(local_dir).as_posix()


@dataclass
class LocalStore:
    """A directory on local disk."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _clean(key) if key else self.root

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri}/{key}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if base.is_file():
            return [_clean(prefix)]
        if not base.exists():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        )

    def list_info(self, prefix: str) -> list[ObjectInfo]:
        infos = []
        for key in self.list(prefix):
            try:
                st = self._path(key).stat()
            except FileNotFoundError:  # removed between the listing and the stat
                continue
            infos.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return infos

    def delete_prefix(self, prefix: str) -> int:
        path = self._path(prefix)
        if path.is_file():
            path.unlink()
            return 1
        if not path.exists():
            return 0
        count = sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return count

    def put_file(self, local_file: Path, key: str, *, move: bool = False) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.replace(local_file, dst)
        else:
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copy2(local_file, tmp)
            os.replace(tmp, dst)

    def put_dir(self, local_dir: Path, prefix: str, *, move: bool = False) -> int:
        return _put_dir(self, local_dir, prefix, move)

    def get_dir(self, prefix: str, local_dir: Path) -> int:
        count = 0
        for key in self.list(prefix):
            dst = Path(local_dir) / Path(key).relative_to(_clean(prefix))
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self._path(key), dst)
            count += 1
        return count

    def get_file(self, key: str, local_file: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise FileNotFoundError(f"{self.uri}/{key}")
        tmp = Path(local_file).with_name(f".{Path(local_file).name}.part")
        shutil.copy2(src, tmp)
        os.replace(tmp, local_file)

    def move(self, key: str, dst: Store, dst_key: str) -> None:
        src = self._path(key)
        if isinstance(dst, LocalStore):
            target = dst._path(dst_key)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, target)
        else:
            dst.put_file(src, dst_key, move=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


#: Failures worth another attempt: the network's (urllib3's own errors are not OSErrors). A missing key
#: (FileNotFoundError, an OSError too) is an answer, and an S3 error code is the server's answer.
_NETWORK = (OSError, urllib3.exceptions.HTTPError)
_F = TypeVar("_F")


def _transient(call: _F) -> _F:
    """Retry one S3Store call on network failures for at most its store's ``retry_seconds`` (each
    attempt bounded by the client's timeouts), then fail with a StorageError naming the store and call."""

    @functools.wraps(call)  # type: ignore[arg-type]
    def bounded(self: S3Store, *args: Any, **kwargs: Any) -> Any:
        retrying = Retrying(
            retry=retry_if_exception_type(_NETWORK) & retry_if_not_exception_type(FileNotFoundError),
            stop=stop_before_delay(self.retry_seconds),
            wait=wait_exponential(multiplier=0.2, max=3),
            reraise=True,
        )
        try:
            return retrying(call, self, *args, **kwargs)  # type: ignore[operator]
        except FileNotFoundError:
            raise
        except _NETWORK as err:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise StorageError(
                f"{self.uri}: {call.__name__.lstrip('_')} failed after {attempts} attempt(s) in at most "
                f"{self.retry_seconds:g} s: {type(err).__name__}"
            ) from err

    return bounded  # type: ignore[return-value]


@dataclass
class S3Store:
    """A bucket (and optional prefix) on an S3-compatible server, through the ``minio`` SDK."""

    client: Minio
    bucket: str
    prefix: str = ""
    #: The longest one call keeps retrying network failures (the client's timeouts bound each attempt).
    retry_seconds: float = 30.0

    def __post_init__(self) -> None:
        self.prefix = self.prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def __getstate__(self) -> dict:
        """What a Spark task needs to reach the same bucket from another host (a Minio client holds
        locks and connections, which do not pickle): the endpoint and credentials it was made with."""
        base, creds = self.client._base_url, self.client._provider.retrieve()  # minio 7.2
        timeout = self.client._http.connection_pool_kw.get("timeout")  # urllib3.PoolManager
        return {"bucket": self.bucket, "prefix": self.prefix, "endpoint": base.host, "secure": base.is_https,
                "region": base.region, "access_key": creds.access_key, "secret_key": creds.secret_key,
                "timeout": timeout.read_timeout if isinstance(timeout, urllib3.Timeout) else None,
                "retry_seconds": self.retry_seconds}  # fmt: skip

    def __setstate__(self, state: dict) -> None:
        client = make_minio_client(state["endpoint"], state["access_key"], state["secret_key"],
                                   secure=state["secure"], region=state["region"],
                                   timeout=state.get("timeout") or DEFAULT_TIMEOUT)  # fmt: skip
        self.__init__(client, state["bucket"], state["prefix"], state["retry_seconds"])  # type: ignore[misc]

    def _key(self, key: str) -> str:
        key = _clean(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, object_name: str) -> str:
        return object_name[len(self.prefix) + 1 :] if self.prefix else object_name

    @_transient
    def read_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(self.bucket, self._key(key))
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket"):
                raise FileNotFoundError(f"{self.uri}/{key}") from None
            raise StorageError(f"{self.uri}/{key}: {err.code}: {err.message}") from err
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    @_transient
    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))
        except S3Error as err:
            raise StorageError(f"{self.uri}/{key}: {err.code}: {err.message}") from err

    @_transient
    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, self._key(key))
            return True
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket", "NotFound"):
                return False
            raise StorageError(f"{self.uri}/{key}: {err.code}: {err.message}") from err

    def list(self, prefix: str) -> list[str]:
        return [info.key for info in self.list_info(prefix)]

    @_transient
    def list_info(self, prefix: str) -> list[ObjectInfo]:
        base = self._key(prefix) if prefix else self.prefix
        try:
            objects = list(self.client.list_objects(self.bucket, prefix=base or None, recursive=True))
        except S3Error as err:
            if err.code == "NoSuchBucket":
                return []
            raise StorageError(f"{self.uri}/{prefix}: {err.code}: {err.message}") from err
        # A listing by prefix "a/b" also matches "a/bc"; keep only whole path segments.
        return sorted(
            (
                ObjectInfo(self._rel(o.object_name), int(o.size or 0),
                           o.last_modified.timestamp() if o.last_modified else 0.0)
                for o in objects
                if o.object_name and not o.is_dir
                and (not prefix or o.object_name == base or o.object_name.startswith(base.rstrip("/") + "/"))
            ),
            key=lambda info: info.key,
        )  # fmt: skip

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self._remove(key)
        return len(keys)

    def put_file(self, local_file: Path, key: str, *, move: bool = False) -> None:
        self._fput(local_file, key)
        if move:
            Path(local_file).unlink()

    @_transient
    def _fput(self, local_file: Path, key: str) -> None:
        try:
            self.client.fput_object(self.bucket, self._key(key), str(local_file))
        except S3Error as err:
            raise StorageError(f"{self.uri}/{key}: {err.code}: {err.message}") from err

    def put_dir(self, local_dir: Path, prefix: str, *, move: bool = False) -> int:
        return _put_dir(self, local_dir, prefix, move)

    def get_dir(self, prefix: str, local_dir: Path) -> int:
        count = 0
        for key in self.list(prefix):
            dst = Path(local_dir) / Path(key).relative_to(_clean(prefix))
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                self.get_file(key, dst)
            count += 1
        return count

    def move(self, key: str, dst: Store, dst_key: str) -> None:
        """Server-side copy then delete when both are on this server; otherwise through a local file."""
        if isinstance(dst, S3Store) and dst.client is self.client:
            self._copy(key, dst, dst_key)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "object"
                self.get_file(key, local)
                dst.put_file(local, dst_key, move=True)
        self._remove(key)

    @_transient
    def _copy(self, key: str, dst: S3Store, dst_key: str) -> None:
        try:
            dst.client.copy_object(dst.bucket, dst._key(dst_key), CopySource(self.bucket, self._key(key)))
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket"):
                raise FileNotFoundError(f"{self.uri}/{key}") from None
            raise StorageError(f"{self.uri}/{key} -> {dst.uri}/{dst_key}: {err.code}: {err.message}") from err

    @_transient
    def _remove(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, self._key(key))
        except S3Error as err:
            raise StorageError(f"{self.uri}/{key}: {err.code}: {err.message}") from err

    @_transient
    def get_file(self, key: str, dst: Path) -> None:
        tmp = dst.with_name(f".{dst.name}.part")
        try:
            self.client.fget_object(self.bucket, self._key(key), str(tmp))
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket"):
                raise FileNotFoundError(f"{self.uri}/{key}") from None
            raise StorageError(f"{self.uri}/{key}: {err.code}: {err.message}") from err
        os.replace(tmp, dst)

    def local_path(self, key: str) -> Path | None:
        return None


DEFAULT_TIMEOUT = 10.0


def make_minio_client(
    endpoint: str, access_key: str, secret_key: str, *, secure: bool = False, region: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Minio:  # fmt: skip
    """A ``Minio`` client; ``endpoint`` may be ``host:port`` or an ``http(s)://`` URL.

    Its connect and read timeouts are ``timeout`` (the SDK's default is 300 s each) and it does not
    retry network failures itself (the SDK's default is 5 urllib3 retries, under the 4 attempts of
    :class:`S3Store`): S3Store retries within a time budget instead, so one call's worst case is known.
    """
    if "://" in endpoint:
        parsed = urlparse(endpoint)
        endpoint, secure = parsed.netloc, parsed.scheme == "https"
    http = urllib3.PoolManager(  # the SDK's own pool, but with these timeouts and retries
        timeout=urllib3.Timeout(connect=timeout, read=timeout), maxsize=10, cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        # a 5xx answer comes quickly: retried here a few times; network failures are S3Store's to retry
        retries=urllib3.Retry(total=3, connect=0, read=0, other=0, status=3, backoff_factor=0.2,
                              status_forcelist=[500, 502, 503, 504], raise_on_status=False),
    )  # fmt: skip
    return Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http)


def open_store(uri: str, client: Minio | None = None, retry_seconds: float = 30.0) -> Store:
    """The store for ``uri``: ``s3://bucket/prefix`` needs a client, anything else is a local path."""
    if uri.startswith("s3://"):
        if client is None:
            raise StorageError(f"{uri}: an S3 lake needs SHOPLENS_S3_ENDPOINT and credentials")
        parsed = urlparse(uri)
        return S3Store(client, parsed.netloc, parsed.path, retry_seconds)
    return LocalStore(Path(uri))
