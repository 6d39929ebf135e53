"""A tiny but realistic lake in the exact layout of docs/outputs.md, without Spark.

Users come from four behavioural personas (browsers, loyal buyers, cart abandoners, bargain
hunters) plus newcomers with too few events. Two model versions are fitted for real with
``model.segmentation.SegmentationModel`` and exported with ``model.segmentation.scorer.export_artifact``; every
user is scored with the light scorer; the views are aggregated from those tables with pandas. The
returned :class:`FixtureLake` keeps the frames so tests can recompute what a page should show.

``build_lake`` is also what ``benchmarks/dashboard_bench.py`` scales to 3 million users
(``n_users``; the model is fitted on ``fit_users`` of them, the rest are only scored).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from etl.pseudonymize import pseudonymize
from model.segmentation import (
    LightScorer,
    SegmentationModel,
    export_artifact,
    pca_sample,
    profile_documents,
    profile_segments,
    score_frame,
    segment_flow,
    segment_summary,
)
from services.core.catalog import (
    CLV,
    FEATURES,
    OVERVIEW_VIEWS,
    RETENTION,
    RUNS,
    SEGMENT_VIEWS,
    SEGMENTATION_MODEL,
    SEGMENTS,
)
from services.core.documents.clv import ClvResult
from services.core.documents.overview import OverviewFreshness
from services.core.documents.retention import RetentionResult
from services.core.documents.segmentation import (
    Coverage,
    DataWindow,
    SegmentationModelDocument,
    Threshold,
    ThresholdPoint,
    Trust,
)
from services.core.lake import Lake, runs_table
from services.core.storage import LocalStore
from tests.conftest import REES46_SAMPLE

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
MIN_EVENTS = 5
AS_OF = datetime(2019, 11, 30, 23, 0, tzinfo=UTC)
V_OLD, V_NEW = "20191201T000000Z-aaaaaa", "20191215T000000Z-bbbbbb"
CLV_VERSION = "20191215T050000Z-c11111"
RETENTION_VERSION = "20191215T050000Z-r11111"
FEATURES_VERSION = "20191130T230000Z-ffffff"
CATEGORIES = ("electronics", "appliances", "computers", "apparel", "furniture", "kids")
FEATURE_COLUMNS = (
    "n_events", "n_sessions", "active_days", "events_per_session", "median_session_duration_s",
    "mean_days_between_visits", "frequency", "monetary", "recency_days", "tenure_days", "n_views", "n_carts",
    "n_removals", "n_purchases", "view_to_cart_rate", "cart_to_purchase_rate", "cart_abandonment_rate",
    "removal_rate", *(f"share_{c}" for c in CATEGORIES), "share_other", "category_diversity",
    "brand_concentration", "price_level", "weekend_share", "evening_share", "holiday_share",
)  # fmt: skip
MODEL_FEATURES = (
    "n_events", "n_sessions", "events_per_session", "frequency", "monetary", "recency_days",
    "view_to_cart_rate", "cart_abandonment_rate", "brand_concentration", "price_level", "tenure_days",
)  # fmt: skip




@dataclass
class FixtureLake:
    root: Path
    key: bytes
    features: pd.DataFrame
    segments: pd.DataFrame  # current segments table (contract columns)
    previous_segments: pd.DataFrame
    model_doc: SegmentationModelDocument
    profiles: list[dict[str, Any]]
    kpi_daily: pd.DataFrame
    summary: pd.DataFrame
    flow: pd.DataFrame
    runs: list[dict[str, Any]]
    model: SegmentationModel | None
    raw_ids: dict[str, str] = field(default_factory=dict)  # "known", "low", "unknown" -> raw user id
    clv: pd.DataFrame | None = None  # the clv customers table
    clv_doc: dict[str, Any] = field(default_factory=dict)  # its result.json
    retention: pd.DataFrame | None = None  # the retention cohorts table
    retention_doc: dict[str, Any] = field(default_factory=dict)  # its result.json

    @property
    def uri(self) -> str:
        return str(self.root)


# ---------------------------------------------------------------------------------------- users
def synthetic_features(n: int, seed: int, key: bytes, first_id: int = 500_000_000) -> pd.DataFrame:
    """``n`` users' features (docs/features.md columns), drawn from four personas + newcomers."""
    rng = np.random.default_rng(seed)
    persona = rng.choice(5, size=n, p=[0.34, 0.18, 0.2, 0.18, 0.10])  # 4 = newcomer
    sessions = np.select(
        [persona == 0, persona == 1, persona == 2, persona == 3, persona == 4],
        [rng.poisson(4, n) + 1, rng.poisson(12, n) + 3, rng.poisson(6, n) + 2, rng.poisson(5, n) + 2, np.ones(n, int)],
    )  # fmt: skip
    eps = np.select([persona == 1, persona == 4], [rng.gamma(4, 2.5, n), rng.uniform(1, 3.5, n)], rng.gamma(3, 2.0, n))
    n_events = np.maximum(1, np.round(sessions * eps)).astype(int)
    n_events = np.where(persona == 4, rng.integers(1, MIN_EVENTS, n), np.maximum(n_events, MIN_EVENTS + 1))
    purchase_sessions = np.select(
        [persona == 1, persona == 2, persona == 3],
        [np.minimum(sessions, rng.poisson(5, n) + 2), rng.binomial(1, 0.15, n), np.minimum(sessions, rng.poisson(2, n) + 1)],
        0,
    )  # fmt: skip
    n_purchases = purchase_sessions + np.where(purchase_sessions > 0, rng.poisson(0.5, n), 0)
    n_carts = np.select(
        [persona == 0, persona == 2], [rng.binomial(n_events, 0.03), rng.binomial(n_events, 0.35) + 2], n_purchases + rng.poisson(1, n)
    )  # fmt: skip
    n_removals = rng.binomial(n_carts, 0.1)
    n_views = np.maximum(n_events - n_carts - n_purchases - n_removals, 0)
    n_events = n_views + n_carts + n_purchases + n_removals
    price = np.select([persona == 1, persona == 3], [rng.lognormal(5.5, 0.5, n), rng.lognormal(3.5, 0.4, n)],
                      rng.lognormal(4.6, 0.6, n))  # fmt: skip
    monetary = np.round(n_purchases * price, 2)
    tenure = np.where(persona == 4, rng.integers(0, 3, n), rng.integers(5, 60, n))
    recency = np.where(n_purchases > 0, np.minimum(tenure, rng.integers(0, 30, n)), np.nan)
    active_days = np.minimum(np.maximum(1, np.round(sessions * rng.uniform(0.5, 1, n))), tenure + 1).astype(int)
    shares = rng.dirichlet(np.ones(len(CATEGORIES) + 1) * 0.6, n)
    favourite = np.select([persona == 1, persona == 3], [0, 3], 2)
    shares[np.arange(n), favourite] += 1.5
    shares /= shares.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = pd.DataFrame({
            "user_key": [pseudonymize(str(first_id + i), key) for i in range(n)],
            "n_events": n_events.astype("int64"), "n_sessions": sessions.astype("int64"),
            "active_days": active_days.astype("int64"), "events_per_session": n_events / sessions,
            "median_session_duration_s": rng.gamma(2, 150, n) * (1 + (persona == 1)),
            "mean_days_between_visits": np.where(active_days > 1, tenure / np.maximum(active_days - 1, 1), np.nan),
            "frequency": purchase_sessions.astype("int64"), "monetary": monetary, "recency_days": recency,
            "tenure_days": tenure.astype("int64"), "n_views": n_views.astype("int64"), "n_carts": n_carts.astype("int64"),
            "n_removals": n_removals.astype("int64"), "n_purchases": n_purchases.astype("int64"),
            "view_to_cart_rate": np.where(n_views > 0, n_carts / n_views, np.nan),
            "cart_to_purchase_rate": np.where(n_carts > 0, n_purchases / n_carts, np.nan),
            "cart_abandonment_rate": np.where(n_carts > 0, np.clip(1 - purchase_sessions / np.maximum(sessions, 1), 0, 1), np.nan),
            "removal_rate": np.where(n_carts > 0, n_removals / n_carts, np.nan),
            **{f"share_{c}": shares[:, i] for i, c in enumerate(CATEGORIES)}, "share_other": shares[:, -1],
            "category_diversity": (shares[:, :-1] > 0.05).sum(axis=1).astype("int64"),
            "brand_concentration": np.clip(rng.beta(2, 3, n) + 0.3 * (persona == 1), 0.05, 1),
            "price_level": np.select([persona == 1, persona == 3], [0.6, -0.8], 0.0) + rng.normal(0, 0.25, n),
            "weekend_share": rng.beta(2, 5, n), "evening_share": rng.beta(3, 4, n),
            "holiday_share": np.where(persona == 0, rng.beta(2, 8, n), 0.0),
        })  # fmt: skip
    df["first_event_time"] = pd.Timestamp(AS_OF) - pd.to_timedelta(tenure, unit="D")
    df["last_event_time"] = pd.Timestamp(AS_OF) - pd.to_timedelta(rng.integers(0, 3, n), unit="D")
    df["as_of"] = pd.Timestamp(AS_OF)
    df["is_suspicious"] = False
    return df


