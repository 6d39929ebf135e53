"""Dashboard views: small pre-aggregated tables under ``views/<version>/`` (+ ``views/_current.json``).

The dashboard reads only these (never events or the full segments table), so each page loads in
milliseconds whatever the lake's size. Built after every scoring from the committed events (daily
KPIs, with Spark), the run summaries, the current and the previous segments, and the current model's
profiles. Columns: /work/briefs/outputs-contract.md. No user keys in any view.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from services.features_job import pointer
from services.lake import EVENTS, SEGMENTS, VIEWS, Lake, new_run_id
from services.spark import read_run_dataset

log = logging.getLogger("shoplens.views")

PCA_SAMPLE_MAX = 20_000
RUNS_KEPT = 50


def kpi_daily(events: DataFrame | None) -> pd.DataFrame:
    """Per UTC event_date: active users, sessions, events by type, revenue, session conversion rate.

    A session spanning midnight counts on both days; conversion_rate = sessions with a purchase that
    day / sessions that day.
    """
    cols = ["event_date", "active_users", "sessions", "views", "carts", "purchases", "revenue", "conversion_rate"]
    if events is None:
        return pd.DataFrame(columns=cols)
    is_purchase = F.col("event_type") == "purchase"
    daily = (
        events.groupBy("event_date")
        .agg(
            F.countDistinct("user_key").alias("active_users"),
            F.countDistinct("session_key").alias("sessions"),
            F.sum((F.col("event_type") == "view").cast("long")).alias("views"),
            F.sum((F.col("event_type") == "cart").cast("long")).alias("carts"),
            F.sum(is_purchase.cast("long")).alias("purchases"),
            F.coalesce(F.sum(F.when(is_purchase, F.col("price"))), F.lit(0.0)).alias("revenue"),
            F.countDistinct(F.when(is_purchase, F.col("session_key"))).alias("_buying_sessions"),
        )
        .withColumn("conversion_rate", F.col("_buying_sessions") / F.col("sessions"))
        .drop("_buying_sessions")
        .orderBy("event_date")
    )
    return daily.toPandas()[cols]


def segment_summary(segments: pd.DataFrame, features: pd.DataFrame, profiles: list[dict]) -> pd.DataFrame:
    """One row per segment (plus segment_id null = not enough activity): users, revenue, shares, colour."""
    from services.segmentation_job import NOT_ENOUGH_NAME, segment_color

    rev = features[["user_key", "monetary"]] if "monetary" in features else pd.DataFrame(columns=["user_key"])
    df = segments.merge(rev, on="user_key", how="left")
    df["monetary"] = df.get("monetary", pd.Series(0.0, index=df.index)).fillna(0.0)
    df["_sid"] = df["segment_id"].astype("float").fillna(-1).astype(int)
    g = df.groupby("_sid").agg(users=("user_key", "size"), revenue=("monetary", "sum"),
                               avg_confidence=("confidence", "mean"))  # fmt: skip
    names = {int(p["segment_id"]): p["name"] for p in profiles}
    names.update(df.drop_duplicates("_sid").set_index("_sid")["segment_name"].to_dict())
    total_users, total_rev = g["users"].sum(), g["revenue"].sum()
    out = pd.DataFrame(
        {
            "segment_id": pd.array([None if s < 0 else s for s in g.index], dtype="Int64"),
            "segment_name": [NOT_ENOUGH_NAME if s < 0 else names.get(s, f"Segment {s}") for s in g.index],
            "users": g["users"].astype("int64").to_numpy(),
            "share_users": (g["users"] / total_users).to_numpy() if total_users else 0.0,
            "revenue": g["revenue"].astype(float).to_numpy(),
            "share_revenue": (g["revenue"] / total_rev).to_numpy() if total_rev > 0 else 0.0,
            "avg_confidence": g["avg_confidence"].astype(float).to_numpy(),
            "color": [segment_color(None if s < 0 else s) for s in g.index],
        }
    )
    return out.sort_values("users", ascending=False, kind="stable").reset_index(drop=True)


def pca_sample(segments: pd.DataFrame, max_rows: int = PCA_SAMPLE_MAX, seed: int = 0) -> pd.DataFrame:
    """Scored users' (pc1, pc2, segment) sampled per segment in proportion to its size, <= max_rows.

    Each segment keeps at least min(its size, 1% of ``max_rows``) points so small segments stay visible.
    """
    scored = segments.loc[segments["segment_id"].notna(), ["pc1", "pc2", "segment_id", "segment_name"]]
    if len(scored) <= max_rows:
        return scored.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    sizes = scored.groupby("segment_id").size()
    floor = max_rows // 100
    quota = np.maximum(np.floor(sizes / len(scored) * (max_rows - floor * len(sizes))), 0).astype(int) + floor
    parts = []
    for sid, idx in scored.groupby("segment_id").indices.items():
        take = min(len(idx), int(quota[sid]))
        parts.append(scored.iloc[np.sort(rng.choice(idx, size=take, replace=False))])
    return pd.concat(parts).head(max_rows).reset_index(drop=True)


def segment_flow(previous: pd.DataFrame | None, current: pd.DataFrame) -> pd.DataFrame:
    """Users per (segment under the previous model -> segment now), over users scored by both."""
    cols = ["from_segment_name", "to_segment_name", "users"]
    if previous is None:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "users" else "string") for c in cols})
    both = previous[["user_key", "segment_name"]].merge(
        current[["user_key", "segment_name"]], on="user_key", suffixes=("_from", "_to")
    )
    flow = both.groupby(["segment_name_from", "segment_name_to"]).size().reset_index(name="users")
    flow.columns = cols
    return flow.sort_values("users", ascending=False, kind="stable").reset_index(drop=True)


def runs_table(runs: list[dict[str, Any]], keep: int = RUNS_KEPT) -> pd.DataFrame:
    """The last ``keep`` ingestion runs; ``files`` = number of files in the run, ``file_names`` their names."""
    rows = [
        {
            "run_id": r.get("run_id"),
            "status": r.get("status"),
            "started_at": pd.to_datetime(r.get("started_at"), utc=True),
            "duration_seconds": float(r.get("duration_seconds") or 0.0),
            "rows_read": int(r.get("rows_read") or 0),
            "rows_accepted": int(r.get("rows_accepted") or 0),
            "rows_quarantined": int(r.get("rows_quarantined") or 0),
            "duplicates_removed": int(r.get("duplicates_removed") or 0),
            "files": len(r.get("files") or []),
            "file_names": ", ".join(f"{f.get('name')} ({f.get('status')})" for f in r.get("files") or []),
        }
        for r in sorted(runs, key=lambda r: r.get("run_id") or "")[-keep:]
    ]
    return pd.DataFrame(rows, columns=["run_id", "status", "started_at", "duration_seconds", "rows_read",
                                       "rows_accepted", "rows_quarantined", "duplicates_removed", "files",
                                       "file_names"])  # fmt: skip


def build_views(spark: SparkSession, lake: Lake) -> dict[str, Any]:
    """Compute every view from the lake's current state and publish ``views/<version>/``."""
    from services.segmentation_job import MODEL_DATASET, read_features_pandas, read_segments

    seg_ptr = pointer(lake, SEGMENTS)
    segments = read_segments(lake)
    if seg_ptr is None or segments is None:
        raise FileNotFoundError("no segments yet: run `shoplens score`")
    features, _ = read_features_pandas(lake)
    model_version = seg_ptr["model_version"]
    profiles = lake.read_json(f"{MODEL_DATASET}/{model_version}/profiles.json")
    flow_from = seg_ptr.get("flow_from_version")
    previous = read_segments(lake, flow_from) if flow_from else None
    events = read_run_dataset(spark, lake, EVENTS)
    kpi = kpi_daily(events)
    latest = events.agg(F.max("event_time")).first()[0] if events is not None else None
    runs = lake.runs()
    committed = [r for r in runs if r.get("status") == "committed"]
    tables = {
        "kpi_daily": kpi,
        "segment_summary": segment_summary(segments, features, profiles),
        "pca_sample": pca_sample(segments),
        "segment_flow": segment_flow(previous, segments),
        "runs": runs_table(runs),
    }
    freshness = {
        "latest_event_time": latest.isoformat() if latest is not None else None,
        "last_run_at": max((r.get("finished_at") or r.get("started_at") for r in committed), default=None),
        "model_version": model_version,
        "segments_as_of": seg_ptr.get("as_of"),
        "segments_version": seg_ptr["version"],
    }
    version = new_run_id()
    staging = lake.work_dir / "staging" / f"views-{version}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for name, df in tables.items():
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), staging / f"{name}.parquet")
        (staging / "freshness.json").write_text(json.dumps(freshness, indent=2, default=str), encoding="utf-8")
        lake.publish_version(staging, VIEWS, version, segments_version=seg_ptr["version"],
                             model_version=model_version)  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("views %s published", version, extra={"stage": "publish", "version": version})
    return {"version": version, "tables": sorted(tables), "freshness": freshness}


def read_view(lake: Lake, name: str, version: str | None = None) -> pd.DataFrame:
    """One view table of the current (or given) views version."""
    version = version or lake.current_version(VIEWS)
    if version is None:
        raise FileNotFoundError("no views yet: run `shoplens score`")
    return pq.read_table(Path(_local(lake, f"{VIEWS}/{version}")) / f"{name}.parquet").to_pandas()


def _local(lake: Lake, prefix: str) -> str:
    path = lake.spark_path(prefix)
    if path is None:
        raise FileNotFoundError(f"{prefix} has no files")
    return path


__all__ = ["build_views", "kpi_daily", "pca_sample", "read_view", "runs_table", "segment_flow", "segment_summary"]
