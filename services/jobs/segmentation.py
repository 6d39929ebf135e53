"""``shoplens train`` and ``shoplens score``: the segmentation model wired to the lake.

Train reads the current features, fits ``model.segmentation.SegmentationModel`` on users with at
least ``min_events_floor`` events, studies how many events its segment needs (first-n truncations of
long histories), learns the per-user trust figure from that study (``model.segmentation.trust``),
keeps segment ids and names of the previous model where the segments match, and publishes::

    models/segmentation/<version>/{artifact.json, model.json, profiles.json,
                                   category_reference.parquet, report.md, report.html}
    models/segmentation/_current.json                              (the commit point)

then scores. Score applies the current light artifact (numpy only, never a refit) to the current
features of every user and publishes ``segments/<version>/`` + ``segments/_current.json``, then the
segment views (``views/segments/``). Layout and columns: docs/outputs.md.

Why pandas (via pyarrow) and not Spark for the model: the features table has one row per user; 3
million users x ~50 columns is ~1 GB of float64, which Arrow reads from Parquet column-wise and
multi-threaded straight into numpy, without a JVM-to-Python row transfer. scikit-learn fits PCA and
K-Means on a 50k sample and assigns everyone in one vectorised pass (see model/segmentation/segmentation.py).
Spark only distributes the per-event work: the features and the first-n-events study run Spark-free
code on each timeline bucket in Spark tasks (services.core.timelines.run_on_buckets).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import SparkSession
from sklearn.metrics import adjusted_rand_score

from etl.local_features import FIRST_N_ARROW, FIRST_N_INPUTS, first_n_features, reference_means
from etl.pseudonymize import pseudonymize
from model.segmentation import (
    LightScorer,
    SegmentationModel,
    ThresholdStudy,
    calibration_table,
    export_artifact,
    fit_trust,
    match_to_previous,
    pca_sample,
    profile_documents,
    profile_segments,
    score_frame,
    segment_flow,
    segment_summary,
    threshold_study,
)
from services.core.catalog import FEATURES, SEGMENT_VIEWS, SEGMENTATION_MODEL, SEGMENTS
from services.core.documents import OutdatedDocument
from services.core.documents.segmentation import (
    Coverage,
    DataWindow,
    SegmentationModelDocument,
    Threshold,
    ThresholdPoint,
    Trust,
)
from services.core.freshness import recording
from services.core.lake import Lake, new_run_id, utc_now_iso
from services.core.metrics import record_model, record_segments
from services.core.publish import new_version
from services.core.readers import current_model, read_features, read_segments
from services.core.timelines import run_on_buckets
from services.jobs.features import category_reference, run_features
from services.reports.segmentation import write_model_report

log = logging.getLogger("shoplens.segmentation")

@dataclass(frozen=True)
class TrainConfig:
    """Knobs of ``shoplens train`` (defaults are what the tests and the demo use).

    ``threshold_grid`` are the n of the event-threshold study; a user enters the point n when they
    have at least ``long_factor * n`` events (so "all events" is a real extension of the first n);
    at most ``study_users`` users (hash-sampled, seeded) and points with fewer than
    ``min_study_users`` users are dropped. ``min_events_floor`` is the training floor: the model trains
    on users with at least that many events (its features are rates that converge quickly, so short
    histories are signal, not noise) and the study measures that same model; users below the chosen
    threshold are scored as "not enough activity yet". The threshold is where the metric's one-sided
    lower bound at ``threshold_confidence`` stays at or above the target (None: the estimate itself;
    ``model.segmentation.threshold``). If the target is never reached the largest n studied is used
    (and reported).
    """

    k_range: tuple[int, int] = (3, 10)
    seed: int = 42
    sample_size: int = 50_000
    n_bootstrap: int = 5
    n_threads: int | None = 1
    threshold_grid: tuple[int, ...] = (5, 10, 15, 20, 30, 40, 80)
    threshold_target: float = 0.8
    threshold_metric: str = "agreement"
    threshold_confidence: float | None = 0.95
    long_factor: float = 2.0
    study_users: int = 5_000
    min_study_users: int = 30
    min_events_floor: int = 5
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)


# -------------------------------------------------------------------------------- threshold study
def _study_users(features: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """Users long enough for the smallest n, hash-ordered (deterministic) and capped."""
    need = cfg.long_factor * min(cfg.threshold_grid)
    long = features.loc[(features["n_events"] >= need) & ~features["is_suspicious"].fillna(False)]
    order = pd.util.hash_pandas_object(long["user_key"], index=False, hash_key=f"{cfg.seed:016d}"[:16])
    return long.loc[order.sort_values(kind="stable").index[: cfg.study_users]]


def truncated_features(
    spark: SparkSession, lake: Lake, reference: pd.DataFrame, features: pd.DataFrame, cfg: TrainConfig
) -> pd.DataFrame:
    """Features of each study user from their first n events, for every n of the grid they qualify for.

    A user enters n when they have at least ``long_factor * n`` events (so "all events" is a real
    extension of the first n); an n with fewer than ``min_study_users`` such users is left out.
    First-n features use ``as_of="last_event"`` and the whole lake's category prices (``reference``,
    :func:`services.jobs.features.category_reference`), computed in Spark tasks on the study users'
    timeline buckets by :func:`etl.local_features.first_n_features`. Columns: the features table's,
    plus ``n``. These rows weigh the model's features (``SegmentationModel.fit``) and measure its
    threshold (:func:`run_threshold_study`).
    """
    users = _study_users(features, cfg)
    n_events = users.set_index("user_key")["n_events"]
    grid = [n for n in sorted(int(n) for n in cfg.threshold_grid)
            if (n_events >= cfg.long_factor * n).sum() >= cfg.min_study_users]  # fmt: skip
    if users.empty or not grid:
        return pd.DataFrame(columns=[*features.columns, "n"])
    keys, means = frozenset(users["user_key"]), reference_means(reference)

    def study(_buckets: object, timeline: pa.Table) -> pa.Table:
        return first_n_features(timeline, grid, keys, means)

    feats = run_on_buckets(spark, lake, study, FIRST_N_ARROW, columns=FIRST_N_INPUTS).to_pandas()
    eligible = n_events.loc[feats["user_key"]].to_numpy() >= cfg.long_factor * feats["n"].to_numpy()
    return feats.loc[eligible].sort_values(["n", "user_key"], ignore_index=True)


def run_threshold_study(
    model: SegmentationModel, features: pd.DataFrame, truncated: pd.DataFrame, cfg: TrainConfig
) -> tuple[ThresholdStudy, pd.DataFrame]:
    """Segment of each study user from their first n events vs from all their events.

    Both segments come from the same fitted ``model`` (no event threshold applied), so labels are
    comparable; ``truncated`` is :func:`truncated_features`. Returns the study and its rows (``n``,
    ``confidence`` of the first-n assignment, ``agree``), the data the trust model is fitted on.
    """
    if truncated.empty:
        rows = pd.DataFrame({"n": pd.Series(dtype="int64"), "confidence": pd.Series(dtype=float),
                             "agree": pd.Series(dtype=bool)})  # fmt: skip
        return _study([], [], [], cfg), rows
    full = features.set_index("user_key").loc[truncated["user_key"]].reset_index()
    first, confidence = model.predict_with_confidence(truncated)
    whole = model.predict(full)
    rows = pd.DataFrame({"n": truncated["n"].to_numpy(), "confidence": confidence, "agree": first == whole})
    study = _study(rows["n"], first, whole, cfg)
    return study, rows


def _study(n: Any, first: Any, whole: Any, cfg: TrainConfig) -> ThresholdStudy:
    return threshold_study(n, first, whole, target=cfg.threshold_target, metric=cfg.threshold_metric,
                           confidence=cfg.threshold_confidence, seed=cfg.seed)  # fmt: skip


def _chosen_threshold(study: ThresholdStudy, cfg: TrainConfig) -> int:
    if study.threshold is not None:
        return max(int(study.threshold), cfg.min_events_floor)
    if study.curve:
        return int(max(p.n for p in study.curve))
    return cfg.min_events_floor


# ------------------------------------------------------------------------------------------ train
def _model(cfg: TrainConfig, min_events: int) -> SegmentationModel:
    return SegmentationModel(
        k_range=tuple(cfg.k_range),
        seed=cfg.seed,
        sample_size=cfg.sample_size,
        n_bootstrap=cfg.n_bootstrap,
        n_threads=cfg.n_threads,
        min_events=min_events,
        **dict(cfg.model_kwargs),
    )


def truth_ari(segments: pd.DataFrame, truth_csv: Path, key: bytes) -> dict[str, float | int]:
    """Adjusted Rand index of segments against a generator's ``_truth/users.csv`` (evaluation only).

    Computed after the fit, on scored users (segment not null); the truth never reaches the model.
    """
    truth = pd.read_csv(truth_csv, usecols=["user_id", "persona"], dtype={"user_id": str})
    truth["user_key"] = [pseudonymize(u, key) for u in truth["user_id"]]
    merged = segments.merge(truth[["user_key", "persona"]], on="user_key", how="inner")
    scored = merged.loc[merged["segment_id"].notna()]
    return {
        "ari": float(adjusted_rand_score(scored["persona"], scored["segment_id"].astype(int))),
        "users_scored": len(scored),
        "users_matched": len(merged),
    }


def truth_ari_bands(
    segments: pd.DataFrame, truth_csv: Path, key: bytes, min_events: int
) -> list[dict[str, Any]]:
    """ARI vs the generator's personas per band of n_events (the issue-16 floors), on scored rows."""
    bands = [(f">= {min_events} (trusted)", min_events, None), ("15 to 39", 15, 40), (">= 40", 40, None),
             ("5 to 14", 5, 15)]  # fmt: skip
    out = []
    n = segments["n_events"]
    for label, lo, hi in bands:
        part = segments.loc[(n >= lo) & (n < hi if hi is not None else True)]
        if len(part) >= 2:
            fig = truth_ari(part, truth_csv, key)
            out.append({"band": label, "ari": fig["ari"], "users": fig["users_scored"]})
    return out


