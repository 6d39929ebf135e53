"""The Experiments page's logic, without Streamlit widgets: analyze an upload, shape tables, draw charts.

An uploaded experiment file (a few hundred thousand rows at most) is read, checked and reduced by the
code ``shoplens abtest analyze`` runs (``etl.experiments``), then analyzed by the same
``model.experiments`` code, so the page and the command give the same numbers. No Spark, and no raw
id kept: users are keyed by ordinals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import polars as pl

from dashboard import uploads
from dashboard.charts import ACCENT, _layout
from etl.experiments import (
    ExperimentSchemaError,
    classify_experiment,
    default_metrics,
    read_experiment,
    reduce_classified,
)
from model.experiments import (
    AnalysisSettings,
    analysis_document,
    plan_means,
    plan_proportions,
    power_means,
    power_proportions,
)

MAX_UPLOAD_ROWS = 500_000
#: Multiples of the needed users per arm at which the planning page shows the power.
CURVE_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
GOOD, BAD, NEUTRAL = "#54A24B", "#E45756", ACCENT


@dataclass
class UploadAnalysis:
    doc: dict[str, Any] | None
    error: str | None = None


def analyze_upload(
    payload: bytes,
    name: str,
    *,
    control: str | None = None,
    metrics: Sequence[str] = (),
    settings: AnalysisSettings = AnalysisSettings(),
    planned_split: str | None = None,
) -> UploadAnalysis:
    """The analysis document of an uploaded file (the shape of ``experiments/<v>/result.json``)."""
    parquet = name.lower().endswith((".parquet", ".pq"))
    try:
        uploads.check_size(payload, uploads.EXPERIMENT_MAX_MB, "shoplens abtest analyze <file>")
        if parquet:
            uploads.check_parquet(payload, MAX_UPLOAD_ROWS)  # rows and decoded size from the footer, first
        else:
            payload = uploads.expanded(payload)
    except uploads.UploadRefused as err:
        return UploadAnalysis(None, str(err) if err.reason != "too_many_rows" else
                              f"{err} Use `shoplens abtest analyze <file>`, then pick it under Published analyses.")  # fmt: skip
    try:
        rows = read_experiment(payload, parquet=parquet)
    except (pl.exceptions.PolarsError, OSError, ValueError) as err:
        return UploadAnalysis(None, f"This file cannot be read as CSV or Parquet: {err}")
    if len(rows) > MAX_UPLOAD_ROWS:
        return UploadAnalysis(None, f"{len(rows):,} rows is more than the dashboard analyzes ({MAX_UPLOAD_ROWS:,}); "
                                    "use `shoplens abtest analyze <file>`, then pick it under Published analyses.")  # fmt: skip
    chosen = list(metrics) or default_metrics(rows)
    if not chosen:
        return UploadAnalysis(None, "No metric column found: add numeric or true/false columns next to "
                                    "`user_id` and `variant`.")  # fmt: skip
    if settings.sequential and "assigned_at" not in rows.columns:
        return UploadAnalysis(None, "A sequential analysis needs an `assigned_at` column.")
    try:
        classified = classify_experiment(rows, chosen, key=None)
        reduced = reduce_classified(classified, chosen, segmented="segment" in rows.columns, daily=settings.sequential)
        doc = analysis_document(reduced.stats, reduced.kinds, reduced.rejections, reduced.rows, control=control,
                                settings=settings, planned_split=planned_split, segmented=reduced.segmented)  # fmt: skip
    except ExperimentSchemaError as err:
        return UploadAnalysis(None, f"This is not an experiment file: {err}.")
    except ValueError as err:  # a planned split that does not fit the variants
        return UploadAnalysis(None, str(err))
    return UploadAnalysis({"experiment": name.rsplit(".", 1)[0], "source": {"kind": "upload", "file": name}, **doc})


# ------------------------------------------------------------------------------------ tables
def _rate_or_value(kind: str, x: Any) -> Any:
    return None if x is None else (100 * x if kind == "conversion" else x)


def variants_frame(metric: Mapping[str, Any]) -> pd.DataFrame:
    """Users and mean per variant (a rate in percent for conversions)."""
    kind = metric["kind"]
    return pd.DataFrame([{"Variant": v["variant"], "Users": v["users"], "Mean": _rate_or_value(kind, v["mean"])}
                         for v in metric["variants"]])  # fmt: skip


def comparisons_frame(metric: Mapping[str, Any], segments: bool = False) -> pd.DataFrame:
    """One row per comparison with control (per segment with ``segments``); lifts of rates in points."""
    kind = metric["kind"]
    groups = [(s["segment"], s["comparisons"]) for s in metric.get("segments") or []] if segments else [(None, metric["comparisons"])]
    rows = []
    for segment, comparisons in groups:
        for c in comparisons:
            rows.append({
                **({"Segment": segment} if segments else {}),
                "Variant": c["variant"], "Lift": _rate_or_value(kind, c["lift_abs"]),
                "Relative lift": _rate_or_value("conversion", c["lift_rel"]),
                "Low": _rate_or_value(kind, c["ci_low"]), "High": _rate_or_value(kind, c["ci_high"]),
                "p-value": c["p_value"], "Adjusted p": c["p_value_adjusted"],
                "P(beat control)": _rate_or_value("conversion", c["chance_to_beat_control"]),
                "CUPED saved": _rate_or_value("conversion", c.get("variance_reduction")),
                "Warnings": ", ".join(c["warnings"]),
            })  # fmt: skip
    return pd.DataFrame(rows)


def rejected_frame(doc: Mapping[str, Any]) -> pd.DataFrame:
    users = doc.get("rejected_users") or {}
    return pd.DataFrame([{"Reason": r, "Rows": n, "Users": users.get(r)} for r, n in (doc.get("rejected") or {}).items()])


# ------------------------------------------------------------------------------------ charts
def _finite(x: Any, fallback: float) -> float:
    return fallback if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def lift_intervals(labels: Sequence[str], comparisons: Sequence[Mapping[str, Any]], title: str) -> go.Figure:
    """Relative lift per comparison with its interval (delta method); green/red when it excludes zero."""
    x = [_finite(c["lift_rel"], 0.0) for c in comparisons]
    low = [_finite(c["rel_ci_low"], min(x, default=0.0) - 0.5) for c in comparisons]
    high = [_finite(c["rel_ci_high"], max(x, default=0.0) + 0.5) for c in comparisons]
    color = [GOOD if lo > 0 else BAD if hi < 0 else NEUTRAL for lo, hi in zip(low, high, strict=True)]
    fig = go.Figure()
    for i, label in enumerate(labels):
        fig.add_trace(go.Scatter(x=[low[i], high[i]], y=[label, label], mode="lines", line={"color": color[i], "width": 4},
                                 hoverinfo="skip", showlegend=False))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=list(labels), mode="markers", marker={"size": 11, "color": color},
                             showlegend=False, hovertemplate="%{y}: %{x:+.1%}<extra></extra>"))  # fmt: skip
    fig.add_vline(x=0, line_dash="dash", line_color="#888")
    fig.update_xaxes(tickformat="+.0%", title="Relative lift vs control (interval)")
    return _layout(fig, title, height=110 + 42 * len(labels))


def sequential_chart(rows: Sequence[Mapping[str, Any]], metric: str) -> go.Figure:
    """Per day: the cumulative lift, its fixed-horizon interval and its always-valid interval."""
    fig = go.Figure()
    for variant in dict.fromkeys(r["variant"] for r in rows if r["metric"] == metric):
        sub = [r for r in rows if r["metric"] == metric and r["variant"] == variant]
        days = [r["date"] for r in sub]
        fig.add_trace(go.Scatter(x=days + days[::-1], y=[r["sequential_ci_high"] for r in sub] + [r["sequential_ci_low"] for r in sub][::-1],
                                 fill="toself", fillcolor="rgba(76,120,168,0.15)", line={"width": 0},
                                 name=f"{variant}: always-valid interval"))  # fmt: skip
        fig.add_trace(go.Scatter(x=days, y=[r["lift_abs"] for r in sub], mode="lines+markers", name=f"{variant}: lift"))
    fig.add_hline(y=0, line_dash="dash", line_color="#888")
    fig.update_yaxes(title="Lift vs control")
    return _layout(fig, f"{metric}: daily looks", height=340)


# ------------------------------------------------------------------------------------ planning
def plan(kind: str, baseline: float, mde: float, mde_kind: str, alpha: float, power: float,
         daily_users: float | None, sd: float | None = None) -> tuple[Any, pd.DataFrame]:  # fmt: skip
    """The sample-size plan and its power curve (users per arm, total, days, power)."""
    common = {"mde_kind": mde_kind, "alpha": alpha}
    if kind == "conversion":
        result = plan_proportions(baseline, mde, power=power, daily_users=daily_users, **common)
    else:
        result = plan_means(baseline, sd or 0.0, mde, power=power, daily_users=daily_users, **common)
    curve = []
    if result.users_per_arm is not None:
        for factor in CURVE_FACTORS:
            n = max(2, math.ceil(result.users_per_arm * factor))
            p = power_proportions(baseline, mde, n, **common) if kind == "conversion" else power_means(baseline, sd or 0.0, mde, n, **common)
            curve.append({"Users per arm": n, "Users in total": 2 * n, "Days": math.ceil(2 * n / daily_users) if daily_users else None,
                          "Power": float(p)})  # fmt: skip
    return result, pd.DataFrame(curve)


def power_chart(curve: pd.DataFrame, target: float) -> go.Figure:
    fig = go.Figure(go.Scatter(x=curve["Users per arm"], y=curve["Power"], mode="lines+markers", line={"color": ACCENT},
                               hovertemplate="%{x:,} per arm: %{y:.0%}<extra></extra>"))  # fmt: skip
    fig.add_hline(y=target, line_dash="dash", line_color="#888")
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], title="Power")
    fig.update_xaxes(title="Users per arm")
    return _layout(fig, "Power curve", height=320)


__all__ = [
    "MAX_UPLOAD_ROWS",
    "UploadAnalysis",
    "analyze_upload",
    "comparisons_frame",
    "lift_intervals",
    "plan",
    "power_chart",
    "rejected_frame",
    "sequential_chart",
    "variants_frame",
]
