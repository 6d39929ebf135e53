"""The pipeline after ingestion, declared once: each stage's name, what it reads and writes, when it is
due, and what it runs.

The CLI (``shoplens run``) and the watcher read this list; a new capability is one more entry here
(its job module supplies ``run``), and neither of them changes. A stage that rebuilds a result from
versioned inputs declares them (``reads``, ``writes``) and is due by the one rule of
:mod:`services.core.freshness` (an input's current version differs from the one its output recorded,
or no output yet); only the stages whose rule is not about versions (erasure, features,
retraining by age, the warehouse, the retention policy, the key index) give their own ``due``.
Stages run in order and each is asked whether it is due just before it would run, because the stages
before it change the lake (new features make the model stale, a new model makes the segments stale,
...). A stage's name is also its ``stage`` label in logs and metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from services.core.catalog import (
    CATALOG,
    CATEGORY_PRICES,
    CLV,
    ERASURE_REQUESTS,
    EVENTS,
    FEATURES,
    FUNNEL,
    OVERVIEW_VIEWS,
    PROPENSITY,
    PROPENSITY_MODEL,
    RETENTION,
    RUNS,
    SEGMENT_VIEWS,
    SEGMENTATION_MODEL,
    SEGMENTS,
)
from services.core.freshness import Read, versions_due
from services.core.lake import Lake
from services.core.metrics import time_stage
from services.jobs.clv import clv_stage
from services.jobs.erasure import erasure_due, erasure_stage, targets_from
from services.jobs.erasure_index import refresh as refresh_key_index
from services.jobs.erasure_index import refresh_due as key_index_due
from services.jobs.features import features_behind, run_features
from services.jobs.funnel import run_funnel
from services.jobs.overview import build_overview
from services.jobs.propensity import score as propensity_score
from services.jobs.propensity import train_due as propensity_train_due
from services.jobs.propensity import train_stage as propensity_train
from services.jobs.publish import TABLES as WAREHOUSE_TABLES
from services.jobs.publish import publish, publish_due
from services.jobs.retention import run_retention
from services.jobs.retention_policy import Policy, apply_retention, retention_policy_due
from services.jobs.segmentation import TrainConfig, score, staleness, train

log = logging.getLogger("shoplens.pipeline")


@dataclass(frozen=True)
class PipelineConfig:
    """When the model is retrained (``shoplens watch --help`` documents each) and how it is fitted."""

    retrain_new_runs: int = 1
    retrain_age_days: float = 7.0
    train: TrainConfig | None = None
    warehouse_url: str | None = None  # None: SHOPLENS_WAREHOUSE_URL
    erasure_max_age_hours: float | None = None  # None: SHOPLENS_ERASURE_MAX_AGE_HOURS


Due = Callable[[Lake, PipelineConfig], tuple[bool, str]]
Run = Callable[[SparkSession | None, Lake, PipelineConfig], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: ``due`` says whether (and why) it must run now, ``run`` does it.

    ``reads`` and ``writes`` are the lake datasets it reads and the ones it publishes. ``due`` None:
    the stage is due by :func:`services.core.freshness.versions_due` on its first written dataset,
    whose pointer records the version of each input it was built from.
    """

    name: str
    due: Due | None
    run: Run
    spark: bool = True  # False: ``run`` gets None and no SparkSession is started for it
    rebuilds: bool = True  # False: book-keeping (erasure, its key index), not a result an erasure rebuilds
    reads: tuple[Read, ...] = ()
    writes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.due is None:
            if not self.writes or not self.reads:
                raise ValueError(f"stage {self.name}: without its own due rule it must declare reads and writes")
            output, inputs = self.writes[0], self.reads
            object.__setattr__(self, "due", lambda lake, _cfg: versions_due(lake, output, inputs))


def features_due(lake: Lake, _cfg: PipelineConfig) -> tuple[bool, str]:
    """Committed runs not in the features yet (services.jobs.features.features_behind)."""
    return features_behind(lake)


def train_due(lake: Lake, cfg: PipelineConfig) -> tuple[bool, str]:
    return staleness(lake, cfg.retrain_new_runs, cfg.retrain_age_days)


def _erasure_due(lake: Lake, cfg: PipelineConfig) -> tuple[bool, str]:
    from services.core.settings import get_settings

    hours = cfg.erasure_max_age_hours
    return erasure_due(lake, get_settings().erasure_max_age_hours if hours is None else hours)


def _erasure(spark: SparkSession | None, lake: Lake, cfg: PipelineConfig) -> dict[str, Any]:
    from services.core.settings import get_settings

    settings = get_settings()
    return erasure_stage(spark, lake, settings.key_bytes, targets_from(settings, warehouse_url(cfg)))


def _retention_policy(lake: Lake, cfg: PipelineConfig) -> tuple[Policy, Any]:
    from services.core.settings import get_settings

    settings = get_settings()
    return Policy.from_settings(settings), targets_from(settings, warehouse_url(cfg))


