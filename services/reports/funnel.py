"""The funnel report: ``report.md`` and a self-contained ``report.html`` (plotly), with the exact semantics.

Built from what ``shoplens funnel`` publishes (result.json and its tables): the funnel chart with
conversions and drop-off, the conversion trend by week of the first step, the breakdowns, time to
convert (quartiles and a histogram) and the conversion drivers with their intervals.
"""

from __future__ import annotations

import html
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

ACCENT = "#4c78a8"


def semantics(spec: Mapping[str, Any]) -> list[str]:
    """The exact definitions behind the numbers of a funnel with this spec (``FunnelSpec.to_dict()``)."""
    steps = " → ".join(spec["steps"])
    unit = {"user": "a user (all of the user's events)",
            "session": "a session (only the events of one session count; there is no window)",
            "user_product": "a user-product pair (the events of one user on one product: viewed it, carted it, bought it)"}[spec["unit"]]  # fmt: skip
    window = spec.get("window_days")
    if spec["order"] == "ordered":
        rule = ("a unit reaches step k when it has k distinct events e1..ek, ei of step i's type (and conditions), "
                "with t(e1) <= t(e2) <= ... <= t(ek) (equal times count as in order)")  # fmt: skip
        rule += "." if window is None else f" and t(ek) - t(e1) <= {window:g} days."
    else:
        rule = "a unit reaches step k when it has k distinct events, ei of step i's type, in any order"
        rule += "." if window is None else f", all within one window of {window:g} days (max t - min t <= window)."
    return [
        f"Steps: {steps}. Counting unit: {unit}.",
        f"Order: {spec['order']}; {rule} One event fills at most one step.",
        "A step's count is the number of units that reached at least that step; units with no event of the "
        "first step are not in the funnel.",
        "Conversion from previous = count(k) / count(k-1); conversion from first = count(k) / count(1); "
        "drop-off = count(k-1) - count(k) and its rate = drop-off / count(k-1).",
        "Breakdowns are by the unit's first-step event (at the time of step 1 in the chain that reached the unit's "
        "deepest step): its week (Monday), top-level category and brand (the top N brands by units, the rest as "
        "\"other\"); by the user's current segment; and by the month the user was first seen in the lake (cohort).",
        "Time to convert between steps a and b: t(step b) - t(step a) in that chain, over the units that reached "
        "b; quartiles are exact (linear interpolation).",
        "Drivers: for each step k, among units that reached k, the odds of going on to k+1 with an attribute value "
        "versus without it (odds ratio, Woolf 95% interval, Haldane-corrected when a cell is 0); strongest first by "
        "how far the interval lies from 1. The user's segment and lifecycle stage are those of their events before "
        "the unit's entry (its earliest first-step event) (\"new\" without any), never after it: an attribute taken later can be made of the "
        "outcome itself.",
        "A drop-off audience of step k: the units that reached k and not k+1 (pseudonymized user keys only).",
    ]


def _steps_rows(steps: list[Mapping[str, Any]]) -> list[list[str]]:
    return [[r["step"], fmt_count(r["count"]), fmt_pct(r["conversion_from_previous"]),
             fmt_pct(r["conversion_from_first"]), fmt_count(r["dropoff"]), fmt_pct(r["dropoff_rate"])]
            for r in steps]  # fmt: skip


STEP_HEADER = ["step", "units", "from previous", "from first", "drop-off", "drop-off rate"]
TTC_HEADER = ["from", "to", "units", "p25", "median", "p75", "mean"]
DRIVER_HEADER = ["step", "attribute", "value", "units", "conversion", "without", "odds ratio", "95% interval"]


def duration(seconds: float | None) -> str:
    """Seconds as a short human duration (``45s``, ``12.5m``, ``3.2h``, ``1.5d``)."""
    if seconds is None or pd.isna(seconds):
        return "-"
    s = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


