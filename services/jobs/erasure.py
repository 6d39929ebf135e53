"""``shoplens erase`` and the ``erasure`` stage: carry out pending erasure requests in one batch.

Where a person is, store by store, and what happens there:

- **Lake datasets**, found by walking the catalog (:mod:`services.core.catalog`): every Parquet file of
  every dataset that declares ``user_keys`` or ``links``, in every version still kept (not only the
  current one: a pointer rolled back must find nothing) and in runs not committed (yet). An ingest
  in flight is not disturbed (no vacuum here): its staged raw chunks go when it commits, or with the
  next ingest's vacuum if it crashed. Which files hold the person is found in
  the per-file key index (:mod:`services.jobs.erasure_index`: the fingerprints of the keys each file
  holds, checked against the file's size and time, built on the spot for a file without one); only
  those files are opened, their key columns matched on the whole digest, and the files that hold the
  person read whole and rewritten, two at a time, then re-indexed. ``links`` rows
  (duplicates, order lines) go with the events they point at, and are rewritten before the events,
  so that a rerun can still find them.
- **Other lake files** (JSON, HTML, Markdown reports): any key of the person in them is replaced by
  ``<erased>``.
- **Raw files** (processed files under ``<incoming>/_processed/``, rejected files in the quarantine
  location): they hold raw ids, so each file holding the person is **rewritten without the person's
  lines** (same name, gzip kept): the other customers' lines stay available for reprocessing until
  the retention policy deletes the file, and deleting the whole file would lose them with no gain in
  privacy. The header stays.
- **Warehouse**: the person's rows of every table with a ``user_key`` column, deleted in one
  transaction, then ``VACUUM FULL`` (PostgreSQL) or ``VACUUM`` (SQLite) so the deleted rows' bytes
  leave the database files.
- **Local caches**: the S3 mirrors under ``<work_dir>/cache`` (read by the API and the dashboard) are
  dropped for every dataset that changed; they are mirrored again on the next read.

Crash safety: every rewrite is one atomic write of a whole file (a rename on disk, one PUT on S3), so a
reader sees the old file or the new one. Progress (rows removed per file) is kept in
``erasure/_batch.json``; a batch killed at any point is resumed by the next call and finishes with the
same counts. A request is marked completed only after every store is done.

Raw-file I/O is in :mod:`services.jobs.erasure_raw`, ``--verify`` in :mod:`services.jobs.erasure_verify`.

Afterwards :func:`rebuild` recomputes what depended on the person (the features from scratch, then
segments, scores, funnel, views and the warehouse through the pipeline), so every remaining user's
results equal a rebuild from events without the person.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Set
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from etl.erasure import RawMatcher, key_digest, linked_mask, rows_of
from services.core import erasure_ledger as ledger
from services.core.catalog import CATALOG, CURRENT_POINTER, EVENTS, FEATURES, Dataset
from services.core.lake import Lake, utc_now_iso
from services.core.storage import Store
from services.core.warehouse import Warehouse
from services.jobs.erasure_index import (
    KeyIndex,
    data_files,
    indexed_datasets,
    parquet_source,
    table_fingerprints,
    wanted,
)
from services.jobs.erasure_raw import RawLocation, filter_raw, local_copy, raw_keys

log = logging.getLogger("shoplens.erasure")

BATCH_DOC = "erasure/_batch.json"
RAW_PROCESSED, RAW_REJECTED, WAREHOUSE, REPORTS, CACHES = (
    "raw/processed", "raw/rejected", "warehouse", "reports", "caches")  # fmt: skip
ERASED_TOKEN = b"<erased>"
KEY_BYTES = re.compile(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
_TEXT_SUFFIXES = (".json", ".html", ".md", ".csv", ".txt")
#: The warehouse column a person is found by (the lake's user key).
WAREHOUSE_KEY = "user_key"


@dataclass(frozen=True)
class Targets:
    """The stores outside the lake that erasure and verification reach."""

    raw: tuple[RawLocation, ...] = ()
    warehouse_url: str | None = None


@dataclass
class _Batch:
    """The requests being carried out and the rows removed so far, per store and file (resumable)."""

    request_ids: list[str]
    digests: list[str]
    removed: dict[str, dict[str, int]] = field(default_factory=dict)
    files_scanned: dict[str, int] = field(default_factory=dict)
    candidates: dict[str, int] = field(default_factory=dict)  # files opened per dataset (index hits)
    wal: str | None = None  # what became of the warehouse's write-ahead log (PostgreSQL)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per lake dataset (this process)
    memo: dict[str, bool] = field(default_factory=dict)  # value -> holds a person (each key hashed once)

    def note(self, store: str, file: str, rows: int) -> None:
        self.removed.setdefault(store, {})[file] = rows

    @contextlib.contextmanager
    def timed(self, store: str) -> Iterator[None]:
        """Adds the block's wall time to the store's (the summary says where a batch's time went)."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[store] = round(self.seconds.get(store, 0.0) + time.monotonic() - t0, 3)

    def rows(self, store: str) -> int:
        return sum(self.removed.get(store, {}).values())

    def doc(self) -> dict[str, Any]:
        return {"request_ids": self.request_ids, "digests": self.digests, "removed": self.removed,
                "files_scanned": self.files_scanned}  # fmt: skip


# ------------------------------------------------------------------------------------ requests
def digests_for(user_ids: list[str], keys: list[str], key: bytes) -> list[str]:
    """Digests of raw ids (keyed at once with the lake's key) and of keys given as they are."""
    from etl.pseudonymize import pseudonymize

    bad = [k for k in keys if not re.fullmatch(r"[0-9a-f]{64}", k.strip().lower())]
    if bad:
        raise ValueError(f"{len(bad)} --key value(s) are not 64-hex-character user keys")
    return [key_digest(pseudonymize(u.strip(), key)) for u in user_ids if u.strip()] + [
        key_digest(k.strip().lower()) for k in keys]  # fmt: skip


#: Files dropped under this prefix of the incoming location are erasure requests, not events.
REQUEST_PREFIX = "erasure/"


def take_request_file(lake: Lake, store: Store, key: str, pseudonym_key: bytes) -> dict[str, Any]:
    """Record the requests of a file dropped under ``erasure/`` (one raw id or 64-hex key a line), then
    delete the file: it holds raw ids. A crash in between records the same people again (harmless)."""
    lines = [ln.strip() for ln in store.read_bytes(key).decode("utf-8", "replace").splitlines() if ln.strip()]
    keys = [ln.lower() for ln in lines if re.fullmatch(r"[0-9a-fA-F]{64}", ln)]
    raw = [ln for ln in lines if not re.fullmatch(r"[0-9a-fA-F]{64}", ln)]
    sub = ledger.record(lake, digests_for(raw, keys, pseudonym_key), "folder") if lines else None
    store.delete_prefix(key)
    return {"key": key, "status": "erasure_requests", "requests": len(sub.requests) if sub else 0,
            "submission_id": sub.submission_id if sub else None}  # fmt: skip


def erasure_due(lake: Lake, max_age_hours: float) -> tuple[bool, str]:
    """Due when a batch was interrupted, or the oldest pending request has waited ``max_age_hours``."""
    if lake.store.exists(BATCH_DOC):
        return True, "an interrupted erasure batch"
    age = ledger.oldest_pending_age(lake)
    if age is None:
        return False, "no pending requests"
    if age.total_seconds() >= max_age_hours * 3600:
        return True, f"a request pending for {age.total_seconds() / 3600:.1f} h"
    return False, "pending requests not due yet"


# ------------------------------------------------------------------------------------ the batch
def run_erasure(lake: Lake, key: bytes, targets: Targets | None = None) -> dict[str, Any]:
    """Carry out every pending request (or finish an interrupted batch); returns what was removed.

    Holds the lake's writer lease: an ingest running beside the rewrite could publish the person's rows
    after the files were scanned, or have its staged files rewritten under it.
    """
    with lake.writer_lease("erase"):
        return _run_erasure_held(lake, key, targets)


def _run_erasure_held(lake: Lake, key: bytes, targets: Targets | None) -> dict[str, Any]:
    t0 = time.monotonic()
    targets = targets or Targets()
    batch = _open_batch(lake)
    if batch is None:
        return {"status": "nothing_to_do", "requests": 0}
    digests = frozenset(batch.digests)
    ctx = {"stage": "erasure", "requests": len(batch.request_ids)}
    log.info("erasure batch: %d request(s)", len(batch.request_ids), extra=ctx)

    changed = _erase_lake(lake, batch, digests)
    for loc in targets.raw:
        _erase_raw(lake, batch, loc, key, digests)
    if targets.warehouse_url:
        _erase_warehouse(lake, batch, targets.warehouse_url, digests)
    _drop_caches(lake, batch, changed)

    completed = _complete(lake, batch)
    lake.store.delete_prefix(BATCH_DOC)
    summary = {
        "status": "completed",
        "requests": len(completed),
        "request_ids": completed,
        "rows_removed": {s: batch.rows(s) for s in sorted(batch.removed)},
        "files_rewritten": {s: sum(1 for n in f.values() if n) for s, f in sorted(batch.removed.items())},
        "files_scanned": batch.files_scanned,
        "files_opened": batch.candidates,
        "warehouse_wal": batch.wal,
        "seconds_by_dataset": batch.seconds,
        "events_files_rewritten": sum(1 for n in batch.removed.get(EVENTS, {}).values() if n),
        "events_files": batch.files_scanned.get(EVENTS, 0),
        "duration_seconds": round(time.monotonic() - t0, 3),
    }
    log.info("erasure batch completed", extra={**ctx, "duration_seconds": summary["duration_seconds"],
                                               "events_files_rewritten": summary["events_files_rewritten"]})
    return summary


def _open_batch(lake: Lake) -> _Batch | None:
    """The interrupted batch, else a new one of every pending request (written before any rewrite)."""
    if lake.store.exists(BATCH_DOC):
        doc = lake.read_json(BATCH_DOC)
        return _Batch(doc["request_ids"], doc["digests"], doc.get("removed", {}), doc.get("files_scanned", {}))
    pending = [r for s in ledger.submissions(lake) for r in s.requests if r.state == ledger.PENDING]
    if not pending:
        return None
    batch = _Batch([r.request_id for r in pending], sorted({r.key_digest for r in pending}))
    lake.write_json(BATCH_DOC, batch.doc())
    return batch


def _save(lake: Lake, batch: _Batch) -> None:
    lake.write_json(BATCH_DOC, batch.doc())


def _complete(lake: Lake, batch: _Batch) -> list[str]:
    """Mark the batch's requests completed, with rows removed per store (shared by the batch)."""
    ids, now = set(batch.request_ids), utc_now_iso()
    stores = {s: {"state": "done", "rows_removed": batch.rows(s)} for s in sorted(batch.removed)}
    done = []
    for sub in ledger.submissions(lake):
        touched = False
        for r in sub.requests:
            if r.request_id in ids and r.state != ledger.COMPLETED:
                r.state, r.completed_at, r.stores, touched = ledger.COMPLETED, now, stores, True
                done.append(r.request_id)
        if touched:
            ledger.save(lake, sub)
    return done


# ------------------------------------------------------------------------------------ the lake
def _dataset_files(lake: Lake, d: Dataset) -> list[str]:
    """Every file of a dataset, in every version and run still kept (the pointer itself excluded)."""
    return [k for k in lake.store.list(d.path) if not k.endswith(f"/{CURRENT_POINTER}")]


def _run_of(key: str) -> str | None:
    return key.split("/run_id=", 1)[1].split("/", 1)[0] if "/run_id=" in key else None


def _write_parquet_like(table: pa.Table, original: pq.ParquetFile) -> bytes:
    """``table`` written as the original file was: same codec, INT96 timestamps if it had them (Spark)."""
    meta = original.metadata
    codec = meta.row_group(0).column(0).compression if meta.num_row_groups and meta.num_columns else "ZSTD"
    int96 = any(original.schema.column(i).physical_type == "INT96" for i in range(len(original.schema)))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="none" if codec == "UNCOMPRESSED" else codec.lower(),
                   use_deprecated_int96_timestamps=int96)  # fmt: skip
    return sink.getvalue()


