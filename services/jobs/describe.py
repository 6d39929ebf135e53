"""``shoplens describe``: read the committed lake, compute the statistics, render and publish the report.

Published as ``reports/describe/<version>/`` (``report.md``, ``report.html``, ``report.json``; see
docs/outputs.md) and optionally copied to a local directory.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.describe import describe
from services.core import erasure_ledger
from services.core.catalog import DESCRIBE_REPORT, DUPLICATES, EVENTS, QUARANTINE, SUSPICIOUS_USERS
from services.core.lake import Lake, utc_now_iso
from services.core.publish import new_version
from services.core.spark import read_run_dataset
from services.reports.describe import render_html, render_json, render_markdown

log = logging.getLogger("shoplens.describe")

FILES = ("report.md", "report.html", "report.json")


@dataclass(frozen=True)
class ReportResult:
    version: str
    lake_prefix: str
    files: tuple[str, ...]
    out_dir: str | None


def write_report(
    lake: Lake, stats: dict[str, Any], out_dir: Path | None = None, version: str | None = None
) -> ReportResult:
    """Render the three files, publish them as ``reports/describe/<version>/``, copy to ``out_dir``."""
    generated_at = utc_now_iso()
    texts = {
        "report.md": render_markdown(stats, generated_at),
        "report.html": render_html(stats, generated_at),
        "report.json": render_json(stats, generated_at),
    }
    with new_version(lake, DESCRIBE_REPORT, version, events=stats["overview"]["events"]) as staged:
        for name, text in texts.items():
            (staged.dir / name).write_text(text, encoding="utf-8")
        if out_dir is not None:
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in texts:
                shutil.copyfile(staged.dir / name, out_dir / name)
    version = staged.version
    log.info(
        "describe report %s published",
        version,
        extra={"version": version, "events": stats["overview"]["events"]},
    )
    return ReportResult(version, f"{DESCRIBE_REPORT}/{version}", tuple(texts), str(out_dir) if out_dir else None)


def compute_stats(spark: Any, lake: Lake) -> dict[str, Any]:
    """Read the committed lake and compute the statistics; a lake without events is an error."""
    events = read_run_dataset(spark, lake, EVENTS)
    if events is None:
        raise FileNotFoundError(
            f"{lake.store.uri}: no committed events in the lake (run `shoplens ingest` first)"
        )
    stats = describe(
        events,
        read_run_dataset(spark, lake, QUARANTINE),
        duplicates=read_run_dataset(spark, lake, DUPLICATES),
        suspicious_users=read_run_dataset(spark, lake, SUSPICIOUS_USERS),
    )
    previous = lake.pointer(DESCRIBE_REPORT)  # the report's period: since the previous report
    stats["erasure"] = erasure_ledger.period_counts(lake, previous.get("published_at") if previous else None)
    return stats


def run_describe(spark: Any, lake: Lake, out_dir: Path | None = None) -> dict[str, Any]:
    """What ``shoplens describe`` does: compute, publish, and return the statistics with where they went."""
    stats = compute_stats(spark, lake)
    result = write_report(lake, stats, out_dir)
    return {
        **stats,
        "report": {
            "version": result.version,
            "lake": f"{lake.store.uri}/{result.lake_prefix}",
            "files": list(result.files),
            "out_dir": result.out_dir,
        },
    }


def describe_summary(result: dict[str, Any]) -> str:
    """A few human lines for the terminal."""
    o, r = result["overview"], result["report"]
    q = result["quarantine"]
    lines = [
        f"{o['events']:,} events, {o['users']:,} users, {o['sessions']:,} sessions, "
        f"{o['first_date']} to {o['last_date']}",
        "event types: " + ", ".join(f"{t} {n:,}" for t, n in result["event_types"].items()),
    ]
    if q is not None:
        lines.append(f"quarantined rows: {q['rows']:,}")
    lines.append(
        f"report {r['version']}: {r['lake']}/" + (f" (copied to {r['out_dir']})" if r["out_dir"] else "")
    )
    return "\n".join(lines)


__all__ = ["FILES", "ReportResult", "compute_stats", "describe_summary", "run_describe", "write_report"]