def _ttc_rows(ttc: list[Mapping[str, Any]]) -> list[list[str]]:
    return [[r["from_label"], r["to_label"], fmt_count(r["units"]), duration(r["p25_seconds"]),
             duration(r["median_seconds"]), duration(r["p75_seconds"]), duration(r["mean_seconds"])]
            for r in ttc]  # fmt: skip


def _driver_rows(drivers: list[Mapping[str, Any]]) -> list[list[str]]:
    return [[f"{r['label']} → {r['next_label']}", r["attribute"], str(r["value"]), fmt_count(r["units"]),
             fmt_pct(r["conversion"]), fmt_pct(r["conversion_without"]), fmt_float(r["odds_ratio"], 2),
             f"{fmt_float(r['ci_low'], 2)} to {fmt_float(r['ci_high'], 2)}"] for r in drivers]  # fmt: skip


def render_markdown(doc: Mapping[str, Any], tables: Mapping[str, pd.DataFrame]) -> str:
    window = "none (one session)" if doc["window_days"] is None else f"{doc['window_days']:g} days"
    lines = [
        f"# Funnel {doc['version']}", "",
        f"Steps **{' → '.join(s['step'] for s in doc['steps'])}**, "
        f"unit **{doc['unit']}**, order **{doc['order']}**, window **{window}**; "
        f"{fmt_count(doc['units'])} units entered the funnel.", "",
        "## Semantics", "", *[f"- {s}" for s in doc["semantics"]], "",
        "## Steps", "", md_table(STEP_HEADER, _steps_rows(doc["steps"])), "",
        "## Time to convert", "", md_table(TTC_HEADER, _ttc_rows(doc["time_to_convert"])), "",
    ]  # fmt: skip
    trend = tables.get("trend")
    last = len(doc["steps"])
    if trend is not None and len(trend):
        t = trend[trend["step"] == last]
        lines += ["## Conversion by week of the first step", "",
                  md_table(["week", "units entered", f"reached {doc['steps'][-1]['step']}", "conversion"],
                           [[str(r.week), fmt_count(n1), fmt_count(r.count), fmt_pct(r.conversion_from_first)]
                            for r, n1 in zip(t.itertuples(), _entered(trend, t), strict=True)]), ""]  # fmt: skip
    br = tables.get("breakdowns")
    if br is not None and len(br):
        lines += ["## Breakdowns", ""]
        for dim, part in br.groupby("breakdown", sort=False):
            final = part[part["step"] == last].sort_values("value")
            entered = part[part["step"] == 1].set_index("value")["count"]
            lines += [f"**{dim}**", "", md_table([dim, "units entered", "reached last step", "conversion"],
                      [[str(r.value), fmt_count(entered.get(r.value)), fmt_count(r.count), fmt_pct(r.conversion_from_first)]
                       for r in final.itertuples()]), ""]  # fmt: skip
    rule = doc["drivers_rule"]
    lines += ["## What drives conversion", "",
              f"Values with at least {rule['min_units']} units with and without them; {rule['interval']}, "
              f"confidence {rule['confidence']:.0%}. Top {len(doc['top_drivers'])} shown.", "",
              md_table(DRIVER_HEADER, _driver_rows(doc["top_drivers"])) if doc["top_drivers"] else "No value has "
              "enough units on both sides yet.", "",
              "## Drop-off audiences", "",
              md_table(["step", "units that stopped there"],
                       [[d["label"], fmt_count(d["units"])] for d in doc["dropoff_audiences"]]), "",
              "Export one with `shoplens export funnel-dropoffs --step <step> --out FILE` (pseudonymized keys).", ""]  # fmt: skip
    return "\n".join(lines)


def _entered(trend: pd.DataFrame, final: pd.DataFrame) -> list[int]:
    n1 = trend[trend["step"] == 1].set_index("week")["count"]
    return [int(n1.get(w, 0)) for w in final["week"]]


def funnel_figure(steps: list[Mapping[str, Any]]):
    import plotly.graph_objects as go

    fig = go.Figure(go.Funnel(y=[r["step"] for r in steps], x=[r["count"] for r in steps],
                              textinfo="value+percent initial+percent previous", marker={"color": ACCENT}))  # fmt: skip
    return layout(fig, "Funnel", height=360)