def _person_rows(source: Any, meta: pq.FileMetaData, d: Dataset, digests: Set[str], removed: pa.Table | None,
                 memo: dict[str, bool]) -> np.ndarray | None:  # fmt: skip
    """Per row of the file: the person's (or pointing at a removed event)? Reads only those columns,
    the key columns dictionary-encoded as stored (each distinct key is matched once per row group);
    ``meta`` is the file's footer, read once by the caller."""
    names = meta.schema.to_arrow_schema().names
    cols = [c for c in d.user_keys if c in names]
    links = d.links if removed is not None and removed.num_rows and all(c in names for c, _ in d.links) else ()
    if not cols and not links:
        return None
    probe = pq.ParquetFile(source, metadata=meta, read_dictionary=cols).read(
        columns=cols + [c for c, _ in links], use_threads=False
    )
    mask = rows_of(probe, cols, digests, memo)
    if links:
        mask |= linked_mask(probe, links, removed)
    return mask


def _find(lake: Lake, batch: _Batch, d: Dataset, digests: Set[str], removed_by_run: dict[str, pa.Table],
          index: KeyIndex) -> list[tuple[str, int, pa.Table | None]]:  # fmt: skip
    """(file, rows of the person, their ``source_file, line_number``) of every file of ``d`` holding them.

    Opens only the candidates: the files whose key index (:mod:`services.jobs.erasure_index`) holds a
    person's fingerprint, or for linked rows the files of runs that lost events; of those it reads only
    the key (and link) columns, and the removed lines of the files that hit.
    """
    files = data_files(lake, d)
    batch.files_scanned[d.path] = len(files)
    if d.user_keys:
        keys = index.candidates(d, files, wanted(digests))
    else:
        keys = [i.key for i in files if (_run_of(i.key) or "") in removed_by_run]
    batch.candidates[d.path] = len(keys)

    def one(k: str) -> tuple[str, int, pa.Table | None]:
        source = parquet_source(lake, k)
        meta = pq.read_metadata(source)
        mask = _person_rows(source, meta, d, digests, removed_by_run.get(_run_of(k) or ""), batch.memo)
        if mask is None or not mask.any():
            return k, 0, None
        gone = None
        pf = pq.ParquetFile(source, metadata=meta)
        if {"source_file", "line_number"} <= set(pf.schema_arrow.names):
            gone = pf.read(columns=["source_file", "line_number"]).filter(pa.array(mask))
        return k, int(mask.sum()), gone

    with ThreadPoolExecutor(max_workers=4) as pool:  # I/O bound on S3; pyarrow releases the GIL
        return [hit for hit in pool.map(one, keys) if hit[1]]