def train(
    spark: SparkSession,
    lake: Lake,
    cfg: TrainConfig | None = None,
    *,
    truth_csv: Path | None = None,
    key: bytes | None = None,
    do_score: bool = True,
    refresh_features: bool = False,
) -> dict[str, Any]:
    """Fit, explain and publish a new segmentation model, then score (unless ``do_score`` is False).

    ``refresh_features`` first folds committed runs not in the features yet (``shoplens train`` does,
    so the demo needs no separate ``shoplens features`` process; the pipeline's features stage already
    ran). ``truth_csv`` (a generator's ``_truth/users.csv``, with ``key``) only adds ``ari_vs_truth`` to
    model.json after everything is fitted. Returns a summary dict (what ``--json`` prints).
    """
    cfg = cfg or TrainConfig()
    t0 = time.monotonic()
    if refresh_features:
        run_features(spark, lake)
    features, feat_ptr = read_features(lake)
    if features.empty:
        raise ValueError("the features table is empty: ingest events and run `shoplens features`")
    ref = category_reference(lake, feat_ptr["category_prices_version"])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        truncated = truncated_features(spark, lake, ref, features, cfg)
        model = _model(cfg, cfg.min_events_floor).fit(features, truncated=truncated if len(truncated) else None)
        study, study_rows = run_threshold_study(model, features, truncated, cfg)
        min_events = _chosen_threshold(study, cfg)
        trust = fit_trust(study_rows["n"], study_rows["confidence"], study_rows["agree"], seed=cfg.seed)
    fit_warnings = sorted({str(w.message) for w in caught})
    for msg in fit_warnings:
        log.warning("segmentation: %s", msg, extra={"stage": "train"})

    previous = current_model(lake)
    version = new_run_id()
    if previous is not None:
        prev_version, prev_artifact, _ = previous
        ids = match_to_previous(model, prev_artifact)
        prev_names = {
            int(i): n
            for i, n in zip(prev_artifact["segment_ids"], prev_artifact["segment_names"], strict=True)
            if int(i) in set(ids.tolist())
        }
    else:
        prev_version, ids, prev_names = None, np.arange(model.k_), {}
    train_rows = features.loc[model.train_index_]
    stable_ids = ids[model.labels_]
    profiles = profile_segments(train_rows, stable_ids, previous_names=prev_names)
    by_id = {p.segment_id: p for p in profiles}
    names = [by_id[int(i)].name for i in ids]

    artifact = export_artifact(
        model, version, segment_ids=ids.tolist(), segment_names=names, min_events=min_events,
        metadata={"features_version": feat_ptr["version"], "k": model.k_}, trust=trust,
    )  # fmt: skip
    artifact["category_price_reference"] = {
        "category_id": ref["category_id"].astype("int64").tolist(),
        "mean_log_price": ref["mean_log_price"].astype(float).tolist(),
        "n": ref["n"].astype("int64").tolist(),
    }
    dates = pd.to_datetime(features["first_event_time"]), pd.to_datetime(features["last_event_time"])
    as_of = pd.to_datetime(features["as_of"]).max()
    curve = [ThresholdPoint(n=p["n"], agreement=p["agreement"], ari=p["ari"], lower=p["lower"], users=p["n_users"])
             for p in study.to_dict()["curve"]]  # fmt: skip
    calibration = calibration_table(trust.predict(study_rows["n"].to_numpy(), study_rows["confidence"].to_numpy()),
                                    study_rows["agree"].to_numpy())  # fmt: skip
    pcs = _pca_sample(model, features.loc[model.train_index_], stable_ids, cfg.seed)  # no keys leave this function
    ari: dict[str, Any] = {}
    if truth_csv is not None and key is not None:
        scored = pd.DataFrame({"user_key": train_rows["user_key"].to_numpy(), "segment_id": stable_ids,
                               "n_events": train_rows["n_events"].to_numpy()})  # fmt: skip
        trusted = scored.loc[scored["n_events"] >= min_events]
        ari = {"ari_vs_truth": truth_ari(trusted, Path(truth_csv), key)["ari"],
               "ari_vs_truth_by_events": truth_ari_bands(scored, Path(truth_csv), key, min_events)}  # fmt: skip
    doc = SegmentationModelDocument.build(
        model, params={"n_threads": cfg.n_threads, "min_events_floor": cfg.min_events_floor},
        version=version, trained_at=utc_now_iso(), previous_version=prev_version,
        data=DataWindow(event_date_min=str(dates[0].min().date()), event_date_max=str(dates[1].max().date()),
                        as_of=as_of.isoformat(), features_version=feat_ptr["version"],
                        folded_run_ids=list(feat_ptr.get("folded_run_ids", [])), users_trained=int(model.n_train_),
                        users_total=len(features)),
        threshold=Threshold(chosen_min_events=min_events, target=cfg.threshold_target, metric=cfg.threshold_metric,
                            confidence=cfg.threshold_confidence, study_threshold=study.threshold, error=study.error,
                            long_factor=cfg.long_factor, curve=curve,
                            trust=Trust(**trust.to_dict(), calibration=calibration)),
        coverage=Coverage.of(features, min_events), warnings=fit_warnings, segment_ids=ids.tolist(),
        segment_names=names, **ari,
    )  # fmt: skip
    profile_docs = profile_documents(profiles)
    published = doc.to_dict()

    with new_version(lake, SEGMENTATION_MODEL, version, trained_at=doc.trained_at,
                     features_version=feat_ptr["version"]) as staged:  # fmt: skip
        staged.write_json("artifact.json", artifact)
        staged.write_json(doc.FILE, published)
        staged.write_json("profiles.json", profile_docs)
        staged.write_table("category_reference", ref)
        write_model_report(staged.dir, published, profile_docs, pcs)
    duration = round(time.monotonic() - t0, 3)
    log.info("model %s published", version, extra={"stage": "train", "version": version, "k": model.k_,
             "users_trained": model.n_train_, "min_events": min_events, "duration_seconds": duration})  # fmt: skip
    record_model(doc.version, doc.metrics.silhouette, doc.trained_at)
    result: dict[str, Any] = {
        "status": "published",
        "version": version,
        "previous_version": prev_version,
        "k": model.k_,
        "min_events": min_events,
        "users_trained": int(model.n_train_),
        "users_total": len(features),
        "silhouette": doc.metrics.silhouette,
        "ari_vs_truth": doc.ari_vs_truth,
        "ari_vs_truth_by_events": published["ari_vs_truth_by_events"],
        "coverage": published["coverage"],
        "threshold_curve": published["threshold"]["curve"],
        "segments": [
            {"segment_id": p["segment_id"], "name": p["name"], "size": p["size"], "share_users": p["share_users"],
             "share_revenue": p["share_revenue"]}
            for p in profile_docs
        ],
        "train_seconds": duration,
    }
    if do_score:
        result["score"] = score(spark, lake, refresh_features=False)
    return result


