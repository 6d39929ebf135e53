"""Plotly figure builders and number formats for the dashboard (plain functions, unit-testable).

One colour per segment everywhere: the colour published with the segment (``profiles.json`` /
``segment_summary.color``, stable per segment id), grey for "Not enough activity yet". Axis titles are
words, not column names; numbers carry thousands separators, currency and percent signs.
"""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from model.segmentation import NOT_ENOUGH_COLOR, NOT_ENOUGH_NAME, PALETTE, RADAR_FEATURES
from services.core.documents.segmentation import FeatureImportance

ACCENT = "#4C78A8"
FONT = dict(family="Inter, 'Source Sans Pro', sans-serif", size=13, color="#31333F")

#: Human labels for feature and metric columns.
LABELS: dict[str, str] = {
    "n_events": "Events", "n_sessions": "Sessions", "active_days": "Active days",
    "events_per_session": "Events per session", "median_session_duration_s": "Session length (s)",
    "mean_days_between_visits": "Days between visits", "frequency": "Purchase sessions",
    "monetary": "Revenue per user", "recency_days": "Days since last purchase", "tenure_days": "Tenure (days)",
    "n_views": "Views", "n_carts": "Add-to-carts", "n_removals": "Cart removals", "n_purchases": "Purchases",
    "view_to_cart_rate": "View → cart rate", "cart_to_purchase_rate": "Cart → purchase rate",
    "cart_abandonment_rate": "Cart abandonment", "removal_rate": "Removal rate",
    "category_diversity": "Categories browsed", "category_entropy": "Category spread",
    "brand_concentration": "Brand loyalty", "price_level": "Price level vs category",
    "weekend_share": "Weekend share", "night_share": "Night share", "morning_share": "Morning share",
    "afternoon_share": "Afternoon share", "evening_share": "Evening share", "holiday_share": "Holiday-season share",
    "has_purchased": "Has purchased",
    "active_users": "Active users", "sessions": "Sessions", "views": "Views", "carts": "Add-to-carts",
    "purchases": "Purchases", "revenue": "Revenue", "conversion_rate": "Conversion rate",
    "silhouette": "Silhouette (higher is better)", "davies_bouldin": "Davies–Bouldin (lower is better)",
    "calinski_harabasz": "Calinski–Harabasz (higher is better)", "stability_ari": "Bootstrap stability (ARI)",
}  # fmt: skip

def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    if name.startswith("share_"):
        return f"Share {name[6:].replace('_', ' ')}"
    return name.replace("_", " ").capitalize()


# ------------------------------------------------------------------------------------ formats
def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA or x is pd.NaT


def fmt_int(x: Any) -> str:
    return "–" if _missing(x) else f"{round(float(x)):,}"


def fmt_money(x: Any) -> str:
    if _missing(x):
        return "–"
    x = float(x)
    if abs(x) >= 1e9:
        return f"${x / 1e9:,.2f}B"
    if abs(x) >= 1e6:
        return f"${x / 1e6:,.2f}M"
    return f"${x:,.0f}" if abs(x) >= 1000 else f"${x:,.2f}"


def fmt_pct(x: Any, digits: int = 1) -> str:
    return "–" if _missing(x) else f"{100 * float(x):.{digits}f}%"


def fmt_num(x: Any, digits: int = 2) -> str:
    if _missing(x):
        return "–"
    x = float(x)
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:,.{digits}f}"


def fmt_time(x: Any) -> str:
    if _missing(x) or x == "":
        return "–"
    ts = pd.Timestamp(x)
    ts = ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")
    return ts.strftime("%d %b %Y %H:%M UTC")


def fmt_feature(name: str, x: Any) -> str:
    """A feature value in its natural unit (rates and shares as %, money in $, counts as integers)."""
    if _missing(x):
        return "–"
    if name.endswith(("_rate", "_share")) or name.startswith("share_") or name == "brand_concentration":
        return fmt_pct(x)
    if name == "monetary":
        return fmt_money(x)
    if name.startswith("n_") or name in ("frequency", "active_days", "tenure_days", "recency_days", "category_diversity"):
        return fmt_num(x, 1) if float(x) != round(float(x)) else fmt_int(x)
    return fmt_num(x)


