"""A per-file key index, so that erasing a person opens only the lake files that hold them.

For each Parquet file of a dataset that declares ``user_keys`` (:mod:`services.core.catalog`), the
index keeps the sorted 64-bit fingerprints of every user key in the file (:func:`etl.erasure.fingerprint`:
the first 8 bytes of the key's SHA-256, the digest the request ledger keeps), with the file's size and
modification time, in ``erasure/index/<file key>.fp``. A request's digest gives its fingerprint at once,
so finding the files is a binary search per file index: no file's key column is read and no key is
hashed.

Why it cannot miss anyone:

- an index counts only while the size and modification time it records are the file's own; a file
  replaced since (or rewritten by an erasure killed before it re-indexed the file) is indexed again
  from its key columns;
- a file without an index is indexed on the spot (the first erasure on a lake written before the index
  existed pays what reading every key column once costs, and leaves the index behind);
- a fingerprint hit only makes the file a candidate: its rows are then matched on the whole digest.

What it holds: fingerprints of pseudonyms, never a key or a raw id. An erasure re-indexes every file it
rewrites: the file's fingerprints less those of the people erased from it (their rows are gone, so no key
is hashed again; a kept key sharing an erased one's 64-bit fingerprint, about one chance in 10^10 for a
1,000-request batch over a file of two million keys, would be dropped too, which ``erase --verify``'s
full scan still catches). The entries of files deleted since (retention, versions dropped) are deleted
by :func:`refresh`.

The pipeline's ``erasure_index`` stage (:func:`refresh`) indexes the files written since it last ran,
so a request pays only for what the pipeline wrote since then.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from etl.erasure import fingerprint, fingerprints
from services.core.catalog import CATALOG, Dataset
from services.core.lake import Lake
from services.core.storage import ObjectInfo

INDEX_ROOT = "erasure/index"
_MAGIC = b"SLKI1\n"
_SUFFIX = ".fp"
_THREADS = 4  # I/O bound on S3; pyarrow releases the GIL while it decodes


def indexed_datasets() -> list[Dataset]:
    """The datasets a person is found in by key (those found through links follow their events)."""
    return [d for d in CATALOG if d.user_keys and d.layout != "ledger"]


def data_files(lake: Lake, d: Dataset) -> list[ObjectInfo]:
    """Every Parquet file of ``d``, in every version and run still kept."""
    return [i for i in lake.store.list_info(d.path) if i.key.endswith(".parquet")]


def parquet_source(lake: Lake, key: str) -> Any:
    """What pyarrow opens: the file itself on local disk (only the columns read are read), else its bytes."""
    local = lake.store.local_path(key)
    return str(local) if local is not None else pa.BufferReader(lake.store.read_bytes(key))


def index_key(data_key: str) -> str:
    return f"{INDEX_ROOT}/{data_key}{_SUFFIX}"


def _encode(info: ObjectInfo, fps: np.ndarray) -> bytes:
    head = json.dumps({"size": info.size, "modified": info.modified}).encode()
    return _MAGIC + head + b"\n" + np.asarray(fps, dtype="<u8").tobytes()


def _decode(data: bytes, info: ObjectInfo) -> np.ndarray | None:
    """The fingerprints, or None when the index is not this file's (replaced since, or unreadable)."""
    if not data.startswith(_MAGIC):
        return None
    head, _, body = data[len(_MAGIC):].partition(b"\n")
    meta = json.loads(head)
    if meta.get("size") != info.size or meta.get("modified") != info.modified or len(body) % 8:
        return None
    return np.frombuffer(body, dtype="<u8")


def table_fingerprints(table: pa.Table, d: Dataset, memo: dict[str, tuple[int, ...]]) -> np.ndarray:
    """Sorted distinct fingerprints of the keys in ``d``'s key columns of ``table``."""
    parts = [fingerprints(table[c], memo) for c in d.user_keys if c in table.column_names]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)


def wanted(digests: Iterable[str]) -> np.ndarray:
    """The fingerprints of a batch's digests, sorted (what the file indexes are searched for)."""
    return np.unique(np.array([fingerprint(d) for d in digests], dtype=np.uint64))