def _pca_sample(model: SegmentationModel, rows: pd.DataFrame, ids: np.ndarray, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(rows), size=min(len(rows), 5_000), replace=False))
    P = model.transform(rows.iloc[take])
    return pd.DataFrame({"pc1": P[:, 0], "pc2": P[:, 1] if P.shape[1] > 1 else 0.0, "segment_id": ids[take]})


# ------------------------------------------------------------------------------------------ score
SEGMENTS_SCHEMA = pa.schema(
    [
        ("user_key", pa.string()),
        ("segment_id", pa.int64()),
        ("segment_name", pa.string()),
        ("confidence", pa.float64()),
        ("trust", pa.float64()),
        ("lifecycle_stage", pa.string()),
        ("n_events", pa.int64()),
        ("model_version", pa.string()),
        ("as_of", pa.timestamp("us", tz="UTC")),
        ("pc1", pa.float64()),
        ("pc2", pa.float64()),
    ]
)


def score(
    spark: SparkSession, lake: Lake, *, refresh_features: bool = True, build_views: bool = True
) -> dict[str, Any]:
    """Assign every user of the current features with the current model; publish segments and views.

    ``refresh_features`` first folds new committed runs into the features (so users first seen in
    new files are scored). Never refits. ``build_views`` also publishes the segment views.
    """
    t0 = time.monotonic()
    current = current_model(lake)
    if current is None:
        raise FileNotFoundError("no segmentation model yet: run `shoplens train`")
    model_version, artifact, _ = current
    if refresh_features:
        run_features(spark, lake)
    features, feat_ptr = read_features(lake)
    scorer = LightScorer.from_dict(artifact)
    as_of = pd.to_datetime(features["as_of"]).max() if len(features) else pd.Timestamp.now(tz="UTC")
    seg = score_frame(scorer, features, as_of.to_pydatetime())

    prev_ptr = lake.pointer(SEGMENTS)
    if prev_ptr is None:
        flow_from = None
    elif prev_ptr.get("model_version") != model_version:
        flow_from = prev_ptr["version"]
    else:
        flow_from = prev_ptr.get("flow_from_version")
    with new_version(lake, SEGMENTS, **recording({SEGMENTATION_MODEL: model_version, FEATURES: feat_ptr["version"]}),
                     as_of=as_of.isoformat(), flow_from_version=flow_from, n_users=len(seg)) as staged:  # fmt: skip
        staged.write_table("part-00000", seg, SEGMENTS_SCHEMA)
    version = staged.version
    sizes = seg["segment_name"].value_counts().to_dict()
    record_segments(sizes)
    summary: dict[str, Any] = {
        "status": "published",
        "version": version,
        "model_version": model_version,
        "features_version": feat_ptr["version"],
        "as_of": as_of.isoformat(),
        "users": len(seg),
        "users_scored": int(seg["segment_id"].notna().sum()),
        "users_not_enough_activity": int(seg["segment_id"].isna().sum()),
        "min_events": scorer.min_events,
        "sizes": {str(k): int(v) for k, v in sizes.items()},
        "lifecycle": {str(k): int(v) for k, v in seg["lifecycle_stage"].value_counts().items()},
    }
    if build_views:
        summary["views_version"] = publish_segment_views(lake, seg, features, version, model_version, flow_from)
    summary["duration_seconds"] = round(time.monotonic() - t0, 3)
    log.info("segments %s published", version, extra={"stage": "score", **{
        k: summary[k] for k in ("version", "model_version", "users", "users_scored", "duration_seconds")}})  # fmt: skip
    return summary


