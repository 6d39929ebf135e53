"""Prometheus metrics of the pipeline: one dedicated registry, bounded labels, push or serve.

Why a process either pushes or serves, never both: a long-running service (the watcher) exposes
``/metrics`` and Prometheus scrapes it; a one-shot CLI run pushes to the Pushgateway. If one process
did both, every counter would reach Prometheus twice and dashboards would double-count, so once
:func:`start_metrics_server` has run, :func:`push_run_metrics` is a no-op.

Why only touched families are pushed: an unlabelled gauge exports 0 until it is set, so pushing the
whole registry from an ingest run would report a silhouette of 0. A push (HTTP PUT) replaces the job's
group on the Pushgateway with exactly the families this process has recorded.

Label values are bounded: quarantine reasons come from the data contract, file and run statuses from
small fixed sets, stages from :data:`STAGE_LABELS`; anything else is reported as ``other``. The
``job``/``instance`` labels belong to Prometheus, so "per job" metrics use the ``stage`` label.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, start_http_server
from prometheus_client.metrics_core import Metric

from etl.contract import ALL_QUARANTINE_REASONS as QUARANTINE_REASONS

log = logging.getLogger("shoplens.metrics")

#: Values of the ``stage`` label (bounded; the same names are used in logs): ingestion, every stage of
#: ``services.jobs.stages.STAGES`` (a test keeps them in step), and the long-running services.
STAGE_LABELS = (
    "ingest", "features", "train", "score", "overview", "describe", "publish", "watch", "pipeline", "abtest",
    "propensity_train", "propensity_score", "mmm", "funnel", "clv", "retention", "compare_models", "dossier",
    "erasure", "retention_policy", "erasure_index",
)
FILE_STATUSES = ("ingested", "skipped", "failed", "quarantined")
RUN_STATUSES = ("success", "failed")
OTHER = "other"
#: Port long-running services serve /metrics on (docker-compose.yml scrapes and health-checks it).
DEFAULT_METRICS_PORT = 9108

#: Buckets from a second to two hours: a stage on a laptop takes seconds to tens of minutes.
DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600, 7200, float("inf"))

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_READ = Counter("shoplens_events_read_total", "Raw event rows read from input files", registry=REGISTRY)
EVENTS_ACCEPTED = Counter(
    "shoplens_events_accepted_total", "Event rows accepted into the lake", registry=REGISTRY
)
EVENTS_QUARANTINED = Counter(
    "shoplens_events_quarantined_total",
    "Event rows quarantined, by contract reason",
    ["reason"],
    registry=REGISTRY,
)
DUPLICATES_REMOVED = Counter(
    "shoplens_duplicates_removed_total", "Exact duplicate event rows dropped", registry=REGISTRY
)
FILES_PROCESSED = Counter(
    "shoplens_files_processed_total", "Input files handled, by outcome", ["status"], registry=REGISTRY
)
RUNS = Counter("shoplens_runs_total", "Stage runs, by outcome", ["stage", "status"], registry=REGISTRY)
STAGE_DURATION = Histogram(
    "shoplens_stage_duration_seconds",
    "Wall-clock duration of a pipeline stage",
    ["stage"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "shoplens_last_success_timestamp_seconds",
    "Unix time a stage last finished successfully",
    ["stage"],
    registry=REGISTRY,
)
LAKE_LATEST_EVENT = Gauge(
    "shoplens_lake_latest_event_timestamp_seconds",
    "Unix time of the newest event in the lake (freshness = time() - this)",
    registry=REGISTRY,
)
SEGMENT_USERS = Gauge(
    "shoplens_segment_users", "Users currently assigned to each segment", ["segment"], registry=REGISTRY
)
MODEL_SILHOUETTE = Gauge(
    "shoplens_model_silhouette", "Silhouette score of the current segmentation model", registry=REGISTRY
)
MODEL_INFO = Gauge(
    "shoplens_model_info",
    "Current segmentation model (value 1, version in the label)",
    ["version"],
    registry=REGISTRY,
)
MODEL_TRAINED = Gauge(
    "shoplens_model_trained_timestamp_seconds", "Unix time the current model was trained", registry=REGISTRY
)

# Every bounded label value exists from the start at 0, so that the first failure or the first
# quarantined row is an increase Prometheus can see (a series born at 1 has no visible increase).
for _status in FILE_STATUSES:
    FILES_PROCESSED.labels(status=_status)
for _reason in (*QUARANTINE_REASONS, OTHER):
    EVENTS_QUARANTINED.labels(reason=_reason)
for _stage_name in STAGE_LABELS:
    for _run_status in RUN_STATUSES:
        RUNS.labels(stage=_stage_name, status=_run_status)

_lock = threading.Lock()
_touched: set[str] = set()
_serving = False


def _touch(*metrics: Any) -> None:
    with _lock:
        _touched.update(m._name for m in metrics)


def _bounded(value: object, allowed: Iterable[str]) -> str:
    text = str(value)
    return text if text in allowed else OTHER


def _stage(stage: str) -> str:
    return _bounded(stage, STAGE_LABELS)


def _timestamp(value: object) -> float | None:
    """A Unix time from a float, an ISO string, a datetime or a date (dates mean 00:00 UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise TypeError(f"not a timestamp: {value!r}")


def record_stage(
    stage: str, duration_seconds: float, *, success: bool = True, now: float | None = None
) -> None:
    """Record one finished stage: its duration, its outcome, and on success the last-success time."""
    label = _stage(stage)
    STAGE_DURATION.labels(stage=label).observe(max(0.0, float(duration_seconds)))
    RUNS.labels(stage=label, status="success" if success else "failed").inc()
    _touch(STAGE_DURATION, RUNS)
    if success:
        LAST_SUCCESS.labels(stage=label).set(time.time() if now is None else now)
        _touch(LAST_SUCCESS)


def mark_alive(stage: str, now: float | None = None) -> None:
    """Move a stage's last-success time without recording a run: an idle pass of a poller is a
    success for the staleness alert, but not a duration worth a histogram sample."""
    LAST_SUCCESS.labels(stage=_stage(stage)).set(time.time() if now is None else now)
    _touch(LAST_SUCCESS)


@contextmanager
def time_stage(stage: str) -> Iterator[None]:
    """Time the block as ``stage``; an exception records a failed run and propagates."""
    started = time.monotonic()
    try:
        yield
    except BaseException:
        record_stage(stage, time.monotonic() - started, success=False)
        raise
    record_stage(stage, time.monotonic() - started, success=True)


def record_ingest(summary: Mapping[str, Any]) -> None:
    """Add one ingest run summary (as ``shoplens ingest --json`` prints it) to the metrics.

    Uses rows_read, rows_accepted, rows_quarantined (split by quarantine_by_reason), duplicates_removed,
    files ([{name, status}]), duration_seconds, status, and event_time_max or event_date_max if present.
    """
    EVENTS_READ.inc(int(summary.get("rows_read") or 0))
    EVENTS_ACCEPTED.inc(int(summary.get("rows_accepted") or 0))
    DUPLICATES_REMOVED.inc(int(summary.get("duplicates_removed") or 0))
    by_reason = dict(summary.get("quarantine_by_reason") or {})
    unexplained = int(summary.get("rows_quarantined") or 0) - sum(int(v) for v in by_reason.values())
    if unexplained > 0:
        by_reason[OTHER] = by_reason.get(OTHER, 0) + unexplained
    for reason, count in by_reason.items():
        EVENTS_QUARANTINED.labels(reason=_bounded(reason, QUARANTINE_REASONS)).inc(int(count))
    for item in summary.get("files") or []:
        FILES_PROCESSED.labels(status=_bounded(item.get("status"), FILE_STATUSES)).inc()
    _touch(EVENTS_READ, EVENTS_ACCEPTED, DUPLICATES_REMOVED, EVENTS_QUARANTINED, FILES_PROCESSED)
    latest = _timestamp(summary.get("event_time_max") or summary.get("event_date_max"))
    if latest is not None:
        record_lake_latest_event(latest)
    success = summary.get("status", "committed") != "failed"
    record_stage("ingest", float(summary.get("duration_seconds") or 0.0), success=success)


def record_lake_latest_event(when: object) -> None:
    """Move the lake's newest-event time forward (never back: an old backfill does not age the lake)."""
    ts = _timestamp(when)
    if ts is None:
        return
    with _lock:
        current = LAKE_LATEST_EVENT._value.get()
        LAKE_LATEST_EVENT.set(max(current, ts))
    _touch(LAKE_LATEST_EVENT)


def record_segments(sizes: Mapping[str, int]) -> None:
    """Replace the per-segment user counts (segments of a previous model disappear)."""
    SEGMENT_USERS.clear()
    for segment, users in sizes.items():
        SEGMENT_USERS.labels(segment=str(segment)).set(int(users))
    _touch(SEGMENT_USERS)


def record_model(version: str, silhouette: float | None = None, trained_at: object = None) -> None:
    """Publish the current model: its version (info-style gauge), silhouette and training time."""
    MODEL_INFO.clear()
    MODEL_INFO.labels(version=str(version)).set(1)
    _touch(MODEL_INFO)
    if silhouette is not None:
        MODEL_SILHOUETTE.set(float(silhouette))
        _touch(MODEL_SILHOUETTE)
    ts = _timestamp(trained_at)
    if ts is not None:
        MODEL_TRAINED.set(ts)
        _touch(MODEL_TRAINED)


class _TouchedFamilies:
    """A read-only view of :data:`REGISTRY` with only the families this process has recorded."""

    def collect(self) -> Iterator[Metric]:
        with _lock:
            names = set(_touched)
        for family in REGISTRY.collect():
            if family.name in names or f"{family.name}_total" in names:
                yield family


def push_run_metrics(
    job: str,
    gateway: str | None = None,
    grouping_key: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> bool:
    """Push what this run recorded to the Pushgateway as ``job``; never raises.

    ``gateway`` defaults to ``SHOPLENS_PUSHGATEWAY_URL``; without one, or in a process that serves
    ``/metrics``, nothing is pushed. Returns True when the gateway accepted the push.
    """
    if _serving:
        log.debug("metrics are served on /metrics; not pushing", extra={"job": job})
        return False
    if gateway is None:
        from services.core.settings import get_settings

        gateway = get_settings().pushgateway_url
    if not gateway:
        log.debug("no pushgateway configured; metrics not pushed", extra={"job": job})
        return False
    try:
        push_to_gateway(
            gateway,
            job=job,
            registry=_TouchedFamilies(),
            grouping_key=dict(grouping_key or {}),
            timeout=timeout,
        )
    except Exception as err:  # the gateway being down must never fail a pipeline run
        log.warning("could not push metrics to %s: %s", gateway, err, extra={"job": job, "gateway": gateway})
        return False
    return True


def start_metrics_server(
    port: int = DEFAULT_METRICS_PORT, addr: str = "0.0.0.0"
) -> tuple[Any, threading.Thread]:
    """Serve :data:`REGISTRY` on ``http://addr:port/metrics`` from a daemon thread (long-running services)."""
    global _serving
    server, thread = start_http_server(port, addr=addr, registry=REGISTRY)
    _serving = True
    log.info("serving metrics on %s:%d/metrics", addr, port, extra={"port": port})
    return server, thread


__all__ = [
    "DEFAULT_METRICS_PORT",
    "REGISTRY",
    "STAGE_LABELS",
    "mark_alive",
    "push_run_metrics",
    "record_ingest",
    "record_lake_latest_event",
    "record_model",
    "record_segments",
    "record_stage",
    "start_metrics_server",
    "time_stage",
]
