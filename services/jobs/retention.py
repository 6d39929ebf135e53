"""``shoplens retention``: who comes back, cohort by cohort, and what they spend.

Counts every user bucket of the lake's timelines in a Spark task (:mod:`etl.retention`, polars: the
bucket's users' share of each cohort and period), adds the shares on the driver and publishes::

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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Final

import pandas as pd
import polars as pl
import pyarrow as pa
from pyspark.sql import SparkSession

from etl.retention import BUCKET_FRAME, RetentionSpec, bucket_counts, combine
from etl.timeline import USER_KEY, bucket_of
from services.core.catalog import RETENTION, RUNS, SEGMENTS
from services.core.documents.retention import RetentionResult
from services.core.freshness import recording
from services.core.lake import Lake, utc_now_iso
from services.core.publish import new_version
from services.core.readers import read_segments
from services.core.timelines import require_timelines, run_on_buckets
from services.reports.retention import semantics, write_retention_report

log = logging.getLogger("shoplens.retention")

RESULT_FILE: Final[str] = RetentionResult.FILE
COHORTS: Final[str] = "cohorts"
OVERALL: Final[str] = "overall"
BREAKDOWNS: Final[tuple[str, ...]] = ("segment", "category", "acquisition-month")
#: Events per call of the counts (several buckets of a small lake at once: polars pays per call).
BATCH_ROWS: Final[int] = 1 << 21
#: The timeline columns the counts read.
TIMELINE_INPUTS: Final[tuple[str, ...]] = (USER_KEY, "event_time", "event_type", "price", "category_l1")
#: A task's answer: :data:`etl.retention.BUCKET_FRAME` in Arrow (plain strings, as Spark takes them).
BUCKET_SCHEMA: Final[pa.Schema] = pa.schema(
    [pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type)
     for f in BUCKET_FRAME.to_arrow().schema]
)  # fmt: skip


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


def _segments(lake: Lake) -> tuple[pl.DataFrame | None, str | None]:
    seg = read_segments(lake)
    if seg is None or seg.empty:
        return None, None
    return pl.from_pandas(seg[["user_key", "segment_name"]].rename(columns={"segment_name": "segment"})), \
        lake.current_version(SEGMENTS)  # fmt: skip


def compute(spark: SparkSession, lake: Lake, cfg: RetentionConfig,
            segments: pl.DataFrame | None) -> tuple[pd.DataFrame, date]:  # fmt: skip
    """The cohorts table (the overall view and each breakdown) and the last day of data.

    One pass over the lake's timelines: each Spark task counts its user buckets' shares of every view
    (:func:`etl.retention.bucket_counts`), the driver adds them (:func:`etl.retention.combine`).
    """
    if not lake.committed_run_ids():
        raise ValueError("no committed events in the lake: run `shoplens ingest` first")
    require_timelines(lake)
    specs = {OVERALL: replace(cfg.spec, by=None), **{by: replace(cfg.spec, by=by) for by in cfg.breakdowns}}
    split = _by_bucket(segments) if segments is not None and "segment" in cfg.breakdowns else {}

    def counts(buckets: Sequence[int], timeline: pa.Table) -> pa.Table:
        mine = [split[b] for b in buckets if b in split]
        return bucket_counts(timeline, specs, pl.concat(mine) if mine else None).to_arrow()

    t0 = time.monotonic()
    shares = pl.DataFrame(run_on_buckets(spark, lake, counts, BUCKET_SCHEMA, columns=TIMELINE_INPUTS,
                                         dictionary=[USER_KEY], batch_rows=BATCH_ROWS))  # fmt: skip
    if shares.height == 0:
        raise ValueError("the lake's timelines hold no events: run `shoplens ingest` first")
    end = shares["last_day"].max()
    log.info("retention counted per user bucket", extra={"stage": "retention", "rows": shares.height,
             "duration_seconds": round(time.monotonic() - t0, 3)})  # fmt: skip
    parts = [combine(shares.filter(pl.col("view") == name), spec, end).with_columns(breakdown=pl.lit(name))
             for name, spec in specs.items()]  # fmt: skip
    table = pl.concat(parts).select("breakdown", pl.exclude("breakdown"))
    return table.to_pandas(date_as_object=True), end  # cohorts stay dates


def _by_bucket(segments: pl.DataFrame) -> dict[int, pl.DataFrame]:
    """The segments split by user bucket, so each task ships only its own users'."""
    bucket = pl.Series("bucket", bucket_of(segments[USER_KEY].to_arrow()))
    return {int(k[0]): part.drop("bucket") for k, part in segments.with_columns(bucket).partition_by("bucket", as_dict=True).items()}


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
    meta = {**recording({RUNS: run_ids, SEGMENTS: segments_version}), **cfg.spec.to_dict()}
    with new_version(lake, RETENTION, **meta) as staged:
        staged.write_table(COHORTS, table)
        doc = RetentionResult.model_validate({
            "version": staged.version, "computed_at": utc_now_iso(), "run_ids": run_ids,
            "segments_version": segments_version, **result_document(cfg, table, end)}).to_dict()  # fmt: skip
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
    "retention_report",
    "run_retention",
]