def _rewrite_files(lake: Lake, batch: _Batch, d: Dataset, hits: list[tuple[str, int, pa.Table | None]],
                   digests: Set[str], removed_by_run: dict[str, pa.Table], index: KeyIndex) -> None:  # fmt: skip
    """Each file that holds the person, read whole, filtered and replaced in one atomic write, then
    re-indexed. Two files are read, filtered and encoded at once (pyarrow releases the GIL), at most
    two ahead of the writes, which stay one at a time and in order: memory holds three files at most."""
    want = wanted(digests)

    def prepare(k: str) -> tuple[str, bytes, int, np.ndarray | None] | None:
        data = lake.store.read_bytes(k)
        pf = pq.ParquetFile(pa.BufferReader(data))
        mask = _person_rows(pa.BufferReader(data), pf.metadata, d, digests, removed_by_run.get(_run_of(k) or ""),
                            batch.memo)  # fmt: skip
        if mask is None or not mask.any():  # already rewritten by an interrupted run
            return None
        kept = pf.read().filter(pa.array(~mask))
        fps = None
        if d.user_keys:  # key columns lose exactly the people erased; text (a raw line) holds other keys too
            fps = index.without(k, want) if set(d.user_keys) == {"user_key"} else None
            fps = table_fingerprints(kept, d, index.memo) if fps is None else fps
        return k, _write_parquet_like(kept, pf), int(mask.sum()), fps

    def write(done: tuple[str, bytes, int, np.ndarray | None] | None) -> None:
        if done is not None:
            k, data, rows, fps = done
            _rewrite(lake, batch, d.path, k, data, rows)
            if fps is not None:
                index.reindex(k, fps)

    with ThreadPoolExecutor(max_workers=2) as pool:
        ahead: deque[Future] = deque()
        for k, _, _ in hits:
            ahead.append(pool.submit(prepare, k))
            if len(ahead) > 2:
                write(ahead.popleft().result())
        while ahead:
            write(ahead.popleft().result())


