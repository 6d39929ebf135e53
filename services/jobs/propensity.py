"""``shoplens propensity train|score``: purchase propensity wired to the lake.

Train builds the stacked examples of every weekly cutoff, all cutoffs of a user bucket in one Spark task
reading the bucket's user timeline (:func:`etl.labels.timeline_examples` through
:func:`services.core.timelines.run_on_buckets`),
fits the logistic baseline and the boosted model on the training cutoffs, evaluates both on the
validation cutoff (the most recent one whose label window is complete), ships the one with the best
validation ROC AUC and publishes::

    models/propensity/<version>/{artifact.json, artifacts/<kind>.json, metrics.json, report.md,
                                 report.html, category_reference.parquet, views/*.parquet}
    models/propensity/_current.json                                  (the commit point)

Score applies the shipped light artifact (numpy, no refit) to every user of the current features
(as of the lake's latest event) joined with the recent-activity windows computed at that time (from
the timelines' events of the last 28 days only: nothing older enters a window, :mod:`etl.activity`), and
publishes ``propensity/<version>/`` (user_key, propensity, decile, model_version, as_of); the pointer
carries the decile cut points and the mean propensity per segment (small, for the dashboard).
Layout and columns: docs/outputs.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import SparkSession
from threadpoolctl import threadpool_limits

from etl.activity import ABSENT, ACTIVITY_EVENT_COLUMNS, as_of_micros
from etl.labels import (
    CHUNK_EVENTS,
    CUTOFF,
    EVENT_COLUMNS,
    LABEL,
    PRICE_SUMS_BY_PERIOD,
    USER_CODE,
    cutoff_prices,
    event_span,
    examples_schema,
    key_codes,
    price_sums_by_period,
    timeline_activity,
    timeline_examples,
    weekly_cutoffs,
)
from etl.timeline import KEY_COLUMNS
from model.propensity import (
    DEFAULT_CAPACITY,
    MODEL_FEATURES,
    Comparison,
    LightPropensityScorer,
    compare_models,
    decile_cuts,
    export_artifact,
)
from services.core.catalog import EVENTS, FEATURES, PROPENSITY, PROPENSITY_MODEL, SEGMENTS, STAGING
from services.core.documents.propensity import PropensityMetrics
from services.core.freshness import recording
from services.core.lake import Lake, new_run_id, utc_now_iso
from services.core.publish import new_version
from services.core.readers import read_features, read_segments
from services.core.timelines import read_written, require_timelines, run_on_buckets
from services.core.timings import Timings
from services.jobs.features import category_reference
from services.reports.propensity import write_propensity_report

log = logging.getLogger("shoplens.propensity")

#: Small tables published with the model for the dashboard (no user keys).
VIEW_NAMES = ("roc", "pr", "calibration", "deciles", "grid", "importance", "coefficients")


@dataclass(frozen=True)
class PropensityConfig:
    """Knobs of ``shoplens propensity train`` (defaults: what the tests and the demo use)."""

    horizon_days: int = 7
    n_train_cutoffs: int = 4
    step_days: int = 7
    min_history_days: int = 7
    capacity: float = DEFAULT_CAPACITY
    seed: int = 0
    max_train_rows: int = 1_000_000
    #: threads for the model fits (None = every core); 1 avoids OpenMP spin-waits on a busy shared machine
    n_threads: int | None = None


# ------------------------------------------------------------------------------------ examples


def build_examples(spark: SparkSession, lake: Lake, cfg: PropensityConfig,
                   timings: Timings | None = None) -> tuple[pd.DataFrame, Any]:  # fmt: skip
    """(stacked examples of every cutoff as pandas, sorted by cutoff and user code, the Cutoffs);
    NotEnoughData if too little history.

    The event span (hence the cutoffs) and every cutoff's category prices come from one pass over the
    timeline buckets (:func:`etl.labels.price_sums_by_period`), not from the event files.
    Every cutoff's rows of a user bucket come from one Spark task reading the bucket's timeline
    (:func:`etl.labels.timeline_examples`; small buckets are handed over several at once, up to
    :data:`etl.labels.CHUNK_EVENTS` events: a call has a fixed cost of some pandas work per cutoff). Sorted, so the fits (seeded samples of rows) do not depend
    on how the users fall into buckets.
    """
    timings = Timings() if timings is None else timings
    if not lake.committed_files(EVENTS):
        raise ValueError("no committed events in the lake: run `shoplens ingest` first")
    require_timelines(lake)
    with timings.phase("price_sums"):  # the event span and every cutoff's category prices: one pass
        sums = run_on_buckets(spark, lake, lambda _buckets, timeline: price_sums_by_period(timeline),
                              PRICE_SUMS_BY_PERIOD, columns=["event_time", "category_id", "price"],
                              batch_rows=CHUNK_EVENTS)  # fmt: skip
    cuts = weekly_cutoffs(*event_span(sums), cfg.horizon_days, cfg.n_train_cutoffs, cfg.step_days, cfg.min_history_days)
    prices = cutoff_prices(sums, cuts.all)
    # the model features come back as float32, what the models read (MATRIX_DTYPE; the tasks round to
    # nearest as numpy does): 3M users x 5 cutoffs take about 3.5 GB instead of 7 GB. The tasks write them
    # to the store and this process reads them there: past the driver's result limit and heap otherwise
    cut_us, horizon = sorted(as_of_micros(c) for c in cuts.all), cfg.horizon_days
    schema = examples_schema(base=True, label=True, narrow=MODEL_FEATURES)
    prefix = f"{STAGING}/{new_run_id()}/propensity-examples"

    def examples(_buckets: Sequence[int], timeline: pa.Table) -> pa.Table:
        return timeline_examples(timeline, cut_us, horizon, prices, narrow=MODEL_FEATURES)

    try:
        with timings.phase("examples_tasks"):
            written = run_on_buckets(spark, lake, examples, schema, columns=EVENT_COLUMNS, dictionary=KEY_COLUMNS,
                                     batch_rows=CHUNK_EVENTS, out=prefix)  # fmt: skip
        with timings.phase("read_examples"):
            table = read_written(lake.store, prefix, written, schema)
    finally:
        lake.store.delete_prefix(prefix)
    with timings.phase("sort"):
        table = table.sort_by([(CUTOFF, "ascending"), (USER_CODE, "ascending")])
    with timings.phase("to_pandas"):
        return table.to_pandas(), cuts


def split_examples(examples: pd.DataFrame, validation: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows: cutoffs before ``validation``, validation rows)."""
    v = pd.Timestamp(validation)
    return examples.loc[examples[CUTOFF] < v], examples.loc[examples[CUTOFF] == v]


