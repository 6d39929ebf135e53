"""``shoplens compare-models``: the shipped model families weighed against others, on the lake's own data.

Reads the current features, the shipped segmentation artifact and the committed events; answers three
questions with :mod:`model.comparison` and publishes one versioned result::

    models/comparison/<version>/{comparison.json, report.md, report.html}
    models/comparison/_current.json                                 (the commit point)

- segmentation: the shipped model's training users (``n_events`` at least its training floor, bots
  out) in the shipped model's own space, the shipped k;
- assignment from the first n events: the first-n features of the segmentation job's study users
  (:func:`services.jobs.segmentation.truncated_features`, the same hash-sampled users and rule), the
  target being their full-history segment from the shipped artifact;
- propensity: the examples and time split of ``propensity train`` (:func:`services.jobs.propensity.build_examples`).

A question whose inputs are missing (no model yet, too little history) is left out with its reason,
the others still run. Everything is seeded; the result is the same for the same lake and seed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from threadpoolctl import threadpool_limits

from etl.labels import CUTOFF, LABEL
from etl.pseudonymize import pseudonymize
from model.comparison import compare_assigners, compare_clusterings, compare_propensity
from model.comparison.assignment import nearest_centroid
from model.segmentation import LightScorer
from services.core.catalog import MODEL_COMPARISON, PROPENSITY_MODEL
from services.core.documents.segmentation import SegmentationModelDocument
from services.core.lake import Lake, new_run_id, utc_now_iso
from services.core.publish import new_version
from services.core.readers import current_model, read_features
from services.jobs.features import category_reference
from services.jobs.propensity import PropensityConfig, build_examples, split_examples
from services.jobs.segmentation import TrainConfig, truncated_features
from services.reports.compare_models import write_comparison_report

log = logging.getLogger("shoplens.compare_models")

QUESTIONS = ("segmentation", "assignment", "propensity")


@dataclass(frozen=True)
class CompareConfig:
    """Knobs of ``shoplens compare-models`` (defaults: the demo lake within 10 minutes on 2 cores)."""

    seed: int = 42
    cluster_sample: int = 4_000
    n_bootstrap: int = 3
    ns: tuple[int, ...] = (5, 10, 15, 20, 40)
    study_users: int = 3_000
    max_propensity_rows: int = 200_000
    n_threads: int | None = 1  # OpenMP threads of the fits: 1 avoids spin-waits on a shared machine
    questions: tuple[str, ...] = QUESTIONS


@dataclass
class ComparisonResult:
    """``comparison.json``: one table per question answered (``model.comparison.Table.to_dict``)."""

    version: str
    computed_at: str
    seed: int
    inputs: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _personas(user_keys: pd.Series, truth_csv: Path, key: bytes) -> np.ndarray:
    """The generator's persona of each user key ("" where the truth file does not know the user)."""
    truth = pd.read_csv(truth_csv, usecols=["user_id", "persona"], dtype={"user_id": str})
    by_key = dict(zip((pseudonymize(u, key) for u in truth["user_id"]), truth["persona"].astype(str), strict=True))
    return np.array([by_key.get(k, "") for k in user_keys])


def _train_rows(features: pd.DataFrame, model_doc: SegmentationModelDocument) -> pd.DataFrame:
    """The shipped model's training population: at least its floor of events, bots left out."""
    floor = int(model_doc.params.get("min_events_floor", 0) or 0)
    keep = (features["n_events"].fillna(0) >= floor) & ~features["is_suspicious"].fillna(False).astype(bool)
    return features.loc[keep]


def _segmentation(scorer: LightScorer, rows: pd.DataFrame, cfg: CompareConfig, truth: np.ndarray | None) -> dict:
    X = scorer.transform(scorer.input_matrix(rows))
    return compare_clusterings(X, len(scorer.centroids), seed=cfg.seed, sample_size=cfg.cluster_sample,
                               n_bootstrap=cfg.n_bootstrap, truth=truth).to_dict()  # fmt: skip


def _assignment(spark: SparkSession, lake: Lake, scorer: LightScorer, features: pd.DataFrame,
                feat_ptr: dict[str, Any], cfg: CompareConfig) -> dict:  # fmt: skip
    reference = category_reference(lake, feat_ptr["category_prices_version"])
    study = TrainConfig(seed=cfg.seed, threshold_grid=cfg.ns, study_users=cfg.study_users)
    truncated = truncated_features(spark, lake, reference, features, study)
    if truncated.empty:
        raise ValueError(f"no user has at least {2 * min(cfg.ns)} events")
    shipped = nearest_centroid(scorer.centroids, scorer.segment_ids)
    full = features.set_index("user_key").loc[pd.unique(truncated["user_key"])].reset_index()
    codes = {k: i for i, k in enumerate(full["user_key"])}
    X_full = scorer.transform(scorer.input_matrix(full))
    target_by_user = shipped(X_full)
    user = truncated["user_key"].map(codes).to_numpy()
    return compare_assigners(
        scorer.transform(scorer.input_matrix(truncated)), truncated["n"].to_numpy(), user, target_by_user[user],
        X_full, np.arange(len(full)), shipped, ns=cfg.ns, seed=cfg.seed,
    ).to_dict()  # fmt: skip