def _rewrite(lake: Lake, batch: _Batch, store: str, key: str, data: bytes, rows: int) -> None:
    """Record the count, then replace the file in one atomic write (a rerun recounts the same rows)."""
    batch.note(store, key, rows)
    _save(lake, batch)
    lake.store.write_bytes(key, data)


def _erase_lake(lake: Lake, batch: _Batch, digests: Set[str]) -> set[str]:
    """Every catalog dataset; returns the datasets that changed.

    Linked rows (duplicates, order lines) are rewritten before the events, since they are found through
    the events' removed lines: a batch killed in between finds the rest on its next run.
    """
    index = KeyIndex(lake)
    events = next(d for d in CATALOG if d.path == EVENTS)
    with batch.timed(EVENTS):
        event_hits = _find(lake, batch, events, digests, {}, index)
    removed_by_run: dict[str, list[pa.Table]] = {}
    for k, _, gone in event_hits:
        if gone is not None:
            removed_by_run.setdefault(_run_of(k) or "", []).append(gone)
    removed = {run: pa.concat_tables(parts) for run, parts in removed_by_run.items()}
    for d in CATALOG:
        if d.links:
            with batch.timed(d.path):
                _rewrite_files(lake, batch, d, _find(lake, batch, d, digests, removed, index), digests, removed, index)
    with batch.timed(EVENTS):
        _rewrite_files(lake, batch, events, event_hits, digests, {}, index)
    for d in indexed_datasets():
        if d.path != EVENTS:
            with batch.timed(d.path):
                _rewrite_files(lake, batch, d, _find(lake, batch, d, digests, {}, index), digests, {}, index)
    with batch.timed(REPORTS):
        _redact_documents(lake, batch, digests)
    return {s for s, f in batch.removed.items() if any(f.values())}


