"""The request ledger's compacted suppression document: an ingest reads it plus the submissions not
folded yet, never every ledger document, and no submission is ever lost from it."""

from __future__ import annotations

from pathlib import Path

from etl.erasure import key_digest
from services.core import erasure_ledger as ledger
from services.core.catalog import ERASURE_REQUESTS
from services.core.lake import Lake
from services.core.storage import LocalStore


def _digest(i: int) -> str:
    return key_digest(f"{i:064x}")


def test_ingest_reads_the_compacted_digests_not_the_whole_ledger(tmp_path: Path, monkeypatch) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    assert ledger.suppressed(lake) == frozenset()
    for n in range(5):
        ledger.record(lake, [_digest(n * 10 + j) for j in range(3)], "key")
    expected = {_digest(n * 10 + j) for n in range(5) for j in range(3)}
    read: list[str] = []
    original = Lake.read_json
    monkeypatch.setattr(Lake, "read_json", lambda self, key: read.append(key) or original(self, key))
    assert ledger.suppressed(lake) == expected
    assert read == [ledger.SUPPRESSED]  # one document, however long the ledger
    # the ledger stays the audit trail: every submission is still there, whole
    assert {r.key_digest for s in ledger.submissions(lake) for r in s.requests} == expected


def test_a_submission_missing_from_the_compacted_digests_is_still_suppressed_then_folded(tmp_path: Path) -> None:
    """Two submissions recorded at once: the compacted document may be written without one of them."""
    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    ledger.record(lake, [_digest(1)], "api")
    raced = ledger.Submission("20191101T000000Z-raced", [ledger.ErasureRequest(
        "raced-00000", _digest(2), "api", "2019-11-01T00:00:00+00:00", "2019-12-01T00:00:00+00:00")])
    ledger.save(lake, raced)  # written, but not folded (the other writer's document won)
    assert ledger.suppressed(lake) == {_digest(1), _digest(2)}
    assert _digest(2) not in lake.read_json(ledger.SUPPRESSED)["digests"]
    ledger.record(lake, [_digest(3)], "cli")
    doc = lake.read_json(ledger.SUPPRESSED)
    assert set(doc["digests"]) == {_digest(1), _digest(2), _digest(3)}
    assert len(doc["submissions"]) == len(lake.store.list(ERASURE_REQUESTS)) == 3