class KeyIndex:
    """The index of one lake, read and kept up to date by one erasure batch or one refresh."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.memo: dict[str, tuple[int, ...]] = {}
        self._seen: dict[str, np.ndarray] = {}  # file key -> fingerprints, as read or built this batch
        self._have = set(lake.store.list(INDEX_ROOT))
        self.built = 0  # files indexed from their key columns (no valid index yet)

    def of(self, d: Dataset, info: ObjectInfo) -> np.ndarray:
        """The file's fingerprints: from its index when valid, else read from its key columns and kept."""
        ik = index_key(info.key)
        if ik in self._have:
            fps = _decode(self.lake.store.read_bytes(ik), info)
            if fps is not None:
                self._seen[info.key] = fps
                return fps
        source = parquet_source(self.lake, info.key)
        cols = [c for c in d.user_keys if c in pq.read_schema(source).names]
        fps = np.zeros(0, np.uint64)
        if cols:  # dictionary-encoded as stored: each distinct key of a row group is seen once
            table = pq.ParquetFile(source, read_dictionary=cols).read(columns=cols, use_threads=False)
            fps = table_fingerprints(table, d, self.memo)
        self.built += 1
        self.put(info, fps)
        self._seen[info.key] = fps
        return fps

    def entries(self) -> set[str]:
        """The index entries present (listed when the index was opened, plus those written since)."""
        return set(self._have)

    def put(self, info: ObjectInfo, fps: np.ndarray) -> None:
        self.lake.store.write_bytes(index_key(info.key), _encode(info, fps))
        self._have.add(index_key(info.key))

    def without(self, key: str, erased: np.ndarray) -> np.ndarray | None:
        """The fingerprints of a file once ``erased`` are taken out (None when it was not read this batch)."""
        fps = self._seen.get(key)
        return None if fps is None else np.setdiff1d(fps, erased, assume_unique=True)

    def reindex(self, key: str, fps: np.ndarray) -> None:
        """After a rewrite: the file's new fingerprints (those of the rows kept) under its new size/time."""
        (info,) = [i for i in self.lake.store.list_info(key) if i.key == key]
        self.put(info, fps)
        self._seen[key] = fps

    def candidates(self, d: Dataset, files: list[ObjectInfo], want: np.ndarray) -> list[str]:
        """The files of ``d`` whose index holds any of the fingerprints ``want``."""
        if not len(want):
            return []

        def hit(info: ObjectInfo) -> bool:
            fps = self.of(d, info)
            pos = np.searchsorted(fps, want)  # both sorted: a binary search per wanted fingerprint
            inside = pos < len(fps)
            return bool(np.any(fps[pos[inside]] == want[inside]))

        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            return [i.key for i, h in zip(files, pool.map(hit, files), strict=True) if h]


def refresh(lake: Lake) -> dict[str, Any]:
    """Index every file that has no valid index yet; delete the entries of files that are gone."""
    index = KeyIndex(lake)
    live: set[str] = set()
    files = 0
    for d in indexed_datasets():
        infos = data_files(lake, d)
        files += len(infos)
        live.update(index_key(i.key) for i in infos)
        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            list(pool.map(lambda i, d=d: index.of(d, i), infos))
    stale = sorted(index.entries() - live)
    for k in stale:
        lake.store.delete_prefix(k)
    return {"files": files, "indexed": index.built, "removed": len(stale)}


def refresh_due(lake: Lake) -> tuple[bool, str]:
    """Due when some key-holding file has no index entry, or an entry outlives its file."""
    have = {k for k in lake.store.list(INDEX_ROOT) if k.endswith(_SUFFIX)}
    live = {index_key(i.key) for d in indexed_datasets() for i in data_files(lake, d)}
    if live - have:
        return True, f"{len(live - have)} file(s) not indexed"
    if have - live:
        return True, f"{len(have - live)} index entries of deleted files"
    return False, "every file indexed"


__all__ = [
    "INDEX_ROOT",
    "KeyIndex",
    "data_files",
    "index_key",
    "indexed_datasets",
    "parquet_source",
    "refresh",
    "refresh_due",
    "table_fingerprints",
    "wanted",
]
