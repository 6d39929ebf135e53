"""The ingestion job: event files on disk -> a committed run in the lake.

Why the files are cut into plain-text chunks first: a ``.csv.gz`` is not splittable, so Spark would
read, parse and hash a whole month in one task on one core. One streaming pass in Python (Intel's ISA-L
through ``isal``: the gzip format, decompressed 2.5x faster than zlib) checks the header and writes
~64 MB plain chunks whose first line numbers are known. The chunks
go to the run's staging prefix in the lake's store; Spark then runs one Arrow task per chunk
(:mod:`services.jobs.ingest_tasks`, around the rules of :mod:`etl.ingest`), which reads its chunk from
the store and writes its files back to it, so no directory is shared between the driver and the executors.

Commit protocol (see services/core/lake.py): everything is written under the store's staging prefix of
the run, moved under run-scoped lake paths, and made visible by the run summary with status "committed".
"""


from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from etl.contract import ORDER_COLUMNS, RAW_COLUMNS, ContractError, check_header
from etl.ingest import ACCEPTED, DUPLICATE
from services.core import erasure_ledger
from services.core.bounded_read import IngestLimits, last_line_end, open_input, read_blocks, read_header
from services.core.catalog import DUPLICATES, EVENTS, QUARANTINE, STAGING, SUSPICIOUS_USERS, TIMELINE_RUNS
from services.core.lake import Lake, new_run_id, utc_now_iso
from services.core.lease import WriterLease
from services.core.timelines import compact_if_due, sort_groups, timeline_groups
from services.core.timings import Timings
from services.jobs.ingest_summary import FileResult, reconciled, stage_chunks
from services.jobs.ingest_tasks import (
    TIMELINE_PARTS,
    LocalChunk,
    bucket_count,
    empty_file,
    find_copies,
    flag_suspicious,
    parquet_bytes,
    resolve_cross_chunk_duplicates,
    run_chunks,
)

log = logging.getLogger("shoplens.ingest")

CHUNK_BYTES = 64 * 1024 * 1024


@dataclass
class _Split:
    rows: int
    chunks: list[LocalChunk] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


Process = Callable[..., dict[str, Any]]


def _online_retail() -> Process:
    from services.jobs.ingest_orders import process_orders

    return process_orders


#: ``shoplens ingest --format``: (header, how its chunks are processed): REES46 clickstream (default)
#: or Online Retail order exports.
FORMATS: dict[str, tuple[tuple[str, ...], Callable[[], Process]]] = {
    "rees46": (RAW_COLUMNS, lambda: _process),
    "online-retail": (ORDER_COLUMNS, _online_retail),
}


def split_into_chunks(path: Path, source_file: str, out_dir: Path, chunk_bytes: int = CHUNK_BYTES,
                      columns: tuple[str, ...] = RAW_COLUMNS, limits: IngestLimits = IngestLimits()) -> _Split:
    """Check the header and cut the data lines into plain chunks of about ``chunk_bytes``.

    Line 1 is the header, so the first data line is line 2. Raises ContractError on a bad header or a
    file over ``limits`` (services/core/bounded_read.py); an OSError is ours (say a full disk), not the file's.
    """
    split = _Split(rows=0)
    next_line = 2
    with open_input(path) as fh:
        check_header(read_header(fh, source_file, limits), source_file, columns)

        def flush(head: bytes, data: bytes, end: int) -> None:
            """One chunk: the line left unfinished by the previous block (``head``, no newline in it), then
            ``data[:end]``."""
            nonlocal next_line
            size = len(head) + end
            if size == 0:
                return
            last = data[end - 1 : end] if end else head[-1:]
            lines = data.count(b"\n", 0, end) + (0 if last == b"\n" else 1)
            # Spark reports chunk names URL-encoded, so the chunk's own name keeps to safe characters
            # (a file called "Online Retail.csv" must still match its chunks); source_file is unchanged.
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", source_file)
            chunk = out_dir / f"{len(split.chunks):05d}-{safe}.txt"
            with open(chunk, "wb") as out:
                out.write(head)
                out.write(memoryview(data)[:end])
            split.chunks.append(LocalChunk(chunk, source_file, next_line))
            split.rows += lines
            next_line += lines

        carry = b""
        # One read per chunk, cut at its last newline; the cut-off tail starts the next chunk. The tail and
        # the block are written one after the other, never joined (a 64 MB copy per chunk). The tail is
        # at most max_line_bytes long (last_line_end refuses longer lines).
        for block in read_blocks(fh, source_file, path.stat().st_size, chunk_bytes, limits):
            cut = last_line_end(len(carry), block, source_file, limits)
            if cut == 0:  # no line ends in this block: it all belongs to the (short) line being carried
                carry += block
                continue
            flush(carry, block, cut)
            carry = block[cut:]
        flush(carry, b"", 0)
    return split


