"""Rendering of the descriptive report: sections shared by Markdown and HTML, charts, JSON.

The same statistics (:func:`etl.describe.describe`) are written three ways: ``report.md`` (readable in
any viewer or a merge request), ``report.html`` (one self-contained page with interactive charts) and
``report.json`` (for machines and tests). The statistics hold only aggregates and category/brand
names: no user or session key can reach a report.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from services.core.lake import utc_now_iso
from services.reports.render import (
    chart_html,
    fmt_count,
    fmt_money,
    fmt_pct,
    html_table,
    layout,
    md_table,
    page,
)

TYPE_LABELS = {
    "view": "views",
    "cart": "add-to-carts",
    "remove_from_cart": "removals from cart",
    "purchase": "purchases",
}
TYPE_COLORS = {"view": "#9db4d0", "cart": "#f2b134", "remove_from_cart": "#d9534f", "purchase": "#2e8b57"}
MISSING_HELP = {
    "category_code": "product has no category path (e.g. electronics.smartphone)",
    "category_l1": "no top-level category",
    "category_l2": "no second-level category",
    "category_l3": "no third-level category (many paths have only two levels)",
    "brand": "product has no brand",
    "category_id": "no numeric category id",
}


# -- the sections, shared by Markdown and HTML ------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """One part of the report: a title, a short explanation for analysts, a table, maybe a chart."""

    key: str
    title: str
    note: str
    header: list[str]
    rows: list[list[str]]


def sections(stats: dict[str, Any]) -> list[Section]:
    """The report's sections in reading order (only those with data)."""
    o, f = stats["overview"], stats["funnel"]
    out = [
        Section(
            "overview",
            "At a glance",
            "Accepted events in the lake (after validation and de-duplication). Users and sessions are "
            "counted on pseudonymized keys: distinct people and visits, never identities.",
            ["Measure", "Value"],
            [
                ["Events", fmt_count(o["events"])],
                ["Users", fmt_count(o["users"])],
                ["Sessions", fmt_count(o["sessions"])],
                ["Products", fmt_count(o["products"])],
                [
                    "Period",
                    f"{o['first_date'] or '-'} to {o['last_date'] or '-'} ({o['days_with_events']} days with events)",
                ],
                ["First / last event (UTC)", f"{o['first_event'] or '-'} / {o['last_event'] or '-'}"],
                ["Purchase revenue", fmt_money(o["revenue"])],
            ],
        ),
        Section(
            "event_types",
            "What people do",
            "Events by type, and how far users and sessions get in the funnel. Purchases per view compares "
            "purchase events with product views overall.",
            ["Measure", "Count", "Share"],
            [
                [TYPE_LABELS[t], fmt_count(n), fmt_pct(n / o["events"] if o["events"] else None)]
                for t, n in stats["event_types"].items()
            ]
            + [
                [
                    "users who added to cart",
                    fmt_count(f["users_who_carted"]),
                    fmt_pct(_ratio(f["users_who_carted"], f["users"])),
                ],
                ["users who purchased", fmt_count(f["users_who_purchased"]), fmt_pct(f["user_purchase_rate"])],
                [
                    "sessions with a purchase",
                    fmt_count(f["sessions_with_purchase"]),
                    fmt_pct(f["session_purchase_rate"]),
                ],
                ["purchases per view", "", fmt_pct(f["purchases_per_view"], 2)],
            ],
        ),
        Section(
            "missing",
            "Missing values",
            "Share of events whose product lacks a value. Missing category or brand is common in this kind "
            "of feed; those events still count everywhere, but not in category or brand rankings.",
            ["Column", "Missing events", "Rate", "Meaning"],
            [
                [c, fmt_count(m["missing"]), fmt_pct(m["rate"]), MISSING_HELP.get(c, "")]
                for c, m in stats["missing"].items()
            ]
            + [
                [
                    "price ≤ 0",
                    fmt_count(o["zero_or_negative_price_events"]),
                    fmt_pct(_ratio(o["zero_or_negative_price_events"], o["events"])),
                    "free or unpriced items",
                ]
            ],
        ),
    ]
    for key, who in (("events_per_user", "user"), ("events_per_session", "session")):
        d = stats[key]
        if not d["n"]:
            continue
        q = d["quantiles"]
        out.append(
            Section(
                key,
                f"Events per {who}",
                f"How active a typical {who} is. The median (p50) {who} has {fmt_count(q.get('p50'))} events; "
                f"9 in 10 have at most {fmt_count(q.get('p90'))}. A long tail is normal; the extreme top may be bots "
                "(see suspicious users below).",
                ["Statistic", "Events"],
                [
                    ["mean", fmt_count(round(d["mean"], 2))],
                    *[[k, fmt_count(v)] for k, v in q.items()],
                    ["max", fmt_count(d["max"])],
                ],
            )
        )
    for key, label in (("categories", "category"), ("brands", "brand")):
        r = stats[key]
        if not r["top"]:
            continue
        out.append(
            Section(
                key,
                f"Top {label.replace('y', 'ie') if label.endswith('y') else label}s by events",
                f"{r['distinct']:,} distinct {label} values; {fmt_count(r['missing_events'])} events have no {label}. "
                "Conversion is purchases per view within the row.",
                [label.capitalize(), "Events", "Share", "Views", "Purchases", "Conversion", "Revenue"],
                [
                    [
                        t["name"],
                        fmt_count(t["events"]),
                        fmt_pct(t["share"]),
                        fmt_count(t["view"]),
                        fmt_count(t["purchase"]),
                        fmt_pct(t["view_to_purchase"], 2),
                        fmt_money(t["revenue"]),
                    ]
                    for t in r["top"]
                ],
            )
        )
    if stats["price_by_category"]:
        out.append(
            Section(
                "price_by_category",
                "Prices by top-level category",
                "Price of the product in each event (views weigh most). p25 to p75 is the typical range; p05 and "
                "p95 cut off the cheapest and dearest 5%.",
                ["Category", "Events", "p05", "p25", "median", "p75", "p95", "mean", "max"],
                [
                    [
                        p["category"],
                        fmt_count(p["events"]),
                        *[fmt_money(p["quantiles"].get(k)) for k in ("p05", "p25", "p50", "p75", "p95")],
                        fmt_money(p["mean"]),
                        fmt_money(p["max"]),
                    ]
                    for p in stats["price_by_category"]
                ],
            )
        )
    if stats["daily"]:
        out.append(
            Section(
                "daily",
                "Daily volume",
                "Events and active users per day (UTC). Gaps or sudden drops usually mean a missing or partial "
                "input file rather than a change in customer behaviour.",
                ["Date", "Events", "Users", "Views", "Carts", "Purchases", "Revenue"],
                [
                    [
                        d["date"],
                        fmt_count(d["events"]),
                        fmt_count(d["users"]),
                        fmt_count(d["view"]),
                        fmt_count(d["cart"]),
                        fmt_count(d["purchase"]),
                        fmt_money(d["revenue"]),
                    ]
                    for d in stats["daily"]
                ],
            )
        )
    out.append(_quality_section(stats))
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _quality_section(stats: dict[str, Any]) -> Section:
    rows: list[list[str]] = []
    q, dup, sus = stats["quarantine"], stats["duplicates"], stats["suspicious_users"]
    if q is None:
        rows.append(["quarantined rows", "no quarantine data in the lake", ""])
    else:
        rows.append(
            ["quarantined rows (all reasons)", fmt_count(q["rows"]), fmt_pct(q["share_of_valid_and_rejected"], 2)]
        )
        rows += [
            [f"· {reason.replace('_', ' ')}", fmt_count(n), fmt_pct(_ratio(n, q["rows"]))]
            for reason, n in q["by_reason"].items()
        ]
    rows.append(["exact duplicates removed", "not recorded" if dup is None else fmt_count(dup["rows"]), ""])
    if sus is not None:
        rows.append(["suspicious (bot-like) users flagged", fmt_count(sus["users"]), ""])
        rows.append(["· their events (kept, flagged)", fmt_count(sus["events"]), fmt_pct(sus["share_of_events"])])
    if (er := stats.get("erasure")) is not None:
        since = f"since the previous report ({er['since'][:10]})" if er["since"] else "to date"
        rows.append([f"people erased on request, {since}", fmt_count(er["completed"]),
                     f"{fmt_count(er['pending'])} pending"])  # fmt: skip
    return Section(
        "quality",
        "Data quality",
        "Rows the pipeline refused (quarantined, with the reason; share of accepted + refused rows), exact "
        "duplicate rows it removed, and users it flagged as bot-like. Flagged users stay in the data; "
        "analyses can exclude them.",
        ["Check", "Rows / users", "Share"],
        rows,
    )