def category_reference() -> dict[str, list]:
    """Mean ln(price) per category_id of the real REES46 rows (the artifact's price reference)."""
    raw = pd.read_csv(REES46_SAMPLE, usecols=["category_id", "price"])
    raw = raw[raw["price"] > 0]
    g = raw.assign(lp=np.log(raw["price"])).groupby("category_id")["lp"].agg(["mean", "size"]).reset_index()
    return {"category_id": g["category_id"].astype("int64").tolist(), "mean_log_price": g["mean"].astype(float).tolist(),
            "n": g["size"].astype("int64").tolist()}  # fmt: skip


# ---------------------------------------------------------------------------------------- model
def fit_model(features: pd.DataFrame, seed: int, k_range: tuple[int, int] = (3, 5)) -> SegmentationModel:
    with threadpool_limits(limits=1):
        return SegmentationModel(
            k_range=k_range, features=list(MODEL_FEATURES), seed=seed, n_bootstrap=2, min_events=MIN_EVENTS,
            n_threads=1, n_init=3, sample_size=5_000,
        ).fit(features)  # fmt: skip


def model_documents(model: SegmentationModel, features: pd.DataFrame, version: str, previous: str | None,
                    trained_at: datetime) -> tuple[dict, SegmentationModelDocument, list[dict]]:  # fmt: skip
    """(artifact, model.json, profiles.json), model.json built by the job's own document type.

    The fixture has no events, so the threshold study, its trust model and the data window are drawn
    here; everything the fitted model says of itself comes from ``SegmentationModelDocument.build``.
    """
    train = features.loc[model.train_index_]
    profiles = profile_segments(train, model.labels_)
    names = [p.name for p in profiles]
    artifact = export_artifact(model, version, segment_names=names, min_events=MIN_EVENTS)
    artifact["category_price_reference"] = category_reference()
    curve = [ThresholdPoint(n=n, agreement=a, ari=a - 0.15, lower=a - 0.04, users=400 - 50 * i)
             for i, (n, a) in enumerate(zip([5, 10, 20, 40], (0.62, 0.81, 0.9, 0.95), strict=True))]  # fmt: skip
    trust = Trust(intercept=-1.2, coef_log_n=0.6, coef_confidence=2.0,
                  calibration=[{"trust_mean": 0.55, "agreement": 0.52, "users": 700}])  # fmt: skip
    doc = SegmentationModelDocument.build(
        model, params={"n_threads": 1, "min_events_floor": MIN_EVENTS}, version=version,
        trained_at=trained_at.isoformat(timespec="seconds"), previous_version=previous,
        data=DataWindow(event_date_min="2019-10-01", event_date_max="2019-11-30", as_of=AS_OF.isoformat(),
                        features_version=FEATURES_VERSION, aggregates_version="20191130T230000Z-aaaaaa",
                        folded_run_ids=[], users_trained=int(model.n_train_), users_total=len(features)),
        threshold=Threshold(chosen_min_events=MIN_EVENTS, target=0.8, metric="agreement", confidence=0.95,
                            study_threshold=10, error=None, long_factor=2.0, curve=curve, trust=trust),
        coverage=Coverage.of(features, MIN_EVENTS), warnings=[], segment_ids=artifact["segment_ids"], segment_names=names,
    )  # fmt: skip
    return artifact, doc, profile_documents(profiles)


