"""The retention report: ``report.md`` and a self-contained ``report.html`` (the triangle and the curves).

Built from ``result.json`` of ``shoplens retention``; the semantics are stated in words from the spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.reports.render import (
    chart_html,
    closing_sections,
    fmt_count,
    fmt_money,
    fmt_pct,
    layout,
    md_table,
    page,
    write_report_files,
)


def semantics(spec: Mapping[str, Any]) -> list[str]:
    """The exact definitions of one view, as the report and ``result.json`` state them."""
    first = "first event of any kind" if spec["cohort_event"] == "any" else "first purchase"
    unit = {"day": "day", "week": "7 days", "month": "month"}[spec["period"]]
    if spec["periods"] == "rolling":
        periods = (f"Period n of a user runs from their start + n x {unit} to the next (months: monthly anniversaries "
                   "of the start, clamped to the month's last day).")  # fmt: skip
    else:
        periods = (f"Period n is the n-th calendar {spec['period']} after the one holding the user's start "
                   "(weeks start on Monday); period 0 is the rest of that calendar period.")  # fmt: skip
    returning = "any event" if spec["event"] == "any" else "a purchase"
    mode = "in period n" if spec["mode"] == "n-period" else "in period n or any later period"
    return [
        "All counting is in whole UTC days.",
        f"A user's start is the day of their {first}; their cohort is the calendar {spec['cohort']} holding it "
        f"({'named by its Monday' if spec['cohort'] == 'week' else 'named by its first day'}).",
        periods,
        f"users = cohort members with {returning} {mode}; rate = users / cohort size.",
        "revenue = the members' purchase revenue in period n divided by the cohort size (in both modes).",
        "A period is listed once the cohort's first day could have reached it by the last day of data; "
        "complete = every member's period has ended by then.",
    ]


def triangle(
    cohorts: Sequence[Mapping[str, Any]], key: str = "rate"
) -> tuple[list[str], list[int], list[list]]:
    periods = sorted({p["period"] for c in cohorts for p in c["periods"]})
    z = [[next((p[key] for p in c["periods"] if p["period"] == n), None) for n in periods] for c in cohorts]
    return [c["cohort"] for c in cohorts], periods, z


def triangle_figure(cohorts: Sequence[Mapping[str, Any]], period: str):
    import plotly.graph_objects as go

    labels, periods, z = triangle(cohorts)
    fig = go.Figure(go.Heatmap(z=z, x=[str(n) for n in periods], y=labels, colorscale="Blues", zmin=0, zmax=1,
                               texttemplate="%{z:.0%}", hovertemplate="cohort %{y}, period %{x}: %{z:.1%}<extra></extra>"))  # fmt: skip
    fig.update_yaxes(autorange="reversed", type="category")
    return layout(
        fig,
        "Retention by cohort",
        height=max(300, 28 * len(labels) + 120),
        xaxis_title=f"{period}s since start",
    )


def curves_figure(cohorts: Sequence[Mapping[str, Any]], period: str):
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=[p["period"] for p in c["periods"]], y=[p["rate"] for p in c["periods"]],
                                mode="lines+markers", name=c["cohort"]) for c in cohorts])  # fmt: skip
    return layout(fig, "Retention curves", yaxis_tickformat=".0%", xaxis_title=f"{period}s since start")


def rate_rows(cohorts: Sequence[Mapping[str, Any]], max_periods: int = 12) -> tuple[list[str], list[list[str]]]:
    periods = sorted({p["period"] for c in cohorts for p in c["periods"]})[:max_periods]
    header = ["cohort", "size", *[f"{n}" for n in periods]]
    rows = []
    for c in cohorts:
        by = {p["period"]: p for p in c["periods"]}
        rows.append(
            [c["cohort"], fmt_count(c["size"]), *[fmt_pct(by[n]["rate"]) if n in by else "" for n in periods]]
        )
    return header, rows


def render_markdown(doc: Mapping[str, Any]) -> str:
    header, rows = rate_rows(doc["cohorts"])
    rev_rows = [[c["cohort"], fmt_count(c["size"]), *[fmt_money(p["revenue"]) for p in c["periods"][:12]]]
                for c in doc["cohorts"]]  # fmt: skip
    lines = [f"# Retention {doc['version']}", "",
             f"{doc['cohort']} cohorts by {'first purchase' if doc['cohort_event'] == 'purchase' else 'first seen'}, "
             f"{doc['periods']} {doc['period']}s, {doc['mode']}, returning = {doc['event']} event; data to {doc['end']}.", "",
             "## Semantics", "", *[f"- {s}" for s in doc["semantics"]], "",
             "## User retention (rate per period)", "", md_table(header, rows), "",
             "## Revenue retention (revenue per cohort member per period)", "", md_table(header, rev_rows), ""]  # fmt: skip
    return "\n".join(lines)


def render_html(doc: Mapping[str, Any]) -> str:
    body = (f"<h1>Retention {doc['version']}</h1>"
            f"<section>{chart_html(triangle_figure(doc['cohorts'], doc['period']))}</section>"
            f"<section>{chart_html(curves_figure(doc['cohorts'], doc['period']))}</section>"
            + closing_sections(doc["semantics"], render_markdown(doc)))  # fmt: skip
    return page(f"Retention {doc['version']}", body)


def write_retention_report(out_dir: Path, doc: Mapping[str, Any]) -> None:
    """Write report.md and report.html into ``out_dir`` (result.json is the JSON rendering)."""
    write_report_files(out_dir, render_markdown(doc), render_html(doc))


__all__ = [
    "curves_figure",
    "rate_rows",
    "render_html",
    "render_markdown",
    "semantics",
    "triangle",
    "triangle_figure",
    "write_retention_report",
]
