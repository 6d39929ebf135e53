"""Overview: headline KPIs with trends, data freshness, the last pipeline runs."""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

import streamlit as st

from dashboard import charts, data, kpis, ui
from services.core.catalog import OVERVIEW_VIEWS, SEGMENT_VIEWS

st.title("Overview")
ctx = ui.context()

# -- inputs
days = st.segmented_control("Period", [7, 14, 30], default=7, format_func=lambda d: f"Last {d} days",
                            key="overview_days") or 7  # fmt: skip

# -- load
with ui.guarded(ctx):
    overview = ctx.ptr.version(OVERVIEW_VIEWS)
    kpi_daily = data.view(ctx.uri, OVERVIEW_VIEWS, overview, "kpi_daily") if overview else None
    summary = data.view(ctx.uri, SEGMENT_VIEWS, ctx.ptr.version(SEGMENT_VIEWS), "segment_summary")
    fresh = data.document(ctx.uri, OVERVIEW_VIEWS, overview, "freshness.json")
    runs = data.view(ctx.uri, OVERVIEW_VIEWS, overview, "runs")
    if runs.empty:
        runs = data.runs_from_summaries(ctx.uri, ctx.ptr.runs)

# -- headline
head = kpis.headline(kpi_daily, days) if kpi_daily is not None else None
cols = st.columns(5)
users = int(summary["users"].sum()) if len(summary) else None
cols[0].metric("Customers", charts.fmt_int(users), help="Users known to the lake (scored by the current model).",
               border=True)  # fmt: skip
if head is None:
    for c, name in zip(cols[1:], ("Active users / day", "Sessions", "Conversion", "Revenue"), strict=True):
        c.metric(name, "–", border=True)
    st.info("Daily KPIs appear once the overview views are built (`shoplens overview` or `shoplens run`; the "
            "watcher builds them after each file).", icon=":material/info:")
else:
    cur, prev = head.current, head.previous
    trend = kpi_daily.sort_values("event_date").tail(days * 2)

    def _delta(c: float | None, p: float | None) -> str | None:
        d = kpis.delta(c, p)
        return None if d is None else f"{d:+.1%}"

    cols[1].metric("Active users / day", charts.fmt_int(cur.active_users),
                   _delta(cur.active_users, prev and prev.active_users),
                   chart_data=trend["active_users"].tolist(), border=True)  # fmt: skip
    cols[2].metric("Sessions", charts.fmt_int(cur.sessions), _delta(cur.sessions, prev and prev.sessions),
                   chart_data=trend["sessions"].tolist(), border=True)  # fmt: skip
    conv_delta = None
    if prev is not None and cur.conversion_rate is not None and prev.conversion_rate is not None:
        conv_delta = f"{100 * (cur.conversion_rate - prev.conversion_rate):+.2f} pp"
    cols[3].metric("Conversion", charts.fmt_pct(cur.conversion_rate, 2), conv_delta,
                   help="Sessions with a purchase / sessions.", chart_data=trend["conversion_rate"].tolist(),
                   border=True)  # fmt: skip
    cols[4].metric("Revenue", charts.fmt_money(cur.revenue), _delta(cur.revenue, prev and prev.revenue),
                   chart_data=trend["revenue"].tolist(), chart_type="bar", border=True)  # fmt: skip
    st.caption(f"{cur.start:%d %b %Y} – {cur.end:%d %b %Y} (UTC), deltas against the {days} days before.")

    metric = st.segmented_control(
        "Trend", ["active_users", "sessions", "conversion_rate", "revenue", "purchases"],
        default="revenue", format_func=charts.label, key="overview_metric",
    ) or "revenue"
    st.plotly_chart(charts.kpi_trend(kpi_daily, metric), width="stretch")

# -- freshness
st.subheader("Data freshness")
facts = {
    "Latest event": charts.fmt_time(fresh.get("latest_event_time")),
    "Last pipeline run": charts.fmt_time(fresh.get("last_run_at") or (runs["started_at"].max() if len(runs) else None)),
    "Model version": ctx.ptr.model or "not trained yet",
    "Segments as of": charts.fmt_time(ctx.ptr.segments_meta.get("as_of")),
}
for col, (name, value) in zip(st.columns(4), facts.items(), strict=True):
    with col.container(border=True):
        st.markdown(f"<small>{name}</small><br><b>{value}</b>", unsafe_allow_html=True)

# -- runs
st.subheader("Last pipeline runs")
if runs.empty:
    st.info("No ingestion run yet: `shoplens ingest <files>` adds event files to the lake.", icon=":material/info:")
else:
    show = runs.head(50)
    n_ok = int((show["status"] == "committed").sum())
    st.caption(f"{len(show)} most recent runs · {n_ok} committed · {len(show) - n_ok} not committed")
    st.dataframe(
        show, hide_index=True, width="stretch",
        column_order=["run_id", "status", "started_at", "duration_seconds", "files", "rows_read", "rows_accepted",
                      "rows_quarantined", "duplicates_removed"],
        column_config={
            "run_id": st.column_config.TextColumn("Run"),
            "status": st.column_config.TextColumn("Status"),
            "started_at": st.column_config.DatetimeColumn("Started (UTC)", format="D MMM YYYY, HH:mm"),
            "duration_seconds": st.column_config.NumberColumn("Duration", format="%.1f s"),
            "files": st.column_config.NumberColumn("Files"),
            "rows_read": st.column_config.NumberColumn("Rows read", format="localized"),
            "rows_accepted": st.column_config.NumberColumn("Accepted", format="localized"),
            "rows_quarantined": st.column_config.NumberColumn("Quarantined", format="localized"),
            "duplicates_removed": st.column_config.NumberColumn("Duplicates", format="localized"),
        },
    )  # fmt: skip
ui.footer(ctx)
