"""Every dataset the lake holds, named once: its path, how it is published, who writes and reads it.

Columns and types of each are in ``docs/outputs.md`` (a test keeps the two in step). Two layouts:

- ``run``: written by an ingestion run under ``<path>/.../run_id=R/``; rows count only once the run's
  summary ``runs/R.json`` says committed.
- ``versioned``: written whole under ``<path>/<version>/``, then made visible by one small write of
  ``<path>/_current.json`` (see :mod:`services.core.publish`).
- ``ledger``: small JSON documents, each written whole by one atomic write (the erasure requests).

Each dataset also says where a person is in it, so erasure (:mod:`services.jobs.erasure`) walks the
catalog and a dataset added later is covered by its declaration: ``user_keys`` are the columns holding
a user key (a key itself, or text with keys inside, like a quarantined ``raw_line``), ``links`` pair a
column with a column of the run's events (rows that point at a removed event go with it).

Code refers to a dataset by its constant (``FEATURES``), never by a string literal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Layout = Literal["run", "versioned", "ledger"]

RUNS = "runs"
EVENTS = "events"
QUARANTINE = "quarantine"
DUPLICATES = "duplicates"
SUSPICIOUS_USERS = "flags/suspicious_users"
ORDER_LINES = "orders/lines"
CATEGORY_PRICES = "category_prices"
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
MODEL_COMPARISON = "models/comparison"
DOSSIER = "reports/dossier"
TIMELINE_RUNS = "timelines/runs"
TIMELINES = "timelines/compacted"
ERASURE_REQUESTS = "erasure/requests"
CLV = "clv"
RETENTION = "retention"

CURRENT_POINTER = "_current.json"
#: Where an ingestion run stages its chunks and outputs in the store before publishing them (not a
#: dataset: nothing reads it, and Lake.vacuum removes what a crashed run left there).
STAGING = "_staging"
#: A one-way fingerprint of the pseudonymization key the lake was written with (Lake.bind_key), so that
#: a process with another key refuses to write user keys nobody can join.
KEY_FINGERPRINT = "_key_fingerprint.json"
#: The writer lease (services/core/lease.py): one process writes the lake at a time.
WRITER_LEASE = "_writer.lease"


@dataclass(frozen=True)
class Dataset:
    """One lake dataset: where it lives, how it is published, who writes it and who reads it."""

    path: str
    layout: Layout
    written_by: str
    read_by: tuple[str, ...]
    summary: str
    user_keys: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()


CATALOG: tuple[Dataset, ...] = (
    Dataset(EVENTS, "run", "ingest", ("features", "describe", "overview"),
            "accepted events, pseudonymized, partitioned by event_date then run_id", user_keys=("user_key",)),
    Dataset(QUARANTINE, "run", "ingest", ("describe",), "rejected rows with reason, file and line",
            user_keys=("raw_line",)),
    Dataset(DUPLICATES, "run", "ingest", ("describe",), "exact duplicate lines removed, for audit",
            links=(("duplicate_of_line", "line_number"),)),
    Dataset(ORDER_LINES, "run", "ingest", ("people",),
            "Online Retail order lines: invoice, stock code, quantity, unit price, country per accepted line",
            links=(("source_file", "source_file"), ("line_number", "line_number"))),
    Dataset(SUSPICIOUS_USERS, "run", "ingest", ("features", "describe"), "bot-like users, flagged not dropped",
            user_keys=("user_key",)),
    Dataset(CATEGORY_PRICES, "versioned", "features", ("segmentation", "propensity_train", "compare_models"),
            "priced events and sum of ln(price) per category: price_level's lake-wide reference, one version "
            "per features version"),
    Dataset(FEATURES, "versioned", "features", ("segmentation", "export", "dashboard", "publish"), "per-user features",
            user_keys=("user_key",)),
    Dataset(SEGMENTATION_MODEL, "versioned", "segmentation", ("segmentation", "predict", "dashboard", "publish", "api"),
            "light artifact, model.json, profiles.json, price reference, report"),
    Dataset(SEGMENTS, "versioned", "segmentation", ("export", "dashboard", "publish", "api"),
            "user key -> segment, confidence, PCA coordinates, model version", user_keys=("user_key",)),
    Dataset(DESCRIBE_REPORT, "versioned", "describe", ("people",), "data-quality and descriptive report"),
    Dataset(OVERVIEW_VIEWS, "versioned", "overview", ("dashboard", "publish"), "daily KPIs, recent runs, freshness"),
    Dataset(SEGMENT_VIEWS, "versioned", "segmentation", ("dashboard",),
            "segment summary, PCA sample, segment flow between model versions"),
    Dataset(PROPENSITY_MODEL, "versioned", "propensity_train", ("propensity_score", "predict", "dashboard"),
            "purchase propensity: light artifacts of both models, metrics, curves and confusion views, report"),
    Dataset(PROPENSITY, "versioned", "propensity_score", ("export", "dashboard", "predict"),
            "user key -> purchase probability within the horizon, decile, model version",
            user_keys=("user_key",)),
    Dataset(EXPERIMENTS, "versioned", "abtest", ("dashboard", "people"),
            "one A/B test analysis per version: result.json, report.md, report.html", user_keys=("user_key",)),
    Dataset(MMM_MODEL, "versioned", "mmm", ("dashboard", "people"),
            "marketing-mix model: thinned posterior draws, ROI, contributions, curves, diagnostics, report"),
    Dataset(FUNNEL, "versioned", "funnel", ("export", "dashboard", "people"),
            "the default funnel: steps, breakdowns, weekly trend, time to convert, drivers, drop-off audiences, report",
            user_keys=("user_key",)),
    Dataset(MODEL_COMPARISON, "versioned", "compare_models", ("dossier", "people"),
            "shipped model families against others: one table per question, winner and why, report"),
    Dataset(DOSSIER, "versioned", "dossier", ("people",),
            "the dossier: one HTML and one PDF document of what the lake has published, every chart as a PNG"),
    Dataset(TIMELINE_RUNS, "run", "ingest", ("timelines", "features"),
            "each run's accepted events by user bucket, sorted by user and time", user_keys=("user_key",)),
    Dataset(TIMELINES, "versioned", "ingest", ("timelines", "features"),
            "the compacted user timelines, one file per user bucket; the pointer lists the folded runs",
            user_keys=("user_key",)),
    Dataset(ERASURE_REQUESTS, "ledger", "erasure", ("erasure", "ingest", "dashboard"),
            "one document per erasure submission: digests of the keys, deadline, state and rows removed per store"),
    Dataset(CLV, "versioned", "clv", ("export", "dashboard", "publish", "api"),
            "lifetime value per customer: p_alive, expected purchases, spend, discounted CLV; per segment and "
            "lifecycle stage; holdout check; report", user_keys=("user_key",)),
    Dataset(RETENTION, "versioned", "retention", ("dashboard", "publish", "people"),
            "retention cohorts (counts only, no user key): users and revenue per cohort and period, "
            "overall and per segment, first category and acquisition month; report"),
)  # fmt: skip
DATASETS: dict[str, Dataset] = {d.path: d for d in CATALOG}
RUN_SCOPED: tuple[str, ...] = tuple(d.path for d in CATALOG if d.layout == "run")
VERSIONED: tuple[str, ...] = tuple(d.path for d in CATALOG if d.layout == "versioned")
LEDGERS: tuple[str, ...] = tuple(d.path for d in CATALOG if d.layout == "ledger")


__all__ = [
    "CATALOG",
    "CATEGORY_PRICES",
    "CLV",
    "CURRENT_POINTER",
    "DATASETS",
    "DESCRIBE_REPORT",
    "DOSSIER",
    "DUPLICATES",
    "ERASURE_REQUESTS",
    "EVENTS",
    "EXPERIMENTS",
    "FEATURES",
    "FUNNEL",
    "LEDGERS",
    "MMM_MODEL",
    "MODEL_COMPARISON",
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
    "TIMELINES",
    "TIMELINE_RUNS",
    "VERSIONED",
    "Dataset",
    "Layout",
]
