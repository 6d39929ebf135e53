"""``shoplens train`` and ``shoplens score``: the segmentation model wired to the lake.

Train reads the current features, studies how many events a segment needs, fits
``model.segmentation.SegmentationModel`` on trusted users, keeps segment ids and names of the previous
model where the segments match, and publishes::

    models/segmentation/<version>/{artifact.json, model.json, profiles.json,
                                   category_reference.parquet, report.md, report.html}
    models/segmentation/_current.json                              (the commit point)

then scores. Score applies the current light artifact (numpy only, never a refit) to the current
features of every user and publishes ``segments/<version>/`` + ``segments/_current.json``, then the
dashboard views (``services.views``). Layout and columns: /work/briefs/outputs-contract.md.

Why pandas (via pyarrow) and not Spark for the model: the features table has one row per user; 3
million users x ~50 columns is ~1 GB of float64, which Arrow reads from Parquet column-wise and
multi-threaded straight into numpy, without a JVM-to-Python row transfer. scikit-learn fits PCA and
K-Means on a 50k sample and assigns everyone in one vectorised pass (see model/segmentation.py).
Spark stays where the work is per event: features, the first-n-events study and the daily KPIs.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score

from etl.features import compute_features, first_n_events
from model.profiles import SegmentProfile, profile_segments
from model.scorer import NOT_ENOUGH_ACTIVITY, LightScorer, export_artifact, match_to_previous
from model.segmentation import SegmentationModel
from model.threshold import ThresholdStudy, threshold_study
from services.features_job import pointer, read_aggregates, run_features
from services.lake import AGGREGATES, EVENTS, FEATURES, MODELS, SEGMENTS, Lake, new_run_id, utc_now_iso
from services.spark import read_run_dataset

log = logging.getLogger("shoplens.segmentation")

MODEL_DATASET = f"{MODELS}/segmentation"
NOT_ENOUGH_NAME = "Not enough activity yet"
#: Stable colour per segment id (id modulo the palette), shared by the report and the dashboard.
PALETTE = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D",
    "#FF9DA6", "#BAB0AC", "#2F4B7C", "#A05195",
)  # fmt: skip
NOT_ENOUGH_COLOR = "#C8C8C8"


def segment_color(segment_id: int | None) -> str:
    """The hex colour of a segment (grey for "not enough activity")."""
    if segment_id is None or segment_id < 0:
        return NOT_ENOUGH_COLOR
    return PALETTE[int(segment_id) % len(PALETTE)]


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of ``shoplens train`` (defaults are what the tests and the demo use).

    ``threshold_grid`` are the n of the event-threshold study; a user enters the point n when they
    have at least ``long_factor * n`` events (so "all events" is a real extension of the first n);
    at most ``study_users`` users (hash-sampled, seeded) and points with fewer than
    ``min_study_users`` users are dropped. ``min_events_floor`` is the training floor of the
    preliminary model used by the study; the final model trains on users with at least the chosen
    threshold. If the target is never reached the largest n studied is used (and reported).
    """

    k_range: tuple[int, int] = (3, 10)
    seed: int = 42
    sample_size: int = 50_000
    n_bootstrap: int = 5
    n_threads: int | None = 1
    threshold_grid: tuple[int, ...] = (5, 10, 20, 40, 80)
    threshold_target: float = 0.8
    threshold_metric: str = "agreement"
    long_factor: float = 2.0
    study_users: int = 5_000
    min_study_users: int = 30
    min_events_floor: int = 5
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- reading
def read_features_pandas(lake: Lake, version: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The current (or given) features version as pandas, and its pointer document.

    pyarrow reads the Parquet parts column-wise with its own threads (no Spark, no JVM round trip).
    """
    ptr = pointer(lake, FEATURES)
    if ptr is None:
        raise FileNotFoundError("no features published yet: run `shoplens features`")
    version = version or ptr["version"]
    path = lake.spark_path(f"{FEATURES}/{version}")
    if path is None:
        raise FileNotFoundError(f"features version {version} has no files")
    df = _read_parquet_dir(Path(path))
    return df, ptr


def _read_parquet_dir(path: Path) -> pd.DataFrame:
    files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        return pd.DataFrame()
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default").to_pandas()


def category_reference(lake: Lake, aggregates_version: str) -> pd.DataFrame:
    """category_id, mean_log_price, n: the lake-wide category price reference behind ``price_level``.

    Read with pyarrow from the aggregates' ``prices`` table (user x category sums; small).
    """
    path = lake.spark_path(f"{AGGREGATES}/{aggregates_version}/prices")
    if path is None:
        return pd.DataFrame({"category_id": pd.Series(dtype="int64"), "mean_log_price": pd.Series(dtype=float),
                             "n": pd.Series(dtype="int64")})  # fmt: skip
    prices = _read_parquet_dir(Path(path))[["category_id", "n_priced", "sum_log_price"]]
    g = prices.groupby("category_id", sort=True).sum()
    return pd.DataFrame({"category_id": g.index.astype("int64"), "mean_log_price": g["sum_log_price"] / g["n_priced"],
                         "n": g["n_priced"].astype("int64").to_numpy()}).reset_index(drop=True)  # fmt: skip


def current_model(lake: Lake) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """(version, artifact, model.json) of the current model, or None before the first training."""
    version = lake.current_version(MODEL_DATASET)
    if version is None:
        return None
    base = f"{MODEL_DATASET}/{version}"
    return version, lake.read_json(f"{base}/artifact.json"), lake.read_json(f"{base}/model.json")


# -------------------------------------------------------------------------------- threshold study
def _study_users(features: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """Users long enough for the smallest n, hash-ordered (deterministic) and capped."""
    need = cfg.long_factor * min(cfg.threshold_grid)
    long = features.loc[(features["n_events"] >= need) & ~features["is_suspicious"].fillna(False)]
    order = pd.util.hash_pandas_object(long["user_key"], index=False, hash_key=f"{cfg.seed:016d}"[:16])
    return long.loc[order.sort_values(kind="stable").index[: cfg.study_users]]


def run_threshold_study(
    spark: SparkSession,
    events: DataFrame,
    category_prices: DataFrame,
    model: SegmentationModel,
    features: pd.DataFrame,
    cfg: TrainConfig,
) -> ThresholdStudy:
    """Segment of each long-history user from their first n events vs from all their events.

    Both segments come from the same fitted ``model`` (no event threshold applied), so labels are
    comparable. First-n features use ``as_of="last_event"`` and the whole lake's category prices.
    """
    users = _study_users(features, cfg)
    if users.empty:
        return threshold_study([], [], [], target=cfg.threshold_target, metric=cfg.threshold_metric)
    label_all = pd.Series(model.predict(users), index=users["user_key"].to_numpy())
    n_events = users.set_index("user_key")["n_events"]
    keys = spark.createDataFrame(pd.DataFrame({"user_key": users["user_key"].to_numpy()}))
    subset = events.join(F.broadcast(keys), on="user_key", how="left_semi").cache()  # read by every n
    # One Spark job for every n: the first-n events of each n under a composite key "<user_key>#<n>",
    # unioned, so a single compute_features call builds every truncation.
    grid = sorted(int(n) for n in cfg.threshold_grid)
    parts = [
        first_n_events(subset, n).withColumn("user_key", F.concat_ws("#", "user_key", F.lit(str(n))))
        for n in grid
    ]
    expanded = reduce(DataFrame.unionByName, parts)
    try:
        feats = compute_features(expanded, as_of="last_event", category_prices=category_prices).toPandas()
    finally:
        subset.unpersist()
    split = feats["user_key"].str.rsplit("#", n=1, expand=True)
    feats["user_key"], feats["_n"] = split[0], split[1].astype(int)
    ns, first, full = [], [], []
    for n in grid:
        eligible = set(n_events.index[n_events >= cfg.long_factor * n])
        if len(eligible) < cfg.min_study_users:
            continue
        part = feats.loc[(feats["_n"] == n) & feats["user_key"].isin(eligible)]
        ns.append(np.full(len(part), n))
        first.append(model.predict(part))
        full.append(label_all.loc[part["user_key"]].to_numpy())
    if not ns:
        return threshold_study([], [], [], target=cfg.threshold_target, metric=cfg.threshold_metric)
    return threshold_study(
        np.concatenate(ns),
        np.concatenate(first),
        np.concatenate(full),
        target=cfg.threshold_target,
        metric=cfg.threshold_metric,
    )


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
    from etl.pseudonymize import pseudonymize

    truth = pd.read_csv(truth_csv, usecols=["user_id", "persona"], dtype={"user_id": str})
    truth["user_key"] = [pseudonymize(u, key) for u in truth["user_id"]]
    merged = segments.merge(truth[["user_key", "persona"]], on="user_key", how="inner")
    scored = merged.loc[merged["segment_id"].notna()]
    return {
        "ari": float(adjusted_rand_score(scored["persona"], scored["segment_id"].astype(int))),
        "users_scored": len(scored),
        "users_matched": len(merged),
    }


def profile_documents(profiles: list[SegmentProfile]) -> list[dict[str, Any]]:
    """Profiles as published in profiles.json (the contract the dashboard reads)."""
    out = []
    for p in profiles:
        d = p.to_dict()
        d["lifts"] = d.pop("lift")
        d["color"] = segment_color(p.segment_id)
        out.append(d)
    return out


def train(
    spark: SparkSession,
    lake: Lake,
    cfg: TrainConfig | None = None,
    *,
    truth_csv: Path | None = None,
    key: bytes | None = None,
    do_score: bool = True,
) -> dict[str, Any]:
    """Fit, explain and publish a new segmentation model, then score (unless ``do_score`` is False).

    ``truth_csv`` (a generator's ``_truth/users.csv``, with ``key``) only adds ``ari_vs_truth`` to
    model.json after everything is fitted. Returns a summary dict (what ``--json`` prints).
    """
    from services.model_report import write_model_report

    cfg = cfg or TrainConfig()
    t0 = time.monotonic()
    features, feat_ptr = read_features_pandas(lake)
    if features.empty:
        raise ValueError("the features table is empty: ingest events and run `shoplens features`")
    agg_version = feat_ptr["aggregates_version"]
    events = read_run_dataset(spark, lake, EVENTS)
    if events is None:
        raise ValueError("no committed events in the lake: run `shoplens ingest` first")
    cat_prices = read_aggregates(spark, lake, agg_version).prices
    ref = category_reference(lake, agg_version)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prelim = _model(cfg, cfg.min_events_floor).fit(features)
        study = run_threshold_study(spark, events, cat_prices, prelim, features, cfg)
        min_events = _chosen_threshold(study, cfg)
        model = prelim if min_events == cfg.min_events_floor else _model(cfg, min_events).fit(features)
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
        metadata={"features_version": feat_ptr["version"], "k": model.k_},
    )  # fmt: skip
    artifact["category_price_reference"] = {
        "category_id": ref["category_id"].astype("int64").tolist(),
        "mean_log_price": ref["mean_log_price"].astype(float).tolist(),
        "n": ref["n"].astype("int64").tolist(),
    }
    summary = model.summary()
    chosen = summary["selection"]["scores"]
    row_k = next(r for r in chosen if r["k"] == model.k_)
    k_selection = [
        {
            "k": r["k"], "silhouette": r["silhouette"], "davies_bouldin": r["davies_bouldin"],
            "calinski_harabasz": r["calinski_harabasz"], "stability_ari": r["stability_mean"],
            "inertia": r["inertia"], "eligible": bool(r["eligible"]),
        }
        for r in chosen
    ]  # fmt: skip
    dates = pd.to_datetime(features["first_event_time"]), pd.to_datetime(features["last_event_time"])
    as_of = pd.to_datetime(features["as_of"]).max()
    model_doc: dict[str, Any] = {
        "version": version,
        "trained_at": utc_now_iso(),
        "data": {
            "event_date_min": str(dates[0].min().date()),
            "event_date_max": str(dates[1].max().date()),
            "as_of": as_of.isoformat(),
            "features_version": feat_ptr["version"],
            "aggregates_version": agg_version,
            "folded_run_ids": list(feat_ptr.get("folded_run_ids", [])),
            "users_trained": int(model.n_train_),
            "users_total": len(features),
        },
        "k": model.k_,
        "metrics": {
            "silhouette": row_k["silhouette"], "davies_bouldin": row_k["davies_bouldin"],
            "calinski_harabasz": row_k["calinski_harabasz"], "stability_ari": row_k["stability_mean"],
        },
        "k_selection": k_selection,
        "k_rule": summary["selection"]["rule"],
        "explained_variance_ratio": summary["explained_variance_ratio"],
        "features": summary["features"],
        "log_features": summary["log_features"],
        "dropped_features": [{"name": n, "reason": r} for n, r in summary["dropped_features"].items()],
        "feature_importance": summary["feature_importance"]["ranked"],
        "tree_rules": summary["feature_importance"]["tree_rules"],
        "tree_fidelity": summary["feature_importance"]["fidelity"],
        "threshold": {
            "chosen_min_events": min_events,
            "target": cfg.threshold_target,
            "metric": cfg.threshold_metric,
            "study_threshold": study.threshold,
            "error": study.error,
            "long_factor": cfg.long_factor,
            "curve": [
                {"n": p["n"], "agreement": p["agreement"], "ari": p["ari"], "users": p["n_users"]}
                for p in study.to_dict()["curve"]
            ],
        },
        "params": {**summary["params"], "n_threads": cfg.n_threads, "min_events_floor": cfg.min_events_floor},
        "warnings": fit_warnings,
        "segment_ids": ids.tolist(),
        "segment_names": names,
        "ari_vs_truth": None,
        "previous_version": prev_version,
    }
    profile_docs = profile_documents(profiles)

    staging = lake.work_dir / "staging" / f"model-{version}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        # PCA coordinates of a training sample, for the report's scatter (no keys leave this function).
        pcs = _pca_sample(model, features.loc[model.train_index_], stable_ids, cfg.seed)
        if truth_csv is not None and key is not None:
            scored = pd.DataFrame({"user_key": train_rows["user_key"].to_numpy(), "segment_id": stable_ids})
            model_doc["ari_vs_truth"] = truth_ari(scored, Path(truth_csv), key)["ari"]
        _write_json(staging / "artifact.json", artifact)
        _write_json(staging / "model.json", model_doc)
        _write_json(staging / "profiles.json", profile_docs)
        pq.write_table(pa.Table.from_pandas(ref, preserve_index=False), staging / "category_reference.parquet")
        write_model_report(staging, model_doc, profile_docs, pcs)
        lake.publish_version(staging, MODEL_DATASET, version, trained_at=model_doc["trained_at"],
                             features_version=feat_ptr["version"])  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    duration = round(time.monotonic() - t0, 3)
    log.info("model %s published", version, extra={"stage": "train", "version": version, "k": model.k_,
             "users_trained": model.n_train_, "min_events": min_events, "duration_seconds": duration})  # fmt: skip
    _record_model_metrics(model_doc)
    result: dict[str, Any] = {
        "status": "published",
        "version": version,
        "previous_version": prev_version,
        "k": model.k_,
        "min_events": min_events,
        "users_trained": int(model.n_train_),
        "users_total": len(features),
        "silhouette": row_k["silhouette"],
        "ari_vs_truth": model_doc["ari_vs_truth"],
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


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False, default=str), encoding="utf-8")


def _record_model_metrics(model_doc: Mapping[str, Any]) -> None:
    from services.metrics import record_model

    record_model(model_doc["version"], model_doc["metrics"]["silhouette"], model_doc["trained_at"])


# ------------------------------------------------------------------------------------------ score
def pca_coordinates(scorer: LightScorer, raw: np.ndarray) -> np.ndarray:
    """PCA coordinates (n, n_components) of raw input features: the first half of ``predict_array``."""
    raw = np.asarray(raw, dtype=float)
    filled = np.where(np.isnan(raw), scorer.fill, raw)
    if scorer.recency_index is not None:
        flag = (~np.isnan(raw[:, scorer.recency_index])).astype(float)
    else:
        flag = np.zeros(raw.shape[0])
    X = np.where(scorer.source_index >= 0, filled[:, np.maximum(scorer.source_index, 0)], flag[:, None])
    X = np.where(scorer.log_mask, np.log1p(np.clip(X, 0.0, None)), X)
    Z = (X - scorer.center) / scorer.scale
    if scorer.clip is not None:
        Z = np.clip(Z, -scorer.clip, scorer.clip)
    return (Z - scorer.pca_mean) @ scorer.components.T


def _utc(when: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(when)
    return ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")


def score_frame(scorer: LightScorer, features: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """The segments table (contract columns) for a features frame, with the light scorer only."""
    seg, conf = scorer.predict(features)
    raw = features[list(scorer.input_features)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    P = pca_coordinates(scorer, raw)
    scored = seg != NOT_ENOUGH_ACTIVITY
    names = dict(zip(scorer.segment_ids.tolist(), scorer.segment_names, strict=True))
    return pd.DataFrame(
        {
            "user_key": features["user_key"].to_numpy(),
            "segment_id": pd.array([int(s) if ok else None for s, ok in zip(seg, scored, strict=True)], dtype="Int64"),
            "segment_name": [names[int(s)] if ok else NOT_ENOUGH_NAME for s, ok in zip(seg, scored, strict=True)],
            "confidence": np.where(scored, conf, np.nan),
            "n_events": features["n_events"].fillna(0).astype("int64").to_numpy(),
            "model_version": scorer.model_version,
            "as_of": _utc(as_of),
            "pc1": np.where(scored, P[:, 0], np.nan),
            "pc2": np.where(scored, P[:, 1] if P.shape[1] > 1 else 0.0, np.nan),
        }
    )


SEGMENTS_SCHEMA = pa.schema(
    [
        ("user_key", pa.string()),
        ("segment_id", pa.int64()),
        ("segment_name", pa.string()),
        ("confidence", pa.float64()),
        ("n_events", pa.int64()),
        ("model_version", pa.string()),
        ("as_of", pa.timestamp("us", tz="UTC")),
        ("pc1", pa.float64()),
        ("pc2", pa.float64()),
    ]
)


def read_segments(lake: Lake, version: str | None = None) -> pd.DataFrame | None:
    """The current (or given) segments table as pandas; None before the first scoring."""
    version = version or lake.current_version(SEGMENTS)
    if version is None:
        return None
    path = lake.spark_path(f"{SEGMENTS}/{version}")
    return _read_parquet_dir(Path(path)) if path else None


def score(
    spark: SparkSession, lake: Lake, *, refresh_features: bool = True, build_views: bool = True
) -> dict[str, Any]:
    """Assign every user of the current features with the current model; publish segments and views.

    ``refresh_features`` first folds new committed runs into the features (so users first seen in
    new files are scored). Never refits.
    """
    from services.metrics import record_segments

    t0 = time.monotonic()
    current = current_model(lake)
    if current is None:
        raise FileNotFoundError("no segmentation model yet: run `shoplens train`")
    model_version, artifact, _ = current
    if refresh_features:
        run_features(spark, lake)
    features, feat_ptr = read_features_pandas(lake)
    scorer = LightScorer.from_dict(artifact)
    as_of = pd.to_datetime(features["as_of"]).max() if len(features) else pd.Timestamp.now(tz="UTC")
    seg = score_frame(scorer, features, as_of.to_pydatetime())

    prev_ptr = pointer(lake, SEGMENTS)
    if prev_ptr is None:
        flow_from = None
    elif prev_ptr.get("model_version") != model_version:
        flow_from = prev_ptr["version"]
    else:
        flow_from = prev_ptr.get("flow_from_version")
    version = new_run_id()
    staging = lake.work_dir / "staging" / f"segments-{version}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        table = pa.Table.from_pandas(seg, schema=SEGMENTS_SCHEMA, preserve_index=False)
        pq.write_table(table, staging / "part-00000.parquet")
        lake.publish_version(
            staging, SEGMENTS, version, model_version=model_version, as_of=as_of.isoformat(),
            features_version=feat_ptr["version"], flow_from_version=flow_from, n_users=len(seg),
        )  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
    }
    if build_views:
        from services.views import build_views

        summary["views_version"] = build_views(spark, lake)["version"]
    summary["duration_seconds"] = round(time.monotonic() - t0, 3)
    log.info("segments %s published", version, extra={"stage": "score", **{
        k: summary[k] for k in ("version", "model_version", "users", "users_scored", "duration_seconds")}})  # fmt: skip
    return summary


# -------------------------------------------------------------------------------- export, staleness
def export_table(lake: Lake, what: str, fmt: str, out: Path) -> dict[str, Any]:
    """Write the current segments or features to ``out`` as one CSV or Parquet file (pseudonymized keys)."""
    if what == "segments":
        df = read_segments(lake)
        if df is None:
            raise FileNotFoundError("no segments yet: run `shoplens score`")
    elif what == "features":
        df, _ = read_features_pandas(lake)
    else:
        raise ValueError(f"export what must be 'segments' or 'features', got {what!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), out)
    elif fmt == "csv":
        df.to_csv(out, index=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z")
    else:
        raise ValueError(f"format must be 'csv' or 'parquet', got {fmt!r}")
    return {"what": what, "format": fmt, "out": str(out), "rows": len(df), "columns": list(df.columns)}


def staleness(lake: Lake, max_new_runs: int = 1, max_age_days: float = 7.0) -> tuple[bool, str]:
    """(stale?, why): no model, or features moved on by >= ``max_new_runs`` runs, or the model is old."""
    current = current_model(lake)
    if current is None:
        return True, "no model yet"
    _, _, doc = current
    trained_runs = set(doc.get("data", {}).get("folded_run_ids", []))
    feat_ptr = pointer(lake, FEATURES)
    folded = set(feat_ptr.get("folded_run_ids", [])) if feat_ptr else set()
    new_runs = len(folded - trained_runs)
    if max_new_runs > 0 and new_runs >= max_new_runs:
        return True, f"{new_runs} new ingestion run(s) since training"
    trained = datetime.fromisoformat(doc["trained_at"])
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
    return "\n".join(lines)


__all__ = [
    "MODEL_DATASET",
    "NOT_ENOUGH_NAME",
    "TrainConfig",
    "category_reference",
    "current_model",
    "export_table",
    "pca_coordinates",
    "read_features_pandas",
    "read_segments",
    "run_threshold_study",
    "score",
    "score_frame",
    "score_report",
    "segment_color",
    "staleness",
    "train",
    "train_report",
    "truth_ari",
]