# -- renderers ---------------------------------------------------------------------------------------
def render_markdown(stats: dict[str, Any], generated_at: str | None = None) -> str:
    parts = [
        "# Lake description: data quality and descriptive statistics",
        f"_Generated {generated_at or utc_now_iso()} by `shoplens describe`. All times UTC._",
    ]
    for s in sections(stats):
        parts += [f"## {s.title}", s.note, md_table(s.header, s.rows)]
    for key, who in (("events_per_user", "user"), ("events_per_session", "session")):
        d = stats[key]
        if d["n"]:
            parts += [
                f"### Distribution of events per {who}",
                md_table(
                    ["Events", f"{who.capitalize()}s", "Share"],
                    [[b["bin"], fmt_count(b["count"]), fmt_pct(_ratio(b["count"], d["n"]))] for b in d["histogram"]],
                ),
            ]
    return "\n\n".join(parts) + "\n"


def render_json(stats: dict[str, Any], generated_at: str | None = None) -> str:
    return json.dumps({"generated_at": generated_at or utc_now_iso(), **stats}, indent=2, sort_keys=False)


def _charts(stats: dict[str, Any]) -> dict[str, Any]:
    """Plotly figures keyed by the section they illustrate."""
    import plotly.graph_objects as go

    charts: dict[str, Any] = {}
    if stats["daily"]:
        dates = [d["date"] for d in stats["daily"]]
        fig = go.Figure()
        for t in ("view", "cart", "remove_from_cart", "purchase"):
            fig.add_bar(
                x=dates, y=[d[t] for d in stats["daily"]], name=TYPE_LABELS[t], marker_color=TYPE_COLORS[t]
            )
        fig.add_scatter(
            x=dates,
            y=[d["users"] for d in stats["daily"]],
            name="active users",
            yaxis="y2",
            mode="lines+markers",
            line={"color": "#333"},
        )
        fig.update_layout(
            barmode="stack",
            yaxis={"title": "events"},
            yaxis2={
                "title": "users",
                "overlaying": "y",
                "rangemode": "tozero",
                "side": "right",
                "showgrid": False,
            },
            legend={"orientation": "h", "y": -0.2},
        )
        charts["daily"] = layout(fig, "Events per day by type, and active users", 400)
    for key, who in (("events_per_user", "user"), ("events_per_session", "session")):
        d = stats[key]
        if d["n"]:
            fig = go.Figure(
                go.Bar(
                    x=[b["bin"] for b in d["histogram"]],
                    y=[b["count"] for b in d["histogram"]],
                    marker_color="#4c78a8",
                )
            )
            fig.update_xaxes(title=f"events per {who}", type="category")
            fig.update_yaxes(title=f"{who}s")
            charts[key] = layout(fig, f"How many events a {who} has")
    for key in ("categories", "brands"):
        top = stats[key]["top"]
        if top:
            fig = go.Figure()
            fig.add_bar(
                y=[t["name"] for t in top][::-1],
                x=[t["events"] for t in top][::-1],
                orientation="h",
                name="events",
                marker_color="#4c78a8",
            )
            charts[key] = layout(fig, f"Top {key} by events", max(300, 26 * len(top) + 80))
            charts[key].update_layout(margin={"l": 220})
    if stats["price_by_category"]:
        fig = go.Figure()
        for p in stats["price_by_category"]:
            q = p["quantiles"]
            fig.add_trace(
                go.Box(
                    name=p["category"],
                    x=[p["category"]],
                    q1=[q["p25"]],
                    median=[q["p50"]],
                    q3=[q["p75"]],
                    lowerfence=[q["p05"]],
                    upperfence=[q["p95"]],
                    mean=[p["mean"]],
                    boxpoints=False,
                    marker_color="#4c78a8",
                    showlegend=False,
                )
            )
        positive = all(p["quantiles"]["p05"] > 0 for p in stats["price_by_category"])
        fig.update_yaxes(title="price", type="log" if positive else "linear")
        charts["price_by_category"] = layout(
            fig, "Price range per top-level category (box p25 to p75, whiskers p05 to p95)", 400
        )
    q = stats["quarantine"]
    if q and q["by_reason"]:
        reasons = list(q["by_reason"])
        fig = go.Figure(
            go.Bar(
                y=[r.replace("_", " ") for r in reasons][::-1],
                x=[q["by_reason"][r] for r in reasons][::-1],
                orientation="h",
                marker_color="#d9534f",
            )
        )
        charts["quality"] = layout(fig, "Quarantined rows by reason", max(260, 28 * len(reasons) + 80))
        charts["quality"].update_layout(margin={"l": 180})
    return charts


