"""``shoplens mmm fit|report|optimize``: fit a marketing-mix model, publish it, read it back.

Fit: spend (and optional KPI / controls) CSV files are validated (:mod:`model.mmm.data`); revenue
comes from the KPI file or, without one, from the lake's committed purchases (:mod:`etl.mmm`, Spark);
the model is fitted with PyMC-Marketing (:mod:`model.mmm.fit`), validated by rolling origin, and
published as ``mmm/<version>/`` through :func:`services.core.publish.new_version`: a thinned set of
posterior draws (not the trace), summaries, curves, diagnostics, a default recommendation and the
report. ``report`` and ``optimize`` read the current version without Spark or PyMC.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.mmm import (
    FitConfig,
    FitResult,
    MMMData,
    Posterior,
    channel_summary,
    clean_controls,
    clean_kpi,
    clean_spend,
    fit,
    prepare,
    quantiles,
)
from model.mmm.data import clean_lift_tests, lift_test_from_experiment
from model.mmm.identifiability import channel_trust
from model.mmm.optimizer import Bound, optimize
from model.mmm.validation import rolling_origin
from services.core.catalog import EVENTS, MMM_MODEL
from services.core.lake import Lake, utc_now_iso
from services.core.publish import new_version
from services.core.readers import read_frame
from services.reports.mmm import render_html, render_json, render_markdown

log = logging.getLogger("shoplens.mmm")

CV_CONFIG = {"draws": 300, "tune": 400}  # refits of the validation folds: fewer draws
RECOMMEND_WEEKS = 13
RECOMMEND_BOUNDS = ("0.5x", "1.5x")


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such {what} file: {path}")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def lake_revenue(spark: Any, lake: Lake) -> pd.DataFrame:
    """Daily revenue ``(date, revenue)`` from the committed purchases in the lake (Spark)."""
    from etl.mmm import daily_revenue
    from services.core.spark import read_run_dataset

    events = read_run_dataset(spark, lake, EVENTS)
    if events is None:
        raise FileNotFoundError("no committed events in the lake: ingest purchases first or pass --kpi")
    out = daily_revenue(events).toPandas()
    out["date"] = pd.to_datetime(out["date"])
    return out[["date", "revenue"]]


def read_lift_tests(path: Path) -> pd.DataFrame:
    """Lift tests in the documented CSV layout, or the ``result.json`` of ``shoplens abtest analyze
    --channel --spend-change --period`` (one experiment, one row; see
    :func:`model.mmm.data.lift_test_from_experiment`)."""
    if Path(path).suffix.lower() != ".json":
        return _read_csv(path, "lift tests")
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such lift tests file: {path}")
    return pd.DataFrame([lift_test_from_experiment(json.loads(Path(path).read_text(encoding="utf-8")))])


def load_inputs(lake: Lake, spend: Path, kpi: Path | None = None, controls: Path | None = None,
                spark: Callable[[], Any] | None = None) -> MMMData:
    spend_rows, issues = clean_spend(_read_csv(spend, "spend"))
    if kpi is not None:
        revenue, kpi_issues = clean_kpi(_read_csv(kpi, "KPI"))
        issues += kpi_issues
        source = f"file {Path(kpi).name}"
    else:
        if spark is None:
            raise ValueError("revenue from the lake needs Spark")
        revenue, source = lake_revenue(spark(), lake), "lake purchases"
    ctrl = None
    if controls is not None:
        ctrl, ctrl_issues = clean_controls(_read_csv(controls, "controls"))
        issues += ctrl_issues
    return prepare(spend_rows, revenue, ctrl, kpi_source=source, issues=issues)


def _long(dates: pd.DatetimeIndex, draws: np.ndarray, component: str) -> pd.DataFrame:
    lo, mid, hi = quantiles(draws)
    return pd.DataFrame({"date": dates, "component": component, "median": mid, "low": lo, "high": hi})


def summarize(post: Posterior, data: MMMData) -> dict[str, pd.DataFrame]:
    """The tables a report, the CLI and the dashboard show (all from the draws)."""
    pred = post.predict(data.dates, data.spend, data.controls)
    channels = channel_summary(post, data.spend)
    contrib = [_long(data.dates, pred["media"][:, :, j], ch) for j, ch in enumerate(post.channels)]
    base_total = sum(pred[k] for k in pred if k not in ("mu", "media"))
    contrib.append(_long(data.dates, base_total, "base"))
    fitted = post.predictive(pred["mu"])
    lo, mid, hi = quantiles(fitted)
    fit_frame = pd.DataFrame({"date": data.dates, "actual": data.revenue, "fitted": pred["mu"].mean(axis=0),
                              "low": lo, "median": mid, "high": hi})
    top = data.spend.max(axis=0)
    grid = np.linspace(0, 1.5, 31)[:, None] * np.maximum(top, 1.0)[None, :]
    resp = post.response_curve(grid)
    r_lo, r_mid, r_hi = quantiles(resp)
    mean_weekly = data.spend.mean(axis=0)
    curves = pd.concat([pd.DataFrame({"channel": ch, "weekly_spend": grid[:, j], "median": r_mid[:, j],
                                      "low": r_lo[:, j], "high": r_hi[:, j],
                                      "current_weekly_spend": mean_weekly[j]})
                        for j, ch in enumerate(post.channels)], ignore_index=True)
    ad = post.adstock_curve()
    a_lo, a_mid, a_hi = quantiles(ad)
    adstock = pd.concat([pd.DataFrame({"channel": ch, "lag": np.arange(ad.shape[1]), "median": a_mid[:, j],
                                       "low": a_lo[:, j], "high": a_hi[:, j]})
                         for j, ch in enumerate(post.channels)], ignore_index=True)
    history = pd.DataFrame(data.spend, columns=post.channels).assign(date=data.dates, revenue=data.revenue)
    return {"channels": channels, "contributions": pd.concat(contrib, ignore_index=True), "fit": fit_frame,
            "curves": curves, "adstock": adstock, "history": history}


def default_bounds(channels: list[str]) -> tuple[dict[str, Bound], dict[str, Bound]]:
    lo, hi = (Bound.parse(b) for b in RECOMMEND_BOUNDS)
    return {c: lo for c in channels}, {c: hi for c in channels}


def fit_mmm(lake: Lake, spend: Path, kpi: Path | None = None, controls: Path | None = None, *,
            spark: Callable[[], Any] | None = None, config: FitConfig | None = None, cv_folds: int = 3,
            cv_horizon: int = 8, lift_tests: Path | None = None,
            on_progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Fit, validate, summarize and publish; returns the fit summary (also in ``model.json``).

    ``lift_tests``: a CSV of measured lifts (:data:`model.mmm.data.LIFT_COLUMNS`), added to the
    likelihood of the main fit (the validation folds refit without them: they score the data alone).
    """
    config = config or FitConfig()
    data = load_inputs(lake, spend, kpi, controls, spark)
    lifts = None
    if lift_tests is not None:
        lifts, lift_issues = clean_lift_tests(read_lift_tests(lift_tests), data)
        data.issues.extend(lift_issues)
        if lifts.empty:
            raise ValueError(f"lift tests: no usable row in {lift_tests} (see the reasons: "
                             + "; ".join(f"{i.reason} x{i.count}" for i in lift_issues) + ")")
    on_progress(f"fitting {len(data)} weeks x {len(data.channels)} channels with PyMC-Marketing ({config.sampler})"
                + (f", calibrated by {len(lifts)} lift test(s)" if lifts is not None else ""))
    result = fit(data, config, lift_tests=lifts)
    for w in result.warnings:
        log.warning("mmm: %s", w, extra={"stage": "mmm"})
    cv_doc: dict[str, Any] = {"folds": [], "model": None, "gbm": None, "horizon": cv_horizon}
    cv_pred = pd.DataFrame()
    if cv_folds > 0:
        on_progress(f"rolling-origin validation: {cv_folds} refits of {cv_horizon} held-out weeks each")
        fold_config = FitConfig(**{**config.to_dict(), **CV_CONFIG})
        cv = rolling_origin(data, lambda d: fit(d, fold_config).posterior, folds=cv_folds, horizon=cv_horizon,
                            min_train=min(52, max(26, len(data) - cv_folds * cv_horizon)))
        cv_doc.update(folds=cv.folds, model=cv.pooled("model"),
                      gbm=cv.pooled("gbm") if not cv.predictions.empty else None)
        cv_pred = cv.predictions
    return publish_fit(lake, data, result, cv_doc, cv_pred)


