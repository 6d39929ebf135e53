"""The ingestion job: event files on disk -> a committed run in the lake.

Why the files are cut into plain-text chunks first: a ``.csv.gz`` is not splittable, so Spark would
read, parse and hash a whole month in one task on one core. One streaming pass in Python (zlib, at C
speed) hashes the file for the ledger, checks the header, and writes ~64 MB plain chunks whose first
line numbers are known; Spark then reads the chunks in parallel and line numbers stay exact.

Commit protocol (see services/core/lake.py): everything is written under the local staging directory,
moved under run-scoped lake paths, and made visible by the run summary with status "committed".
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.contract import ALL_QUARANTINE_REASONS, ORDER_COLUMNS, RAW_COLUMNS, ContractError, check_header
from etl.ingest import (
    ACCEPTED,
    DUPLICATE,
    QUARANTINED,
    Chunk,
    classify,
    duplicates_view,
    find_duplicates,
    flag_suspicious_users,
    quarantine_view,
    read_lines,
)
from services.core.catalog import DUPLICATES, EVENTS, ORDER_LINES, QUARANTINE, SUSPICIOUS_USERS
from services.core.lake import Lake, new_run_id, utc_now_iso

log = logging.getLogger("shoplens.ingest")

CHUNK_BYTES = 64 * 1024 * 1024


class ReconciliationError(RuntimeError):
    """Counts of a run do not add up; the run is not committed."""


@dataclass
class FileResult:
    """What happened to one input file."""

    name: str
    sha256: str
    size_bytes: int
    status: str  # ingested | skipped | failed
    reason: str | None = None
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    duplicates_removed: int = 0
    previous_run_id: str | None = None


@dataclass
class _Split:
    rows: int
    chunks: list[Chunk] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _open_text(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


@dataclass(frozen=True)
class InputFormat:
    """How one input layout is checked and classified (the outcome columns are the same for all)."""

    columns: tuple[str, ...]
    classify: Callable[..., DataFrame]
    quarantine_view: Callable[[DataFrame, bytes], DataFrame]
    side_table: Callable[[DataFrame], DataFrame] | None = None  # extra per-line columns, e.g. orders/lines


def _online_retail() -> InputFormat:
    from etl.online_retail import classify_orders, order_lines, order_quarantine_view

    return InputFormat(ORDER_COLUMNS, classify_orders, order_quarantine_view, order_lines)


#: ``shoplens ingest --format``: REES46 clickstream (default) or Online Retail order exports.
FORMATS: dict[str, Callable[[], InputFormat]] = {
    "rees46": lambda: InputFormat(RAW_COLUMNS, classify, quarantine_view),
    "online-retail": _online_retail,
}


def split_into_chunks(path: Path, source_file: str, out_dir: Path, chunk_bytes: int = CHUNK_BYTES,
                      columns: tuple[str, ...] = RAW_COLUMNS) -> _Split:
    """Check the header and cut the data lines into plain chunks of about ``chunk_bytes``.

    Line 1 is the header, so the first data line is line 2. Raises ContractError on a bad header.
    """
    split = _Split(rows=0)
    next_line = 2
    with _open_text(path) as fh:
        try:
            header = fh.readline().decode("utf-8")
        except (UnicodeDecodeError, OSError, EOFError) as err:
            raise ContractError(f"{source_file}: unreadable ({err})") from err
        check_header(header, source_file, columns)

        def flush(data: bytes, end: int) -> None:
            nonlocal next_line
            if end == 0:
                return
            lines = data.count(b"\n", 0, end) + (0 if data[end - 1 : end] == b"\n" else 1)
            # Spark reports chunk names URL-encoded, so the chunk's own name keeps to safe characters
            # (a file called "Online Retail.csv" must still match its chunks); source_file is unchanged.
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", source_file)
            chunk = out_dir / f"{len(split.chunks):05d}-{safe}.txt"
            with open(chunk, "wb") as out:
                out.write(memoryview(data)[:end])
            split.chunks.append(Chunk(chunk, source_file, next_line))
            split.rows += lines
            next_line += lines

        carry = b""
        try:
            # One read per chunk and one cut at its last newline: every byte is copied a bounded
            # number of times, whatever the chunk size.
            while block := fh.read(chunk_bytes):
                data = carry + block if carry else block
                cut = data.rfind(b"\n") + 1
                flush(data, cut)
                carry = data[cut:]
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise ContractError(f"{source_file}: truncated or corrupt file ({err})") from err
        flush(carry, len(carry))
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
) -> dict[str, Any]:
    """Ingest ``paths`` as one run and return its summary (also written to ``runs/<run_id>.json``).

    ``spark`` may be a callable returning the session, so that the JVM starts while Python hashes
    and chunks the files (see the CLI).
    """
    if input_format not in FORMATS:
        raise ValueError(f"unknown input format {input_format!r}; choose from {', '.join(FORMATS)}")
    fmt = FORMATS[input_format]()
    run_id = run_id or new_run_id()
    started, t0 = utc_now_iso(), time.monotonic()
    lake.vacuum()
    staging = lake.staging_dir(run_id)
    chunk_dir = staging / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    ctx = {"run_id": run_id, "stage": "ingest"}

    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"no such input file: {p}")
    timings = Timings()
    with timings.phase("hash_inputs"):
        hashes = [sha256_of(p) for p in paths]
    names = _unique_names(paths, hashes)
    ledger = lake.ledger()
    results: list[FileResult] = []
    chunks: list[Chunk] = []
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
                    split = split_into_chunks(path, name, chunk_dir, chunk_bytes, fmt.columns)
            except ContractError as err:
                result.status, result.reason = "failed", str(err)
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
        "quarantine_by_reason": {},
        "suspicious_users": 0,
        "event_date_min": None,
        "event_date_max": None,
    }
    if chunks:
        on_progress(f"processing {summary['rows_read']:,} rows with Spark")
        with timings.phase("wait_for_spark"):
            session = spark() if callable(spark) else spark
        summary.update(_process(session, lake, run_id, staging, chunks, key, results, timings, fmt))
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
    lake.write_run(summary)  # the commit point
    shutil.rmtree(staging, ignore_errors=True)
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


class Timings(dict):
    """Seconds spent per phase of a run, reported in the run summary."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.monotonic() - t0, 3)