def _check_labels(train: pd.DataFrame, validation: pd.DataFrame) -> None:
    if int(train[LABEL].sum()) == 0:
        raise ValueError("no positive labels: nobody purchased within the horizon after any training cutoff")
    if int(validation[LABEL].sum()) == 0:
        raise ValueError("no positive labels at the validation cutoff: nobody purchased within its horizon")


# ------------------------------------------------------------------------------------ train
def _views(comp: Comparison) -> dict[str, pd.DataFrame]:
    out: dict[str, list[pd.DataFrame]] = {n: [] for n in VIEW_NAMES}
    for kind, r in comp.reports.items():
        tables = {"roc": r.roc, "pr": r.pr, "calibration": r.calibration, "deciles": r.deciles, "grid": r.grid,
                  "importance": r.importance, "coefficients": r.coefficients}  # fmt: skip
        for name, df in tables.items():
            if df is not None:
                out[name].append(df.assign(model=kind))
    return {n: pd.concat(parts, ignore_index=True) for n, parts in out.items() if parts}


def metrics_document(comp: Comparison, cuts: Any, version: str, examples: pd.DataFrame, cfg: PropensityConfig,
                     features_version: str | None) -> dict[str, Any]:  # fmt: skip
    per_cutoff = examples.groupby(CUTOFF)[LABEL].agg(["size", "sum"]).reset_index()
    return PropensityMetrics.model_validate({
        "version": version, "trained_at": utc_now_iso(), "shipped": comp.shipped,
        "rule": "the shipped model has the higher ROC AUC on the validation cutoff",
        "horizon_days": cfg.horizon_days, "capacity": cfg.capacity,
        "threshold_rule": f"target the top {cfg.capacity:.0%} of users by score (campaign capacity)",
        "validation_cutoff": cuts.validation.isoformat(), "train_cutoffs": [c.isoformat() for c in cuts.train],
        "cutoffs": [{"cutoff": c.isoformat(), "users": int(n), "buyers": int(b), "base_rate": float(b / n)}
                    for c, n, b in zip(per_cutoff[CUTOFF], per_cutoff["size"], per_cutoff["sum"], strict=True)],
        "population": "users with at least one event at or before the cutoff",
        "label": f"a purchase event in (cutoff, cutoff + {cfg.horizon_days} days]",
        "features_version": features_version,
        "models": {k: r.metrics for k, r in comp.reports.items()},
        "importance": {k: r.importance.head(15).to_dict("records") for k, r in comp.reports.items()},
        "coefficients": (comp.reports["logistic"].coefficients.to_dict("records")
                         if "logistic" in comp.reports else None),
        "features": list(comp.best.model.features_),
    }).to_dict()  # fmt: skip


