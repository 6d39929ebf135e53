"""The lake layout and its commit protocol, the same on local disk and in a bucket.

```
<lake>/
  runs/<run_id>.json                     run summary; status "committed" is the commit point
  events/event_date=D/run_id=R/*.parquet  accepted events, pseudonymized
  quarantine/run_id=R/*.parquet           rejected rows with reason, file and line
  duplicates/run_id=R/*.parquet           exact duplicates removed (for audit)
  flags/suspicious_users/run_id=R/...     bot-like users, flagged not dropped
  <dataset>/<version>/...  + <dataset>/_current.json   versioned outputs (features, segments, models)
```

A run stages its output under ``_staging/<run_id>/`` in the store, moves it under run-scoped paths, and only then writes its summary.
Readers take rows only from runs whose summary says committed, so a crash at any point leaves nothing
half-visible; the next run re-ingests the files of the crashed one and :meth:`Lake.vacuum` removes the
orphans. The ledger of processed files is derived from committed summaries (content hash -> run).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from services.core.catalog import CURRENT_POINTER, KEY_FINGERPRINT, RUN_SCOPED, RUNS, STAGING, VERSIONED
from services.core.lease import WriterLease
from services.core.settings import DEMO_PSEUDONYM_KEY, ConfigError
from services.core.storage import Store


def key_fingerprint(key: bytes) -> str:
    """A one-way fingerprint of a pseudonymization key: an HMAC of a fixed text under the key, so the
    fingerprint says nothing about the key and cannot be used to pseudonymize."""
    return hmac.new(key, b"shoplens key fingerprint v1", hashlib.sha256).hexdigest()[:32]


def new_run_id() -> str:
    """Sortable and unique: ``20191001T000000Z-1a2b3c``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Lake:
    """A lake on a :class:`~services.core.storage.Store`, with a local work directory for the driver."""

    store: Store
    work_dir: Path
    #: How long a writer's lease lasts unless renewed, and how long a second writer waits for it.
    lease_seconds: float = 60.0
    lease_wait_seconds: float = 0.0
    #: Vacuum leaves uncommitted runs younger than this alone (a writer that took no lease may own them).
    vacuum_grace_seconds: float = 900.0

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir).resolve()

    # -- small JSON documents -------------------------------------------------------------------
    def read_json(self, key: str) -> Any:
        return json.loads(self.store.read_bytes(key))

    def write_json(self, key: str, obj: Any) -> None:
        self.store.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    # -- runs and the ledger ----------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """Every run summary, oldest first."""
        return [self.read_json(k) for k in self.store.list(RUNS) if k.endswith(".json")]

    def committed_run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.runs() if r.get("status") == "committed"]

    def committed_files(self, dataset: str, since: date | None = None) -> list[str]:
        """Store keys of a run-scoped dataset's Parquet files, from committed runs only; with ``since``,
        only the ``event_date`` partitions from that day on (files of no such partition are kept)."""
        committed = set(self.committed_run_ids())
        return sorted(k for k in self.store.list(dataset)
                      if k.endswith(".parquet") and "/run_id=" in k and _run_of(k) in committed
                      and (since is None or (day := _event_date(k)) is None or day >= since))  # fmt: skip

    def ledger(self) -> dict[str, dict[str, Any]]:
        """Content hash -> file record, for every file ingested by a committed run."""
        seen: dict[str, dict[str, Any]] = {}
        for run in self.runs():
            if run.get("status") != "committed":
                continue
            for f in run.get("files", []):
                if f.get("status") == "ingested":
                    seen.setdefault(f["sha256"], {**f, "run_id": run["run_id"]})
        return seen

    def write_run(self, summary: dict[str, Any]) -> None:
        """Write a run summary; with status "committed" this is the commit point of the run."""
        self.write_json(f"{RUNS}/{summary['run_id']}.json", summary)

    def writer_lease(self, purpose: str) -> WriterLease:
        """The lease every writer of run-scoped data holds (``with lake.writer_lease("ingest") as lease``)."""
        return WriterLease(self.store, purpose, self.lease_seconds, self.lease_wait_seconds)

    def bind_key(self, key: bytes) -> None:
        """Record the key's fingerprint on first write; refuse a key other than the one recorded.

        Why: user keys written under two keys cannot be joined, and nothing would say so. A lake from
        before fingerprints adopts the key of its next writer.
        """
        doc = {"fingerprint": key_fingerprint(key), "demo_key": key == DEMO_PSEUDONYM_KEY.encode()}
        try:
            recorded = self.read_json(KEY_FINGERPRINT)
        except FileNotFoundError:
            self.write_json(KEY_FINGERPRINT, {**doc, "recorded_at": utc_now_iso()})
            return
        if recorded["fingerprint"] != doc["fingerprint"]:
            which = "the public demo key" if recorded.get("demo_key") else f"key fingerprint {recorded['fingerprint']}"
            raise ConfigError(f"{self.store.uri} was written with another pseudonymization key ({which}); "
                              "use that key, or another lake")

    # -- staging and publishing --------------------------------------------------------------------
    def staging_dir(self, run_id: str) -> Path:
        path = self.work_dir / "staging" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish_run_dataset(self, staged: str | Path, dataset: str, run_id: str) -> int:
        """Move a staged output under the lake with ``run_id=R`` as its innermost partition.

        ``staged`` is a prefix in the store (where ingestion's tasks write) or a local directory (a
        Spark writer's output). ``staged/event_date=D/part-*.parquet`` becomes
        ``dataset/event_date=D/run_id=R/part-*``; an unpartitioned ``staged/part-*`` becomes
        ``dataset/run_id=R/part-*``. A rename on disk, a server-side copy on S3 for a store prefix.
        """
        if isinstance(staged, Path):
            files = [(p, p.parent.relative_to(staged).as_posix(), p.name) for p in sorted(staged.rglob("*.parquet"))]
        else:
            base = staged.rstrip("/") + "/"
            files = [(k, *k[len(base):].rpartition("/")[::2]) for k in self.store.list(staged) if k.endswith(".parquet")]
        for src, parent, name in files:
            parent = "" if parent == "." else parent
            prefix = f"{dataset}/{parent}/run_id={run_id}" if parent else f"{dataset}/run_id={run_id}"
            if isinstance(src, Path):
                self.store.put_file(src, f"{prefix}/{name}", move=True)
            else:
                self.store.move(src, self.store, f"{prefix}/{name}")
        return len(files)

    def vacuum(self, keep: set[str] | None = None) -> int:
        """Delete run-scoped and staged files of runs that never committed (crashed or killed mid-run)
        and began more than ``vacuum_grace_seconds`` ago (by their run id's time)."""
        committed = set(self.committed_run_ids()) | (keep or set())

        def gone(run: str) -> bool:
            return run not in committed and _run_age(run) > self.vacuum_grace_seconds

        removed = 0
        for dataset in RUN_SCOPED:
            orphans = {
                key.split("/run_id=", 1)[0] + "/run_id=" + key.split("/run_id=", 1)[1].split("/", 1)[0]
                for key in self.store.list(dataset)
                if "/run_id=" in key and gone(_run_of(key))
            }
            for prefix in sorted(orphans):
                removed += self.store.delete_prefix(prefix)
        for run in sorted({key.split("/", 2)[1] for key in self.store.list(STAGING)}):
            if gone(run):
                removed += self.store.delete_prefix(f"{STAGING}/{run}")
        local = self.work_dir / "staging"
        for run_dir in local.iterdir() if local.is_dir() else ():
            if gone(run_dir.name):
                shutil.rmtree(run_dir, ignore_errors=True)
        return removed

    # -- versioned datasets (features, segments, models, views) -----------------------------------
    def pointer(self, dataset: str) -> dict[str, Any] | None:
        """The ``_current.json`` document of a versioned dataset (version plus publish metadata)."""
        key = f"{dataset}/{CURRENT_POINTER}"
        try:
            return self.read_json(key)
        except FileNotFoundError:
            return None

    def current_version(self, dataset: str) -> str | None:
        ptr = self.pointer(dataset)
        return None if ptr is None else ptr["version"]

    def publish_version(self, local_dir: Path, dataset: str, version: str, **meta: Any) -> None:
        """Upload ``local_dir`` as ``dataset/version`` and then point ``_current.json`` at it."""
        self.store.put_dir(Path(local_dir), f"{dataset}/{version}")
        self.write_json(
            f"{dataset}/{CURRENT_POINTER}", {"version": version, "published_at": utc_now_iso(), **meta}
        )

    # -- a local copy for the driver's own readers ----------------------------------------------------
    def local_mirror(self, dataset: str) -> str | None:
        """A local directory holding ``dataset`` for pyarrow on this host, or None if it has no files.

        On local disk this is the lake directory itself. On S3 the files are mirrored into
        ``work_dir/cache`` (run-scoped and versioned files never change, so the mirror only grows): the
        API's and the dashboard's one-row lookups read row groups of local files. Spark never gets
        this path: its tasks read the store themselves (services.core.spark.read_parquet), so the
        executors need no directory shared with the driver.
        """
        local = self.store.local_path(dataset)
        if local is not None:
            return str(local) if local.exists() and any(local.rglob("*.parquet")) else None
        cache = self.work_dir / "cache" / dataset
        if self.store.get_dir(dataset, cache) == 0:
            return None
        return str(cache)

    def prune_cache(self, keep: frozenset[str] = frozenset()) -> int:
        """Drop mirrored versions that are no longer current (nor in ``keep``); returns the directories removed.

        Why: a long-running watcher publishes new feature, segment and view versions on every file,
        and without this the S3 mirror under ``work_dir/cache`` would grow by a copy of each; the API
        and the dashboard mirror each version they read. An old version read again later is simply
        mirrored again. ``keep``: versions a reader may still be reading (the one it just replaced).
        """
        removed = 0
        for dataset in VERSIONED:
            cached = self.work_dir / "cache" / dataset
            if not cached.is_dir():
                continue
            current = self.current_version(dataset)
            for version_dir in cached.iterdir():
                if version_dir.is_dir() and version_dir.name != current and version_dir.name not in keep:
                    shutil.rmtree(version_dir, ignore_errors=True)
                    removed += 1
        return removed