def _propensity(spark: SparkSession, lake: Lake, cfg: CompareConfig) -> dict:
    examples, cuts = build_examples(spark, lake, PropensityConfig(seed=0))
    train, validation = split_examples(examples, cuts.validation)
    table = compare_propensity(train, validation, seed=cfg.seed, max_train_rows=cfg.max_propensity_rows,
                               label_col=LABEL, cutoff_col=CUTOFF)  # fmt: skip
    shipped = lake.current_version(PROPENSITY_MODEL)
    if shipped is not None:  # the published model may predate the latest events: say whether the split is its own
        cutoff = lake.read_json(f"{PROPENSITY_MODEL}/{shipped}/metrics.json")["validation_cutoff"]
        same = pd.Timestamp(cutoff) == pd.Timestamp(cuts.validation)
        table.notes.append(f"the published model {shipped} was validated at {cutoff[:10]}: "
                           + ("the same split." if same else "an earlier split; the shipped kinds are refitted on this one."))
    return table.to_dict()


def compare_models(
    spark: SparkSession, lake: Lake, cfg: CompareConfig | None = None, *, truth_csv: Path | None = None,
    key: bytes | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Answer every question whose inputs exist, publish ``models/comparison``; returns the result document."""
    cfg = cfg or CompareConfig()
    unknown = set(cfg.questions) - set(QUESTIONS)
    if unknown:
        raise ValueError(f"compare-models: unknown question(s) {sorted(unknown)}; known: {', '.join(QUESTIONS)}")
    features, feat_ptr = read_features(lake)
    shipped = current_model(lake)
    tables: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    scorer = LightScorer.from_dict(shipped[1]) if shipped else None

    def answer(name: str, run: Any) -> None:
        if name not in cfg.questions:
            return
        t0 = time.monotonic()
        try:
            with threadpool_limits(limits=cfg.n_threads):
                tables[name] = run()
        except ValueError as err:  # too little data for this question: the others still run
            skipped[name] = str(err)
            log.warning("compare-models: %s skipped: %s", name, err, extra={"stage": "compare_models"})
        seconds[name] = round(time.monotonic() - t0, 3)

    if scorer is None:
        for q in ("segmentation", "assignment"):
            if q in cfg.questions:
                skipped[q] = "no segmentation model yet: run `shoplens train`"
    else:
        rows = _train_rows(features, shipped[2])
        truth = _personas(rows["user_key"], truth_csv, key) if truth_csv is not None and key is not None else None
        answer("segmentation", lambda: _segmentation(scorer, rows, cfg, truth))
        answer("assignment", lambda: _assignment(spark, lake, scorer, features, feat_ptr, cfg))
    answer("propensity", lambda: _propensity(spark, lake, cfg))
    result = ComparisonResult(
        version=new_run_id(), computed_at=utc_now_iso(), seed=cfg.seed,
        inputs={"features_version": feat_ptr["version"], "segmentation_model_version": shipped[0] if shipped else None,
                "propensity_model_version": lake.current_version(PROPENSITY_MODEL), "users": len(features),
                "truth_file": truth_csv is not None, "config": {**asdict(cfg), "ns": list(cfg.ns)}},
        tables=tables, skipped=skipped, seconds=seconds,
    )  # fmt: skip
    doc = result.to_dict()
    with new_version(lake, MODEL_COMPARISON, result.version, computed_at=result.computed_at,
                     features_version=feat_ptr["version"],
                     winners={k: t["winner"] for k, t in tables.items()}) as staged:  # fmt: skip
        staged.write_json("comparison.json", doc)
        write_comparison_report(staged.dir, doc)
    log.info("model comparison %s published", result.version,
             extra={"stage": "compare_models", "version": result.version, "seconds": seconds})  # fmt: skip
    return doc


def comparison_text(doc: dict[str, Any]) -> str:
    """The console summary: one line per question."""
    lines = [f"model comparison {doc['version']} published ({sum(doc['seconds'].values()):.1f} s)"]
    for name, t in doc["tables"].items():
        lines.append(f"  {name}: {t['winner']} (shipped: {t['shipped']}) - {t['why']}")
    for name, why in doc["skipped"].items():
        lines.append(f"  {name}: skipped - {why}")
    return "\n".join(lines)


__all__ = ["QUESTIONS", "CompareConfig", "ComparisonResult", "compare_models", "comparison_text"]