#: Inputs whose versions the results record (services.core.freshness.RECORDED_AS).
_RUNS, _SEGMENTS, _FEATURES = Read(RUNS), Read(SEGMENTS, optional=True), Read(FEATURES)

STAGES: tuple[Stage, ...] = (
    # first: what the later stages publish must already be without the erased people
    Stage("erasure", _erasure_due, _erasure, rebuilds=False, reads=(Read(ERASURE_REQUESTS),),
          writes=tuple(d.path for d in CATALOG if d.user_keys or d.links)),
    Stage("features", features_due, lambda spark, lake, _cfg: run_features(spark, lake),
          reads=(_RUNS,), writes=(FEATURES, CATEGORY_PRICES)),
    Stage("train", train_due, lambda spark, lake, cfg: train(spark, lake, cfg.train, do_score=False),
          reads=(_FEATURES, Read(CATEGORY_PRICES)), writes=(SEGMENTATION_MODEL,)),
    Stage("score", None, lambda spark, lake, _cfg: score(spark, lake, refresh_features=False),
          reads=(Read(SEGMENTATION_MODEL), _FEATURES), writes=(SEGMENTS, SEGMENT_VIEWS)),
    # propensity: trained when missing or older than retrain_age_days (not per run: it reads every cutoff)
    Stage("propensity_train", lambda lake, cfg: propensity_train_due(lake, cfg.retrain_age_days),
          lambda spark, lake, _cfg: propensity_train(spark, lake), reads=(_FEATURES, Read(CATEGORY_PRICES), Read(EVENTS)),
          writes=(PROPENSITY_MODEL,)),
    Stage("propensity_score", None, lambda spark, lake, _cfg: propensity_score(spark, lake),
          reads=(Read(PROPENSITY_MODEL), _FEATURES), writes=(PROPENSITY,)),
    Stage("funnel", None, lambda spark, lake, _cfg: run_funnel(spark, lake), reads=(_RUNS, _SEGMENTS),
          writes=(FUNNEL,)),
    Stage("clv", None, lambda spark, lake, _cfg: clv_stage(spark, lake), reads=(_RUNS, _SEGMENTS), writes=(CLV,)),
    Stage("retention", None, lambda spark, lake, _cfg: run_retention(spark, lake), reads=(_RUNS, _SEGMENTS),
          writes=(RETENTION,)),
    Stage("overview", None, lambda spark, lake, _cfg: build_overview(spark, lake), reads=(_RUNS,),
          writes=(OVERVIEW_VIEWS,)),
    Stage("publish", lambda lake, cfg: publish_due(lake, warehouse_url(cfg)),
          lambda _spark, lake, cfg: publish(lake, warehouse_url(cfg)), spark=False,
          reads=tuple(Read(t.dataset, optional=True) for t in WAREHOUSE_TABLES)),  # writes the warehouse
    Stage("retention_policy", lambda lake, cfg: retention_policy_due(lake, *_retention_policy(lake, cfg)),
          lambda _spark, lake, cfg: apply_retention(lake, *_retention_policy(lake, cfg)), spark=False),
    # the retention policy and the key index act on every dataset's files, not on declared ones.
    # last: the files every stage wrote get their key index, so an erasure request opens only the
    # files that hold the person (services/jobs/erasure_index.py)
    Stage("erasure_index", lambda lake, _cfg: key_index_due(lake), lambda _spark, lake, _cfg: refresh_key_index(lake),
          spark=False, rebuilds=False),
)  # fmt: skip


def warehouse_url(cfg: PipelineConfig) -> str:
    """Where the ``publish`` stage writes: the config's URL, else ``SHOPLENS_WAREHOUSE_URL``."""
    if cfg.warehouse_url:
        return cfg.warehouse_url
    from services.core.settings import get_settings

    return get_settings().warehouse_url


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"no stage named {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def pending(lake: Lake, cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(stage, why) for every stage due on the lake as it is now (later ones may become due as they run)."""
    out = []
    for stage in STAGES:
        due, why = stage.due(lake, cfg)
        if due:
            out.append((stage.name, why))
    return out


def run_pipeline(
    spark: SparkSession | Callable[[], SparkSession], lake: Lake, cfg: PipelineConfig | None = None
) -> dict[str, Any]:
    """Run, in order, every stage that is due when its turn comes; returns each one's summary.

    ``spark`` may be a callable so that nothing starts a JVM when no stage is due.
    """
    cfg = cfg or PipelineConfig()
    out: dict[str, Any] = {"ran": [], "why": {}}
    for stage in STAGES:
        due, why = stage.due(lake, cfg)
        if not due:
            continue
        log.info("stage %s: %s", stage.name, why, extra={"stage": stage.name, "reason": why})
        session = (spark() if callable(spark) else spark) if stage.spark else None
        with time_stage(stage.name):
            out[stage.name] = stage.run(session, lake, cfg)
        out["ran"].append(stage.name)
        out["why"][stage.name] = why
    return out


__all__ = [
    "STAGES",
    "PipelineConfig",
    "Stage",
    "features_due",
    "pending",
    "run_pipeline",
    "stage_named",
    "train_due",
]