#: Columns of :func:`runs_table`, what the overview shows of each run.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "started_at", "duration_seconds", "rows_read", "rows_accepted", "rows_quarantined",
    "duplicates_removed", "files", "file_names",
)  # fmt: skip


def runs_table(runs: list[dict[str, Any]], keep: int = 50) -> pd.DataFrame:
    """The last ``keep`` run summaries, newest first; ``files`` = files in the run, ``file_names`` theirs."""
    rows = [
        {
            "run_id": r.get("run_id"),
            "status": r.get("status"),
            "started_at": pd.to_datetime(r.get("started_at"), utc=True),
            "duration_seconds": float(r.get("duration_seconds") or 0.0),
            "rows_read": int(r.get("rows_read") or 0),
            "rows_accepted": int(r.get("rows_accepted") or 0),
            "rows_quarantined": int(r.get("rows_quarantined") or 0),
            "duplicates_removed": int(r.get("duplicates_removed") or 0),
            "files": len(r.get("files") or []),
            "file_names": ", ".join(f"{f.get('name')} ({f.get('status')})" for f in r.get("files") or []),
        }
        for r in sorted(runs, key=lambda r: r.get("run_id") or "", reverse=True)[:keep]
    ]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def _event_date(key: str) -> date | None:
    """The day of a key's ``event_date=YYYY-MM-DD`` partition, None without one."""
    _, found, rest = key.partition("event_date=")
    return date.fromisoformat(rest[:10]) if found else None


def _run_age(run_id: str) -> float:
    """Seconds since a run began, from its id (``new_run_id``); an id of another shape counts as old."""
    try:
        began = datetime.strptime(run_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return float("inf")
    return (datetime.now(UTC) - began).total_seconds()


def _run_of(key: str) -> str:
    return key.split("/run_id=", 1)[1].split("/", 1)[0]