def _redact_documents(lake: Lake, batch: _Batch, digests: Set[str]) -> None:
    """JSON, HTML, Markdown and text files of every dataset: the person's keys replaced by ``<erased>``."""
    for d in CATALOG:
        if d.layout == "ledger":
            continue
        for k in _dataset_files(lake, d):
            if not k.endswith(_TEXT_SUFFIXES):
                continue
            data = lake.store.read_bytes(k)
            hits = [m for m in set(KEY_BYTES.findall(data)) if key_digest(m.decode()) in digests]
            if hits:
                for m in hits:
                    data = data.replace(m, ERASED_TOKEN)
                _rewrite(lake, batch, REPORTS, k, data, len(hits))


def _erase_raw(lake: Lake, batch: _Batch, loc: RawLocation, key: bytes, digests: Set[str]) -> None:
    """Rewrite each raw file holding the person without the person's lines (header kept), atomically."""
    keys = raw_keys(loc)
    batch.files_scanned[loc.name] = len(keys)
    matcher = RawMatcher(key, digests)
    for k in keys:
        with local_copy(loc.store, k) as path, tempfile.TemporaryDirectory(dir=_tmp_dir(lake)) as tmp:
            out = Path(tmp) / "rewritten"
            dropped = filter_raw(path, matcher, out)
            if not dropped:
                continue
            batch.note(loc.name, f"{loc.store.uri}/{k}", dropped)
            _save(lake, batch)
            loc.store.put_file(out, k, move=True)


