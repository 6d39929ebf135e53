"""What an ingestion run reports: per-file results, phase timings, and the counts that must reconcile.

Shared by the REES46 path (services/jobs/ingest.py) and the order-export path (ingest_orders.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etl.contract import ALL_QUARANTINE_REASONS
from etl.ingest import ACCEPTED, DUPLICATE, ERASED, QUARANTINED
from services.core.timings import Timings
from services.jobs.ingest_tasks import Chunk, LocalChunk


def stage_chunks(store: Any, prefix: str, local_chunks: list[LocalChunk], timings: Timings) -> list[Chunk]:
    """The run's chunks moved from the driver's disk into the store under ``prefix``, where the tasks read them."""
    chunks = [Chunk(f"{prefix}/chunks/{c.path.name}", c.source_file, c.first_line, i)
              for i, c in enumerate(local_chunks)]  # fmt: skip
    with timings.phase("stage_chunks"):
        for local, chunk in zip(local_chunks, chunks, strict=True):
            store.put_file(local.path, chunk.key, move=True)
    return chunks


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
    reason_code: str | None = None  # a failed file: one of etl.contract.FILE_REJECTIONS
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    duplicates_removed: int = 0
    rows_erased: int = 0  # lines of people who asked to be erased, dropped (etl.erasure)
    previous_run_id: str | None = None


def reconciled(counts: dict[tuple[str, str, str | None], int], results: list[FileResult], suspicious: int,
                dates: Any) -> dict[str, Any]:  # fmt: skip
    """Fill each ingested file's counts from ``(file, outcome, reason) -> lines``; raise unless they add up."""
    by_reason: dict[str, int] = {}
    per_file: dict[str, dict[str, int]] = {}
    for (source, kind, reason), n in counts.items():
        f = per_file.setdefault(source, {ACCEPTED: 0, QUARANTINED: 0, DUPLICATE: 0, ERASED: 0})
        f[kind] += n
        if kind == QUARANTINED and reason is not None:
            by_reason[reason] = by_reason.get(reason, 0) + n
    for r in results:
        if r.status == "ingested":
            c = per_file.get(r.name, {ACCEPTED: 0, QUARANTINED: 0, DUPLICATE: 0, ERASED: 0})
            r.rows_accepted, r.rows_quarantined = c[ACCEPTED], c[QUARANTINED]
            r.duplicates_removed, r.rows_erased = c[DUPLICATE], c[ERASED]
            if r.rows_read != r.rows_accepted + r.rows_quarantined + r.duplicates_removed + r.rows_erased:
                raise ReconciliationError(
                    f"{r.name}: {r.rows_read} lines read but {r.rows_accepted} accepted + "
                    f"{r.rows_quarantined} quarantined + {r.duplicates_removed} duplicates + {r.rows_erased} erased"
                )
    return {
        "rows_accepted": sum(f[ACCEPTED] for f in per_file.values()),
        "rows_quarantined": sum(f[QUARANTINED] for f in per_file.values()),
        "duplicates_removed": sum(f[DUPLICATE] for f in per_file.values()),
        ERASED: sum(f[ERASED] for f in per_file.values()),
        "quarantine_by_reason": {k: by_reason[k] for k in ALL_QUARANTINE_REASONS if k in by_reason},
        "suspicious_users": suspicious,
        "event_date_min": str(dates["lo"]) if dates and dates["lo"] else None,
        "event_date_max": str(dates["hi"]) if dates and dates["hi"] else None,
    }