def publish_segment_views(
    lake: Lake, segments: pd.DataFrame, features: pd.DataFrame, segments_version: str, model_version: str,
    flow_from: str | None,
) -> str:  # fmt: skip
    """Publish ``views/segments/`` (summary, PCA sample, flow from the previous model); its version."""
    profiles = lake.read_json(f"{SEGMENTATION_MODEL}/{model_version}/profiles.json")
    previous = read_segments(lake, flow_from) if flow_from else None
    with new_version(lake, SEGMENT_VIEWS, segments_version=segments_version, model_version=model_version,
                     flow_from_version=flow_from) as staged:  # fmt: skip
        staged.write_table("segment_summary", segment_summary(segments, features, profiles))
        staged.write_table("pca_sample", pca_sample(segments))
        staged.write_table("segment_flow", segment_flow(previous, segments))
    return staged.version


# -------------------------------------------------------------------------------- staleness
def staleness(lake: Lake, max_new_runs: int = 1, max_age_days: float = 7.0) -> tuple[bool, str]:
    """(stale?, why): no model, or features moved on by >= ``max_new_runs`` runs, or the model is old."""
    version = lake.current_version(SEGMENTATION_MODEL)  # the document only: staleness needs no artifact
    if version is None:
        return True, "no model yet"
    try:
        doc = SegmentationModelDocument.read(lake, version)
    except OutdatedDocument:
        return True, "the model was written by another shoplens release"
    trained_runs = set(doc.data.folded_run_ids)
    feat_ptr = lake.pointer(FEATURES)
    folded = set(feat_ptr.get("folded_run_ids", [])) if feat_ptr else set()
    new_runs = len(folded - trained_runs)
    if max_new_runs > 0 and new_runs >= max_new_runs:
        return True, f"{new_runs} new ingestion run(s) since training"
    trained = datetime.fromisoformat(doc.trained_at)
    age = (datetime.now(UTC) - trained).total_seconds() / 86_400
    if max_age_days > 0 and age >= max_age_days:
        return True, f"model is {age:.1f} days old"
    return False, f"fresh ({new_runs} new run(s), {age:.2f} days old)"


