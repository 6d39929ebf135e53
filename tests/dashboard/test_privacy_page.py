"""AppTest of the Privacy page on a lake with an erasure ledger: counts by state, overdue requests,
the last verification, and no raw id or key anywhere on the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from etl.erasure import key_digest
from etl.pseudonymize import pseudonymize
from services.core import erasure_ledger
from services.core.lake import Lake
from services.core.storage import LocalStore
from tests.conftest import TEST_KEY
from tests.dashboard.fixtures import open_page
from tests.dashboard.test_pages import metric


def test_privacy_page_counts_requests_by_state_and_shows_no_ids(use_lake, tmp_path: Path) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    keys = [pseudonymize(u, TEST_KEY.encode()) for u in ("512000001", "512000002", "512000003")]
    old = erasure_ledger.record(lake, [key_digest(keys[0])], "user_id", now=datetime.now(UTC) - timedelta(days=40))
    erasure_ledger.record(lake, [key_digest(keys[1])], "api")
    done = erasure_ledger.record(lake, [key_digest(keys[2])], "key")
    done.requests[0].state = "completed"
    done.requests[0].completed_at = done.requests[0].requested_at
    done.requests[0].verified_at = "2026-12-01T10:00:00+00:00"
    erasure_ledger.save(lake, done)
    lake.write_run({"run_id": "r1", "status": "committed", "files": []})
    use_lake(str(tmp_path / "lake"))
    at = open_page("privacy")
    assert metric(at, "Completed") == "1" and metric(at, "Pending") == "2"
    assert metric(at, "Past their deadline") == "1"  # the request made 40 days ago
    table = at.dataframe[0].value
    assert len(table) == 3 and set(table["person"]) == {key_digest(k)[:12] for k in keys}
    assert old.requests[0].request_id in set(table["request_id"])
    text = " ".join(str(e.value) for e in at.caption) + table.to_string()
    assert "01 Dec 2026 10:00 UTC" in text
    for raw, k in zip(("512000001", "512000002", "512000003"), keys, strict=True):
        assert raw not in text and k not in text and key_digest(k) not in text