def _tmp_dir(lake: Lake) -> Path:
    path = lake.work_dir / "erasure"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------ warehouse
def _erase_warehouse(lake: Lake, batch: _Batch, url: str, digests: Set[str]) -> None:
    """Delete the person's rows of every table with a user key, in one transaction; then vacuum."""
    wh = Warehouse(url)
    try:
        if wh.sqlite_file is not None and not wh.sqlite_file.exists():
            return
        with wh.errors("erasing rows"), wh.engine.begin() as conn:
            removed: dict[str, int] = {}
            for name in sa.inspect(conn).get_table_names():
                columns = {c["name"] for c in sa.inspect(conn).get_columns(name)}
                if WAREHOUSE_KEY not in columns:
                    continue
                table = sa.table(name, sa.column(WAREHOUSE_KEY))
                found = [k for (k,) in conn.execute(sa.select(table.c[WAREHOUSE_KEY]).distinct())
                         if k is not None and key_digest(k) in digests]  # fmt: skip
                n = 0
                for i in range(0, len(found), 1000):
                    n += conn.execute(sa.delete(table).where(table.c[WAREHOUSE_KEY].in_(found[i:i + 1000]))).rowcount
                if n:
                    removed[name] = n
        with wh.errors("vacuuming"):
            batch.wal = _vacuum(wh, list(removed))
        if batch.wal and batch.wal != "cleared":
            log.warning("erasure: the warehouse's write-ahead log was %s", batch.wal, extra={"stage": "erasure"})
        for name, n in removed.items():
            batch.note(WAREHOUSE, name, n)
        batch.files_scanned[WAREHOUSE] = len(removed)
        _save(lake, batch)
    finally:
        wh.close()


def _vacuum(wh: Warehouse, tables: list[str]) -> str | None:
    """Rewrite the tables so deleted rows leave the database files (outside any transaction); on
    PostgreSQL, also the write-ahead log. Returns what became of the WAL (None: SQLite, none kept)."""
    if wh.dialect == "postgresql":
        with wh.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in tables:
                # ANALYZE too: the planner's statistics (pg_statistic) sample column values, keys included
                conn.execute(sa.text(f'VACUUM (FULL, ANALYZE) "{name}"'))
            superuser = conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
            if not superuser:
                return "not cleared: only a superuser can switch the WAL and checkpoint"
            # the old statistics rows are dead tuples there
            conn.execute(sa.text("VACUUM FULL pg_catalog.pg_statistic"))
            return _clear_wal(conn)
    if wh.sqlite_file is not None:
        # the engine's own connections always open a transaction (see make_engine); VACUUM needs none
        with contextlib.closing(sqlite3.connect(wh.sqlite_file, isolation_level=None)) as conn:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return None