def train_report(s: Mapping[str, Any]) -> str:
    """Human summary of ``train``: the named segments as a table."""
    lines = [
        f"model {s['version']}: k={s['k']}, {s['users_trained']:,} of {s['users_total']:,} users trained, "
        f"trust threshold {s['min_events']} events, silhouette {s['silhouette']:.3f} "
        f"({s['train_seconds']:.1f}s)"
    ]
    if s.get("ari_vs_truth") is not None:
        lines.append(f"adjusted Rand index vs generator personas: {s['ari_vs_truth']:.3f}")
    lines.append(f"{'id':>3}  {'segment':<36} {'users':>9} {'users%':>7} {'revenue%':>8}")
    for p in s["segments"]:
        lines.append(
            f"{p['segment_id']:>3}  {p['name'][:36]:<36} {p['size']:>9,} {100 * p['share_users']:>6.1f}% "
            f"{100 * p['share_revenue']:>7.1f}%"
        )
    if "score" in s:
        lines.append(score_report(s["score"]))
    return "\n".join(lines)


def score_report(s: Mapping[str, Any]) -> str:
    """Human summary of ``score``."""
    lines = [
        f"segments {s['version']} (model {s['model_version']}): {s['users']:,} users, "
        f"{s['users_scored']:,} scored, {s['users_not_enough_activity']:,} below {s['min_events']} events"
    ]
    for name, n in sorted(s["sizes"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<40} {n:>9,}")
    if s.get("lifecycle"):
        lines.append("lifecycle stages:")
        for name, n in sorted(s["lifecycle"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<40} {n:>9,}")
    return "\n".join(lines)


__all__ = [
    "SEGMENTS_SCHEMA",
    "TrainConfig",
    "publish_segment_views",
    "run_threshold_study",
    "score",
    "score_report",
    "staleness",
    "train",
    "train_report",
    "truncated_features",
    "truth_ari",
    "truth_ari_bands",
]
