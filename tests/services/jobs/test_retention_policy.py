"""The retention policy: versions kept per dataset (the current one always), events partitions past
N days, raw files past N days by modification time; --dry-run deletes nothing; the ledger stays."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from services.core import erasure_ledger
from services.core.catalog import EVENTS, FEATURES
from services.core.lake import Lake
from services.core.storage import LocalStore
from services.jobs.erasure import RAW_PROCESSED, RawLocation, Targets
from services.jobs.retention_policy import Policy, apply_retention, retention_policy_due

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _lake(tmp_path: Path) -> tuple[Lake, Targets, Path]:
    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    for v in ("v1", "v2", "v3", "v4", "v5"):
        lake.store.write_bytes(f"{FEATURES}/{v}/part-0.parquet", b"x")
    lake.write_json(f"{FEATURES}/_current.json", {"version": "v2"})  # rolled back: not the newest
    for day in ("2026-10-01", "2026-11-30", "2026-12-06"):
        lake.store.write_bytes(f"{EVENTS}/event_date={day}/run_id=r1/part-0.parquet", b"x")
    erasure_ledger.record(lake, ["a" * 64], "key", now=NOW.replace(year=2020))
    incoming = tmp_path / "incoming"
    for name, age_days in (("old.csv", 40), ("new.csv", 2)):
        path = incoming / "_processed" / "r1" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        t = time.time() - age_days * 86400
        os.utime(path, (t, t))
    return lake, Targets((RawLocation(RAW_PROCESSED, LocalStore(incoming), "_processed"),)), incoming


def test_dry_run_says_what_would_go_and_deletes_nothing(tmp_path: Path) -> None:
    lake, targets, _ = _lake(tmp_path)
    before = sorted(lake.store.list(""))
    out = apply_retention(lake, Policy(versions=3, event_days=30), targets, dry_run=True, now=NOW)
    assert out["would_delete"] == {
        FEATURES: [f"{FEATURES}/v1"],  # v5, v4, v3 are the newest three; v2 is current
        EVENTS: [f"{EVENTS}/event_date=2026-10-01"],
        RAW_PROCESSED: ["_processed/r1/old.csv"],
    }
    assert sorted(lake.store.list("")) == before


def test_retention_deletes_past_the_policy_and_keeps_current_and_ledger(tmp_path: Path) -> None:
    lake, targets, incoming = _lake(tmp_path)
    assert retention_policy_due(lake, Policy(versions=3), targets)[0]
    apply_retention(lake, Policy(versions=3, event_days=30), targets, now=NOW)
    versions = {k.split("/")[1] for k in lake.store.list(FEATURES) if not k.endswith("_current.json")}
    assert versions == {"v2", "v3", "v4", "v5"} and lake.current_version(FEATURES) == "v2"
    assert {k.split("/")[1] for k in lake.store.list(EVENTS)} == {"event_date=2026-11-30", "event_date=2026-12-06"}
    assert sorted(p.name for p in incoming.rglob("*.csv")) == ["new.csv"]
    assert len(erasure_ledger.submissions(lake)) == 1  # the audit trail is never deleted
    assert retention_policy_due(lake, Policy(versions=3), targets) == (False, "nothing past the retention policy")
    apply_retention(lake, Policy(versions=1), targets, now=NOW)
    assert {k.split("/")[1] for k in lake.store.list(FEATURES) if not k.endswith("_current.json")} == {"v2", "v5"}