def trend_figure(trend: pd.DataFrame, labels: list[str]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for k in range(2, len(labels) + 1):
        part = trend[trend["step"] == k]
        fig.add_trace(go.Scatter(x=part["week"].astype(str), y=part["conversion_from_first"], mode="lines+markers",
                                 name=f"{labels[0]} → {labels[k - 1]}"))  # fmt: skip
    return layout(fig, "Conversion from the first step, by week of the first step", height=340,
                  yaxis_tickformat=".0%", xaxis_title="week (Monday)")  # fmt: skip


def histogram_figure(hist: pd.DataFrame, labels: list[str]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for (a, b), part in hist.groupby(["from_step", "to_step"], sort=True):
        fig.add_trace(go.Bar(x=part["label"], y=part["units"], name=f"{labels[a - 1]} → {labels[b - 1]}"))
    return layout(fig, "Time to convert", height=340, barmode="group", xaxis_title="time between the steps",
                  yaxis_title="units")  # fmt: skip


def render_html(doc: Mapping[str, Any], tables: Mapping[str, pd.DataFrame]) -> str:
    labels = [s["step"] for s in doc["steps"]]
    last = doc["steps"][-1]
    cards = (f"<div class=card><b>{fmt_count(doc['units'])}</b><span>units entered ({doc['unit']})</span></div>"
             f"<div class=card><b>{fmt_pct(last['conversion_from_first'])}</b><span>reached {html.escape(last['step'])}</span></div>"
             f"<div class=card><b>{doc['order']}</b><span>order</span></div>"
             f"<div class=card><b>{'-' if doc['window_days'] is None else format(doc['window_days'], 'g') + ' d'}</b>"
             "<span>window</span></div>")  # fmt: skip
    sem = "".join(f"<li>{html.escape(s)}</li>" for s in doc["semantics"])
    trend, hist = tables.get("trend"), tables.get("histogram")
    sections = [
        f"<h1>Funnel {doc['version']}</h1><p class=sub>{html.escape(' → '.join(labels))}</p>",
        f"<section><div class=cards>{cards}</div></section>",
        "<section><h2>Funnel</h2>" + chart_html(funnel_figure(doc["steps"]))
        + html_table(STEP_HEADER, _steps_rows(doc["steps"])) + "</section>",
        "<section><h2>Conversion trend</h2>"
        + (chart_html(trend_figure(trend, labels)) if trend is not None and len(trend) else "") + "</section>",
        "<section><h2>Time to convert</h2>"
        + (chart_html(histogram_figure(hist, labels)) if hist is not None and len(hist) else "")
        + html_table(TTC_HEADER, _ttc_rows(doc["time_to_convert"])) + "</section>",
        "<section><h2>What drives conversion</h2><p class=note>Odds ratio of going on to the next step with the value "
        "versus without it, with its interval; strongest first.</p>"
        + html_table(DRIVER_HEADER, _driver_rows(doc["top_drivers"])) + "</section>",
        f"<section><h2>Semantics</h2><ul>{sem}</ul></section>",
    ]  # fmt: skip
    md = render_markdown(doc, tables)
    sections.append(f"<section><details><summary>All figures as text</summary><pre>{html.escape(md)}</pre>"
                    "</details></section>")  # fmt: skip
    return page(f"Funnel {doc['version']}", "".join(sections))


def write_funnel_report(out_dir: Path, doc: Mapping[str, Any], tables: Mapping[str, pd.DataFrame]) -> None:
    """Write report.md and report.html into ``out_dir`` (result.json is the JSON rendering)."""
    out_dir = Path(out_dir)
    (out_dir / "report.md").write_text(render_markdown(doc, tables), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(doc, tables), encoding="utf-8")


__all__ = ["duration", "funnel_figure", "render_html", "render_markdown", "semantics", "write_funnel_report"]