# ------------------------------------------------------------------------------------ colours
def color_map(names: Iterable[str], published: Mapping[str, str] | None = None) -> dict[str, str]:
    """Name -> colour: the published colour if any, else the palette in order; grey for not enough."""
    out: dict[str, str] = {}
    published = dict(published or {})
    i = 0
    for n in names:
        if n in out:
            continue
        if n == NOT_ENOUGH_NAME:
            out[n] = published.get(n, NOT_ENOUGH_COLOR)
        elif n in published:
            out[n] = published[n]
        else:
            out[n] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _layout(fig: go.Figure, title: str | None = None, height: int = 380, **kw: Any) -> go.Figure:
    fig.update_layout(
        template="plotly_white", font=FONT, height=height, title=dict(text=title, x=0, font_size=15) if title else None,
        margin=dict(l=10, r=10, t=50 if title else 20, b=10), hoverlabel=dict(font_size=12),
        legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="right", x=1, title=None), **kw,
    )  # fmt: skip
    return fig


# ------------------------------------------------------------------------------------ overview
def kpi_trend(kpi: pd.DataFrame, metric: str) -> go.Figure:
    """Daily line of one KPI column with a 7-day rolling mean."""
    df = kpi.sort_values("event_date")
    x = pd.to_datetime(df["event_date"])
    y = df[metric].astype(float)
    fmt = ":.1%" if metric == "conversion_rate" else (":$,.0f" if metric == "revenue" else ":,.0f")
    fig = go.Figure()
    fig.add_scatter(x=x, y=y, mode="lines", name="Daily", line=dict(color="#9EB9D4", width=1.5),
                    hovertemplate=f"%{{x|%d %b %Y}}<br>{label(metric)}: %{{y{fmt}}}<extra></extra>")  # fmt: skip
    fig.add_scatter(x=x, y=y.rolling(7, min_periods=1).mean(), mode="lines", name="7-day average",
                    line=dict(color=ACCENT, width=3), hovertemplate=f"7-day avg: %{{y{fmt}}}<extra></extra>")  # fmt: skip
    tickformat = ".0%" if metric == "conversion_rate" else ("$~s" if metric == "revenue" else "~s")
    fig.update_yaxes(title=label(metric), tickformat=tickformat, rangemode="tozero")
    fig.update_xaxes(title=None)
    return _layout(fig, f"{label(metric)} per day", height=340)


# ------------------------------------------------------------------------------------ segments
def segment_shares(summary: pd.DataFrame, colors: Mapping[str, str]) -> go.Figure:
    """Share of users next to share of revenue, one bar pair per segment."""
    df = summary.sort_values("share_users", ascending=True)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=("Share of customers", "Share of revenue"),
                        horizontal_spacing=0.04)  # fmt: skip
    col = [colors.get(n, NOT_ENOUGH_COLOR) for n in df["segment_name"]]
    for i, (c, custom) in enumerate((("share_users", "users"), ("share_revenue", "revenue")), start=1):
        extra = df[custom].map(fmt_int if custom == "users" else fmt_money)
        fig.add_bar(y=df["segment_name"], x=df[c], orientation="h", marker_color=col, showlegend=False,
                    text=df[c].map(fmt_pct), textposition="outside", customdata=extra, cliponaxis=False,
                    hovertemplate="%{y}: %{x:.1%} (%{customdata})<extra></extra>", row=1, col=i)  # fmt: skip
        fig.update_xaxes(tickformat=".0%", range=[0, max(0.05, float(df[c].max()) * 1.3)], row=1, col=i)
    return _layout(fig, height=max(260, 46 * len(df) + 80))


def pca_map(sample: pd.DataFrame, colors: Mapping[str, str]) -> go.Figure:
    """Users in the first two principal components, coloured by segment (a stratified sample)."""
    fig = go.Figure()
    for name, part in sample.groupby("segment_name", sort=True):
        fig.add_scattergl(x=part["pc1"], y=part["pc2"], mode="markers", name=str(name),
                          marker=dict(color=colors.get(str(name), NOT_ENOUGH_COLOR), size=4, opacity=0.55),
                          hovertemplate=f"{name}<extra></extra>")  # fmt: skip
    fig.update_xaxes(title="Principal component 1", zeroline=False)
    fig.update_yaxes(title="Principal component 2", zeroline=False)
    return _layout(fig, f"Customer map ({len(sample):,} sampled users)", height=480)