# ---------------------------------------------------------------------------------------- views
def kpi_daily(features: pd.DataFrame, days: int = 35, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range(end=AS_OF.date(), periods=days, freq="D")
    base = max(len(features) // 12, 20)
    active = np.round(base * (1 + 0.25 * np.sin(np.arange(days) / 3.5)) + rng.integers(0, base // 5 + 1, days))
    sessions = np.round(active * rng.uniform(1.2, 1.6, days))
    conv = rng.uniform(0.04, 0.09, days)
    purchases = np.round(sessions * conv * rng.uniform(1.0, 1.3, days))
    return pd.DataFrame({
        "event_date": dates.date, "active_users": active.astype("int64"), "sessions": sessions.astype("int64"),
        "views": (sessions * 9).astype("int64"), "carts": (sessions * 0.6).astype("int64"),
        "purchases": purchases.astype("int64"), "revenue": np.round(purchases * rng.uniform(120, 260, days), 2),
        "conversion_rate": conv,
    })  # fmt: skip


def run_summaries(n: int = 4) -> list[dict[str, Any]]:
    runs = []
    for i in range(n):
        started = datetime(2019, 12, 1, 2, tzinfo=UTC) + timedelta(days=7 * i)
        failed = i == n - 2
        read = 1_000_000 + 137_113 * i
        runs.append({
            "run_id": f"{started:%Y%m%dT%H%M%SZ}-{i:06x}", "status": "failed" if failed else "committed",
            "started_at": started.isoformat(), "duration_seconds": 40.5 + 3 * i, "rows_read": read,
            "rows_accepted": 0 if failed else read - 1200 - 300 * i, "rows_quarantined": 0 if failed else 1000 + 300 * i,
            "duplicates_removed": 0 if failed else 200,
            "files": [{"name": f"2019-{10 + i % 2:02d}-part{i}.csv.gz", "status": "failed" if failed else "ingested",
                       "sha256": f"{i:064x}", "reason": "bad header" if failed else None}],
        })  # fmt: skip
    return runs


# ---------------------------------------------------------------------------------------- writing
def clv_tables(
    features: pd.DataFrame, segments: pd.DataFrame, seed: int = 5
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """A contract-shaped ``clv`` version for the buyers among ``features`` (values drawn, not fitted: the
    pages only show what is published; tests/services/jobs/test_clv.py checks the fit itself)."""
    from services.jobs.clv import customer_table, group_table
    from services.reports.clv import semantics

    rng = np.random.default_rng(seed)
    buyers = features[features["n_purchases"] > 0].reset_index(drop=True)
    n = len(buyers)
    freq = (buyers["n_purchases"] - 1).clip(lower=0).astype(int)
    t = rng.uniform(5, 60, n)
    rfm = pd.DataFrame({"user_key": buyers["user_key"], "first_purchase": (AS_OF - pd.to_timedelta(t, "D")).date,
                        "frequency": freq, "recency": np.where(freq > 0, t * rng.uniform(0.2, 1, n), 0.0), "T": t,
                        "monetary_value": np.where(freq > 0, rng.gamma(3, 40, n), 0.0),
                        "revenue": buyers["monetary"].astype(float)})  # fmt: skip
    p_alive = rng.uniform(0.05, 1, n)
    e30 = p_alive * (freq + 0.5) * rng.uniform(0.05, 0.3, n)
    scores = pd.DataFrame({"p_alive": p_alive, "expected_purchases_30": e30, "expected_purchases_90": 2.6 * e30,
                           "expected_purchases_365": 8.5 * e30, "expected_value": rng.gamma(4, 30, n)})  # fmt: skip
    scores["clv"] = scores["expected_purchases_365"] * scores["expected_value"] * 0.94
    labels = segments[["user_key", "segment_name", "lifecycle_stage"]].rename(columns={"segment_name": "segment"})
    customers = customer_table(rfm, scores, labels).assign(horizon_months=12)
    groups = group_table(customers)
    by_frequency = [{"calibration_frequency": g, "customers": int(c), "actual_mean": a, "predicted_mean": a * 0.93,
                     "naive_mean": a * 1.6} for g, c, a in zip([*map(str, range(7)), "7+"],
                                                              [300, 120, 60, 30, 15, 9, 6, 10],
                                                              [0.2, 0.7, 1.3, 1.6, 2.5, 2.9, 3.8, 6.3], strict=True)]  # fmt: skip
    top = customers.nlargest(20, "clv")[["user_key", "segment", "clv", "p_alive", "frequency", "revenue"]]
    doc = {
        "version": CLV_VERSION, "computed_at": AS_OF.isoformat(), "run_ids": [], "segments_version": None,
        "model": "bgnbd", "method": "map", "time_unit": "day", "observation_end": str(AS_OF.date()),
        "horizon_months": 12, "monthly_discount": 0.01, "customers": n, "repeat_customers": int((freq > 0).sum()),
        "spend_customers": int((freq > 0).sum()),
        "parameters": {"r": 0.24, "alpha": 30.9, "a": 0.79, "b": 2.43, "p": 6.25, "q": 3.74, "v": 15.44},
        "spend_frequency_correlation": 0.11,
        "totals": {"clv_sum": float(customers["clv"].sum()), "clv_median": float(customers["clv"].median()),
                   "revenue_sum": float(customers["revenue"].sum()), "p_alive_median": float(customers["p_alive"].median())},
        "groups": json.loads(groups.to_json(orient="records")), "top_customers": json.loads(top.to_json(orient="records")),
        "holdout": {"from": "2019-11-16", "to": str(AS_OF.date()), "days": 15, "calibration_end": "2019-11-15",
                    "customers": 550, "repeat_customers": 250, "actual_purchases": 420.0, "predicted_purchases": 395.1,
                    "naive_purchases": 610.4, "mae": 0.61, "mae_naive": 0.93, "correlation": 0.64,
                    "parameters": {"r": 0.25, "alpha": 31.2, "a": 0.8, "b": 2.4, "p": 6.1, "q": 3.8, "v": 15.1},
                    "by_frequency": by_frequency},
        "warnings": [], "semantics": semantics(12, 0.01),
    }  # fmt: skip
    return customers, groups, ClvResult.model_validate(doc).to_dict()  # the job's type: a drifted field fails here


def retention_tables(features: pd.DataFrame, segments: pd.DataFrame, seed: int = 6) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A ``retention`` version counted by the production code (etl.retention) from drawn active days of
    the fixture's users (the fixture has no events)."""
    import polars as pl

    from etl.retention import RetentionSpec, retention_table
    from services.jobs.retention import OVERALL, RetentionConfig, result_document

    rng = np.random.default_rng(seed)
    end = np.datetime64(AS_OF.date())
    n = len(features)
    extra = rng.integers(0, 6, n)  # active days besides the first (vectorized: build_lake also makes 3M users)
    user = np.concatenate([np.arange(n), np.repeat(np.arange(n), extra)])
    start = end - rng.integers(0, 63, n).astype("timedelta64[D]")
    offset = np.concatenate([np.zeros(n, int), rng.integers(1, 63, int(extra.sum()))]).astype("timedelta64[D]")
    frame = pd.DataFrame({"user_key": features["user_key"].to_numpy()[user], "day": start[user] + offset})
    frame = frame[frame["day"] <= end].drop_duplicates(["user_key", "day"])
    bought = rng.random(len(frame)) < 0.2
    category = rng.choice(CATEGORIES, n)[pd.Index(features["user_key"]).get_indexer(frame["user_key"])]
    days = pl.DataFrame({"user_key": frame["user_key"].tolist(), "day": frame["day"].dt.date.tolist(),
                         "events": rng.integers(1, 9, len(frame)), "purchases": bought.astype(np.int64),
                         "revenue": np.where(bought, rng.gamma(2, 40, len(frame)), 0.0), "first_category": category.tolist(),
                         "first_purchase_category": [c if b else None for c, b in zip(category, bought, strict=True)]})  # fmt: skip
    end = AS_OF.date()
    labels = pl.from_pandas(segments[["user_key", "segment_name"]].rename(columns={"segment_name": "segment"}))
    cfg = RetentionConfig()
    parts = [retention_table(days, cfg.spec, end).with_columns(breakdown=pl.lit(OVERALL))]
    parts += [retention_table(days, RetentionSpec(by=by), end, labels).with_columns(breakdown=pl.lit(by))  # type: ignore[arg-type]
              for by in cfg.breakdowns]  # fmt: skip
    table = pl.concat(parts).select("breakdown", pl.exclude("breakdown")).to_pandas(date_as_object=True)
    doc = RetentionResult.model_validate({"version": RETENTION_VERSION, "computed_at": AS_OF.isoformat(), "run_ids": [],
                                          "segments_version": None, **result_document(cfg, table, end)})  # fmt: skip
    return table, doc.to_dict()


def _write(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def _publish(lake: Lake, staging: Path, dataset: str, version: str, **meta: Any) -> None:
    lake.publish_version(staging, dataset, version, **meta)
    shutil.rmtree(staging)


def build_lake(root: Path, key: bytes, n_users: int = 700, fit_users: int | None = None, seed: int = 0) -> FixtureLake:
    """Write the lake under ``root`` (models, segments, features, views, runs) and return its frames."""
    root = Path(root)
    lake = Lake(LocalStore(root), root.parent / f"{root.name}-work")
    stage = root.parent / f"{root.name}-staging"
    features = synthetic_features(n_users, seed, key)
    fit_rows = features if fit_users is None else features.iloc[:fit_users]
    trained = datetime(2019, 12, 1, 3, tzinfo=UTC)

    old_model = fit_model(fit_rows, seed=seed + 7, k_range=(3, 3))
    old_art, old_doc, old_prof = model_documents(old_model, fit_rows, V_OLD, None, trained)
    model = fit_model(fit_rows, seed=seed)
    art, doc, prof = model_documents(model, fit_rows, V_NEW, V_OLD, trained + timedelta(days=14))
    prev_seg = score_frame(LightScorer.from_dict(old_art), features, AS_OF)
    seg = score_frame(LightScorer.from_dict(art), features, AS_OF)

    for version, a, d, p in ((V_OLD, old_art, old_doc, old_prof), (V_NEW, art, doc, prof)):
        mdir = stage / "model"
        mdir.mkdir(parents=True)
        for name, obj in (("artifact.json", a), (d.FILE, d.to_dict()), ("profiles.json", p)):
            (mdir / name).write_text(json.dumps(obj, indent=1, allow_nan=False), encoding="utf-8")
        _publish(lake, mdir, SEGMENTATION_MODEL, version)

    _write(stage / "f" / "part-00000.parquet", features)
    _publish(lake, stage / "f", FEATURES, FEATURES_VERSION, as_of=AS_OF.isoformat())
    _write(stage / "s0" / "part-00000.parquet", prev_seg)
    _publish(lake, stage / "s0", SEGMENTS, "20191201T040000Z-s00000", model_version=V_OLD, as_of=AS_OF.isoformat())
    seg_version = "20191215T040000Z-s11111"
    _write(stage / "s1" / "part-00000.parquet", seg)
    _publish(lake, stage / "s1", SEGMENTS, seg_version, model_version=V_NEW, as_of=AS_OF.isoformat(),
             flow_from_version="20191201T040000Z-s00000")  # fmt: skip

    runs = run_summaries()
    for r in runs:
        lake.write_run(r)
    kpi, summary, flow = kpi_daily(features), segment_summary(seg, features, prof), segment_flow(prev_seg, seg)
    odir = stage / "overview"
    _write(odir / "kpi_daily.parquet", kpi)
    _write(odir / "runs.parquet", runs_table(runs))
    fresh = OverviewFreshness(latest_event_time=AS_OF.isoformat(), last_run_at=runs[-1]["started_at"])
    (odir / fresh.FILE).write_text(json.dumps(fresh.to_dict()), encoding="utf-8")
    _publish(lake, odir, OVERVIEW_VIEWS, "20191215T040500Z-o11111", run_ids=[r["run_id"] for r in runs])
    vdir = stage / "views"
    for name, df in {"segment_summary": summary, "pca_sample": pca_sample(seg), "segment_flow": flow}.items():
        _write(vdir / f"{name}.parquet", df)
    _publish(lake, vdir, SEGMENT_VIEWS, "20191215T040500Z-v11111", segments_version=seg_version, model_version=V_NEW)
    from services.jobs.clv import distribution_table

    clv, clv_groups, clv_doc = clv_tables(features, seg)
    cdir = stage / "clv"
    _write(cdir / "customers" / "part-00000.parquet", clv)
    _write(cdir / "groups.parquet", clv_groups)
    _write(cdir / "distribution.parquet", distribution_table(clv))
    _write(cdir / "holdout.parquet", pd.DataFrame(clv_doc["holdout"]["by_frequency"]))
    (cdir / "result.json").write_text(json.dumps(clv_doc, allow_nan=False), encoding="utf-8")
    _publish(lake, cdir, CLV, CLV_VERSION, run_ids=[r["run_id"] for r in runs], segments_version=seg_version)
    retention, retention_doc = retention_tables(features, seg)
    rdir = stage / "retention"
    _write(rdir / "cohorts.parquet", retention)
    (rdir / "result.json").write_text(json.dumps(retention_doc, allow_nan=False), encoding="utf-8")
    _publish(lake, rdir, RETENTION, RETENTION_VERSION, run_ids=[r["run_id"] for r in runs], segments_version=seg_version)
    shutil.rmtree(stage, ignore_errors=True)

    scored = seg["segment_id"].notna().to_numpy()
    first_id = 500_000_000
    known = int(np.flatnonzero(scored)[0])
    low = int(np.flatnonzero(~scored)[0])
    return FixtureLake(
        root=root, key=key, features=features, segments=seg, previous_segments=prev_seg, model_doc=doc,
        profiles=prof, kpi_daily=kpi, summary=summary, flow=flow, runs=runs, model=model,
        raw_ids={"known": str(first_id + known), "low": str(first_id + low), "unknown": "999999999"},
        clv=clv, clv_doc=clv_doc, retention=retention, retention_doc=retention_doc,
    )


__all__ = ["RUNS", "FixtureLake", "build_lake", "synthetic_features"]


def open_page(page: str | None = None):
    """Run the whole app in AppTest and open ``page`` (an ``app_pages`` module name); no exception allowed."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_page_without(dataset: str, page: str, source: Path, copy_to: Path, use_lake: Any):
    """:func:`open_page` on a copy of the fixture lake at ``source`` in which ``dataset`` has no current
    version (its pointer removed): the page's "nothing yet" path."""
    root = copy_to / "lake"
    shutil.copytree(source, root)
    (root / dataset / "_current.json").unlink()
    use_lake(str(root))
    return open_page(page)
