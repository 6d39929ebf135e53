"""The drop-a-file trigger: each new event file in the incoming location is ingested exactly once, then
every pipeline stage that is due (``services.jobs.stages.STAGES``) runs, in order.

Why listing and not notifications: bucket notifications are a MinIO extension (SeaweedFS and plain S3
lack them) and are lost while the watcher is down. Listing the incoming location every few seconds and
asking the lake's content-hash ledger is correct on every store and across restarts.

Why a settle check: on local disk a file being copied is visible half-written, and on S3 a client may
replace an object it just wrote. A file is taken only when two listings ``settle_seconds`` apart saw
the same size and modification time, or, on first sight, when its modification time is already
``settle_seconds`` old: a file a restarted watcher finds again (or one dropped while it was down) is not
still being written, and waiting for a second listing made every restart pay a whole pass first.

Why exactly once holds: the ledger (hashes of committed runs) decides, not the file name. A file is
archived under ``_processed/<run_id>/`` only after its run committed; a crash in between leaves it in
place, and the next pass finds its hash in the ledger and only archives it. A file the contract
rejects (bad header, corrupt gzip, a line or a decompressed size over the limits) is moved to the
quarantine location with ``<name>.error.json`` beside it, whose ``reason_code`` names why; so is a file
whose name holds a control character (``unsafe_name``). Either way the next file is not blocked.

Why attempts are counted in the store, before each attempt: a file that kills the watcher (out of
memory, say) would otherwise be retried by every restart, forever, with a count that dies with the
process. The count lives in ``_attempts/<digest of the key>.json`` beside the file; after
``max_attempts`` the file is set aside (``too_many_attempts``). An error of our own (``OSError``: a
full disk, a store that is down) or a wrong key (``ConfigError``) is not the file's fault: it is not
counted, the pass fails and the file is retried.

Keys whose name or folder starts with ``_`` or ``.`` are not input (the Hadoop convention): that is
where the archive lives, and where upload tools keep their partial files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pyspark.sql import SparkSession

from services.core.bounded_read import IngestLimits
from services.core.lake import Lake, utc_now_iso
from services.core.lease import LeaseHeld
from services.core.metrics import mark_alive, record_ingest, record_stage
from services.core.settings import ConfigError
from services.core.storage import ObjectInfo, StorageError, Store
from services.jobs.erasure import REQUEST_PREFIX, take_request_file
from services.jobs.ingest import ingest_files
from services.jobs.segmentation import TrainConfig
from services.jobs.stages import PipelineConfig, pending, run_pipeline

log = logging.getLogger("shoplens.watcher")

ARCHIVE_PREFIX = "_processed"
ATTEMPTS_PREFIX = "_attempts"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class WatchConfig:
    """How the watcher polls and when it retrains (``shoplens watch --help`` documents each)."""

    poll_seconds: float = 5.0
    settle_seconds: float = 5.0
    max_attempts: int = 3
    refresh_backoff_seconds: float = 300.0
    retrain_new_runs: int = 1
    retrain_age_days: float = 7.0
    limits: IngestLimits = field(default_factory=IngestLimits)


@dataclass
class TickResult:
    """What one pass did: per-file outcomes and the refresh summary (None if nothing was due)."""

    files: list[dict[str, Any]] = field(default_factory=list)
    refresh: dict[str, Any] | None = None


def is_input_key(key: str) -> bool:
    """False for the archive, quarantine reports and temporary upload files (``_x``/``.x`` anywhere), and
    for keys with an empty, ``.`` or ``..`` part."""
    # split as written, not as PurePosixPath normalizes it: "a/./b" and "a//b" are not keys a store takes
    return not any(not part or part.startswith(("_", ".")) for part in key.split("/"))


class Watcher:
    """Polls ``incoming``; ingests into ``lake``; moves rejected files to ``quarantine``."""

    def __init__(
        self,
        lake: Lake,
        incoming: Store,
        quarantine: Store,
        spark: Callable[[], SparkSession],
        key: bytes,
        cfg: WatchConfig | None = None,
        *,
        train_cfg: TrainConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.lake, self.incoming, self.quarantine = lake, incoming, quarantine
        self.spark, self.key = spark, key
        self.cfg = cfg or WatchConfig()
        self.train_cfg = train_cfg
        self.clock, self.wall_clock = clock, wall_clock
        self._seen: dict[str, tuple[int, float, float]] = {}  # key -> (size, modified, first seen)
        self._refresh_failed: tuple[frozenset[str], float] | None = None  # (committed runs, at)

    # -- which files are ready ---------------------------------------------------------------------
    def ready(self) -> list[ObjectInfo]:
        """Input files whose size and modification time held still for ``settle_seconds``."""
        now, wall = self.clock(), self.wall_clock()
        listing = [i for i in self.incoming.list_info("") if is_input_key(i.key)]
        seen: dict[str, tuple[int, float, float]] = {}
        ready = []
        for info in listing:
            previous = self._seen.get(info.key)
            if previous is not None and previous[:2] == (info.size, info.modified):
                seen[info.key] = previous
                if now - previous[2] >= self.cfg.settle_seconds:
                    ready.append(info)
            elif previous is None and wall - info.modified >= self.cfg.settle_seconds:
                seen[info.key] = (info.size, info.modified, now - self.cfg.settle_seconds)
                ready.append(info)
            else:
                seen[info.key] = (info.size, info.modified, now)
        self._seen = seen
        return ready

    # -- one file ----------------------------------------------------------------------------------
    def _attempts_key(self, info: ObjectInfo) -> str:
        return f"{ATTEMPTS_PREFIX}/{hashlib.sha256(info.key.encode()).hexdigest()[:32]}.json"

    def attempts(self, info: ObjectInfo) -> tuple[int, str | None]:
        """(attempts so far, last error) of this version of the file (a replaced file starts again)."""
        try:
            doc = json.loads(self.incoming.read_bytes(self._attempts_key(info)))
        except FileNotFoundError:
            return 0, None
        same = (doc.get("size"), doc.get("modified")) == (info.size, info.modified)
        return (int(doc["attempts"]), doc.get("error")) if same else (0, None)

    def _set_attempts(self, info: ObjectInfo, attempts: int, error: str | None) -> None:
        doc = {"key": info.key, "size": info.size, "modified": info.modified, "attempts": attempts,
               "error": error, "at": utc_now_iso()}  # fmt: skip
        self.incoming.write_bytes(self._attempts_key(info), json.dumps(doc).encode())

    def _clear_attempts(self, info: ObjectInfo) -> None:
        self.incoming.delete_prefix(self._attempts_key(info))

    def handle(self, info: ObjectInfo) -> dict[str, Any]:
        """Ingest one settled file as its own run, then archive it or move it aside."""
        ctx = {"stage": "watch", "file": info.key}
        if _CONTROL.search(info.key):
            return self._set_aside(info, "unsafe_name", "the file name holds a control character")
        if info.key.startswith(REQUEST_PREFIX):  # erasure requests (raw ids): recorded, then deleted
            return take_request_file(self.lake, self.incoming, info.key, self.key)
        attempts, last_error = self.attempts(info)
        if attempts >= self.cfg.max_attempts:
            return self._set_aside(info, "too_many_attempts", f"processing failed {attempts} times: {last_error}")
        self._set_attempts(info, attempts + 1, last_error)  # before the attempt: a crash that kills us counts
        local_dir = self.lake.work_dir / "incoming"  # outside staging/, which every ingest vacuums
        local_dir.mkdir(parents=True, exist_ok=True)
        local = local_dir / PurePosixPath(info.key).name
        try:
            self.incoming.get_file(info.key, local)
            summary = ingest_files(self.spark, self.lake, [local], self.key, limits=self.cfg.limits)
        except FileNotFoundError:
            log.info("file %s disappeared before it was read", info.key, extra=ctx)
            self._clear_attempts(info)
            return {"key": info.key, "status": "gone"}
        except (OSError, StorageError, ConfigError) as err:  # ours (a full disk, the store, a wrong key)
            self._set_attempts(info, attempts, last_error)  # not counted against the file
            code = ("config_error" if isinstance(err, ConfigError)
                    else "lake_busy" if isinstance(err, LeaseHeld) else "io_error")  # fmt: skip
            log.exception("file %s: %s, will retry: %s", info.key, code, err, extra={**ctx, "reason_code": code})
            return {"key": info.key, "status": "retry", "reason_code": code, "reason": str(err), "error": True}
        except Exception as err:  # a crash is retried; a file that keeps crashing is set aside
            error = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
            self._set_attempts(info, attempts + 1, error)
            log.exception("file %s: attempt %d/%d failed: %s", info.key, attempts + 1, self.cfg.max_attempts, error,
                          extra={**ctx, "attempt": attempts + 1})  # fmt: skip
            if attempts + 1 < self.cfg.max_attempts:
                return {"key": info.key, "status": "retry", "reason": error, "error": True}
            return {**self._set_aside(info, "too_many_attempts", f"processing failed {attempts + 1} times: {error}"),
                    "error": True}  # fmt: skip
        finally:
            local.unlink(missing_ok=True)
        self._clear_attempts(info)
        record_ingest(summary)
        result = summary["files"][0]
        outcome = {"key": info.key, "status": result["status"], "reason": result["reason"],
                   "reason_code": result["reason_code"], "run_id": summary["run_id"],
                   "rows_read": summary["rows_read"], "rows_accepted": summary["rows_accepted"],
                   "rows_quarantined": summary["rows_quarantined"],
                   "duplicates_removed": summary["duplicates_removed"]}  # fmt: skip
        if result["status"] == "failed":
            self._move_aside(info, result["reason"], result["reason_code"], summary["run_id"], result["sha256"])
            outcome["moved_to"] = self.quarantine.uri
        else:
            archived = f"{ARCHIVE_PREFIX}/{summary['run_id']}/{info.key}"
            self.incoming.move(info.key, self.incoming, archived)
            outcome["archived_as"] = archived
        log.info("file %s: %s", info.key, result["status"], extra={**ctx, **outcome})
        return outcome

    def _set_aside(self, info: ObjectInfo, code: str, reason: str) -> dict[str, Any]:
        """Move a file aside without a run (an unsafe name, too many attempts)."""
        self._move_aside(info, reason, code, run_id=None, sha256=None)
        self._clear_attempts(info)
        return {"key": info.key, "status": "failed", "reason_code": code, "reason": reason,
                "moved_to": self.quarantine.uri}  # fmt: skip

    def _move_aside(self, info: ObjectInfo, reason: str, code: str | None, run_id: str | None,
                    sha256: str | None) -> None:  # fmt: skip
        report = {"file": info.key, "size_bytes": info.size, "sha256": sha256, "run_id": run_id,
                  "reason_code": code, "reason": reason, "failed_at": utc_now_iso()}  # fmt: skip
        # The report first: if the move is interrupted the file is retried, never lost without a reason.
        self.quarantine.write_bytes(f"{info.key}.error.json", json.dumps(report, indent=2).encode())
        self.incoming.move(info.key, self.quarantine, info.key)
        log.warning("file %s moved aside: %s", info.key, reason, extra={"stage": "watch", **report})

    # -- downstream --------------------------------------------------------------------------------
    @property
    def pipeline(self) -> PipelineConfig:
        return PipelineConfig(self.cfg.retrain_new_runs, self.cfg.retrain_age_days, self.train_cfg)

    def refresh(self, force: bool = False) -> dict[str, Any] | None:
        """Run every due pipeline stage; None when nothing is due.

        After a failure the same lake state is retried only after ``refresh_backoff_seconds`` (unless
        ``force``), so a model that cannot be trained yet (say, too few users) does not spin Spark
        every poll.
        """
        committed = self.lake.committed_run_ids()
        if not committed:
            return None
        state = frozenset(committed)
        if not force and self._refresh_failed is not None:
            failed_state, failed_at = self._refresh_failed
            if state == failed_state and self.clock() - failed_at < self.cfg.refresh_backoff_seconds:
                return None
        if not pending(self.lake, self.pipeline):
            return None
        try:
            out = self._refresh()
        except Exception:
            self._refresh_failed = (state, self.clock())
            raise
        self._refresh_failed = None
        return out

    def _refresh(self) -> dict[str, Any]:
        out = run_pipeline(self.spark, self.lake, self.pipeline)
        out["retrained"] = "train" in out["ran"]
        self.lake.prune_cache()
        return out

    # -- the loop ----------------------------------------------------------------------------------
    def tick(self) -> TickResult:
        """One pass: ingest every settled file (one run each), then refresh once for all of them.

        The pass counts as failed when the watcher could not do its job (a crash, a failed refresh);
        a file the contract rejects is a data problem, counted in the files metric, not a failure here.
        """
        result = TickResult()
        started = time.monotonic()
        ok = True
        for info in self.ready():
            outcome = self.handle(info)
            result.files.append(outcome)
            ok = ok and not outcome.get("error")
        try:
            result.refresh = self.refresh()
        except Exception as err:  # logged and retried next pass; the lake is unchanged (atomic publishes)
            ok = False
            log.exception("refresh failed: %s", err, extra={"stage": "watch"})
        if not ok or result.files or result.refresh:
            record_stage("watch", time.monotonic() - started, success=ok)
        else:
            mark_alive("watch")  # the staleness alert sees a live watcher even when no files arrive
        return result

    def run(self, stop: threading.Event | None = None, iterations: int | None = None) -> None:
        """Poll until ``stop`` is set (or ``iterations`` passes); a failing pass never ends the loop."""
        stop = stop or threading.Event()
        log.info("watching %s every %.0fs", self.incoming.uri, self.cfg.poll_seconds,
                 extra={"stage": "watch", "incoming": self.incoming.uri, "lake": self.lake.store.uri})  # fmt: skip
        done = 0
        while not stop.is_set() and (iterations is None or done < iterations):
            try:
                self.tick()
            except Exception as err:  # e.g. the store is unreachable: say so, keep polling
                log.exception("watch pass failed: %s", err, extra={"stage": "watch"})
                record_stage("watch", 0.0, success=False)
            done += 1
            if iterations is None or done < iterations:
                stop.wait(self.cfg.poll_seconds)


__all__ = ["ARCHIVE_PREFIX", "ATTEMPTS_PREFIX", "TickResult", "WatchConfig", "Watcher", "is_input_key"]
