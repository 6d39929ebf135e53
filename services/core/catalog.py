"""Every dataset the lake holds, named once: its path, how it is published, who writes and reads it.

Columns and types of each are in ``docs/outputs.md`` (a test keeps the two in step). Two layouts:

- ``run``: written by an ingestion run under ``<path>/.../run_id=R/``; rows count only once the run's
  summary ``runs/R.json`` says committed.
- ``versioned``: written whole under ``<path>/<version>/``, then made visible by one small write of
  ``<path>/_current.json`` (see :mod:`services.core.publish`).

Code refers to a dataset by its constant (``FEATURES``), never by a string literal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Layout = Literal["run", "versioned"]

RUNS = "runs"
EVENTS = "events"
QUARANTINE = "quarantine"
DUPLICATES = "duplicates"
SUSPICIOUS_USERS = "flags/suspicious_users"
ORDER_LINES = "orders/lines"
AGGREGATES = "aggregates"
FEATURES = "features"
SEGMENTATION_MODEL = "models/segmentation"
SEGMENTS = "segments"
DESCRIBE_REPORT = "reports/describe"
OVERVIEW_VIEWS = "views/overview"
SEGMENT_VIEWS = "views/segments"
PROPENSITY_MODEL = "models/propensity"
PROPENSITY = "propensity"
EXPERIMENTS = "experiments"
MMM_MODEL = "mmm"
FUNNEL = "funnel"
CLV = "clv"
RETENTION = "retention"

CURRENT_POINTER = "_current.json"
#: Where an ingestion run stages its chunks and outputs in the store before publishing them (not a
#: dataset: nothing reads it, and Lake.vacuum removes what a crashed run left there).
STAGING = "_staging"


@dataclass(frozen=True)
class Dataset:
    """One lake dataset: where it lives, how it is published, who writes it and who reads it."""

    path: str
    layout: Layout
    written_by: str
    read_by: tuple[str, ...]
    summary: str


CATALOG: tuple[Dataset, ...] = (
    Dataset(EVENTS, "run", "ingest", ("features", "describe", "overview", "segmentation"),
            "accepted events, pseudonymized, partitioned by event_date then run_id"),
    Dataset(QUARANTINE, "run", "ingest", ("describe",), "rejected rows with reason, file and line"),
    Dataset(DUPLICATES, "run", "ingest", ("describe",), "exact duplicate lines removed, for audit"),
    Dataset(ORDER_LINES, "run", "ingest", ("people",),
            "Online Retail order lines: invoice, stock code, quantity, unit price, country per accepted line"),
    Dataset(SUSPICIOUS_USERS, "run", "ingest", ("features", "describe"), "bot-like users, flagged not dropped"),
    Dataset(AGGREGATES, "versioned", "features", ("features", "segmentation"),
            "mergeable per-user aggregates; the pointer lists the folded runs"),
    Dataset(FEATURES, "versioned", "features", ("segmentation", "export", "dashboard", "publish"), "per-user features"),
    Dataset(SEGMENTATION_MODEL, "versioned", "segmentation", ("segmentation", "predict", "dashboard", "publish", "api"),
            "light artifact, model.json, profiles.json, price reference, report"),
    Dataset(SEGMENTS, "versioned", "segmentation", ("export", "dashboard", "publish", "api"),
            "user key -> segment, confidence, PCA coordinates, model version"),
    Dataset(DESCRIBE_REPORT, "versioned", "describe", ("people",), "data-quality and descriptive report"),
    Dataset(OVERVIEW_VIEWS, "versioned", "overview", ("dashboard", "publish"), "daily KPIs, recent runs, freshness"),
    Dataset(SEGMENT_VIEWS, "versioned", "segmentation", ("dashboard",),
            "segment summary, PCA sample, segment flow between model versions"),
    Dataset(PROPENSITY_MODEL, "versioned", "propensity_train", ("propensity_score", "predict", "dashboard"),
            "purchase propensity: light artifacts of both models, metrics, curves and confusion views, report"),
    Dataset(PROPENSITY, "versioned", "propensity_score", ("export", "dashboard", "predict"),
            "user key -> purchase probability within the horizon, decile, model version"),
    Dataset(EXPERIMENTS, "versioned", "abtest", ("dashboard", "people"),
            "one A/B test analysis per version: result.json, report.md, report.html"),
    Dataset(MMM_MODEL, "versioned", "mmm", ("dashboard", "people"),
            "marketing-mix model: thinned posterior draws, ROI, contributions, curves, diagnostics, report"),
    Dataset(FUNNEL, "versioned", "funnel", ("export", "dashboard", "people"),
            "the default funnel: steps, breakdowns, weekly trend, time to convert, drivers, drop-off audiences, report"),
    Dataset(CLV, "versioned", "clv", ("export", "dashboard", "publish", "api"),
            "lifetime value per customer (user key column: user_key): p_alive, expected purchases, spend, "
            "discounted CLV; per segment and lifecycle stage; holdout check; report"),
    Dataset(RETENTION, "versioned", "retention", ("dashboard", "publish", "people"),
            "retention cohorts (no user key column: counts only): users and revenue per cohort and period, "
            "overall and per segment, first category and acquisition month; report"),
)  # fmt: skip
DATASETS: dict[str, Dataset] = {d.path: d for d in CATALOG}
RUN_SCOPED: tuple[str, ...] = tuple(d.path for d in CATALOG if d.layout == "run")
VERSIONED: tuple[str, ...] = tuple(d.path for d in CATALOG if d.layout == "versioned")


__all__ = [
    "AGGREGATES",
    "CATALOG",
    "CLV",
    "CURRENT_POINTER",
    "DATASETS",
    "DESCRIBE_REPORT",
    "DUPLICATES",
    "EVENTS",
    "EXPERIMENTS",
    "FEATURES",
    "FUNNEL",
    "MMM_MODEL",
    "ORDER_LINES",
    "OVERVIEW_VIEWS",
    "PROPENSITY",
    "PROPENSITY_MODEL",
    "QUARANTINE",
    "RETENTION",
    "RUNS",
    "RUN_SCOPED",
    "SEGMENTATION_MODEL",
    "SEGMENTS",
    "SEGMENT_VIEWS",
    "SUSPICIOUS_USERS",
    "VERSIONED",
    "Dataset",
    "Layout",
]