def train(spark: SparkSession, lake: Lake, cfg: PropensityConfig | None = None) -> dict[str, Any]:
    """Build examples, fit and compare both models, publish the model version; returns a summary."""
    cfg = cfg or PropensityConfig()
    t0, timings = time.monotonic(), Timings()
    examples, cuts = build_examples(spark, lake, cfg, timings)
    t_examples = time.monotonic() - t0
    train_rows, validation = split_examples(examples, cuts.validation)
    _check_labels(train_rows, validation)
    params = {k: {"max_train_rows": cfg.max_train_rows} for k in ("logistic", "boosted")}
    with threadpool_limits(limits=cfg.n_threads):
        comp = compare_models(train_rows, validation, capacity=cfg.capacity, params=params, seed=cfg.seed)
    t_fit = time.monotonic() - t0 - t_examples
    version = new_run_id()
    feat_ptr = lake.pointer(FEATURES)
    doc = metrics_document(comp, cuts, version, examples, cfg, feat_ptr["version"] if feat_ptr else None)
    meta = {"validation_cutoff": doc["validation_cutoff"], "shipped": comp.shipped, "features": doc["features"]}
    artifacts = {k: export_artifact(r.model, version, meta) for k, r in comp.reports.items()}
    views = _views(comp)
    with new_version(lake, PROPENSITY_MODEL, version, trained_at=doc["trained_at"], shipped=comp.shipped,
                     roc_auc=comp.best.metrics["roc_auc"], validation_cutoff=doc["validation_cutoff"]) as staged:  # fmt: skip
        staged.write_json("artifact.json", artifacts[comp.shipped])
        for kind, art in artifacts.items():
            staged.write_json(f"artifacts/{kind}.json", art)
        staged.write_json(PropensityMetrics.FILE, doc)
        for name, df in views.items():
            staged.write_table(f"views/{name}", df)
        if feat_ptr is not None and feat_ptr.get("category_prices_version"):
            staged.write_table("category_reference", category_reference(lake, feat_ptr["category_prices_version"]))
        write_propensity_report(staged.dir, doc, views)
    duration = round(time.monotonic() - t0, 3)
    summary = {
        "status": "published", "version": version, "shipped": comp.shipped,
        "validation_cutoff": doc["validation_cutoff"], "train_cutoffs": doc["train_cutoffs"],
        "examples": len(examples), "models": {k: {m: r.metrics[m] for m in ("roc_auc", "pr_auc", "base_rate", "ece",
                                                                          "log_loss", "brier", "calibration")}
                                              for k, r in comp.reports.items()},
        "examples_seconds": round(t_examples, 3), "examples_phase_seconds": dict(timings),
        "fit_seconds": round(t_fit, 3), "train_seconds": duration,
    }  # fmt: skip
    log.info("propensity model %s published", version, extra={"stage": "propensity_train", "version": version,
             "shipped": comp.shipped, "duration_seconds": duration})  # fmt: skip
    return summary


# ------------------------------------------------------------------------------------ score
SCORES_SCHEMA = pa.schema(
    [
        ("user_key", pa.string()),
        ("propensity", pa.float64()),
        ("decile", pa.int64()),
        ("model_version", pa.string()),
        ("as_of", pa.timestamp("us", tz="UTC")),
    ]
)


