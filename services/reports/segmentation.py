"""The segmentation model report: ``report.md`` and a self-contained ``report.html`` (plotly).

Built from what ``shoplens train`` publishes (model.json, profiles.json) plus a sample of PCA
coordinates with segment ids (no user keys). Sections: segments (table, sizes and revenue bars,
radar charts of profile lifts, PCA scatter), k selection curves, explained variance, the event
threshold curve and choice, feature importance and the surrogate tree's rules.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.segmentation import RADAR_FEATURES
from services.reports.render import chart_html, fmt_float, fmt_pct, html_table, layout, md_table, page


def _segment_rows(profiles: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [str(p["segment_id"]), p["name"], f"{p['size']:,}", fmt_pct(p["share_users"]), fmt_pct(p["share_revenue"]),
         fmt_pct(p.get("buyer_share")), p["description"]]
        for p in profiles
    ]  # fmt: skip


SEG_HEADER = ["id", "name", "users", "share of users", "share of revenue", "buyers", "description"]


def render_markdown(model: Mapping[str, Any], profiles: Sequence[Mapping[str, Any]]) -> str:
    """The report as Markdown (tables and text; the charts are in the HTML)."""
    d, m, t = model["data"], model["metrics"], model["threshold"]
    lines = [
        f"# Segmentation model {model['version']}",
        "",
        f"Trained {model['trained_at']} on {d['users_trained']:,} of {d['users_total']:,} users "
        f"(events {d['event_date_min']} to {d['event_date_max']}, as of {d['as_of']}). "
        f"k = {model['k']}; previous version: {model.get('previous_version') or 'none'}.",
        "",
        f"Silhouette {fmt_float(m['silhouette'])}, Davies-Bouldin {fmt_float(m['davies_bouldin'])}, "
        f"Calinski-Harabasz {fmt_float(m['calinski_harabasz'], 1)}, bootstrap stability (ARI) {fmt_float(m['stability_ari'])}."
        + (f" Adjusted Rand index vs generator personas: {fmt_float(model['ari_vs_truth'])}."
           if model.get("ari_vs_truth") is not None else ""),
        "",
        "## Segments",
        "",
        md_table(SEG_HEADER, _segment_rows(profiles)),
        "",
    ]  # fmt: skip
    for p in profiles:
        lines += [f"### {p['segment_id']} · {p['name']}", "", p["description"], ""]
        top = ", ".join(f"{c['category']} ({fmt_pct(c['share'])})" for c in p.get("top_categories", []))
        if top:
            lines += [f"Top categories: {top}.", ""]
        lines += [f"- {a}" for a in p["actions"]] + [""]
    lines += [
        "## Choosing k",
        "",
        f"Rule: {model.get('k_rule', '')}.",
        "",
        md_table(
            ["k", "silhouette", "Davies-Bouldin", "Calinski-Harabasz", "stability ARI", "eligible"],
            [[str(r["k"]), fmt_float(r["silhouette"]), fmt_float(r["davies_bouldin"]), fmt_float(r["calinski_harabasz"], 1),
              fmt_float(r["stability_ari"]), "yes" if r.get("eligible") else "no"] for r in model["k_selection"]],
        ),
        "",
        "Explained variance of the principal components: "
        + ", ".join(fmt_pct(v) for v in model["explained_variance_ratio"])
        + f" (total {fmt_pct(float(sum(model['explained_variance_ratio'])))}).",
        "",
        "## How many events before a segment is trusted",
        "",
        f"For users with at least {t.get('long_factor', 2):g} x n events, the segment from their first n "
        "events is compared with the segment from all of them (same model). "
        f"Target: {t.get('metric', 'agreement')} >= {t['target']} for every larger n studied"
        + (f", read off its one-sided {t['confidence']:.0%} lower confidence bound. " if t.get("confidence") else ". ")
        + f"Chosen threshold: **{t['chosen_min_events']} events**"
        + (f" (target not reached: {t['error']}; the largest n studied is used)." if t.get("error") else "."),
        "",
        md_table(CURVE_HEADER, _curve_rows(t)),
        "",
        *_trust_md(model),
        "## Features",
        "",
        "Model inputs: " + ", ".join(f"`{f}`" for f in model["features"]) + ".",
        "",
        WEIGHTS_TEXT,
        "",
        md_table(WEIGHTS_HEADER, _weight_rows(model)),
        "",
    ]
    if model["dropped_features"]:
        lines += ["Dropped: " + "; ".join(f"`{x['name']}` ({x['reason']})" for x in model["dropped_features"]), ""]
    lines += [
        "Which features separate the segments (permutation importance of a surrogate random forest):",
        "",
        md_table(["feature", "importance"],
                  [[f"`{x['feature']}`", fmt_float(x["importance"])] for x in model["feature_importance"]]),
        "",
        f"Readable rules (depth-limited decision tree, held-out fidelity {fmt_float(model.get('tree_fidelity'))}):",
        "",
        "```",
        model["tree_rules"].rstrip(),
        "```",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


CURVE_HEADER = ["n", "users", "agreement", "ARI", "lower bound"]


def _curve_rows(t: Mapping[str, Any]) -> list[list[str]]:
    return [[str(c["n"]), f"{c['users']:,}", fmt_float(c["agreement"]), fmt_float(c["ari"]), fmt_float(c.get("lower"))]
            for c in t["curve"]]  # fmt: skip


WEIGHTS_TEXT = (
    "Each scaled feature counts in the segment metric with a weight of (its truncation noise)^-p, "
    "normalised to a root mean square of 1: the noise is the root mean square difference between a study "
    "user's value from their first n events and from all of them, so features that short histories "
    "estimate poorly move a segment less."
)
WEIGHTS_HEADER = ["feature", "truncation noise (scaled units)", "weight"]


def _weight_rows(model: Mapping[str, Any]) -> list[list[str]]:
    return [[f"`{w['feature']}`", fmt_float(w["truncation_noise"]), fmt_float(w["weight"])]
            for w in model.get("feature_weights") or []]  # fmt: skip


def floors(model: Mapping[str, Any]) -> list[list[str]]:
    """The issue-16 quality floors next to this model's figures: [what, floor, figure, met]."""
    t, cov = model["threshold"], model.get("coverage") or {}
    agree15 = next((c["agreement"] for c in t["curve"] if c["n"] == 15), None)
    rows = [["trust threshold (events)", "<= 15", str(t["chosen_min_events"]), _yes(t["chosen_min_events"] <= 15)],
            ["agreement at 15 events", ">= 0.8", fmt_float(agree15), _yes(agree15 is not None and agree15 >= 0.8)]]
    share20 = cov.get("share_segmented_20_plus")
    rows.append(["users with >= 20 events segmented", ">= 80%", fmt_pct(share20), _yes(share20 is not None and share20 >= 0.8)])
    for band in model.get("ari_vs_truth_by_events") or []:
        floor = 0.8 if "trusted" in band["band"] or band["band"] == ">= 40" else 0.6 if band["band"] == "15 to 39" else None
        if floor is not None:
            rows.append([f"ARI vs personas, {band['band']} events ({band['users']:,} users)", f">= {floor}",
                         fmt_float(band["ari"]), _yes(band["ari"] >= floor)])
    return rows


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _trust_md(model: Mapping[str, Any]) -> list[str]:
    t = model["threshold"]
    trust = t.get("trust") or {}
    lines = []
    if trust:
        lines += [
            "Per-user trust (the chance that the segment equals the one the full history would give): a logistic "
            f"regression on the study rows, logit = {fmt_float(trust['intercept'])} + "
            f"{fmt_float(trust['coef_log_n'])} x ln(events) + {fmt_float(trust['coef_confidence'])} x confidence. "
            "Calibration on the study rows:",
            "",
            md_table(["mean trust", "observed agreement", "rows"],
                     [[fmt_float(c["trust_mean"]), fmt_float(c["agreement"]), f"{c['users']:,}"]
                      for c in trust.get("calibration", [])]),
            "",
        ]  # fmt: skip
    if model.get("coverage"):
        c = model["coverage"]
        lines += [f"Users with a behavioural segment: {c['users_segmented']:,} of {c['users']:,} "
                  f"({fmt_pct(c['share_segmented'])}); of the {c['users_20_plus']:,} with 20 or more events: "
                  f"{fmt_pct(c.get('share_segmented_20_plus'))}.", ""]  # fmt: skip
    lines += ["Quality floors:", "", md_table(["figure", "floor", "this model", "met"], floors(model)), ""]
    if model.get("lifecycle_stages"):
        lines += ["## Lifecycle stages (every user, rules in order)", "",
                  md_table(["stage", "rule", "recommended action"],
                           [[f"{x['label']} (`{x['key']}`)", x["rule"], x["action"]] for x in model["lifecycle_stages"]]),
                  ""]  # fmt: skip
    return lines


