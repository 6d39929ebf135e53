"""``shoplens clv fit``: what each customer is worth, checked on a holdout period when asked.

Reads the committed events (REES46 purchases and ``ingest --format online-retail`` order lines alike:
both are purchase events in the lake), reduces them on Spark to one transaction per user and day
(:mod:`etl.clv`), fits the purchase and spend models (:mod:`model.clv`) and publishes::

    clv/<version>/customers/          one row per customer (user_key, RFM, p_alive, expected purchases,
                                      expected_value, clv, segment, lifecycle_stage), sorted by user_key
    clv/<version>/groups.parquet      sums and medians per segment and per lifecycle stage
    clv/<version>/holdout.parquet     with --holdout-from: predicted vs actual per calibration frequency
    clv/<version>/{result.json, report.md, report.html}
    clv/_current.json                 (the commit point; carries run_ids and segments_version)

With ``--holdout-from DATE`` the models are first fitted on the events before DATE and judged on the
events from DATE on (:mod:`model.clv.evaluation`); the published per-customer values always come
from a fit on every event, as of the lake's last day. The pipeline's ``clv`` stage refits whenever the
committed runs or the segments change. Only pseudonymized keys are written. Columns: docs/outputs.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd
import polars as pl
from pyspark.sql import SparkSession

from etl.clv import (
    PURCHASE_DAYS,
    TIMELINE_INPUTS,
    holdout_actuals,
    purchase_days,
    rfm_summary,
    split_purchase_days,
)
from etl.timeline import USER_KEY
from model.clv import (
    NotEnoughData,
    expected_purchases,
    fit_clv,
    holdout_evaluation,
    score_customers,
    spend_frequency_correlation,
    thin_data_warnings,
)
from services.core.catalog import CLV, RUNS, SEGMENTS
from services.core.documents.clv import ClvResult
from services.core.freshness import recording
from services.core.lake import Lake, utc_now_iso
from services.core.publish import new_version
from services.core.readers import read_segments
from services.core.timelines import require_timelines, run_on_buckets
from services.reports.clv import semantics, write_clv_report

log = logging.getLogger("shoplens.clv")

RESULT_FILE: Final[str] = ClvResult.FILE
CUSTOMERS: Final[str] = "customers"
NO_SEGMENT: Final[str] = "(unsegmented)"
NO_STAGE: Final[str] = "(no stage)"
#: The breakdowns of groups.parquet: its ``breakdown`` column names one of these customer columns.
GROUPS: Final[tuple[str, ...]] = ("segment", "lifecycle_stage")
#: Equal-width bins of the CLV histogram below its 99th percentile (distribution.parquet).
DISTRIBUTION_BINS: Final[int] = 40
#: Customers listed in result.json and the report as the top by lifetime value.
TOP_CUSTOMERS: Final[int] = 20


@dataclass(frozen=True)
class CLVConfig:
    """What ``shoplens clv fit`` computes (the defaults are the pipeline stage's fit)."""

    holdout_from: date | None = None
    model: str = "bgnbd"
    method: str = "map"
    horizon_months: int = 12
    monthly_discount: float = 0.01

    def __post_init__(self) -> None:
        if self.model not in ("bgnbd", "pareto"):
            raise ValueError(f"unknown model {self.model!r}; use bgnbd or pareto")
        if self.method not in ("map", "mcmc"):
            raise ValueError(f"unknown fit method {self.method!r}; use map or mcmc")
        if self.horizon_months < 1:
            raise ValueError(f"the horizon must be at least 1 month, got {self.horizon_months}")
        if not 0 <= self.monthly_discount < 1:
            raise ValueError(f"the monthly discount rate must be in [0, 1), got {self.monthly_discount}")


def config_from_settings(**overrides: Any) -> CLVConfig:
    """The configuration with the horizon and discount rate of the settings (``SHOPLENS_CLV_*``)."""
    from services.core.settings import get_settings

    settings = get_settings()
    base = {"horizon_months": settings.clv_horizon_months, "monthly_discount": settings.clv_monthly_discount}
    return CLVConfig(**{**base, **overrides})


# ------------------------------------------------------------------------------------ compute
#: Events per call of :func:`etl.clv.purchase_days` (consecutive buckets together: a small lake costs a
#: few calls, not 64; the output is a few percent of the events).
BATCH_ROWS: Final[int] = 2_000_000


def read_transactions(spark: SparkSession, lake: Lake) -> tuple[pl.DataFrame, date]:
    """(one row per user and purchase day, the lake's last event day) from the committed events, one
    pass over the user buckets' timelines."""
    if not lake.committed_run_ids():
        raise ValueError("no committed events in the lake: run `shoplens ingest` first")
    require_timelines(lake)
    rows = run_on_buckets(spark, lake, lambda _buckets, timeline: purchase_days(timeline), PURCHASE_DAYS,
                          columns=TIMELINE_INPUTS, dictionary=[USER_KEY], batch_rows=BATCH_ROWS)  # fmt: skip
    tx, end = split_purchase_days(pl.DataFrame(rows))
    if tx.height == 0 or end is None:
        raise NotEnoughData("the lake holds no purchase: lifetime value needs buyers")
    return tx, end


def _segment_labels(lake: Lake) -> tuple[pd.DataFrame | None, str | None]:
    seg = read_segments(lake)
    if seg is None or seg.empty:
        return None, None
    cols = ["user_key", "segment_name", *(["lifecycle_stage"] if "lifecycle_stage" in seg.columns else [])]
    return seg[cols].rename(columns={"segment_name": "segment"}), lake.current_version(SEGMENTS)


def customer_table(rfm: pd.DataFrame, scores: pd.DataFrame, segments: pd.DataFrame | None) -> pd.DataFrame:
    """RFM and scores side by side, with each customer's segment and lifecycle stage (placeholders when unknown)."""
    out = pd.concat([rfm.reset_index(drop=True), scores.reset_index(drop=True)], axis=1)
    if segments is not None:
        out = out.merge(segments, on="user_key", how="left")
    for col, missing in (("segment", NO_SEGMENT), ("lifecycle_stage", NO_STAGE)):
        out[col] = out[col].fillna(missing) if col in out.columns else missing
    return out.sort_values("user_key", ignore_index=True)


def group_table(customers: pd.DataFrame) -> pd.DataFrame:
    """Per segment and per lifecycle stage: customers, CLV sum and median, revenue so far, p_alive median."""
    parts = []
    for dim in GROUPS:
        g = customers.groupby(dim, sort=True).agg(
            customers=("user_key", "size"), clv_sum=("clv", "sum"), clv_median=("clv", "median"),
            revenue_sum=("revenue", "sum"), p_alive_median=("p_alive", "median"),
            expected_purchases_365_sum=("expected_purchases_365", "sum"))  # fmt: skip
        parts.append(g.reset_index().rename(columns={dim: "value"}).assign(breakdown=dim))
    out = pd.concat(parts, ignore_index=True)
    return out[["breakdown", "value", *[c for c in out.columns if c not in ("breakdown", "value")]]]


def distribution_table(customers: pd.DataFrame, bins: int = DISTRIBUTION_BINS) -> pd.DataFrame:
    """The CLV histogram: ``bins`` equal bins from 0 to the 99th percentile, then one open bin above it.

    Columns ``lower``, ``upper`` (null: open), ``customers``, ``clv_sum``; every customer in one bin.
    """
    clv = customers["clv"].to_numpy(float)
    top = float(np.quantile(clv, 0.99)) if len(clv) else 0.0
    edges = np.linspace(0.0, top, bins + 1) if top > 0 else np.array([0.0, 0.0])
    inner = len(edges) - 1
    index = np.where(clv >= top, inner, np.clip(np.searchsorted(edges, clv, side="right") - 1, 0, inner - 1))
    counts = np.bincount(index, minlength=inner + 1)
    sums = np.bincount(index, weights=clv, minlength=inner + 1)
    return pd.DataFrame({"lower": edges, "upper": [*edges[1:], None], "customers": counts, "clv_sum": sums})


def _holdout(tx: pl.DataFrame, cfg: CLVConfig, end: date) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit on the days before ``cfg.holdout_from``, judge on the days from it to ``end``."""
    start = cfg.holdout_from
    assert start is not None
    if start <= tx["day"].min():
        raise ValueError(
            f"--holdout-from {start} leaves no calibration period: the first purchase is {tx['day'].min()}"
        )
    if start > end:
        raise ValueError(f"--holdout-from {start} is after the lake's last event day {end}")
    calibration_end = start - timedelta(days=1)
    rfm = rfm_summary(tx, calibration_end).to_pandas(date_as_object=True)
    actual = holdout_actuals(tx, start, end).to_pandas()
    calibration = rfm.merge(actual, on="user_key", how="left", validate="one_to_one")
    fitted = fit_clv(rfm, cfg.model, cfg.method)
    days = (end - start).days + 1
    evaluation = holdout_evaluation(
        calibration, expected_purchases(fitted, calibration, days), str(start), str(end), days
    )
    doc = {**evaluation.to_dict(), "calibration_end": str(calibration_end), "parameters": fitted.parameters,
           "repeat_customers": int((rfm["frequency"] > 0).sum())}  # fmt: skip
    return doc, evaluation.by_frequency


@dataclass
class CLVTables:
    """What one fit publishes."""

    customers: pd.DataFrame
    groups: pd.DataFrame
    holdout: pd.DataFrame | None
    document: dict[str, Any]  # result.json without version and provenance


def compute(spark: SparkSession, lake: Lake, cfg: CLVConfig,
            segments: pd.DataFrame | None = None) -> CLVTables:  # fmt: skip
    """Every table of the fit from the lake's committed events (and the given segments)."""
    t0 = time.monotonic()
    tx, end = read_transactions(spark, lake)
    log.info("clv transactions collected", extra={"stage": "clv", "rows": tx.height,
             "duration_seconds": round(time.monotonic() - t0, 3)})  # fmt: skip
    holdout, by_frequency = _holdout(tx, cfg, end) if cfg.holdout_from else (None, None)
    rfm = rfm_summary(tx, end).to_pandas(date_as_object=True)
    fitted = fit_clv(rfm, cfg.model, cfg.method)
    scores = score_customers(fitted, rfm, cfg.horizon_months, cfg.monthly_discount)
    customers = customer_table(rfm, scores, segments).assign(horizon_months=cfg.horizon_months)
    groups = group_table(customers)
    repeat = int((rfm["frequency"] > 0).sum())
    warnings = thin_data_warnings(holdout["repeat_customers"] if holdout else repeat)
    top = customers.nlargest(TOP_CUSTOMERS, "clv")
    doc = {
        "model": cfg.model, "method": cfg.method, "time_unit": "day", "observation_end": str(end),
        "horizon_months": cfg.horizon_months, "monthly_discount": cfg.monthly_discount,
        "customers": len(rfm), "repeat_customers": repeat, "spend_customers": fitted.spend_customers,
        "parameters": fitted.parameters, "spend_frequency_correlation": spend_frequency_correlation(rfm),
        "totals": {"clv_sum": float(customers["clv"].sum()), "clv_median": float(customers["clv"].median()),
                   "revenue_sum": float(customers["revenue"].sum()),
                   "p_alive_median": float(customers["p_alive"].median())},
        "groups": _records(groups), "top_customers": _records(top[["user_key", "segment", "clv", "p_alive",
                                                                     "frequency", "revenue"]]),
        "holdout": holdout, "warnings": warnings,
    }  # fmt: skip
    return CLVTables(customers, groups, by_frequency, doc)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    clean = df.astype(object).where(df.notna(), None)
    return [{k: (float(v) if isinstance(v, np.floating) else int(v) if isinstance(v, np.integer) else v)
             for k, v in r.items()} for r in clean.to_dict("records")]  # fmt: skip


# ------------------------------------------------------------------------------------ the job
def run_clv(spark: SparkSession, lake: Lake, cfg: CLVConfig | None = None) -> dict[str, Any]:
    """Fit and score from the lake's committed events and publish ``clv/<version>/``; the result document."""
    cfg = cfg or config_from_settings()
    t0 = time.monotonic()
    run_ids = sorted(lake.committed_run_ids())
    segments, segments_version = _segment_labels(lake)
    tables = compute(spark, lake, cfg, segments)
    meta = {**recording({RUNS: run_ids, SEGMENTS: segments_version}), "model": cfg.model, "method": cfg.method,
            "horizon_months": cfg.horizon_months, "holdout_from": str(cfg.holdout_from) if cfg.holdout_from else None}  # fmt: skip
    with new_version(lake, CLV, **meta) as staged:
        staged.write_table(f"{CUSTOMERS}/part-00000", tables.customers)
        staged.write_table("groups", tables.groups)
        staged.write_table("distribution", distribution_table(tables.customers))
        if tables.holdout is not None:
            staged.write_table("holdout", tables.holdout)
        result = ClvResult.model_validate({
            "version": staged.version, "computed_at": utc_now_iso(), "run_ids": run_ids,
            "segments_version": segments_version, **tables.document,
            "semantics": semantics(cfg.horizon_months, cfg.monthly_discount)})  # fmt: skip
        doc = result.to_dict()
        staged.write_json(result.FILE, doc)
        write_clv_report(staged.dir, doc)
        staged.meta["customers"] = doc["customers"]
    doc["duration_seconds"] = round(time.monotonic() - t0, 3)
    log.info("clv %s published", staged.version, extra={"stage": "clv", "version": staged.version,
             "customers": doc["customers"], "duration_seconds": doc["duration_seconds"]})  # fmt: skip
    return doc


def clv_stage(spark: SparkSession, lake: Lake) -> dict[str, Any]:
    """The pipeline stage: the default fit, or a skip (nothing published) while there are too few buyers.

    The stage stays due, so it is tried again after the next ingestion run.
    """
    try:
        return run_clv(spark, lake)
    except NotEnoughData as why:
        log.warning("clv skipped: %s", why, extra={"stage": "clv", "reason": str(why)})
        return {"status": "skipped", "reason": str(why)}


# ------------------------------------------------------------------------------------ reading back
def current_result(lake: Lake) -> dict[str, Any]:
    """result.json of the current fit."""
    version = lake.current_version(CLV)
    if version is None:
        raise FileNotFoundError("no lifetime values yet: run `shoplens clv fit`")
    return ClvResult.read(lake, version).to_dict()


def clv_report(doc: dict[str, Any]) -> str:
    """The console summary of a fit."""
    p = doc["parameters"]
    lines = [f"clv {doc['version']}: {doc['customers']:,} customers, {doc['repeat_customers']:,} bought again; "
             f"{doc['model']} + gamma-gamma ({doc['method']})",
             "parameters: " + ", ".join(f"{k}={v:.4g}" for k, v in p.items()),
             f"lifetime value over {doc['horizon_months']} months: total {doc['totals']['clv_sum']:,.2f}, "
             f"median {doc['totals']['clv_median']:,.2f}"]  # fmt: skip
    h = doc.get("holdout")
    if h:
        lines.append(f"holdout {h['from']}..{h['to']}: actual {h['actual_purchases']:,.0f} repeat purchases, "
                     f"predicted {h['predicted_purchases']:,.1f}; MAE {h['mae']:.3f} (naive {h['mae_naive']:.3f})")  # fmt: skip
    lines += [f"warning: {w}" for w in doc.get("warnings", [])]
    return "\n".join(lines)


__all__ = [
    "CUSTOMERS",
    "GROUPS",
    "RESULT_FILE",
    "CLVConfig",
    "CLVTables",
    "clv_report",
    "clv_stage",
    "compute",
    "config_from_settings",
    "current_result",
    "customer_table",
    "distribution_table",
    "group_table",
    "read_transactions",
    "run_clv",
]