def _unique_names(paths: list[Path], hashes: list[str]) -> list[str]:
    names: list[str] = []
    for path, digest in zip(paths, hashes, strict=True):
        name = path.name
        names.append(name if name not in names else f"{name}#{digest[:8]}")
    return names


def ingest_files(
    spark: SparkSession | Callable[[], SparkSession],
    lake: Lake,
    paths: Iterable[Path],
    key: bytes,
    *,
    run_id: str | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    on_progress: Callable[[str], None] = lambda _msg: None,
    input_format: str = "rees46",
    limits: IngestLimits = IngestLimits(),
) -> dict[str, Any]:
    """Ingest ``paths`` as one run and return its summary (also written to ``runs/<run_id>.json``).

    ``spark`` may be a callable returning the session, so that the JVM starts while Python hashes
    and chunks the files (see the CLI). The run holds the lake's writer lease throughout (LeaseHeld if
    another writer has it) and refuses a key other than the one the lake was written with.
    """
    if input_format not in FORMATS:
        raise ValueError(f"unknown input format {input_format!r}; choose from {', '.join(FORMATS)}")
    with lake.writer_lease("ingest") as lease:
        lake.bind_key(key)
        return _ingest_held(spark, lake, [Path(p) for p in paths], key, lease, run_id or new_run_id(), chunk_bytes,
                            on_progress, input_format, limits)  # fmt: skip


def _ingest_held(spark: SparkSession | Callable[[], SparkSession], lake: Lake, paths: list[Path], key: bytes,
                 lease: WriterLease, run_id: str, chunk_bytes: int, on_progress: Callable[[str], None],
                 input_format: str, limits: IngestLimits) -> dict[str, Any]:  # fmt: skip
    columns, process = FORMATS[input_format]
    started, t0 = utc_now_iso(), time.monotonic()
    lake.vacuum()
    staging = lake.staging_dir(run_id)
    chunk_dir = staging / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    ctx = {"run_id": run_id, "stage": "ingest"}

    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"no such input file: {p}")
    timings = Timings()
    with timings.phase("hash_inputs"):
        hashes = [sha256_of(p) for p in paths]
    names = _unique_names(paths, hashes)
    ledger = lake.ledger()
    results: list[FileResult] = []
    chunks: list[LocalChunk] = []
    rows_by_file: dict[str, int] = {}
    seen_now: dict[str, str] = {}
    for path, digest, name in zip(paths, hashes, names, strict=True):
        result = FileResult(name=name, sha256=digest, size_bytes=path.stat().st_size, status="ingested")
        results.append(result)
        if digest in ledger:
            result.status, result.previous_run_id = "skipped", ledger[digest]["run_id"]
            result.reason = f"already ingested by run {result.previous_run_id}"
        elif digest in seen_now:
            result.status, result.reason = "skipped", f"same content as {seen_now[digest]} in this run"
        else:
            try:
                on_progress(f"reading {name}")
                with timings.phase("split_into_chunks"):
                    split = split_into_chunks(path, name, chunk_dir, chunk_bytes, columns, limits)
            except ContractError as err:
                result.status, result.reason, result.reason_code = "failed", str(err), err.code
                log.warning("file failed: %s", err, extra={**ctx, "file": name})
                continue
            seen_now[digest] = name
            chunks.extend(split.chunks)
            rows_by_file[name] = result.rows_read = split.rows
        log.info("file %s: %s", name, result.status, extra={**ctx, "file": name, "status": result.status})

    summary: dict[str, Any] = {
        "run_id": run_id,
        "started_at": started,
        "lake": lake.store.uri,
        "rows_read": sum(rows_by_file.values()),
        "rows_accepted": 0,
        "rows_quarantined": 0,
        "duplicates_removed": 0,
        "erased_user": 0,
        "quarantine_by_reason": {},
        "suspicious_users": 0,
        "event_date_min": None,
        "event_date_max": None,
    }
    if chunks:
        on_progress(f"processing {summary['rows_read']:,} rows with Spark")
        with timings.phase("wait_for_spark"):
            session = spark() if callable(spark) else spark
        summary.update(process()(session, lake, run_id, staging, chunks, key, results, timings))
        status = "committed"
    else:
        status = "failed" if any(r.status == "failed" for r in results) else "nothing_to_do"
    summary.update(
        status=status,
        files=[asdict(r) for r in results],
        finished_at=utc_now_iso(),
        duration_seconds=round(time.monotonic() - t0, 3),
        phase_seconds=dict(timings),
    )
    lease.check()  # a writer that stalled past its lease must not commit over its successor's vacuum
    lake.write_run(summary)  # the commit point
    shutil.rmtree(staging, ignore_errors=True)
    if status == "committed" and input_format == "rees46":
        compact_if_due(session, lake)
    log.info(
        "run %s %s: %d read, %d accepted, %d quarantined, %d duplicates",
        run_id,
        status,
        summary["rows_read"],
        summary["rows_accepted"],
        summary["rows_quarantined"],
        summary["duplicates_removed"],
        extra={**ctx, **{k: summary[k] for k in ("rows_read", "rows_accepted", "rows_quarantined")}},
    )
    return summary


