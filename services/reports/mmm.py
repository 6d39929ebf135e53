"""The marketing-mix report: fit and diagnostics, contributions, ROI, response curves, the plan.

Rendering only (Markdown, HTML with charts, JSON), from the report document built by
:mod:`services.jobs.mmm` and the published tables.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from services.reports.render import (
    chart_html,
    fmt_float,
    fmt_money,
    fmt_pct,
    html_table,
    layout,
    md_table,
    page,
)

CHANNEL_HEADER = ("channel", "spend", "contribution (90%)", "ROI", "ROI 90% interval", "marginal ROI",
                  "prior overlap", "max spend corr.", "spend CV")
PLAN_HEADER = ("channel", "current", "recommended", "change", "min", "max")


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def _roi_cell(c: dict[str, Any]) -> str:
    """The ROI estimate, or NOT IDENTIFIABLE where the data cannot pin it down (no number to act on)."""
    return fmt_float(_num(c["roi"]), 2) if c.get("identifiable", True) else "NOT IDENTIFIABLE"


def channel_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [[c["channel"], fmt_money(_num(c["spend"])),
             f"{fmt_money(_num(c['contribution']))} ({fmt_money(_num(c['contribution_low']))} - "
             f"{fmt_money(_num(c['contribution_high']))})",
             _roi_cell(c), f"{fmt_float(_num(c['roi_low']), 2)} - {fmt_float(_num(c['roi_high']), 2)}",
             fmt_float(_num(c["mroi"]), 2), fmt_pct(_num(c.get("prior_overlap"))),
             fmt_float(_num(c.get("max_spend_corr")), 2), fmt_pct(_num(c.get("spend_cv")))]
            for c in doc["channels"]]


def trust_lines(doc: dict[str, Any]) -> list[str]:
    """One line per channel whose ROI is not identifiable, with the reasons."""
    return [f"{c['channel']}: ROI not identifiable - {c['reasons']}; the optimizer keeps it near its current spend"
            for c in doc["channels"] if not c.get("identifiable", True)]


def plan_rows(plan: dict[str, Any]) -> list[list[str]]:
    return [[r["channel"], fmt_money(r["current"]), fmt_money(r["recommended"]), fmt_money(r["change"]),
             fmt_money(r["min"]), fmt_money(r["max"])] for r in plan["channels"]]


def diagnostics_lines(doc: dict[str, Any]) -> list[str]:
    d = doc["diagnostics"]
    status = "converged" if doc["converged"] else "NOT CONVERGED: " + "; ".join(d["problems"])
    return [f"sampler: {d['sampler']}, {d['chains']} chains x {d['draws']} draws, {d['seconds']:.0f} s; {status}",
            f"max R-hat {d['rhat_max']:.3f}, min bulk ESS {d['ess_bulk_min']:.0f}, min tail ESS "
            f"{d['ess_tail_min']:.0f}, divergences {d['divergences']}"]


def fit_lines(doc: dict[str, Any]) -> list[str]:
    f = doc["fit"]
    lines = [f"in sample: MAPE {fmt_pct(f['in_sample']['mape'])}, R² {fmt_float(f['in_sample']['r2'], 3)}"]
    if f["mape"] is not None:
        lines.append(f"out of sample ({len(f['folds'])} rolling-origin folds of {f['horizon_weeks']} weeks): "
                     f"MAPE {fmt_pct(f['mape'])}, NRMSE {fmt_float(f['nrmse'], 3)}; gradient-boosted peer: "
                     f"MAPE {fmt_pct(f['gbm_mape'])}, NRMSE {fmt_float(f['gbm_nrmse'], 3)}")
    else:
        lines.append("out of sample: not run (--cv-folds 0)")
    return lines


def plan_lines(plan: dict[str, Any]) -> list[str]:
    return [plan.get("note", ""),
            f"expected media revenue {fmt_money(plan['expected_revenue'])} vs {fmt_money(plan['current_revenue'])} "
            f"for the current mix: gain {fmt_money(plan['gain'])} (90%: {fmt_money(plan['gain_low'])} to "
            f"{fmt_money(plan['gain_high'])}), better than the current mix in {fmt_pct(plan.get('prob_better'))} "
            f"of posterior draws; ROI of the plan {fmt_float(plan['roi'], 2)}",
            *([f"held near current spend (ROI not identifiable): {', '.join(plan['held'])}"]
              if plan.get("held") else [])]


def render_markdown(doc: dict[str, Any]) -> str:
    data = doc["data"]
    parts = [f"# Marketing-mix model {doc['version']}",
             f"{data['weeks']} weeks ({data['first_week']} to {data['last_week']}), channels "
             f"{', '.join(data['channels'])}; revenue from {data['kpi_source']}."]
    if doc["warnings"]:
        parts += ["## Warnings", *[f"- {w}" for w in doc["warnings"]]]
    if data["row_issues"]:
        parts += ["## Rejected input rows", md_table(("file", "reason", "rows", "examples"),
                  [[i["source"], i["reason"], i["count"], "; ".join(i["examples"])] for i in data["row_issues"]])]
    parts += ["## Fit and diagnostics", *[f"- {x}" for x in fit_lines(doc) + diagnostics_lines(doc)],
              "## Channels: ROI = revenue the channel drives / its spend over the fitted period",
              md_table(CHANNEL_HEADER, channel_rows(doc)), *[f"- {x}" for x in trust_lines(doc)],
              "## Recommended allocation", *[f"- {x}" for x in plan_lines(doc["recommendation"])],
              md_table(PLAN_HEADER, plan_rows(doc["recommendation"]))]
    return "\n\n".join(parts) + "\n"


def _figures(tables: dict[str, pd.DataFrame], cv: pd.DataFrame) -> list[Any]:
    import plotly.graph_objects as go

    figs = []
    fit = tables["fit"]
    f = go.Figure([go.Scatter(x=fit.date, y=fit.high, line={"width": 0}, showlegend=False),
                   go.Scatter(x=fit.date, y=fit.low, fill="tonexty", line={"width": 0}, name="90% predictive"),
                   go.Scatter(x=fit.date, y=fit.actual, name="actual", mode="markers"),
                   go.Scatter(x=fit.date, y=fit.fitted, name="fitted")])
    figs.append(layout(f, "Revenue: actual and fitted"))
    c = tables["contributions"]
    f = go.Figure([go.Scatter(x=g.date, y=g["median"], name=k, stackgroup="one") for k, g in c.groupby("component")])
    figs.append(layout(f, "Contributions over time (posterior median)"))
    cu = tables["curves"]
    f = go.Figure([go.Scatter(x=g.weekly_spend, y=g["median"], name=k) for k, g in cu.groupby("channel")])
    figs.append(layout(f, "Response curves: weekly revenue at a sustained weekly spend",
                       xaxis_title="weekly spend", yaxis_title="weekly revenue"))
    ad = tables["adstock"]
    f = go.Figure([go.Scatter(x=g.lag, y=g["median"], name=k) for k, g in ad.groupby("channel")])
    figs.append(layout(f, "Adstock: share of the effect l weeks after the spend", xaxis_title="weeks"))
    if not cv.empty:
        f = go.Figure([go.Scatter(x=cv.date, y=cv.actual, name="actual", mode="markers"),
                       go.Scatter(x=cv.date, y=cv.model, name="MMM", mode="markers+lines"),
                       *([go.Scatter(x=cv.date, y=cv.gbm, name="GBM", mode="markers")] if "gbm" in cv else [])])
        figs.append(layout(f, "Held-out weeks (rolling origin)"))
    return figs


def render_html(doc: dict[str, Any], tables: dict[str, pd.DataFrame], cv: pd.DataFrame) -> str:
    data = doc["data"]
    sections = [f"<h1>Marketing-mix model {doc['version']}</h1><p class=sub>{data['weeks']} weeks "
                f"({data['first_week']} to {data['last_week']}); revenue from {data['kpi_source']}</p>"]
    if doc["warnings"]:
        sections.append("<section><h2>Warnings</h2><ul>" + "".join(f"<li><b>{w}</b></li>" for w in doc["warnings"])
                        + "</ul></section>")
    sections.append("<section><h2>Fit and diagnostics</h2><ul>"
                    + "".join(f"<li>{x}</li>" for x in fit_lines(doc) + diagnostics_lines(doc)) + "</ul></section>")
    sections.append("<section><h2>Channels</h2><p class=note>ROI: revenue the channel drives / its spend over "
                    "the fitted period; 90% intervals from the posterior.</p>"
                    + html_table(CHANNEL_HEADER, channel_rows(doc))
                    + "".join(f"<p><b>{x}</b></p>" for x in trust_lines(doc)) + "</section>")
    sections.append("<section><h2>Recommended allocation</h2><ul>"
                    + "".join(f"<li>{x}</li>" for x in plan_lines(doc["recommendation"])) + "</ul>"
                    + html_table(PLAN_HEADER, plan_rows(doc["recommendation"])) + "</section>")
    sections += [f"<section>{chart_html(f)}</section>" for f in _figures(tables, cv)]
    return page(f"Marketing-mix model {doc['version']}", "".join(sections))


def render_json(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


def summary_text(doc: dict[str, Any]) -> str:
    """The CLI's human summary."""
    lines = [f"mmm {doc['version']}: {doc['data']['weeks']} weeks, {len(doc['channels'])} channels"]
    lines += [f"WARNING: {w}" for w in doc["warnings"]]
    lines += fit_lines(doc) + diagnostics_lines(doc)
    lines.append(md_table(CHANNEL_HEADER, channel_rows(doc)))
    lines += [f"WARNING: {x}" for x in trust_lines(doc)]
    return "\n".join(lines)


def plan_text(plan: dict[str, Any]) -> str:
    lines = [f"WARNING: {w}" for w in plan.get("warnings", []) if w.startswith("SAMPLER")]
    lines += [f"{plan['mode']}: budget {fmt_money(plan['budget'])} over {plan['weeks']} weeks", *plan_lines(plan)[1:],
              md_table(PLAN_HEADER, plan_rows(plan))]
    return "\n".join(lines)


__all__ = ["plan_text", "render_html", "render_json", "render_markdown", "summary_text"]
