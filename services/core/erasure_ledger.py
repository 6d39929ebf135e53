"""The erasure request ledger: who asked to be forgotten, by when it is due, and what was removed where.

One JSON document per submission (a ``shoplens erase`` call, an API request, a dropped file) under
``erasure/requests/<submission_id>.json``, each written whole by one atomic write, so a crash leaves
the previous state of the document. A request holds the one-way digest of the person's user key
(:func:`etl.erasure.key_digest`), never the key or the raw id: suppression and verification hash the
keys they meet and compare digests. The ledger is the audit trail and is kept (retention does not
apply to it).

What every ingest needs from it is only the set of digests to drop, so :func:`record` also folds each
new submission into one compacted document, ``erasure/_suppressed.json`` (the digests, and the ids of
the submissions folded in): an ingest reads that document plus any submission not folded yet, never
the whole ledger. Two submissions recorded at once may each write the document without the other's;
the one left out is simply read as not folded, and folded by the next :func:`record`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.core.catalog import ERASURE_REQUESTS
from services.core.lake import Lake, new_run_id

#: The compacted digests of every submission folded so far (what ingestion suppresses).
SUPPRESSED = "erasure/_suppressed.json"
#: GDPR Art. 12(3): an answer is due within one month of the request.
DEADLINE_DAYS = 30
PENDING, COMPLETED = "pending", "completed"


@dataclass
class ErasureRequest:
    """One person to erase; ``stores`` maps a store (a dataset path, ``raw/processed``, ``warehouse``...)
    to its state and the rows (or lines) removed there."""

    request_id: str
    key_digest: str
    source: str  # user_id | key | file | api | folder
    requested_at: str
    deadline: str
    state: str = PENDING
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    completed_at: str | None = None
    verified_at: str | None = None
    found_at_verification: list[str] = field(default_factory=list)

    @property
    def short(self) -> str:
        """The digest shortened for display (enough to tell requests apart, never the key)."""
        return self.key_digest[:12]


@dataclass
class Submission:
    """One ledger document: the requests that arrived together."""

    submission_id: str
    requests: list[ErasureRequest]

    @property
    def key(self) -> str:
        return f"{ERASURE_REQUESTS}/{self.submission_id}.json"


def record(lake: Lake, digests: list[str], source: str, now: datetime | None = None) -> Submission:
    """Write a new submission of pending requests, one per distinct digest; returns it."""
    now = now or datetime.now(UTC)
    requested = now.isoformat(timespec="seconds")
    deadline = (now + timedelta(days=DEADLINE_DAYS)).isoformat(timespec="seconds")
    sub_id = new_run_id()
    unique = list(dict.fromkeys(digests))
    sub = Submission(sub_id, [ErasureRequest(f"{sub_id}-{i:05d}", d, source, requested, deadline)
                              for i, d in enumerate(unique)])  # fmt: skip
    save(lake, sub)
    _fold(lake)
    return sub


def save(lake: Lake, sub: Submission) -> None:
    lake.write_json(sub.key, {"submission_id": sub.submission_id, "requests": [asdict(r) for r in sub.requests]})


def submissions(lake: Lake) -> list[Submission]:
    """Every submission, oldest first."""
    out = []
    for key in lake.store.list(ERASURE_REQUESTS):
        if key.endswith(".json"):
            doc = lake.read_json(key)
            out.append(Submission(doc["submission_id"], [ErasureRequest(**r) for r in doc["requests"]]))
    return sorted(out, key=lambda s: s.submission_id)


def _submission_id(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".json")


def _suppression(lake: Lake) -> tuple[set[str], set[str], list[str]]:
    """(digests, submissions folded, ledger documents not folded yet): one listing, one read of the
    compacted document, and a read of each submission not folded in it."""
    doc = lake.read_json(SUPPRESSED) if lake.store.exists(SUPPRESSED) else {"digests": [], "submissions": []}
    digests, folded = set(doc["digests"]), set(doc["submissions"])
    new = [k for k in lake.store.list(ERASURE_REQUESTS) if k.endswith(".json") and _submission_id(k) not in folded]
    for key in new:
        digests.update(r["key_digest"] for r in lake.read_json(key)["requests"])
    return digests, folded, new


def _fold(lake: Lake) -> None:
    """Fold the submissions not in the compacted document into it (one atomic write)."""
    digests, folded, new = _suppression(lake)
    if new:
        lake.write_json(SUPPRESSED, {"digests": sorted(digests),
                                     "submissions": sorted(folded | {_submission_id(k) for k in new})})  # fmt: skip


def suppressed(lake: Lake) -> frozenset[str]:
    """The digests of every person who asked to be erased (pending or done): what ingestion drops."""
    return frozenset(_suppression(lake)[0])


def oldest_pending_age(lake: Lake, now: datetime | None = None) -> timedelta | None:
    """How long the oldest pending request has waited, None when nothing is pending."""
    pending = [r.requested_at for s in submissions(lake) for r in s.requests if r.state == PENDING]
    if not pending:
        return None
    return (now or datetime.now(UTC)) - datetime.fromisoformat(min(pending))


def period_counts(lake: Lake, since: str | None) -> dict[str, Any]:
    """Requests completed since ``since`` (ISO time; None: ever) and pending now: what a report states."""
    reqs = [r for s in submissions(lake) for r in s.requests]
    done = [r for r in reqs if r.completed_at and (since is None or r.completed_at >= since)]
    return {"since": since, "completed": len(done), "pending": sum(r.state == PENDING for r in reqs)}


def status_rows(lake: Lake) -> list[dict[str, Any]]:
    """One row per request for ``shoplens erase --status`` and the Privacy page (digest shortened)."""
    rows = []
    for s in submissions(lake):
        for r in s.requests:
            took = None
            if r.completed_at:
                took = (datetime.fromisoformat(r.completed_at) - datetime.fromisoformat(r.requested_at)).total_seconds()
            rows.append({
                "request_id": r.request_id, "person": r.short, "source": r.source, "state": r.state,
                "requested_at": r.requested_at, "deadline": r.deadline, "completed_at": r.completed_at,
                "seconds_to_complete": took, "verified_at": r.verified_at,
                "found_at_verification": r.found_at_verification,
                "rows_removed": sum(int(v.get("rows_removed", 0)) for v in r.stores.values()),
                "stores": r.stores,
            })  # fmt: skip
    return rows


__all__ = [
    "COMPLETED",
    "DEADLINE_DAYS",
    "PENDING",
    "SUPPRESSED",
    "ErasureRequest",
    "Submission",
    "oldest_pending_age",
    "period_counts",
    "record",
    "save",
    "status_rows",
    "suppressed",
]
