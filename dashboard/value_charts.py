"""Plotly figures of the Lifetime value and Retention pages (plain functions over the published tables)."""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from dashboard.charts import ACCENT, _layout, fmt_money


def clv_distribution(dist: pd.DataFrame) -> go.Figure:
    """Customers per CLV bin (the last bin is open: everyone above the 99th percentile)."""
    labels = [f"≥ {fmt_money(r.lower)}" if pd.isna(r.upper) else f"{fmt_money(r.lower)}–{fmt_money(r.upper)}"
              for r in dist.itertuples()]  # fmt: skip
    fig = go.Figure(go.Bar(x=labels, y=dist["customers"], marker={"color": ACCENT},
                           customdata=dist[["clv_sum"]], hovertemplate="%{x}: %{y:,} customers, CLV %{customdata[0]:,.0f}"))  # fmt: skip
    fig.update_xaxes(title="lifetime value", type="category")
    fig.update_yaxes(title="customers")
    return _layout(fig, "Distribution of lifetime value", height=340)


def value_by(groups: pd.DataFrame, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Sum of CLV per value of one breakdown (largest first), the median in the hover."""
    g = groups.sort_values("clv_sum", ascending=False)
    fig = go.Figure(go.Bar(x=g["value"].astype(str), y=g["clv_sum"],
                           marker={"color": [(colors or {}).get(v, ACCENT) for v in g["value"]]},
                           customdata=g[["customers", "clv_median"]],
                           hovertemplate="%{x}: %{y:,.0f} (%{customdata[0]:,} customers, median %{customdata[1]:,.2f})"))  # fmt: skip
    fig.update_yaxes(title="sum of CLV")
    return _layout(fig, "Lifetime value", height=340)


def holdout(by_frequency: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Mean holdout repeat purchases per calibration frequency: actual, model and naive forecast."""
    x = [r["calibration_frequency"] for r in by_frequency]
    fig = go.Figure([
        go.Bar(x=x, y=[r["actual_mean"] for r in by_frequency], name="actual", marker={"color": "#333333"}),
        go.Bar(x=x, y=[r["predicted_mean"] for r in by_frequency], name="model", marker={"color": ACCENT}),
        go.Bar(x=x, y=[r["naive_mean"] for r in by_frequency], name="naive (calibration rate)", marker={"color": "#bbbbbb"}),
    ])  # fmt: skip
    fig.update_xaxes(title="repeat purchases in the calibration period", type="category")
    fig.update_yaxes(title="mean repeat purchases in the holdout")
    return _layout(fig, "Holdout check", height=340, barmode="group")


def triangle(cohorts: pd.DataFrame, period: str) -> go.Figure:
    """The classic retention triangle: one row per cohort, one column per period, the rate as colour."""
    grid = cohorts.pivot_table(index="cohort", columns="period", values="rate", aggfunc="first").sort_index()
    sizes = cohorts.groupby("cohort")["size"].first().reindex(grid.index)
    labels = [f"{c} ({n:,})" for c, n in zip(grid.index.astype(str), sizes, strict=True)]
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[str(n) for n in grid.columns], y=labels, colorscale="Blues",
                               zmin=0, zmax=1, texttemplate="%{z:.0%}",
                               hovertemplate="cohort %{y}, period %{x}: %{z:.1%}<extra></extra>"))  # fmt: skip
    fig.update_yaxes(autorange="reversed", type="category", title="cohort (members)")
    fig.update_xaxes(title=f"{period}s since start")
    return _layout(fig, "Retention by cohort", height=max(320, 26 * len(labels) + 120))


def curves(cohorts: pd.DataFrame, period: str, value: str = "rate") -> go.Figure:
    """One line per cohort: the rate (or revenue per member) by period."""
    fig = go.Figure()
    for cohort, part in cohorts.sort_values(["cohort", "period"]).groupby("cohort", sort=True):
        fig.add_trace(go.Scatter(x=part["period"], y=part[value], mode="lines+markers", name=str(cohort)))
    if value == "rate":
        fig.update_yaxes(tickformat=".0%", title="returning members")
    else:
        fig.update_yaxes(title="revenue per member")
    fig.update_xaxes(title=f"{period}s since start")
    return _layout(fig, "Retention curves" if value == "rate" else "Revenue retention", height=360)


__all__ = ["clv_distribution", "curves", "holdout", "triangle", "value_by"]