def _charts(
    model: Mapping[str, Any], profiles: Sequence[Mapping[str, Any]], pcs: pd.DataFrame | None
) -> dict[str, Any]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colors = {p["segment_id"]: p["color"] for p in profiles}
    names = {p["segment_id"]: p["name"] for p in profiles}
    charts: dict[str, Any] = {}
    fig = go.Figure()
    fig.add_bar(x=[p["name"] for p in profiles], y=[p["share_users"] for p in profiles], name="share of users",
                marker_color="#9ecae1")
    fig.add_bar(x=[p["name"] for p in profiles], y=[p["share_revenue"] for p in profiles],
                name="share of revenue", marker_color="#3182bd")  # fmt: skip
    fig.update_yaxes(tickformat=".0%")
    charts["bars"] = layout(fig, "Share of users and of revenue by segment")

    radar = [f for f in RADAR_FEATURES if any(f in (p.get("lifts") or {}) for p in profiles)]
    if radar and profiles:
        cols = min(3, len(profiles))
        rows = int(np.ceil(len(profiles) / cols))
        fig = make_subplots(rows=rows, cols=cols, specs=[[{"type": "polar"}] * cols for _ in range(rows)],
                            subplot_titles=[p["name"] for p in profiles])  # fmt: skip
        for i, p in enumerate(profiles):
            vals = [p["lifts"].get(f) for f in radar]
            vals = [float(np.log2(v)) if v is not None and v > 0 else 0.0 for v in vals]
            fig.add_trace(go.Scatterpolar(r=vals + vals[:1], theta=radar + radar[:1], fill="toself",
                                          name=p["name"], line_color=p["color"], showlegend=False),
                          row=i // cols + 1, col=i % cols + 1)  # fmt: skip
        fig.update_polars(radialaxis={"range": [-3, 3], "tickvals": [-2, 0, 2], "ticktext": ["1/4", "1", "4"]})
        charts["radar"] = layout(fig, "Profiles: lift over the whole base (log2 scale)", height=330 * rows)

    if pcs is not None and len(pcs):
        fig = go.Figure()
        for sid, part in pcs.groupby("segment_id"):
            fig.add_scattergl(x=part["pc1"], y=part["pc2"], mode="markers", name=names.get(int(sid), str(sid)),
                              marker={"size": 4, "opacity": 0.5, "color": colors.get(int(sid))})  # fmt: skip
        fig.update_xaxes(title="PC1")
        fig.update_yaxes(title="PC2")
        charts["pca"] = layout(fig, "Users in the first two principal components (sample)", height=480)

    ks = model["k_selection"]
    fig = make_subplots(rows=1, cols=4, subplot_titles=["silhouette (high)", "Davies-Bouldin (low)",
                                                        "Calinski-Harabasz (high)", "stability ARI (high)"])  # fmt: skip
    for j, key in enumerate(["silhouette", "davies_bouldin", "calinski_harabasz", "stability_ari"]):
        fig.add_scatter(x=[r["k"] for r in ks], y=[r[key] for r in ks], mode="lines+markers", showlegend=False,
                        row=1, col=j + 1)  # fmt: skip
        fig.add_vline(x=model["k"], line_dash="dot", line_color="#E45756", row=1, col=j + 1)
    charts["k"] = layout(fig, f"k selection (chosen k = {model['k']})", height=320)

    evr = model["explained_variance_ratio"]
    fig = go.Figure()
    fig.add_bar(x=[f"PC{i + 1}" for i in range(len(evr))], y=evr, name="component")
    fig.add_scatter(x=[f"PC{i + 1}" for i in range(len(evr))], y=np.cumsum(evr).tolist(), name="cumulative")
    fig.update_yaxes(tickformat=".0%")
    charts["variance"] = layout(fig, "Explained variance", height=300)

    t = model["threshold"]
    if t["curve"]:
        fig = go.Figure()
        fig.add_scatter(x=[c["n"] for c in t["curve"]], y=[c["agreement"] for c in t["curve"]],
                        mode="lines+markers", name="agreement")
        fig.add_scatter(x=[c["n"] for c in t["curve"]], y=[c["ari"] for c in t["curve"]],
                        mode="lines+markers", name="ARI")  # fmt: skip
        fig.add_hline(y=t["target"], line_dash="dash", line_color="#888")
        fig.add_vline(x=t["chosen_min_events"], line_dash="dot", line_color="#E45756")
        fig.update_xaxes(title="first n events", type="log")
        fig.update_yaxes(range=[0, 1.02])
        charts["threshold"] = layout(fig, f"Segment from first n events vs all events "
                                          f"(chosen: {t['chosen_min_events']})", height=340)  # fmt: skip

    imp = model["feature_importance"][::-1]
    fig = go.Figure()
    fig.add_bar(x=[x["importance"] for x in imp], y=[x["feature"] for x in imp], orientation="h")
    charts["importance"] = layout(fig, "Permutation importance (surrogate random forest)",
                                  height=max(300, 22 * len(imp)))  # fmt: skip
    return charts


def render_html(
    model: Mapping[str, Any], profiles: Sequence[Mapping[str, Any]], pcs: pd.DataFrame | None = None
) -> str:
    """One offline page: plotly.js inlined once, every chart plus the Markdown's tables."""
    charts = _charts(model, profiles, pcs)

    def chart(key: str) -> str:
        return chart_html(charts.get(key))

    d, m, t = model["data"], model["metrics"], model["threshold"]
    seg_rows = _segment_rows(profiles)
    seg_table = html_table(SEG_HEADER, seg_rows)
    details = "".join(
        f"<h3><span class=swatch style='background:{html.escape(p['color'])}'></span>"
        f"{p['segment_id']} · {html.escape(p['name'])}</h3><p>{html.escape(p['description'])}</p><ul>"
        + "".join(f"<li>{html.escape(a)}</li>" for a in p["actions"]) + "</ul>"
        for p in profiles
    )  # fmt: skip
    ari = (f" · ARI vs personas {fmt_float(model['ari_vs_truth'])}" if model.get("ari_vs_truth") is not None else "")
    curve = html_table(CURVE_HEADER, _curve_rows(t))
    dropped = "; ".join(f"{x['name']} ({x['reason']})" for x in model["dropped_features"]) or "none"
    body = f"""
<h1>Segmentation model {html.escape(model['version'])}</h1>
<p class=sub>Trained {html.escape(model['trained_at'])} on {d['users_trained']:,} of {d['users_total']:,} users,
events {d['event_date_min']} to {d['event_date_max']} · k = {model['k']} · silhouette {fmt_float(m['silhouette'])} ·
Davies-Bouldin {fmt_float(m['davies_bouldin'])} · stability {fmt_float(m['stability_ari'])}{ari}</p>
<section id=segments><h2>Segments</h2>{seg_table}{chart('bars')}</section>
<section id=profiles><h2>Profiles</h2>{chart('radar')}{details}</section>
<section id=pca><h2>PCA view</h2>{chart('pca')}{chart('variance')}</section>
<section id=k><h2>Choosing k</h2><p>{html.escape(model.get('k_rule', ''))}</p>{chart('k')}</section>
<section id=threshold><h2>How many events before a segment is trusted</h2>
<p>Chosen threshold: <b>{t['chosen_min_events']} events</b> (target {t.get('metric', 'agreement')} &ge;
{t['target']}{'; not reached: ' + html.escape(str(t['error'])) if t.get('error') else ''}).</p>{chart('threshold')}{curve}
<h3>Quality floors</h3>{html_table(["figure", "floor", "this model", "met"], floors(model))}
{_lifecycle_html(model)}</section>
<section id=features><h2>Features</h2><p>Inputs: {html.escape(', '.join(model['features']))}. Dropped:
{html.escape(dropped)}.</p><p>{html.escape(WEIGHTS_TEXT)}</p>{html_table(WEIGHTS_HEADER, _weight_rows(model))}
{chart('importance')}
<h3>Rules a marketer can read (fidelity {fmt_float(model.get('tree_fidelity'))})</h3><pre>{html.escape(model['tree_rules'])}</pre></section>
"""
    return page(f"shoplens · segmentation model {model['version']}", body)


def _lifecycle_html(model: Mapping[str, Any]) -> str:
    stages = model.get("lifecycle_stages") or []
    if not stages:
        return ""
    return "<h3>Lifecycle stages (every user, rules in order)</h3>" + html_table(
        ["stage", "rule", "recommended action"], [[f"{x['label']} ({x['key']})", x["rule"], x["action"]] for x in stages]
    )


def write_model_report(
    out_dir: Path, model: Mapping[str, Any], profiles: Sequence[Mapping[str, Any]], pcs: pd.DataFrame | None
) -> list[Path]:
    """Write report.md and report.html into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    md, doc = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_markdown(model, profiles), encoding="utf-8")
    doc.write_text(render_html(model, profiles, pcs), encoding="utf-8")
    return [md, doc]


__all__ = ["render_html", "render_markdown", "write_model_report"]
