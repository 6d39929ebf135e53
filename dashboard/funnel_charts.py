"""Plotly figures of the Funnel page (plain functions over the published funnel tables)."""


from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from dashboard.charts import ACCENT, _layout

#: At most this many breakdown values are drawn (the largest by units entered); the rest are in the table.
MAX_VALUES = 8


def top_values(breakdown: pd.DataFrame, n: int = MAX_VALUES) -> list[str]:
    """The ``n`` values with the most units at step 1."""
    first = breakdown[breakdown["step"] == 1].sort_values(["count", "value"], ascending=[False, True])
    return [str(v) for v in first["value"].head(n)]


def funnel(steps: pd.DataFrame, breakdown: pd.DataFrame | None = None,
           colors: Mapping[str, str] | None = None) -> go.Figure:  # fmt: skip
    """The funnel: one trace overall, or one per breakdown value (largest first)."""
    fig = go.Figure()
    if breakdown is None or breakdown.empty:
        s = steps.sort_values("step")
        fig.add_trace(go.Funnel(y=s["label"], x=s["count"], marker={"color": ACCENT},
                                textinfo="value+percent initial+percent previous"))  # fmt: skip
        return _layout(fig, "Units reaching each step", height=380)
    for value in top_values(breakdown):
        s = breakdown[breakdown["value"] == value].sort_values("step")
        fig.add_trace(go.Funnel(y=s["label"], x=s["count"], name=value, textinfo="value+percent initial",
                                marker={"color": (colors or {}).get(value)}))  # fmt: skip
    return _layout(fig, "Units reaching each step, by value", height=440)


def trend(trend_table: pd.DataFrame, labels: Sequence[str]) -> go.Figure:
    """Conversion from the first step to each later step, by week of the first step."""
    fig = go.Figure()
    for k in range(2, len(labels) + 1):
        part = trend_table[trend_table["step"] == k].sort_values("week")
        fig.add_trace(go.Scatter(x=pd.to_datetime(part["week"]), y=part["conversion_from_first"], mode="lines+markers",
                                 name=f"{labels[0]} → {labels[k - 1]}",
                                 customdata=part[["count"]], hovertemplate="%{y:.1%} (%{customdata[0]:,} units)"))  # fmt: skip
    fig.update_yaxes(tickformat=".0%", title="conversion from the first step")
    fig.update_xaxes(title="week of the first step")
    return _layout(fig, "Conversion trend by week", height=360)


def histogram(hist: pd.DataFrame, title: str) -> go.Figure:
    part = hist.sort_values("bin")
    fig = go.Figure(go.Bar(x=part["label"], y=part["units"], marker_color=ACCENT,
                           hovertemplate="%{x}: %{y:,} units<extra></extra>"))  # fmt: skip
    fig.update_xaxes(title="time between the steps", type="category")
    fig.update_yaxes(title="units")
    return _layout(fig, title, height=340)


__all__ = ["MAX_VALUES", "funnel", "histogram", "top_values", "trend"]