def current_artifact(lake: Lake) -> tuple[str, dict[str, Any]] | None:
    version = lake.current_version(PROPENSITY_MODEL)
    if version is None:
        return None
    return version, lake.read_json(f"{PROPENSITY_MODEL}/{version}/artifact.json")


def score_features(
    features: pd.DataFrame, activity: pd.DataFrame, scorer: LightPropensityScorer
) -> tuple[pd.DataFrame, np.ndarray]:
    """(per-user scores with the contract columns, decile cut points) of features + activity at one time.

    ``activity`` is keyed by ``user_code`` (:func:`etl.labels.key_codes`); the features' keys are coded
    the same way, and two users sharing a code (about 2.4e-7 for 3 million users) is an error rather
    than a silent merge. A user missing from ``activity`` (no event in its lookback) has
    :data:`etl.activity.ABSENT`.
    """
    codes = key_codes(pa.array(features["user_key"].to_numpy(dtype=object), pa.string())).to_numpy()
    if not pd.Index(codes).is_unique:
        raise ValueError("two users share the 64-bit code of their key: propensity scores cannot tell them apart")
    # the activity rows aligned to the features' order (-1: no event in the lookback), only the columns the
    # model reads: a merge of the whole features table copied 3M x 60 values twice over (10 s at 3M users)
    at = pd.Index(activity[USER_CODE].to_numpy()).get_indexer(codes)
    found = at >= 0
    aligned = {}
    for name, absent in ABSENT.items():
        aligned[name] = np.full(len(codes), absent)
        aligned[name][found] = activity[name].to_numpy(dtype=float)[at[found]]
    frame = pd.DataFrame({c: aligned[c] if c in aligned else features[c].array for c in scorer.features})
    p = scorer.predict_proba(frame)
    cuts = decile_cuts(p) if len(p) else np.zeros(9)
    deciles = scorer.with_deciles(cuts).deciles_of(p)
    return pd.DataFrame({
        "user_key": features["user_key"].to_numpy(), "propensity": p, "decile": deciles.astype("int64"),
        "model_version": scorer.model_version, "as_of": pd.to_datetime(features["as_of"], utc=True).array,
    }), cuts  # fmt: skip