def _process(
    spark: SparkSession,
    lake: Lake,
    run_id: str,
    staging: Path,
    chunks: list[Chunk],
    key: bytes,
    results: list[FileResult],
    timings: Timings,
    fmt: InputFormat | None = None,
) -> dict[str, Any]:
    fmt = fmt or FORMATS["rees46"]()
    lines = read_lines(spark, chunks, CHUNK_BYTES)
    with timings.phase("find_duplicates"):
        duplicates = find_duplicates(lines).cache()  # small: only the repeated lines
        duplicates.count()
    out = staging / "classified"
    with timings.phase("classify_and_write"):
        classified = fmt.classify(lines, duplicates, key)
        classified.write.mode("overwrite").partitionBy("outcome", "event_date").parquet(str(out))
    duplicates.unpersist()

    written = spark.read.parquet(str(out))
    with timings.phase("count"):  # a columnar read of three small columns
        counts = written.groupBy("source_file", "outcome", "reason").count().collect()
    per_file: dict[str, dict[str, int]] = {}
    by_reason: dict[str, int] = {}
    for row in counts:
        f = per_file.setdefault(row["source_file"], {ACCEPTED: 0, QUARANTINED: 0, DUPLICATE: 0})
        f[row["outcome"]] += row["count"]
        if row["outcome"] == QUARANTINED:
            by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + row["count"]
    for r in results:
        if r.status == "ingested":
            c = per_file.get(r.name, {ACCEPTED: 0, QUARANTINED: 0, DUPLICATE: 0})
            r.rows_accepted, r.rows_quarantined = c[ACCEPTED], c[QUARANTINED]
            r.duplicates_removed = c[DUPLICATE]
            if r.rows_read != r.rows_accepted + r.rows_quarantined + r.duplicates_removed:
                raise ReconciliationError(
                    f"{r.name}: {r.rows_read} lines read but {r.rows_accepted} accepted + "
                    f"{r.rows_quarantined} quarantined + {r.duplicates_removed} duplicates"
                )

    accepted_dir = out / f"outcome={ACCEPTED}"
    suspicious, dates = 0, None
    with timings.phase("side_tables"):
        if accepted_dir.exists():
            events = spark.read.parquet(str(accepted_dir))
            flags = flag_suspicious_users(events).cache()
            flags.coalesce(1).write.parquet(str(staging / "suspicious"))
            suspicious = flags.count()
            flags.unpersist()
            dates = events.agg(F.min("event_date").alias("lo"), F.max("event_date").alias("hi")).first()
        _rewrite(fmt.quarantine_view(written, key), staging / "quarantine")
        if fmt.side_table is not None:
            kept = written.where(F.col("outcome") == ACCEPTED).select("source_file", "line_number")
            _rewrite(fmt.side_table(lines).join(kept, ["source_file", "line_number"], "left_semi"),
                     staging / "side_table")
        _rewrite(duplicates_view(written.where(F.col("outcome") == DUPLICATE)), staging / "duplicates")

    with timings.phase("publish"):
        lake.publish_run_dataset(accepted_dir, EVENTS, run_id)
        lake.publish_run_dataset(staging / "quarantine", QUARANTINE, run_id)
        lake.publish_run_dataset(staging / "duplicates", DUPLICATES, run_id)
        lake.publish_run_dataset(staging / "suspicious", SUSPICIOUS_USERS, run_id)
        if fmt.side_table is not None:
            lake.publish_run_dataset(staging / "side_table", ORDER_LINES, run_id)

    return {
        "rows_accepted": sum(f[ACCEPTED] for f in per_file.values()),
        "rows_quarantined": sum(f[QUARANTINED] for f in per_file.values()),
        "duplicates_removed": sum(f[DUPLICATE] for f in per_file.values()),
        "quarantine_by_reason": {k: by_reason[k] for k in ALL_QUARANTINE_REASONS if k in by_reason},
        "suspicious_users": suspicious,
        "event_date_min": str(dates["lo"]) if dates and dates["lo"] else None,
        "event_date_max": str(dates["hi"]) if dates and dates["hi"] else None,
    }


def _rewrite(df: DataFrame, path: Path) -> None:
    """Write a small outcome (quarantine, duplicates) as one clean file with its own schema."""
    df.coalesce(1).write.mode("overwrite").parquet(str(path))