def _clear_wal(conn: sa.Connection) -> str:
    """Get the deleted rows out of ``pg_wal``: the segments that logged them (their inserts, the
    deletes' full-page images) end with a WAL switch, and the checkpoint after it removes every segment
    before it. Removed, not recycled, only with ``wal_recycle = off`` (the warehouse's documented
    setting, docs/privacy.md): a recycled segment is renamed for reuse with its old bytes until
    overwritten. WAL archiving and ``wal_keep_size`` or replication slots keep copies; that is said."""
    switched = conn.execute(sa.text("SELECT pg_walfile_name(pg_switch_wal())")).scalar()
    conn.execute(sa.text("CHECKPOINT"))
    kept = conn.execute(sa.text("SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$' "
                                "AND name <= :last"), {"last": switched}).scalar()  # fmt: skip
    if kept:
        return f"not cleared: {kept} segment(s) that logged the rows are kept (wal_keep_size or a replication slot)"
    if conn.execute(sa.text("SHOW wal_recycle")).scalar() != "off":
        return "not cleared: wal_recycle is on, so the old segments were renamed for reuse with their bytes"
    if conn.execute(sa.text("SHOW archive_mode")).scalar() != "off":
        return "cleared from pg_wal; the WAL archive keeps its copies until its own expiry"
    return "cleared"


# ------------------------------------------------------------------------------------ caches
def _drop_caches(lake: Lake, batch: _Batch, changed: set[str]) -> None:
    """Local mirrors of rewritten datasets (the API's and dashboard's reads on S3)."""
    dropped = 0
    documents = {d.path for k in batch.removed.get(REPORTS, {}) for d in CATALOG if k.startswith(f"{d.path}/")}
    for dataset in sorted((changed - {REPORTS}) | documents):
        cached = lake.work_dir / "cache" / dataset
        if cached.exists():
            shutil.rmtree(cached, ignore_errors=True)
            dropped += 1
    batch.files_scanned[CACHES] = dropped


# ------------------------------------------------------------------------------------ rebuild
def rebuild(spark: Any, lake: Lake) -> list[str]:
    """Recompute the features from scratch out of the remaining events (as of their latest time), so
    they equal a rebuild without the erased people; the stages after this one then find new features
    and rescore (segments, propensity, funnel, views, warehouse)."""
    from services.jobs.features import run_features

    if lake.current_version(FEATURES) is None:
        return []
    run_features(spark, lake, full=True)
    return ["features"]


def erasure_stage(spark: Any, lake: Lake, key: bytes, targets: Targets) -> dict[str, Any]:
    """The ``erasure`` pipeline stage: the batch, then the features rebuilt when anything was erased."""
    summary = run_erasure(lake, key, targets)
    if summary["status"] == "completed":
        summary["rebuilt"] = rebuild(spark, lake)
    return summary


def targets_from(settings: Any, warehouse_url: str | None) -> Targets:
    """The raw-file locations (``SHOPLENS_INCOMING``'s ``_processed/`` and the rejected-file location)
    and the warehouse, as the watcher uses them."""
    from services.core.runtime import open_location

    raw: list[RawLocation] = []
    if settings.incoming:
        raw.append(RawLocation(RAW_PROCESSED, open_location(settings, settings.incoming), "_processed"))
        rejected = settings.quarantine_files or f"{settings.incoming.rstrip('/')}/_failed"
        raw.append(RawLocation(RAW_REJECTED, open_location(settings, rejected)))
    return Targets(tuple(raw), warehouse_url)


def erasure_report(s: dict[str, Any]) -> str:
    """What the CLI prints (no ids, no keys)."""
    if s.get("status") == "nothing_to_do":
        return "no pending erasure requests"
    rows = ", ".join(f"{store} {n:,}" for store, n in s["rows_removed"].items() if n) or "nothing found"
    text = (f"erased {s['requests']} request(s) in {s['duration_seconds']:.1f}s: rows removed: {rows}\n"
            f"events files rewritten: {s['events_files_rewritten']} of {s['events_files']}")  # fmt: skip
    if s.get("rebuilt"):
        text += f"\nrebuilt: {', '.join(s['rebuilt'])}"
    return text


__all__ = [
    "RAW_PROCESSED",
    "RAW_REJECTED",
    "REQUEST_PREFIX",
    "RawLocation",
    "Targets",
    "digests_for",
    "erasure_due",
    "erasure_report",
    "erasure_stage",
    "rebuild",
    "run_erasure",
    "take_request_file",
    "targets_from",
]
