"""``shoplens retention``: who comes back, cohort by cohort, and what they spend.

Reads the committed events, reduces them on Spark to one row per user and active day, counts the
cohorts with :mod:`etl.retention` (polars on that frame) and publishes::

    retention/<version>/cohorts.parquet   breakdown, group, cohort, size, period, users, rate, revenue, complete
    retention/<version>/{result.json, report.md, report.html}
    retention/_current.json               (the commit point; carries run_ids, segments_version and the options)

The pipeline's ``retention`` stage publishes the default view (weekly first-seen cohorts, rolling
weeks, n-period, any event) with every breakdown whenever the committed runs or the segments change.
No user key is written: the tables hold counts. Columns: docs/outputs.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Final

import pandas as pd
import polars as pl
from pyspark.sql import SparkSession

from etl.clv import last_event_day
from etl.retention import RetentionSpec, retention_table, user_days
from services.core.catalog import EVENTS, RETENTION, SEGMENTS
from services.core.lake import Lake, due_for_new_runs, utc_now_iso
from services.core.publish import new_version
from services.core.readers import read_segments
from services.core.spark import read_run_dataset
from services.reports.retention import semantics, write_retention_report

log = logging.getLogger("shoplens.retention")

RESULT_FILE: Final[str] = "result.json"
COHORTS: Final[str] = "cohorts"
OVERALL: Final[str] = "overall"
BREAKDOWNS: Final[tuple[str, ...]] = ("segment", "category", "acquisition-month")


@dataclass(frozen=True)
class RetentionConfig:
    """The spec of the main view, and the breakdowns published beside it."""

    spec: RetentionSpec = field(default_factory=RetentionSpec)
    breakdowns: tuple[str, ...] = BREAKDOWNS

    def __post_init__(self) -> None:
        unknown = [b for b in self.breakdowns if b not in BREAKDOWNS]
        if unknown:
            raise ValueError(
                f"unknown breakdown(s) {', '.join(unknown)}; use some of {', '.join(BREAKDOWNS)}"
            )


def retention_due(lake: Lake) -> tuple[bool, str]:
    """(due?, why): no retention yet, or it was counted from other committed runs or other segments."""
    due, why = due_for_new_runs(lake, RETENTION, "no retention yet")
    if due or why == "no committed runs":
        return due, why
    if lake.pointer(RETENTION).get("segments_version") != lake.current_version(SEGMENTS):
        return True, "new segments"
    return False, "up to date"


def _segments(lake: Lake) -> tuple[pl.DataFrame | None, str | None]:
    seg = read_segments(lake)
    if seg is None or seg.empty:
        return None, None
    return pl.from_pandas(seg[["user_key", "segment_name"]].rename(columns={"segment_name": "segment"})), \
        lake.current_version(SEGMENTS)  # fmt: skip


def compute(spark: SparkSession, lake: Lake, cfg: RetentionConfig,
            segments: pl.DataFrame | None) -> tuple[pd.DataFrame, date]:  # fmt: skip
    """The cohorts table (the overall view and each breakdown) and the last day of data."""
    events = read_run_dataset(spark, lake, EVENTS)
    if events is None:
        raise ValueError("no committed events in the lake: run `shoplens ingest` first")
    t0 = time.monotonic()
    end = last_event_day(events)
    days = pl.from_arrow(user_days(events).toArrow())
    log.info("retention user days collected", extra={"stage": "retention", "rows": days.height,
             "duration_seconds": round(time.monotonic() - t0, 3)})  # fmt: skip
    parts = []
    for by in (None, *cfg.breakdowns):
        spec = replace(cfg.spec, by=by)
        parts.append(retention_table(days, spec, end, segments).with_columns(breakdown=pl.lit(by or OVERALL)))
    table = pl.concat(parts).select("breakdown", pl.exclude("breakdown"))
    return table.to_pandas(date_as_object=True), end  # cohorts stay dates


def cohort_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """``[{cohort, size, periods: [{period, users, rate, revenue, complete}]}]`` of one group's rows."""
    out = []
    for cohort, part in table.groupby("cohort", sort=True):
        periods = [{"period": int(r.period), "users": int(r.users), "rate": float(r.rate), "revenue": float(r.revenue),
                    "complete": bool(r.complete)} for r in part.sort_values("period").itertuples()]  # fmt: skip
        out.append({"cohort": str(cohort), "size": int(part["size"].iloc[0]), "periods": periods})
    return out


def result_document(cfg: RetentionConfig, table: pd.DataFrame, end: date) -> dict[str, Any]:
    spec = cfg.spec
    overall = table[table["breakdown"] == OVERALL]
    doc: dict[str, Any] = {**spec.to_dict(), "end": str(end), "breakdowns": list(cfg.breakdowns),
                           "semantics": semantics(spec.to_dict()), "cohorts": cohort_records(overall)}  # fmt: skip
    if spec.by is not None:
        part = table[table["breakdown"] == spec.by]
        doc["groups"] = [
            {"group": g, "cohorts": cohort_records(p)} for g, p in part.groupby("group", sort=True)
        ]
    return doc


def run_retention(spark: SparkSession, lake: Lake, cfg: RetentionConfig | None = None) -> dict[str, Any]:
    """Count the retention of the lake's committed events and publish ``retention/<version>/``."""
    cfg = cfg or RetentionConfig()
    t0 = time.monotonic()
    run_ids = sorted(lake.committed_run_ids())
    segments, segments_version = _segments(lake)
    table, end = compute(spark, lake, cfg, segments)
    meta = {"run_ids": run_ids, "segments_version": segments_version, **cfg.spec.to_dict()}
    with new_version(lake, RETENTION, **meta) as staged:
        staged.write_table(COHORTS, table)
        doc = {"version": staged.version, "computed_at": utc_now_iso(), "run_ids": run_ids,
               "segments_version": segments_version, **result_document(cfg, table, end)}  # fmt: skip
        staged.write_json(RESULT_FILE, doc)
        write_retention_report(staged.dir, doc)
    doc["duration_seconds"] = round(time.monotonic() - t0, 3)
    log.info("retention %s published", staged.version, extra={"stage": "retention", "version": staged.version,
             "duration_seconds": doc["duration_seconds"]})  # fmt: skip
    return doc


def retention_report(doc: dict[str, Any]) -> str:
    """The console summary: each cohort's size and rates of its first periods."""
    lines = [f"retention {doc['version']}: {doc['cohort']} cohorts (first {doc['cohort_event']}), {doc['periods']} "
             f"{doc['period']}s, {doc['mode']}, returning = {doc['event']} event; data to {doc['end']}"]  # fmt: skip
    for c in doc["cohorts"]:
        rates = " ".join(f"{p['rate']:6.1%}" for p in c["periods"][:12])
        lines.append(f"{c['cohort']} {c['size']:>9,}  {rates}")
    return "\n".join(lines)


__all__ = [
    "BREAKDOWNS",
    "COHORTS",
    "OVERALL",
    "RESULT_FILE",
    "RetentionConfig",
    "cohort_records",
    "compute",
    "result_document",
    "retention_due",
    "retention_report",
    "run_retention",
]