def radar(profiles: Sequence[Mapping[str, Any]], colors: Mapping[str, str],
          features: Sequence[str] = RADAR_FEATURES) -> go.Figure:  # fmt: skip
    """Each segment's mean relative to the whole base (1 = average customer), on the radar features."""
    feats = [f for f in features if all((p.get("lifts") or p.get("lift") or {}).get(f) is not None for p in profiles)]
    fig = go.Figure()
    theta = [label(f) for f in feats]
    for p in profiles:
        lifts = p.get("lifts") or p.get("lift") or {}
        r = [min(float(lifts[f]), 4.0) for f in feats]
        fig.add_scatterpolar(r=[*r, r[0]] if r else r, theta=[*theta, theta[0]] if theta else theta,
                             name=p["name"], line=dict(color=colors.get(p["name"], ACCENT), width=2),
                             fill="toself", opacity=0.55,
                             hovertemplate="%{theta}: %{r:.2f}× average<extra>" + p["name"] + "</extra>")  # fmt: skip
    fig.update_polars(radialaxis=dict(range=[0, 4], tickvals=[0, 1, 2, 3, 4],
                                      ticktext=["0", "avg", "2×", "3×", "≥4×"]))  # fmt: skip
    fig = _layout(fig, "Profile vs the average customer (1 = average)", height=520)
    fig.update_layout(margin=dict(l=60, r=60, t=60, b=30),
                      legend=dict(orientation="v", yanchor="middle", y=0.5, xanchor="left", x=0.9))  # fmt: skip
    return fig


def feature_bars(profiles: Sequence[Mapping[str, Any]], feature: str, colors: Mapping[str, str]) -> go.Figure:
    """The median of one feature per segment."""
    names = [p["name"] for p in profiles]
    vals = [(p.get("medians") or {}).get(feature) for p in profiles]
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=[colors.get(n, ACCENT) for n in names],
                           text=[fmt_feature(feature, v) for v in vals], textposition="outside", cliponaxis=False,
                           hovertemplate="%{x}: %{text}<extra></extra>"))  # fmt: skip
    fig.update_yaxes(title=f"Median {label(feature).lower()}", rangemode="tozero")
    return _layout(fig, f"Median {label(feature).lower()} by segment", height=360)


def top_categories(profiles: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> go.Figure:
    """Each segment's top categories (mean share of the segment's events)."""
    rows = [{"segment": p["name"], "category": str(c["category"]).replace("_", " "), "share": c["share"]}
            for p in profiles for c in (p.get("top_categories") or [])]  # fmt: skip
    df = pd.DataFrame(rows, columns=["segment", "category", "share"])
    fig = go.Figure()
    for seg, part in df.groupby("segment", sort=False):
        fig.add_bar(x=part["category"], y=part["share"], name=str(seg), marker_color=colors.get(str(seg), ACCENT),
                    hovertemplate=f"{seg}<br>%{{x}}: %{{y:.1%}}<extra></extra>")  # fmt: skip
    fig.update_yaxes(title="Share of the segment's events", tickformat=".0%")
    return _layout(fig, "Top categories", height=380, barmode="group")


def sankey(flow: pd.DataFrame, colors: Mapping[str, str], old_label: str = "previous", new_label: str = "current") -> go.Figure:
    """Users moving from their segment under the previous model to the current one."""
    src = list(dict.fromkeys(flow["from_segment_name"]))
    dst = list(dict.fromkeys(flow["to_segment_name"]))
    nodes = [f"{n} ({old_label})" for n in src] + [f"{n} ({new_label})" for n in dst]
    node_colors = [colors.get(n, NOT_ENOUGH_COLOR) for n in src + dst]
    link_colors = [_rgba(colors.get(n, NOT_ENOUGH_COLOR), 0.35) for n in flow["from_segment_name"]]
    fig = go.Figure(go.Sankey(
        arrangement="snap",
        node=dict(label=nodes, color=node_colors, pad=14, thickness=16, line=dict(width=0)),
        link=dict(source=[src.index(s) for s in flow["from_segment_name"]],
                  target=[len(src) + dst.index(t) for t in flow["to_segment_name"]],
                  value=flow["users"].astype(float), color=link_colors,
                  hovertemplate="%{source.label} → %{target.label}: %{value:,.0f} users<extra></extra>"),
    ))  # fmt: skip
    return _layout(fig, "How users moved between the last two models", height=460)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# ------------------------------------------------------------------------------------ lookup
def user_vs_profile(rows: pd.DataFrame, color: str) -> go.Figure:
    """The user's value against the segment median per feature, on a doubling scale (0 = like the segment).

    Rows keep their order (closest to the segment on top); bars are log2(user / median), capped at 8x.
    """
    df = rows.dropna(subset=["ratio"])
    df = df[df["ratio"] > 0]
    x = np.log2(df["ratio"].astype(float)).clip(-3, 3)
    fig = go.Figure(go.Bar(y=df["feature_label"], x=x, orientation="h", marker_color=color,
                           customdata=df[["user", "median"]], hovertemplate=(
                               "%{y}<br>this customer: %{customdata[0]}<br>segment median: %{customdata[1]}<extra></extra>")))  # fmt: skip
    fig.update_xaxes(title="This customer vs the segment's median", range=[-3.2, 3.2], zeroline=True, zerolinewidth=2,
                     zerolinecolor="#555", tickvals=[-3, -2, -1, 0, 1, 2, 3],
                     ticktext=["⅛×", "¼×", "½×", "same", "2×", "4×", "≥8×"])  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, height=max(280, 26 * len(df) + 90))


