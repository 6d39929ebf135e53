"""The propensity model report: ``report.md`` and a self-contained ``report.html`` (plotly).

Built from what ``shoplens propensity train`` publishes (metrics.json and the small views). The ROC
curve and the confusion matrix come first, as asked; then precision-recall, calibration with its
expected calibration error, lift and cumulative gains by decile, feature importance and the
logistic model's standardized coefficients, every model side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from services.reports.render import (
    chart_html,
    fmt_count,
    fmt_float,
    fmt_pct,
    html_table,
    layout,
    md_table,
    page,
)

COLORS = {"logistic": "#4c78a8", "boosted": "#f58518"}
METRIC_HEADER = ["model", "ROC AUC", "PR AUC", "base rate", "log loss", "Brier", "ECE", "calibration",
                 "precision@cap", "recall@cap", "top-decile lift"]  # fmt: skip


def _metric_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for kind, m in doc["models"].items():
        c = m["confusion"]
        name = f"{kind} (shipped)" if kind == doc["shipped"] else kind
        rows.append([name, fmt_float(m["roc_auc"]), fmt_float(m["pr_auc"]), fmt_pct(m["base_rate"]),
                     fmt_float(m["log_loss"]), fmt_float(m["brier"], 4), fmt_float(m["ece"], 4),
                     m["calibration"] or "none", fmt_pct(c["precision"]), fmt_pct(c["recall"]),
                     fmt_float(m["top_decile_lift"], 2)])  # fmt: skip
    return rows


def _confusion_md(kind: str, m: Mapping[str, Any]) -> list[str]:
    c = m["confusion"]
    return [
        f"**{kind}** (threshold {c['threshold']:.4f}: {fmt_count(c['targeted'])} users targeted)", "",
        md_table(["", "predicted buyer", "predicted non-buyer"],
                 [["bought", fmt_count(c["tp"]), fmt_count(c["fn"])], ["did not buy", fmt_count(c["fp"]), fmt_count(c["tn"])]]),
        "", f"Precision {fmt_pct(c['precision'])}, recall {fmt_pct(c['recall'])}.", "",
    ]  # fmt: skip


def render_markdown(doc: Mapping[str, Any], views: Mapping[str, pd.DataFrame]) -> str:
    lines = [
        f"# Purchase propensity model {doc['version']}", "",
        f"Label: {doc['label']}. Population: {doc['population']}. Trained on cutoffs "
        f"{', '.join(c[:10] for c in doc['train_cutoffs'])}; validated on {doc['validation_cutoff'][:10]} "
        f"(the most recent cutoff whose label window is complete; never a random split). "
        f"Shipped: **{doc['shipped']}** ({doc['rule']}).", "",
        "## Models side by side (validation cutoff)", "", md_table(METRIC_HEADER, _metric_rows(doc)), "",
        f"Threshold rule: {doc['threshold_rule']}. ECE: 10 equal-width bins.", "",
        "## Confusion matrix at campaign capacity", "",
    ]  # fmt: skip
    for kind, m in doc["models"].items():
        lines += _confusion_md(kind, m)
    lines += ["## Calibration", ""]
    for kind, m in doc["models"].items():
        h = m.get("holdout") or {}
        lines.append(f"- {kind}: method {m['calibration'] or 'none'}; held-out cutoff {str(h.get('cutoff', '-'))[:10]} "
                     f"ECE {fmt_float(h.get('ece_uncalibrated'), 4)} before, {fmt_float(h.get('ece_calibrated'), 4)} after; "
                     f"validation ECE {fmt_float(m['ece'], 4)} (mean predicted {fmt_pct(m['mean_predicted'])} vs "
                     f"base rate {fmt_pct(m['base_rate'])}).")  # fmt: skip
    lines += ["", "## Lift and cumulative gains by decile", ""]
    dec = views.get("deciles")
    if dec is not None:
        rows = [[r.model, r.decile, fmt_count(r.users), fmt_pct(r.purchase_rate), fmt_float(r.lift, 2),
                 fmt_pct(r.cumulative_gain)] for r in dec.itertuples()]  # fmt: skip
        lines += [md_table(["model", "decile", "users", "purchase rate", "lift", "cumulative gain"], rows), ""]
    lines += ["## Feature importance (permutation, drop in validation ROC AUC)", ""]
    for kind, rows in doc["importance"].items():
        lines += [f"**{kind}**", "", md_table(["feature", "importance", "sd"],
                  [[r["feature"], fmt_float(r["importance"], 4), fmt_float(r["sd"], 4)] for r in rows[:10]]), ""]  # fmt: skip
    if doc.get("coefficients"):
        lines += ["## Logistic regression: standardized coefficients", "",
                  md_table(["input", "coefficient"], [[r["feature"], fmt_float(r["coefficient"])] for r in doc["coefficients"][:15]]),
                  ""]  # fmt: skip
    lines += ["## Examples per cutoff", "",
              md_table(["cutoff", "users", "buyers", "base rate"],
                       [[c["cutoff"][:10], fmt_count(c["users"]), fmt_count(c["buyers"]), fmt_pct(c["base_rate"])]
                        for c in doc["cutoffs"]]), ""]  # fmt: skip
    return "\n".join(lines)


def _curve_figure(df: pd.DataFrame, title: str, xt: str, yt: str, diagonal: bool, base: Mapping[str, float] | None = None):
    import plotly.graph_objects as go

    fig = go.Figure()
    for kind, part in df.groupby("model", sort=False):
        fig.add_trace(go.Scatter(x=part["x"], y=part["y"], mode="lines", name=str(kind),
                                 line={"color": COLORS.get(str(kind)), "width": 2.5}))  # fmt: skip
    if diagonal:
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "#999"}))
    for kind, b in (base or {}).items():
        fig.add_hline(y=b, line_dash="dot", line_color="#999", annotation_text=f"base rate {b:.1%} ({kind})")
    return layout(fig, title, height=420, xaxis_title=xt, yaxis_title=yt, xaxis_range=[0, 1], yaxis_range=[0, 1.02])


def _confusion_figure(kind: str, m: Mapping[str, Any]):
    import plotly.graph_objects as go

    c = m["confusion"]
    z = [[c["tp"], c["fn"]], [c["fp"], c["tn"]]]
    total = sum(map(sum, z)) or 1
    text = [[f"{v:,}<br>{v / total:.1%}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=["predicted buyer", "predicted non-buyer"], y=["bought", "did not buy"],
                               text=text, texttemplate="%{text}", colorscale="Blues", showscale=False))  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    return layout(fig, f"{kind}: confusion matrix, top {m['capacity']:.0%} targeted (precision "
                       f"{fmt_pct(c['precision'])}, recall {fmt_pct(c['recall'])})", height=340)  # fmt: skip


def _calibration_figure(df: pd.DataFrame):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot", "color": "#999"}))
    for kind, part in df.groupby("model", sort=False):
        fig.add_trace(go.Scatter(x=part["mean_predicted"], y=part["observed_rate"], mode="lines+markers", name=str(kind),
                                 marker={"size": 6 + 14 * part["users"] / part["users"].max()},
                                 line={"color": COLORS.get(str(kind))}))  # fmt: skip
    top = float(max(df["mean_predicted"].max(), df["observed_rate"].max(), 0.05)) * 1.05
    return layout(fig, "Calibration: observed purchase rate vs predicted probability", height=400,
                  xaxis_title="mean predicted", yaxis_title="observed rate", xaxis_range=[0, top], yaxis_range=[0, top])  # fmt: skip


def _deciles_figure(df: pd.DataFrame):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Lift by decile", "Cumulative gains"))
    for kind, part in df.groupby("model", sort=False):
        color = COLORS.get(str(kind))
        fig.add_trace(go.Bar(x=part["decile"], y=part["lift"], name=f"{kind} lift", marker_color=color), 1, 1)
        fig.add_trace(go.Scatter(x=[0, *part["cumulative_users"]], y=[0, *part["cumulative_gain"]], mode="lines+markers",
                                 name=f"{kind} gains", line={"color": color}), 1, 2)  # fmt: skip
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="random", line={"dash": "dot", "color": "#999"}), 1, 2)
    fig.update_xaxes(title_text="decile (10 = best scored)", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="share of users targeted", row=1, col=2)
    return layout(fig, "Lift and cumulative gains (validation cutoff)", height=380, barmode="group")


def _importance_figure(df: pd.DataFrame):
    import plotly.graph_objects as go

    top = df.sort_values("importance", ascending=False).groupby("model", sort=False).head(12)
    fig = go.Figure()
    for kind, part in top.groupby("model", sort=False):
        part = part.iloc[::-1]
        fig.add_trace(go.Bar(x=part["importance"], y=part["feature"], orientation="h", name=str(kind),
                             error_x={"type": "data", "array": part["sd"]}, marker_color=COLORS.get(str(kind))))  # fmt: skip
    layout(fig, "Permutation importance (drop in validation ROC AUC)", height=520, barmode="group")
    fig.update_layout(margin={"l": 200, "r": 20, "t": 50, "b": 40})
    return fig


def render_html(doc: Mapping[str, Any], views: Mapping[str, pd.DataFrame]) -> str:
    base = {k: m["base_rate"] for k, m in list(doc["models"].items())[:1]}
    cards = "".join(
        f"<div class=card><b>{fmt_float(m['roc_auc'])}</b><span>{k} ROC AUC{' (shipped)' if k == doc['shipped'] else ''}</span></div>"
        for k, m in doc["models"].items()
    )
    first = next(iter(doc["models"].values()))
    cards += f"<div class=card><b>{fmt_pct(first['base_rate'])}</b><span>base rate at validation</span></div>"
    sections = [
        f"<h1>Purchase propensity model {doc['version']}</h1><p class=sub>Label: {doc['label']}. Validated on "
        f"{doc['validation_cutoff'][:10]} (most recent complete cutoff); trained on "
        f"{', '.join(c[:10] for c in doc['train_cutoffs'])}. Shipped: <b>{doc['shipped']}</b>.</p>",
        f"<section><div class=cards>{cards}</div></section>",
        "<section><h2>ROC curve</h2><p class=note>True positive rate against false positive rate on the validation cutoff; "
        "the diagonal is a random ordering.</p>"
        + chart_html(_curve_figure(views["roc"], "ROC curve (validation cutoff)", "false positive rate", "true positive rate", True))
        + "</section>",
        "<section><h2>Confusion matrix at campaign capacity</h2><p class=note>" + doc["threshold_rule"] + ".</p>"
        + "".join(chart_html(_confusion_figure(k, m)) for k, m in doc["models"].items()) + "</section>",
        "<section><h2>Models side by side</h2>" + html_table(METRIC_HEADER, _metric_rows(doc)) + "</section>",
        "<section><h2>Precision-recall curve</h2>"
        + chart_html(_curve_figure(views["pr"], "Precision-recall (validation cutoff)", "recall", "precision", False, base))
        + "</section>",
        "<section><h2>Calibration</h2>" + chart_html(_calibration_figure(views["calibration"])) + "</section>",
        "<section><h2>Deciles</h2>" + chart_html(_deciles_figure(views["deciles"])) + "</section>",
        "<section><h2>Feature importance</h2>" + chart_html(_importance_figure(views["importance"])) + "</section>",
    ]  # fmt: skip
    md = render_markdown(doc, views)
    sections.append(f"<section><details><summary>All figures as text</summary><pre>{_escape(md)}</pre></details></section>")
    return page(f"Propensity model {doc['version']}", "".join(sections))


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def write_propensity_report(out_dir: Path, doc: Mapping[str, Any], views: Mapping[str, pd.DataFrame]) -> None:
    """Write report.md and report.html into ``out_dir``."""
    out_dir = Path(out_dir)
    (out_dir / "report.md").write_text(render_markdown(doc, views), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(doc, views), encoding="utf-8")


__all__ = ["render_html", "render_markdown", "write_propensity_report"]
