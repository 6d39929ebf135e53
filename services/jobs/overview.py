"""``shoplens overview``: the overview views (daily KPIs, recent runs, freshness) from the events lake.

They depend on ingestion only, not on any model, so they are their own pipeline stage: due whenever
the committed runs differ from those the current views were built from. Published as
``views/overview/<version>/`` (docs/outputs.md); no user keys in any of them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from etl.kpis import kpi_daily
from services.core.catalog import EVENTS, OVERVIEW_VIEWS, RUNS
from services.core.documents.overview import OverviewFreshness
from services.core.freshness import recording
from services.core.lake import Lake, runs_table
from services.core.publish import new_version
from services.core.spark import read_run_dataset

log = logging.getLogger("shoplens.overview")


def build_overview(spark: SparkSession, lake: Lake) -> dict[str, Any]:
    """Compute the overview views from the lake's committed state and publish them."""
    t0 = time.monotonic()
    events = read_run_dataset(spark, lake, EVENTS)
    runs = lake.runs()
    committed = [r for r in runs if r.get("status") == "committed"]
    latest = events.agg(F.max("event_time")).first()[0] if events is not None else None
    freshness = OverviewFreshness(
        latest_event_time=latest.isoformat() if latest is not None else None,
        last_run_at=max((r.get("finished_at") or r.get("started_at") for r in committed), default=None),
    ).to_dict()
    with new_version(lake, OVERVIEW_VIEWS, **recording({RUNS: [r["run_id"] for r in committed]})) as staged:
        staged.write_table("kpi_daily", kpi_daily(events))
        staged.write_table("runs", runs_table(runs))
        staged.write_json(OverviewFreshness.FILE, freshness)
    summary = {"status": "published", "version": staged.version, "runs": len(committed), **freshness,
               "duration_seconds": round(time.monotonic() - t0, 3)}  # fmt: skip
    log.info("overview views %s published", staged.version, extra={"stage": "overview", **summary})
    return summary


def overview_report(s: dict[str, Any]) -> str:
    return (f"overview views {s['version']}: {s['runs']} committed run(s), latest event "
            f"{s['latest_event_time']} ({s['duration_seconds']:.1f}s)")  # fmt: skip


__all__ = ["build_overview", "overview_report"]