def publish_fit(lake: Lake, data: MMMData, result: FitResult, cv_doc: dict[str, Any] | None = None,
                cv_pred: pd.DataFrame | None = None) -> dict[str, Any]:
    """Summarize a fit, work out the default plan and publish ``mmm/<version>/``; returns the report."""
    config = result.config
    cv_doc = cv_doc or {"folds": [], "model": None, "gbm": None, "horizon": 0}
    cv_pred = pd.DataFrame() if cv_pred is None else cv_pred
    post = result.posterior
    tables = summarize(post, data)
    trust = channel_trust(post, data.spend)
    tables["trust"] = trust
    held = trust.loc[~trust["identifiable"], "channel"].tolist()
    lower, upper = default_bounds(post.channels)
    weeks = min(RECOMMEND_WEEKS, len(data))
    budget = float(data.spend[-weeks:].sum())
    recommendation = optimize(post, budget, weeks, data.spend, lower=lower, upper=upper, hold=held).to_dict()
    recommendation["note"] = (f"default plan: next {weeks} weeks, budget = last {weeks} weeks' spend, each "
                              f"channel between {RECOMMEND_BOUNDS[0]} and {RECOMMEND_BOUNDS[1]} of its last {weeks} weeks")
    fitted = tables["fit"]
    in_sample = {"mape": float(np.mean(np.abs(fitted.actual - fitted.fitted) / fitted.actual)),
                 "r2": float(1 - ((fitted.actual - fitted.fitted) ** 2).sum()
                             / ((fitted.actual - fitted.actual.mean()) ** 2).sum())}
    with new_version(lake, MMM_MODEL) as staged:
        doc = {"version": staged.version, "fitted_at": utc_now_iso(), "posterior": post.meta(),
               "config": config.to_dict(), "data": data.report(), "diagnostics": result.diagnostics.to_dict(),
               "converged": result.diagnostics.converged, "warnings": result.warnings,
               "fit": {"out_of_sample": cv_doc, "in_sample": in_sample},
               "recommendation": recommendation, "draws": post.n_draws,
               "trust": _records(trust), "lift_tests": result.lift_tests}
        staged.write_table("draws", post.draws_frame())
        for name, frame in tables.items():
            staged.write_table(name, frame)
        if not cv_pred.empty:
            staged.write_table("cv", cv_pred)
        staged.write_json("model.json", doc)
        report = report_document(doc, tables["channels"])
        staged.write_json("report.json", render_json(report))
        (staged.dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
        (staged.dir / "report.html").write_text(render_html(report, tables, cv_pred), encoding="utf-8")
        staged.meta.update(converged=result.diagnostics.converged, weeks=len(data), channels=post.channels)
    return report | {"version": doc["version"]}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def held_channels(doc: dict[str, Any]) -> list[str]:
    """Channels whose ROI the published model flags as not identifiable (the optimizer holds them)."""
    return [t["channel"] for t in doc.get("trust", []) if not t["identifiable"]]


def report_document(doc: dict[str, Any], channels: pd.DataFrame) -> dict[str, Any]:
    """What ``shoplens mmm report --json`` prints: channels with 90% intervals and how much to believe
    them, fit, diagnostics, plan."""
    oos = doc["fit"]["out_of_sample"]
    trust = {t["channel"]: t for t in doc.get("trust", [])}
    return {
        "version": doc["version"], "fitted_at": doc["fitted_at"], "converged": doc["converged"],
        "warnings": doc["warnings"], "data": doc["data"], "diagnostics": doc["diagnostics"],
        "channels": [{**row, **{k: v for k, v in trust.get(row["channel"], {}).items() if k != "channel"}}
                     for row in _records(channels[["channel", "spend", "contribution", "contribution_low",
                                                   "contribution_high", "roi", "roi_low", "roi_high", "mroi",
                                                   "mroi_low", "mroi_high"]])],
        "lift_tests": doc.get("lift_tests", []),
        "fit": {"mape": (oos["model"] or {}).get("mape"), "nrmse": (oos["model"] or {}).get("nrmse"),
                "gbm_mape": (oos["gbm"] or {}).get("mape"), "gbm_nrmse": (oos["gbm"] or {}).get("nrmse"),
                "folds": oos["folds"], "horizon_weeks": oos["horizon"], "in_sample": doc["fit"]["in_sample"]},
        "recommendation": doc["recommendation"],
    }


@dataclass
class Published:
    version: str
    doc: dict[str, Any]
    posterior: Posterior
    history: pd.DataFrame
    channels: pd.DataFrame


def load_published(lake: Lake, version: str | None = None) -> Published:
    """The current (or given) model from the lake, Spark- and PyMC-free."""
    version = version or lake.current_version(MMM_MODEL)
    if version is None:
        raise FileNotFoundError("no marketing-mix model published yet: run `shoplens mmm fit --spend FILE`")
    base = f"{MMM_MODEL}/{version}"
    doc = lake.read_json(f"{base}/model.json")
    post = Posterior.from_frame(read_frame(lake, f"{base}/draws.parquet"), doc["posterior"])
    return Published(version, doc, post, read_frame(lake, f"{base}/history.parquet"),
                     read_frame(lake, f"{base}/channels.parquet"))


def read_report(lake: Lake) -> dict[str, Any]:
    pub = load_published(lake)
    return report_document(pub.doc, pub.channels)


def run_optimize(lake: Lake, budget: float, weeks: int, lower: dict[str, str] | None = None,
                 upper: dict[str, str] | None = None, pattern: str = "flat",
                 target_roi: float | None = None) -> dict[str, Any]:
    pub = load_published(lake)
    spend = pub.history[pub.posterior.channels].to_numpy(dtype=float)
    plan = optimize(pub.posterior, budget, weeks, spend,
                    lower={c: Bound.parse(v) for c, v in (lower or {}).items()},
                    upper={c: Bound.parse(v) for c, v in (upper or {}).items()},
                    pattern=pattern, target_roi=target_roi, hold=held_channels(pub.doc))
    return {"version": pub.version, "converged": pub.doc["converged"], "warnings": pub.doc["warnings"],
            **plan.to_dict()}


__all__ = [
    "fit_mmm",
    "held_channels",
    "load_inputs",
    "load_published",
    "publish_fit",
    "read_lift_tests",
    "read_report",
    "report_document",
    "run_optimize",
    "summarize",
]