def render_html(stats: dict[str, Any], generated_at: str | None = None) -> str:
    """One self-contained page: plotly.js is inlined once, so the file works offline."""
    charts = _charts(stats)
    o, f = stats["overview"], stats["funnel"]
    cards = [
        ("events", fmt_count(o["events"])),
        ("users", fmt_count(o["users"])),
        ("sessions", fmt_count(o["sessions"])),
        ("days", fmt_count(o["days_with_events"])),
        ("users who purchased", fmt_pct(f["user_purchase_rate"])),
        ("quarantined rows", fmt_count(stats["quarantine"]["rows"]) if stats["quarantine"] else "-"),
    ]
    body = [
        "<h1>Lake description</h1>",
        f'<p class="sub">Data quality and descriptive statistics · generated {html.escape(generated_at or utc_now_iso())} '
        f"by <code>shoplens describe</code> · period {html.escape(str(o['first_date']))} to {html.escape(str(o['last_date']))} (UTC)</p>",
        '<div class="cards">'
        + "".join(
            f"<div class=card><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>" for k, v in cards
        )
        + "</div>",
    ]
    for s in sections(stats):
        chart = charts.get(s.key)
        table = html_table(s.header, s.rows)
        long_table = len(s.rows) > 12 and chart is not None
        parts = [
            f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2><p class="note">{html.escape(s.note)}</p>'
        ]
        parts.append(chart_html(chart))
        parts.append(f"<details><summary>Show table</summary>{table}</details>" if long_table else table)
        parts.append("</section>")
        body.append("".join(parts))
    return page("shoplens · lake description", "".join(body))


__all__ = ["Section", "render_html", "render_json", "render_markdown", "sections"]