def by_segment(scores: pd.DataFrame, segments: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Mean propensity and users per segment name (for the dashboard; no keys)."""
    if segments is None or segments.empty:
        return []
    joined = scores.merge(segments[["user_key", "segment_name"]], on="user_key", how="inner")
    g = joined.groupby("segment_name")["propensity"].agg(["mean", "size"]).reset_index()
    return [{"segment_name": str(n), "mean_propensity": float(m), "users": int(s)}
            for n, m, s in zip(g["segment_name"], g["mean"], g["size"], strict=True)]  # fmt: skip


def score(spark: SparkSession, lake: Lake) -> dict[str, Any]:
    """Score every user of the current features with the shipped model; publish ``propensity/``."""
    t0, timings = time.monotonic(), Timings()
    current = current_artifact(lake)
    if current is None:
        raise FileNotFoundError("no propensity model yet: run `shoplens propensity train`")
    model_version, artifact = current
    with timings.phase("read_features"):
        features, feat_ptr = read_features(lake)
    if features.empty:
        raise ValueError("the features table is empty: ingest events and run `shoplens features`")
    as_of = pd.to_datetime(features["as_of"], utc=True).max().to_pydatetime()
    if not lake.committed_files(EVENTS):
        raise ValueError("no committed events in the lake: run `shoplens ingest` first")
    require_timelines(lake)
    with timings.phase("activity_windows"):
        activity = run_on_buckets(spark, lake, lambda _buckets, timeline: timeline_activity(timeline, as_of),
                                  examples_schema(base=False, label=False), columns=ACTIVITY_EVENT_COLUMNS,
                                  dictionary=KEY_COLUMNS, batch_rows=CHUNK_EVENTS).drop_columns([CUTOFF]).to_pandas()  # fmt: skip
    with timings.phase("score"):
        scores, cuts = score_features(features, activity, LightPropensityScorer(artifact))
    with timings.phase("by_segment"):
        seg_means = by_segment(scores, read_segments(lake))
    with timings.phase("publish"), new_version(
        lake, PROPENSITY, **recording({PROPENSITY_MODEL: model_version, FEATURES: feat_ptr["version"]}),
        as_of=as_of.astimezone(UTC).isoformat(), n_users=len(scores), decile_cuts=[float(c) for c in cuts],
        segments_version=lake.current_version(SEGMENTS), by_segment=seg_means,
    ) as staged:  # fmt: skip
        staged.write_table("part-00000", scores, SCORES_SCHEMA)
    summary = {
        "status": "published", "version": staged.version, "model_version": model_version,
        "features_version": feat_ptr["version"], "as_of": as_of.isoformat(), "users": len(scores),
        "mean_propensity": float(scores["propensity"].mean()), "by_segment": seg_means,
        "phase_seconds": dict(timings), "duration_seconds": round(time.monotonic() - t0, 3),
    }  # fmt: skip
    log.info("propensity scores %s published", staged.version, extra={"stage": "propensity_score",
             "version": staged.version, "users": len(scores)})  # fmt: skip
    return summary


# ------------------------------------------------------------------------------------ staleness
def _skip_marker(lake: Lake) -> Any:
    return lake.work_dir / "propensity_not_enough_data.json"


def train_due(lake: Lake, max_age_days: float) -> tuple[bool, str]:
    """No model yet (unless the same features were already found too short), or the model is old."""
    feat = lake.pointer(FEATURES)
    if feat is None:
        return False, "no features yet"
    version = lake.current_version(PROPENSITY_MODEL)
    if version is None:
        marker = _skip_marker(lake)
        if marker.exists() and json.loads(marker.read_text()).get("features_version") == feat["version"]:
            return False, "not enough history yet (waiting for new features)"
        return True, "no propensity model yet"
    trained = datetime.fromisoformat(lake.pointer(PROPENSITY_MODEL)["trained_at"])
    age = (datetime.now(UTC) - trained).total_seconds() / 86_400
    if max_age_days > 0 and age >= max_age_days:
        return True, f"propensity model is {age:.1f} days old"
    return False, f"fresh ({age:.2f} days old)"


def train_stage(spark: SparkSession, lake: Lake, cfg: PropensityConfig | None = None) -> dict[str, Any]:
    """The pipeline's training: like :func:`train`, but too little history is a skip, not a failure."""
    from etl.labels import NotEnoughData

    try:
        return train(spark, lake, cfg)
    except NotEnoughData as err:
        feat = lake.pointer(FEATURES) or {}
        marker = _skip_marker(lake)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"features_version": feat.get("version"), "reason": str(err)}))
        log.warning("propensity: %s", err, extra={"stage": "propensity_train"})
        return {"status": "skipped", "reason": str(err)}


# ------------------------------------------------------------------------------------ summaries
def train_report(s: dict[str, Any]) -> str:
    if s.get("status") == "skipped":
        return f"propensity: skipped ({s['reason']})"
    lines = [f"propensity model {s['version']}: shipped {s['shipped']} (validation cutoff {s['validation_cutoff']}, "
             f"{s['examples']:,} examples, {s['train_seconds']:.1f}s)",
             f"{'model':<10} {'ROC AUC':>8} {'PR AUC':>8} {'base':>7} {'ECE':>7} {'log loss':>9} {'Brier':>7}  calibration"]  # fmt: skip
    for k, m in s["models"].items():
        lines.append(f"{k:<10} {m['roc_auc']:>8.3f} {m['pr_auc']:>8.3f} {m['base_rate']:>7.3f} {m['ece']:>7.3f} "
                     f"{m['log_loss']:>9.3f} {m['brier']:>7.3f}  {m['calibration'] or 'none'}")  # fmt: skip
    return "\n".join(lines)


def score_report(s: dict[str, Any]) -> str:
    return (f"propensity {s['version']} (model {s['model_version']}): {s['users']:,} users scored as of "
            f"{s['as_of']}, mean propensity {s['mean_propensity']:.3f}")  # fmt: skip


__all__ = [
    "SCORES_SCHEMA",
    "VIEW_NAMES",
    "PropensityConfig",
    "build_examples",
    "by_segment",
    "current_artifact",
    "score",
    "score_features",
    "score_report",
    "split_examples",
    "train",
    "train_due",
    "train_report",
    "train_stage",
]
