"""``shoplens describe``: read the lake, compute :func:`etl.describe.describe`, render and publish.

The report is written three ways from the same statistics: ``report.md`` (readable in any viewer or a
merge request), ``report.html`` (one self-contained page with interactive plotly charts; plotly.js is
inlined so it opens offline) and ``report.json`` (for machines and tests). They are published as
``reports/describe/<version>/`` in the lake (with ``reports/describe/_current.json`` pointing at the
newest) and optionally copied to a local directory.

The statistics hold only aggregates and category/brand names: no user or session key can reach a report.
"""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.lake import (
    DUPLICATES,
    EVENTS,
    QUARANTINE,
    REPORTS,
    SUSPICIOUS_USERS,
    Lake,
    new_run_id,
    utc_now_iso,
)

log = logging.getLogger("shoplens.reporting")

DESCRIBE = f"{REPORTS}/describe"
FILES = ("report.md", "report.html", "report.json")
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


# -- formatting -------------------------------------------------------------------------------------
def _n(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


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
                ["Events", _n(o["events"])],
                ["Users", _n(o["users"])],
                ["Sessions", _n(o["sessions"])],
                ["Products", _n(o["products"])],
                [
                    "Period",
                    f"{o['first_date'] or '-'} to {o['last_date'] or '-'} ({o['days_with_events']} days with events)",
                ],
                ["First / last event (UTC)", f"{o['first_event'] or '-'} / {o['last_event'] or '-'}"],
                ["Purchase revenue", _money(o["revenue"])],
            ],
        ),
        Section(
            "event_types",
            "What people do",
            "Events by type, and how far users and sessions get in the funnel. Purchases per view compares "
            "purchase events with product views overall.",
            ["Measure", "Count", "Share"],
            [
                [TYPE_LABELS[t], _n(n), _pct(n / o["events"] if o["events"] else None)]
                for t, n in stats["event_types"].items()
            ]
            + [
                [
                    "users who added to cart",
                    _n(f["users_who_carted"]),
                    _pct(_ratio(f["users_who_carted"], f["users"])),
                ],
                ["users who purchased", _n(f["users_who_purchased"]), _pct(f["user_purchase_rate"])],
                [
                    "sessions with a purchase",
                    _n(f["sessions_with_purchase"]),
                    _pct(f["session_purchase_rate"]),
                ],
                ["purchases per view", "", _pct(f["purchases_per_view"], 2)],
            ],
        ),
        Section(
            "missing",
            "Missing values",
            "Share of events whose product lacks a value. Missing category or brand is common in this kind "
            "of feed; those events still count everywhere, but not in category or brand rankings.",
            ["Column", "Missing events", "Rate", "Meaning"],
            [
                [c, _n(m["missing"]), _pct(m["rate"]), MISSING_HELP.get(c, "")]
                for c, m in stats["missing"].items()
            ]
            + [
                [
                    "price ≤ 0",
                    _n(o["zero_or_negative_price_events"]),
                    _pct(_ratio(o["zero_or_negative_price_events"], o["events"])),
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
                f"How active a typical {who} is. The median (p50) {who} has {_n(q.get('p50'))} events; "
                f"9 in 10 have at most {_n(q.get('p90'))}. A long tail is normal; the extreme top may be bots "
                "(see suspicious users below).",
                ["Statistic", "Events"],
                [
                    ["mean", _n(round(d["mean"], 2))],
                    *[[k, _n(v)] for k, v in q.items()],
                    ["max", _n(d["max"])],
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
                f"{r['distinct']:,} distinct {label} values; {_n(r['missing_events'])} events have no {label}. "
                "Conversion is purchases per view within the row.",
                [label.capitalize(), "Events", "Share", "Views", "Purchases", "Conversion", "Revenue"],
                [
                    [
                        t["name"],
                        _n(t["events"]),
                        _pct(t["share"]),
                        _n(t["view"]),
                        _n(t["purchase"]),
                        _pct(t["view_to_purchase"], 2),
                        _money(t["revenue"]),
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
                        _n(p["events"]),
                        *[_money(p["quantiles"].get(k)) for k in ("p05", "p25", "p50", "p75", "p95")],
                        _money(p["mean"]),
                        _money(p["max"]),
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
                        _n(d["events"]),
                        _n(d["users"]),
                        _n(d["view"]),
                        _n(d["cart"]),
                        _n(d["purchase"]),
                        _money(d["revenue"]),
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
            ["quarantined rows (all reasons)", _n(q["rows"]), _pct(q["share_of_valid_and_rejected"], 2)]
        )
        rows += [
            [f"· {reason.replace('_', ' ')}", _n(n), _pct(_ratio(n, q["rows"]))]
            for reason, n in q["by_reason"].items()
        ]
    rows.append(["exact duplicates removed", "not recorded" if dup is None else _n(dup["rows"]), ""])
    if sus is not None:
        rows.append(["suspicious (bot-like) users flagged", _n(sus["users"]), ""])
        rows.append(["· their events (kept, flagged)", _n(sus["events"]), _pct(sus["share_of_events"])])
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
        parts += [f"## {s.title}", s.note, _md_table(s.header, s.rows)]
    for key, who in (("events_per_user", "user"), ("events_per_session", "session")):
        d = stats[key]
        if d["n"]:
            parts += [
                f"### Distribution of events per {who}",
                _md_table(
                    ["Events", f"{who.capitalize()}s", "Share"],
                    [[b["bin"], _n(b["count"]), _pct(_ratio(b["count"], d["n"]))] for b in d["histogram"]],
                ),
            ]
    return "\n\n".join(parts) + "\n"


def render_json(stats: dict[str, Any], generated_at: str | None = None) -> str:
    return json.dumps({"generated_at": generated_at or utc_now_iso(), **stats}, indent=2, sort_keys=False)


def _charts(stats: dict[str, Any]) -> dict[str, Any]:
    """Plotly figures keyed by the section they illustrate."""
    import plotly.graph_objects as go

    def layout(fig: Any, title: str, height: int = 340) -> Any:
        fig.update_layout(
            title=title, height=height, margin={"l": 60, "r": 20, "t": 50, "b": 40}, template="plotly_white"
        )
        return fig

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


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#222}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin-bottom:4px}.sub{color:#666;margin-top:0}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;box-shadow:0 1px 3px #0001}
h2{font-size:1.2em;margin:0 0 6px}.note{color:#555;margin:0 0 10px;font-size:.93em}
table{border-collapse:collapse;font-size:.9em;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child,.t{text-align:left}th{background:#fafafa}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{flex:1 1 140px;background:#fff;border-radius:8px;padding:12px;box-shadow:0 1px 3px #0001}
.card b{display:block;font-size:1.4em}.card span{color:#666;font-size:.85em}
details summary{cursor:pointer;color:#4c78a8;margin-top:8px}
"""


def render_html(stats: dict[str, Any], generated_at: str | None = None) -> str:
    """One self-contained page: plotly.js is inlined once, so the file works offline."""
    from plotly.offline import get_plotlyjs

    charts = _charts(stats)
    o, f = stats["overview"], stats["funnel"]
    cards = [
        ("events", _n(o["events"])),
        ("users", _n(o["users"])),
        ("sessions", _n(o["sessions"])),
        ("days", _n(o["days_with_events"])),
        ("users who purchased", _pct(f["user_purchase_rate"])),
        ("quarantined rows", _n(stats["quarantine"]["rows"]) if stats["quarantine"] else "-"),
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
        table = _html_table(s.header, s.rows)
        long_table = len(s.rows) > 12 and chart is not None
        parts = [
            f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2><p class="note">{html.escape(s.note)}</p>'
        ]
        if chart is not None:
            parts.append(
                chart.to_html(
                    full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True}
                )
            )
        parts.append(f"<details><summary>Show table</summary>{table}</details>" if long_table else table)
        parts.append("</section>")
        body.append("".join(parts))
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>shoplens · lake description</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body><main>{''.join(body)}</main></body></html>"
    )


def _align(cell: object) -> str:
    """Numbers right-aligned (the default), words left-aligned."""
    return "" if re.fullmatch(r"[-+\d,.%\s]*", str(cell)) else ' class="t"'


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    first = rows[0] if rows else header
    head = "".join(f"<th{_align(c)}>{html.escape(h)}</th>" for h, c in zip(header, first, strict=False))
    body = "".join(
        "<tr>" + "".join(f"<td{_align(c)}>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# -- writing and the command -------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportResult:
    version: str
    lake_prefix: str
    files: tuple[str, ...]
    out_dir: str | None


def write_report(
    lake: Lake, stats: dict[str, Any], out_dir: Path | None = None, version: str | None = None
) -> ReportResult:
    """Render the three files, publish them as ``reports/describe/<version>/``, copy to ``out_dir``."""
    version = version or new_run_id()
    generated_at = utc_now_iso()
    texts = {
        "report.md": render_markdown(stats, generated_at),
        "report.html": render_html(stats, generated_at),
        "report.json": render_json(stats, generated_at),
    }
    lake.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lake.work_dir, prefix="describe-") as tmp:
        for name, text in texts.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        lake.publish_version(Path(tmp), DESCRIBE, version, events=stats["overview"]["events"])
        if out_dir is not None:
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in texts:
                shutil.copyfile(Path(tmp) / name, out_dir / name)
    log.info(
        "describe report %s published",
        version,
        extra={"version": version, "events": stats["overview"]["events"]},
    )
    return ReportResult(version, f"{DESCRIBE}/{version}", tuple(texts), str(out_dir) if out_dir else None)


def compute_stats(spark: Any, lake: Lake) -> dict[str, Any]:
    """Read the committed lake and compute the statistics; a lake without events is an error."""
    from etl.describe import describe
    from services.spark import read_run_dataset

    events = read_run_dataset(spark, lake, EVENTS)
    if events is None:
        raise FileNotFoundError(
            f"{lake.store.uri}: no committed events in the lake (run `shoplens ingest` first)"
        )
    return describe(
        events,
        read_run_dataset(spark, lake, QUARANTINE),
        duplicates=read_run_dataset(spark, lake, DUPLICATES),
        suspicious_users=read_run_dataset(spark, lake, SUSPICIOUS_USERS),
    )


def run_describe(spark: Any, lake: Lake, out_dir: Path | None = None) -> dict[str, Any]:
    """What ``shoplens describe`` does: compute, publish, and return the statistics with where they went."""
    stats = compute_stats(spark, lake)
    result = write_report(lake, stats, out_dir)
    return {
        **stats,
        "report": {
            "version": result.version,
            "lake": f"{lake.store.uri}/{result.lake_prefix}",
            "files": list(result.files),
            "out_dir": result.out_dir,
        },
    }


def describe_summary(result: dict[str, Any]) -> str:
    """A few human lines for the terminal."""
    o, r = result["overview"], result["report"]
    q = result["quarantine"]
    lines = [
        f"{o['events']:,} events, {o['users']:,} users, {o['sessions']:,} sessions, "
        f"{o['first_date']} to {o['last_date']}",
        "event types: " + ", ".join(f"{t} {n:,}" for t, n in result["event_types"].items()),
    ]
    if q is not None:
        lines.append(f"quarantined rows: {q['rows']:,}")
    lines.append(
        f"report {r['version']}: {r['lake']}/" + (f" (copied to {r['out_dir']})" if r["out_dir"] else "")
    )
    return "\n".join(lines)
