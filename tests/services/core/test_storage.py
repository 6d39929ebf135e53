"""One contract suite for every storage backend: local disk and a real S3 server (SeaweedFS).

The lake's commit protocol relies on exactly these behaviours, so each backend must pass all of them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from minio.error import S3Error

from services.core.storage import LocalStore, S3Store, StorageError, Store, open_store


@pytest.fixture(params=["local", "s3-prefix", "s3-root"])
def store(request, tmp_path: Path) -> Store:
    """Each backend, fresh and empty; S3 both under a key prefix and at the bucket root."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    prefix = "some/prefix" if request.param == "s3-prefix" else ""
    return S3Store(server.client(), server.new_bucket("store"), prefix)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_write_read_roundtrip_and_overwrite(store: Store) -> None:
    store.write_bytes("a/b/c.json", b'{"x": 1}')
    assert store.read_bytes("a/b/c.json") == b'{"x": 1}'
    store.write_bytes("a/b/c.json", b"second")
    assert store.read_bytes("a/b/c.json") == b"second"
    # Leading/trailing slashes name the same key.
    assert store.read_bytes("/a/b/c.json") == b"second"


def test_binary_payload_is_preserved_exactly(store: Store) -> None:
    data = bytes(range(256)) * 1000
    store.write_bytes("bin/blob", data)
    assert store.read_bytes("bin/blob") == data


def test_exists(store: Store) -> None:
    assert not store.exists("x/y")
    store.write_bytes("x/y", b"1")
    assert store.exists("x/y")
    assert not store.exists("x/yz")


def test_missing_key_raises_file_not_found(store: Store) -> None:
    with pytest.raises(FileNotFoundError):
        store.read_bytes("nope/missing.json")


def test_list_respects_path_segment_boundaries(store: Store) -> None:
    for key in ("a/b/1", "a/b/2/3", "a/bc/4", "a/b.json", "z"):
        store.write_bytes(key, key.encode())
    assert store.list("a/b") == ["a/b/1", "a/b/2/3"]
    assert store.list("a/b/") == ["a/b/1", "a/b/2/3"]
    assert store.list("a") == ["a/b.json", "a/b/1", "a/b/2/3", "a/bc/4"]
    assert store.list("") == ["a/b.json", "a/b/1", "a/b/2/3", "a/bc/4", "z"]
    assert store.list("a/b/1") == ["a/b/1"]  # a key lists as itself
    assert store.list("does/not/exist") == []


def test_delete_prefix_removes_only_that_subtree(store: Store) -> None:
    for key in ("d/r1/x", "d/r1/y/z", "d/r10/x", "d/r1.json"):
        store.write_bytes(key, b"1")
    assert store.delete_prefix("d/r1") == 2
    assert store.list("d") == ["d/r1.json", "d/r10/x"]
    assert store.delete_prefix("d/r1") == 0
    assert store.delete_prefix("d/r1.json") == 1
    assert store.list("") == ["d/r10/x"]


@pytest.mark.parametrize("move", [False, True])
def test_put_file_copy_or_move(store: Store, tmp_path: Path, move: bool) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    store.put_file(src, "files/one.bin", move=move)
    assert store.read_bytes("files/one.bin") == b"payload"
    assert src.exists() is (not move)
    assert store.list("files") == ["files/one.bin"]


@pytest.mark.parametrize("move", [False, True])
def test_put_dir_and_get_dir_roundtrip(store: Store, tmp_path: Path, move: bool) -> None:
    files = {
        "event_date=2019-10-01/part-0.parquet": b"p0",
        "event_date=2019-10-02/part-1.parquet": b"p1" * 1000,
        "top.txt": b"top",
    }
    src = _tree(tmp_path / "out", files)
    # Spark's markers and checksums are never uploaded.
    _tree(src, {"_SUCCESS": b"", "event_date=2019-10-01/.part-0.parquet.crc": b"crc"})

    assert store.put_dir(src, "ds/v1", move=move) == 3
    assert store.list("ds") == sorted(f"ds/v1/{k}" for k in files)
    remaining = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    expected_left = {"_SUCCESS", "event_date=2019-10-01/.part-0.parquet.crc"}
    assert remaining == (expected_left if move else expected_left | set(files))

    dst = tmp_path / "back"
    assert store.get_dir("ds/v1", dst) == 3
    got = {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert got == files


def test_get_dir_of_missing_prefix_copies_nothing(store: Store, tmp_path: Path) -> None:
    assert store.get_dir("none", tmp_path / "x") == 0
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("*"))


def test_list_info_reports_size_and_modification_time(store: Store) -> None:
    before = time.time()
    store.write_bytes("in/a.csv", b"12345")
    store.write_bytes("in/sub/b.csv", b"")
    store.write_bytes("other/c", b"x")
    infos = store.list_info("in")
    assert [(i.key, i.size) for i in infos] == [("in/a.csv", 5), ("in/sub/b.csv", 0)]
    # Server clocks round to the second; the object was written in this test, so within a minute.
    assert all(abs(i.modified - before) < 60 for i in infos)
    assert [i.key for i in store.list_info("")] == ["in/a.csv", "in/sub/b.csv", "other/c"]
    assert store.list_info("missing") == []


