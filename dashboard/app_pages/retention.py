"""Retention: the cohort triangle, retention and revenue curves per cohort, and a breakdown picker
(segment, first category, acquisition month). Reads only the published retention table."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, ui, value_charts
from services.core.catalog import RETENTION

BREAKDOWNS = {"overall": "Overall", "segment": "Segment", "category": "First category",
              "acquisition-month": "Acquisition month"}  # fmt: skip

st.title("Retention")
ctx = ui.context()
version = ctx.ptr.version(RETENTION)
if version is None:
    st.info("**No retention yet.** Count it with `shoplens retention` (the pipeline counts the weekly view after "
            "each ingestion).", icon=":material/info:")  # fmt: skip
    st.stop()

with ui.guarded(ctx):
    doc = data.document(ctx.uri, RETENTION, version, "result.json")
    table = data.view(ctx.uri, RETENTION, version, "cohorts")

period = doc.get("period", "week")
st.markdown(f"**{doc.get('cohort')}ly cohorts** by {'first purchase' if doc.get('cohort_event') == 'purchase' else 'first seen'}, "
            f"**{doc.get('periods')} {period}s**, **{doc.get('mode')}**, returning = "
            f"{'any event' if doc.get('event') == 'any' else 'a purchase'}; data to {doc.get('end')}.")  # fmt: skip
with st.expander("Exactly what is counted"):
    st.markdown("\n".join(f"- {s}" for s in doc.get("semantics", [])))

available = [b for b in BREAKDOWNS if b in set(table["breakdown"])]
by = st.segmented_control("Break down by", available, default="overall", key="retention_by",
                          format_func=lambda b: BREAKDOWNS[b]) or "overall"  # fmt: skip
part = table[table["breakdown"] == by]
if by != "overall":
    groups = part.groupby("group")["size"].sum().sort_values(ascending=False)
    group = st.selectbox(BREAKDOWNS[by], list(groups.index), key="retention_group",
                         format_func=lambda g: f"{g} · {groups[g]:,} users")  # fmt: skip
    part = part[part["group"] == group]

members = int(part[part["period"] == 0]["size"].sum())
cols = st.columns(3)
cols[0].metric("Cohorts", charts.fmt_int(part["cohort"].nunique()), border=True)
cols[1].metric("Users in cohorts", charts.fmt_int(members), border=True)
p1 = part[(part["period"] == 1) & part["complete"]]
cols[2].metric(f"Returning in {period} 1", charts.fmt_pct(p1["users"].sum() / p1["size"].sum() if len(p1) else None),
               border=True, help=f"Over the cohorts whose {period} 1 has ended for every member.")  # fmt: skip

st.plotly_chart(value_charts.triangle(part, period), width="stretch")
left, right = st.columns(2)
left.plotly_chart(value_charts.curves(part, period), width="stretch")
right.plotly_chart(value_charts.curves(part, period, "revenue"), width="stretch")
st.caption(f"Retention {version} · computed {charts.fmt_time(doc.get('computed_at'))} · other views: "
           "`shoplens retention --cohort month --period month --mode unbounded --event purchase --calendar`")  # fmt: skip