def _process(
    spark: SparkSession,
    lake: Lake,
    run_id: str,
    staging: Path,
    local_chunks: list[LocalChunk],
    key: bytes,
    results: list[FileResult],
    timings: Timings,
) -> dict[str, Any]:
    """REES46 chunks through the Arrow tasks; returns the counts and dates of the run summary."""
    store, prefix = lake.store, f"{STAGING}/{run_id}"
    chunks = stage_chunks(store, prefix, local_chunks, timings)
    buckets = bucket_count(spark)
    with timings.phase("classify_and_write"):
        outcome = run_chunks(spark, store, prefix, chunks, key, buckets, erasure_ledger.suppressed(lake),
                             timeline_groups(spark, sum(r.rows_read for r in results)))  # fmt: skip
    # The bot flag reads only what the chunk tasks wrote, so its job runs beside the copy search: its
    # tasks fill the cores while the driver patches the chunks that hold copies.
    with ThreadPoolExecutor(max_workers=1) as pool:
        flagging = pool.submit(flag_suspicious, spark, store, prefix, buckets)
        with timings.phase("cross_chunk_duplicates"):
            moved = resolve_cross_chunk_duplicates(store, prefix, chunks, find_copies(spark, store, prefix, buckets))
        with timings.phase("suspicious_users"):
            flags = flagging.result()
    counts: dict[tuple[str, str, str | None], int] = {}
    for (index, kind, reason), n in outcome.items():
        k = (chunks[index].source_file, kind, reason)
        counts[k] = counts.get(k, 0) + n
    for index, n in moved.items():
        source = chunks[index].source_file
        counts[(source, ACCEPTED, None)] -= n
        counts[(source, DUPLICATE, None)] = counts.get((source, DUPLICATE, None), 0) + n
    accepted = sum(n for (_, kind, _), n in counts.items() if kind == ACCEPTED)
    with timings.phase("timelines"):  # after the copies are dropped from the staged groups: the run's final events
        sort_groups(spark, store, f"{prefix}/{TIMELINE_PARTS}", f"{prefix}/timelines", accepted)

    with timings.phase("side_tables"):
        store.write_bytes(f"{prefix}/suspicious/part-00000.parquet", parquet_bytes(flags))
        # the tasks wrote one directory per event date: the run's date range is in their names
        days = sorted({k.split("event_date=", 1)[1].split("/", 1)[0] for k in store.list(f"{prefix}/events")})
        dates = {"lo": days[0], "hi": days[-1]} if days else None
        for name in ("quarantine", "duplicates"):
            if not store.list(f"{prefix}/{name}"):
                store.write_bytes(f"{prefix}/{name}/part-empty.parquet", empty_file(name))
    with timings.phase("publish"):
        for name, dataset in (("events", EVENTS), ("quarantine", QUARANTINE), ("duplicates", DUPLICATES),
                              ("suspicious", SUSPICIOUS_USERS), ("timelines", TIMELINE_RUNS)):  # fmt: skip
            lake.publish_run_dataset(f"{prefix}/{name}", dataset, run_id)
        store.delete_prefix(prefix)
    return reconciled(counts, results, len(flags), dates)