def test_get_file_downloads_exactly(store: Store, tmp_path: Path) -> None:
    data = bytes(range(256)) * 300
    store.write_bytes("f/blob.bin", data)
    dst = tmp_path / "dl" / "blob.bin"
    dst.parent.mkdir()
    store.get_file("f/blob.bin", dst)
    assert dst.read_bytes() == data
    assert sorted(p.name for p in dst.parent.iterdir()) == ["blob.bin"]  # no partial file left
    with pytest.raises(FileNotFoundError):
        store.get_file("f/missing.bin", tmp_path / "dl" / "missing.bin")


@pytest.mark.parametrize("target", ["same-store", "local", "s3-other-bucket"])
def test_move_between_stores(store: Store, tmp_path: Path, target: str, request) -> None:
    if target == "same-store":
        dst: Store = store
    elif target == "local":
        dst = LocalStore(tmp_path / "elsewhere")
    else:
        server = request.getfixturevalue("s3_server")
        dst = S3Store(server.client(), server.new_bucket("moved"), "")
    store.write_bytes("in/file.csv.gz", b"payload")
    store.move("in/file.csv.gz", dst, "done/run-1/file.csv.gz")
    assert dst.read_bytes("done/run-1/file.csv.gz") == b"payload"
    assert not store.exists("in/file.csv.gz")
    with pytest.raises(FileNotFoundError):
        store.move("in/file.csv.gz", dst, "again")


def test_many_writes_leave_no_temporary_objects_visible(store: Store) -> None:
    for i in range(20):
        store.write_bytes("runs/r.json", f'{{"i": {i}}}'.encode())
    assert store.list("runs") == ["runs/r.json"]
    assert store.read_bytes("runs/r.json") == b'{"i": 19}'


def test_failed_write_keeps_the_previous_object_and_leaves_no_temp(store: Store) -> None:
    store.write_bytes("runs/r.json", b"old")
    with pytest.raises(TypeError):
        store.write_bytes("runs/r.json", "not bytes")  # type: ignore[arg-type]
    assert store.read_bytes("runs/r.json") == b"old"
    assert store.list("runs") == ["runs/r.json"]


def test_local_failed_write_leaves_no_temp_file_on_disk(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.write_bytes("k/v", b"old")
    with pytest.raises(TypeError):
        store.write_bytes("k/v", "not bytes")  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "s" / "k").iterdir()) == ["v"]


@pytest.mark.parametrize("bad", ["..", "a/../b", "a//b"])
def test_invalid_keys_are_refused(store: Store, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        store.write_bytes(bad, b"x")


def test_open_store_picks_backend(tmp_path: Path, s3_server) -> None:
    local = open_store(str(tmp_path / "lake"))
    assert isinstance(local, LocalStore) and local.local_path("a") == tmp_path / "lake" / "a"
    s3 = open_store("s3://bucket/pre/fix", s3_server.client())
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix, s3.uri) == (
        "bucket",
        "pre/fix",
        "s3://bucket/pre/fix",
    )
    assert s3.local_path("a") is None
    with pytest.raises(StorageError, match="needs SHOPLENS_S3_ENDPOINT"):
        open_store("s3://bucket/x")


class TestBadCredentials:
    """A wrong key must fail loudly with the server's reason, never look like an empty lake."""

    @pytest.fixture
    def bad_store(self, s3_server) -> S3Store:
        bucket = s3_server.new_bucket("auth")
        S3Store(s3_server.client(), bucket).write_bytes("k", b"v")
        client = s3_server.client(access_key="wrong-access", secret_key="wrong-secret-key")
        return S3Store(client, bucket)

    def test_raw_client_is_refused_with_invalid_access_key(self, s3_server) -> None:
        with pytest.raises(S3Error) as info:
            s3_server.client(access_key="wrong-access", secret_key="wrong-secret").list_buckets()
        assert info.value.code == "InvalidAccessKeyId"

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.read_bytes("k"),
            lambda s: s.write_bytes("k2", b"v"),
            lambda s: s.exists("k"),
            lambda s: s.list(""),
        ],
        ids=["read", "write", "exists", "list"],
    )
    def test_store_operations_raise_storage_error(self, bad_store: S3Store, call) -> None:
        with pytest.raises(StorageError, match="InvalidAccessKeyId"):
            call(bad_store)

    def test_put_file_is_refused(self, bad_store: S3Store, tmp_path: Path) -> None:
        src = tmp_path / "f"
        src.write_bytes(b"x")
        with pytest.raises(StorageError, match="InvalidAccessKeyId"):
            bad_store.put_file(src, "f", move=True)
        assert src.exists(), "a refused upload must not delete the source"