# ------------------------------------------------------------------------------------ model
def k_selection(rows: Sequence[Mapping[str, Any]], chosen_k: int | None) -> go.Figure:
    """The four k-selection indices against k, the chosen k marked."""
    df = pd.DataFrame(rows)
    metrics = [m for m in ("silhouette", "davies_bouldin", "calinski_harabasz", "stability_ari") if m in df]
    fig = make_subplots(rows=2, cols=2, subplot_titles=[label(m) for m in metrics],
                        vertical_spacing=0.18, horizontal_spacing=0.1)  # fmt: skip
    for i, m in enumerate(metrics):
        r, c = divmod(i, 2)
        fig.add_scatter(x=df["k"], y=df[m], mode="lines+markers", line=dict(color=ACCENT), showlegend=False,
                        hovertemplate=f"k=%{{x}}: %{{y:.3f}}<extra>{label(m)}</extra>", row=r + 1, col=c + 1)  # fmt: skip
        if chosen_k is not None:
            fig.add_vline(x=chosen_k, line_dash="dash", line_color="#E45756", row=r + 1, col=c + 1)
        fig.update_xaxes(title="Number of segments (k)", dtick=1, row=r + 1, col=c + 1)
    return _layout(fig, height=560)


def threshold_curve(curve: Sequence[Mapping[str, Any]], chosen: int | None, target: float | None) -> go.Figure:
    """Agreement of early-history segments with full-history ones, by number of events."""
    df = pd.DataFrame(curve)
    fig = go.Figure()
    for col, name, color, dash in (("agreement", "Same segment as with all events", ACCENT, None),
                                   ("ari", "Adjusted Rand index", "#F58518", None),
                                   ("lower", "Lower confidence bound (what the threshold reads)", "#777", "dot")):  # fmt: skip
        if col in df and df[col].notna().any():
            fig.add_scatter(x=df["n"], y=df[col], mode="lines+markers", name=name,
                            line=dict(color=color, width=2.5, dash=dash),
                            hovertemplate="first %{x} events: %{y:.1%}<extra>" + name + "</extra>")  # fmt: skip
    if target is not None:
        fig.add_hline(y=target, line_dash="dot", line_color="#777", annotation_text=f"target {target:.0%}")
    if chosen is not None:
        fig.add_vline(x=chosen, line_dash="dash", line_color="#E45756", annotation_text=f"threshold: {chosen} events")
    fig.update_xaxes(title="Events known about the user", type="log" if len(df) and df["n"].max() > 50 else None)
    fig.update_yaxes(title="Agreement", tickformat=".0%", range=[0, 1.05])
    return _layout(fig, "How many events before a segment can be trusted", height=400)


def importance(ranked: Sequence[FeatureImportance], top: int = 15) -> go.Figure:
    """Feature importance as the model document ranks it, most important on top."""
    rows = [(r.feature, r.importance) for r in ranked][:top]
    df = pd.DataFrame(rows, columns=["feature", "importance"]).iloc[::-1]
    fig = go.Figure(go.Bar(y=[label(f) for f in df["feature"]], x=df["importance"], orientation="h",
                           marker_color=ACCENT, hovertemplate="%{y}: %{x:.3f}<extra></extra>"))  # fmt: skip
    fig.update_xaxes(title="Importance (drop in accuracy when shuffled)")
    return _layout(fig, "What separates the segments", height=max(300, 26 * len(df) + 90))
