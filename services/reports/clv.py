"""The lifetime value report: ``report.md`` and a self-contained ``report.html`` (plotly), with the semantics.

Built from the fit's result.json: the parameters, value per segment and lifecycle stage, the top
customers (pseudonymized keys) and, with a holdout, predicted against actual repeat purchases per
calibration frequency.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.reports.render import (
    chart_html,
    closing_sections,
    fmt_count,
    fmt_float,
    fmt_money,
    fmt_pct,
    html_table,
    layout,
    md_table,
    page,
    write_report_files,
)

ACCENT, NAIVE = "#4c78a8", "#bbbbbb"
GROUP_HEADER = ["value", "customers", "CLV sum", "CLV median", "revenue so far", "median p(alive)"]
HOLDOUT_HEADER = [
    "calibration repeat purchases",
    "customers",
    "actual (mean)",
    "predicted (mean)",
    "naive (mean)",
]
TOP_HEADER = ["user key", "segment", "CLV", "p(alive)", "repeat purchases", "revenue so far"]


def semantics(horizon_months: int, monthly_discount: float) -> list[str]:
    """The exact definitions, as the report and ``result.json`` state them."""
    return [
        "A transaction is a user's UTC day with at least one purchase; its value is the day's purchase revenue "
        "(order files: the day's invoices together). The first transaction is the customer's birth.",
        "frequency = repeat transactions; recency = days from the first to the last transaction; T = days from the "
        "first transaction to the end of the observation period (the lake's last event day, inclusive); "
        "monetary_value = mean value of the repeat transactions.",
        "Repeat purchases: BG/NBD (or Pareto/NBD) in days; spend per transaction: Gamma-Gamma on the repeat "
        "customers with positive spend; flat priors, so the MAP fit is maximum likelihood (PyMC-Marketing).",
        f"clv = sum over the next {horizon_months} months (30 days each) of the expected transactions of that month "
        f"times the expected value per transaction, discounted by (1 + {monthly_discount:g})^month.",
        "Holdout: fitted on the days before the holdout; for customers born before it, actual repeat transactions "
        "in the holdout against the model's expectation and the naive forecast (calibration rate frequency/T "
        "times the holdout's days).",
    ]


def group_rows(groups: Sequence[Mapping[str, Any]], breakdown: str) -> list[list[str]]:
    return [[str(g["value"]), fmt_count(g["customers"]), fmt_money(g["clv_sum"]), fmt_money(g["clv_median"]),
             fmt_money(g["revenue_sum"]), fmt_pct(g["p_alive_median"])]
            for g in groups if g["breakdown"] == breakdown]  # fmt: skip


def holdout_rows(h: Mapping[str, Any]) -> list[list[str]]:
    return [[r["calibration_frequency"], fmt_count(r["customers"]), fmt_float(r["actual_mean"]),
             fmt_float(r["predicted_mean"]), fmt_float(r["naive_mean"])] for r in h["by_frequency"]]  # fmt: skip


def _top_rows(top: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[r["user_key"][:16] + "…", str(r["segment"]), fmt_money(r["clv"]), fmt_pct(r["p_alive"]),
             fmt_count(r["frequency"]), fmt_money(r["revenue"])] for r in top]  # fmt: skip


def _summary(doc: Mapping[str, Any]) -> list[str]:
    p = ", ".join(f"{k} = {v:.4g}" for k, v in doc["parameters"].items())
    corr = doc.get("spend_frequency_correlation")
    return [
        f"{fmt_count(doc['customers'])} customers as of {doc['observation_end']}, {fmt_count(doc['repeat_customers'])} "
        f"bought again. Model **{doc['model']}** + Gamma-Gamma, fitted by **{doc['method']}**.", "",
        f"Parameters (time in days): {p}.", "",
        f"Lifetime value over {doc['horizon_months']} months, discounted at {doc['monthly_discount']:g} a month: "
        f"total **{fmt_money(doc['totals']['clv_sum'])}**, median **{fmt_money(doc['totals']['clv_median'])}**.", "",
        f"Spend-frequency correlation over the repeat customers: {fmt_float(corr)} (Gamma-Gamma assumes none).", "",
        *[f"**Warning:** {w}" for w in doc.get("warnings", [])],
    ]  # fmt: skip


def render_markdown(doc: Mapping[str, Any]) -> str:
    lines = [f"# Lifetime value {doc['version']}", "", *_summary(doc), "",
             "## Semantics", "", *[f"- {s}" for s in doc["semantics"]], ""]  # fmt: skip
    for dim in ("segment", "lifecycle_stage"):
        lines += [
            f"## By {dim.replace('_', ' ')}",
            "",
            md_table(GROUP_HEADER, group_rows(doc["groups"], dim)),
            "",
        ]
    h = doc.get("holdout")
    if h:
        lines += ["## Holdout check", "",
                  f"Fitted on the days up to {h['calibration_end']}; holdout {h['from']} to {h['to']} ({h['days']} days), "
                  f"{fmt_count(h['customers'])} customers. Repeat purchases: actual {fmt_count(h['actual_purchases'])}, "
                  f"predicted {fmt_money(h['predicted_purchases'])}, naive {fmt_money(h['naive_purchases'])}. "
                  f"Per-customer MAE {fmt_float(h['mae'])} (naive {fmt_float(h['mae_naive'])}), "
                  f"correlation {fmt_float(h['correlation'])}.", "",
                  md_table(HOLDOUT_HEADER, holdout_rows(h)), ""]  # fmt: skip
    lines += ["## Top customers by lifetime value", "", md_table(TOP_HEADER, _top_rows(doc["top_customers"])), "",
              "Export them all with `shoplens export clv --out FILE` (pseudonymized keys).", ""]  # fmt: skip
    return "\n".join(lines)


def holdout_figure(by_frequency: Sequence[Mapping[str, Any]]):
    """Mean actual, predicted and naive holdout purchases per calibration frequency."""
    import plotly.graph_objects as go

    x = [r["calibration_frequency"] for r in by_frequency]
    fig = go.Figure([
        go.Bar(x=x, y=[r["actual_mean"] for r in by_frequency], name="actual", marker={"color": "#333333"}),
        go.Bar(x=x, y=[r["predicted_mean"] for r in by_frequency], name="model", marker={"color": ACCENT}),
        go.Bar(x=x, y=[r["naive_mean"] for r in by_frequency], name="naive", marker={"color": NAIVE}),
    ])  # fmt: skip
    return layout(fig, "Holdout repeat purchases per customer, by calibration repeat purchases", barmode="group",
                  xaxis_title="repeat purchases in the calibration period", yaxis_title="mean in the holdout")  # fmt: skip


def group_figure(groups: Sequence[Mapping[str, Any]], breakdown: str):
    import plotly.graph_objects as go

    rows = [g for g in groups if g["breakdown"] == breakdown]
    fig = go.Figure(
        go.Bar(x=[str(g["value"]) for g in rows], y=[g["clv_sum"] for g in rows], marker={"color": ACCENT})
    )
    return layout(fig, f"Lifetime value by {breakdown.replace('_', ' ')}", yaxis_title="sum of CLV")


def render_html(doc: Mapping[str, Any]) -> str:
    cards = (f"<div class=card><b>{fmt_count(doc['customers'])}</b><span>customers</span></div>"
             f"<div class=card><b>{fmt_count(doc['repeat_customers'])}</b><span>bought again</span></div>"
             f"<div class=card><b>{fmt_money(doc['totals']['clv_sum'])}</b><span>total CLV, {doc['horizon_months']} months</span></div>"
             f"<div class=card><b>{fmt_pct(doc['totals']['p_alive_median'])}</b><span>median p(alive)</span></div>")  # fmt: skip
    summary = "".join(f"<p>{html.escape(line.replace('**', ''))}</p>" for line in _summary(doc) if line)
    sections = [
        f"<h1>Lifetime value {doc['version']}</h1>",
        f"<section><div class=cards>{cards}</div>{summary}</section>",
    ]
    for dim in ("segment", "lifecycle_stage"):
        sections.append(f"<section><h2>By {dim.replace('_', ' ')}</h2>" + chart_html(group_figure(doc["groups"], dim))
                        + html_table(GROUP_HEADER, group_rows(doc["groups"], dim)) + "</section>")  # fmt: skip
    h = doc.get("holdout")
    if h:
        sections.append("<section><h2>Holdout check</h2>" + chart_html(holdout_figure(h["by_frequency"]))
                        + html_table(HOLDOUT_HEADER, holdout_rows(h)) + "</section>")  # fmt: skip
    sections.append("<section><h2>Top customers by lifetime value</h2>"
                    + html_table(TOP_HEADER, _top_rows(doc["top_customers"])) + "</section>")  # fmt: skip
    sections.append(closing_sections(doc["semantics"], render_markdown(doc)))
    return page(f"Lifetime value {doc['version']}", "".join(sections))


def write_clv_report(out_dir: Path, doc: Mapping[str, Any]) -> None:
    """Write report.md and report.html into ``out_dir`` (result.json is the JSON rendering)."""
    write_report_files(out_dir, render_markdown(doc), render_html(doc))


__all__ = [
    "GROUP_HEADER",
    "HOLDOUT_HEADER",
    "group_figure",
    "group_rows",
    "holdout_figure",
    "holdout_rows",
    "render_html",
    "render_markdown",
    "semantics",
    "write_clv_report",
]
