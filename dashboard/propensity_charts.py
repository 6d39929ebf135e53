"""Chart builders of the Propensity page (plain functions over the published views; unit-testable)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from dashboard.charts import ACCENT, FONT

COLORS = {"logistic": ACCENT, "boosted": "#F58518"}


def _style(fig: go.Figure, title: str, height: int = 380, **kw: Any) -> go.Figure:
    fig.update_layout(title=title, height=height, template="plotly_white", font=FONT,
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2}, **kw)  # fmt: skip
    return fig


def curve(df: pd.DataFrame, title: str, xt: str, yt: str, diagonal: bool, base_rate: float | None = None) -> go.Figure:
    fig = go.Figure()
    for kind, part in df.groupby("model", sort=False) if len(df) else []:
        fig.add_trace(go.Scatter(x=part["x"], y=part["y"], mode="lines", name=str(kind),
                                 line={"color": COLORS.get(str(kind)), "width": 2.5}))  # fmt: skip
    if diagonal:
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="random", line={"dash": "dot", "color": "#999"}))
    if base_rate is not None:
        fig.add_hline(y=base_rate, line_dash="dot", line_color="#999", annotation_text=f"base rate {base_rate:.1%}")
    return _style(fig, title, xaxis_title=xt, yaxis_title=yt, xaxis_range=[0, 1], yaxis_range=[0, 1.02])


def grid_row(grid: pd.DataFrame, kind: str, share: float) -> dict[str, Any] | None:
    """The published confusion counts of ``kind`` at the audience share nearest ``share``."""
    if grid.empty:
        return None
    part = grid.loc[grid["model"] == kind]
    if part.empty:
        return None
    i = (part["audience_share"] - share).abs().idxmin()
    return part.loc[i].to_dict()


def confusion(row: dict[str, Any]) -> go.Figure:
    z = [[row["tp"], row["fn"]], [row["fp"], row["tn"]]]
    total = sum(map(sum, z)) or 1
    text = [[f"{int(v):,}<br>{v / total:.1%}" for v in r] for r in z]
    fig = go.Figure(go.Heatmap(z=z, x=["targeted (predicted buyer)", "not targeted"], y=["bought", "did not buy"],
                               text=text, texttemplate="%{text}", colorscale="Blues", showscale=False))  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    return _style(fig, "Confusion matrix at this audience", height=320)


def calibration(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot", "color": "#999"}))
    top = 0.05
    for kind, part in df.groupby("model", sort=False) if len(df) else []:
        fig.add_trace(go.Scatter(x=part["mean_predicted"], y=part["observed_rate"], mode="lines+markers", name=str(kind),
                                 line={"color": COLORS.get(str(kind))}))  # fmt: skip
        top = max(top, float(part["mean_predicted"].max()), float(part["observed_rate"].max()))
    return _style(fig, "Calibration (validation cutoff)", xaxis_title="mean predicted", yaxis_title="observed rate",
                  xaxis_range=[0, top * 1.05], yaxis_range=[0, top * 1.05])  # fmt: skip


def lift(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for kind, part in df.groupby("model", sort=False) if len(df) else []:
        fig.add_trace(go.Bar(x=part["decile"], y=part["lift"], name=str(kind), marker_color=COLORS.get(str(kind))))
    fig.add_hline(y=1, line_dash="dot", line_color="#999")
    fig.update_xaxes(autorange="reversed", dtick=1)
    return _style(fig, "Lift by decile (10 = best scored)", barmode="group", xaxis_title="decile", yaxis_title="lift")


def by_segment(df: pd.DataFrame) -> go.Figure:
    df = df.sort_values("mean_propensity")
    fig = go.Figure(go.Bar(x=df["mean_propensity"], y=df["segment_name"], orientation="h", marker_color=ACCENT,
                           text=[f"{v:.1%}" for v in df["mean_propensity"]], textposition="auto"))  # fmt: skip
    fig.update_xaxes(tickformat=".0%")
    return _style(fig, "Mean purchase propensity per segment", height=60 + 40 * len(df))


def importance(df: pd.DataFrame, top: int = 12) -> go.Figure:
    fig = go.Figure()
    if len(df):
        for kind, part in df.sort_values("importance", ascending=False).groupby("model", sort=False):
            part = part.head(top).iloc[::-1]
            fig.add_trace(go.Bar(x=part["importance"], y=part["feature"], orientation="h", name=str(kind),
                                 marker_color=COLORS.get(str(kind))))  # fmt: skip
    return _style(fig, "Permutation importance (drop in ROC AUC)", height=480, barmode="group")


__all__ = ["by_segment", "calibration", "confusion", "curve", "grid_row", "importance", "lift"]
