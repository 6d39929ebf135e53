"""Export: one segment's or one lifecycle stage's members (pseudonymized keys) as CSV for the CRM."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui
from model.segmentation import LIFECYCLE_STAGES, lifecycle_stages_doc
from services.core.catalog import SEGMENT_VIEWS

st.title("Export a segment")
ctx = ui.context()
ui.need_model(ctx)
ui.need_views(ctx, SEGMENT_VIEWS)
if ctx.ptr.segments is None:
    st.info("No scored customers yet: run `shoplens score`.", icon=":material/info:")
    st.stop()

with ui.guarded(ctx):
    summary = data.view(ctx.uri, SEGMENT_VIEWS, ctx.ptr.version(SEGMENT_VIEWS), "segment_summary")

st.write("Download the members of a segment for the CRM or an ad platform. The file holds pseudonymized "
         "customer keys (the same keys the shop's systems get from the platform), never raw ids.")  # fmt: skip
by_stage = st.radio("Export by", ["Behavioural segment", "Lifecycle stage"], horizontal=True,
                    key="export_by") == "Lifecycle stage"  # fmt: skip
if by_stage:
    docs = {d["key"]: d for d in lifecycle_stages_doc()}
    with ui.guarded(ctx):
        life = data.lifecycle_counts(ctx.uri, ctx.ptr.segments)
    if life.empty:
        st.info("These segments have no lifecycle stages yet: run `shoplens score`.", icon=":material/info:")
        st.stop()
    per_stage = life.groupby("lifecycle_stage")["users"].sum()
    keys = [s.key for s in LIFECYCLE_STAGES if s.key in per_stage.index]
    stage = st.selectbox("Lifecycle stage", keys, key="export_stage",
                         format_func=lambda k: f"{docs[k]['label']} · {int(per_stage[k]):,} customers")  # fmt: skip
    c = st.columns(2)
    c[0].metric("Customers", charts.fmt_int(per_stage[stage]), border=True)
    c[1].metric("Share of customers", charts.fmt_pct(per_stage[stage] / per_stage.sum()), border=True)
    st.caption(f"Rule: {docs[stage]['rule']}. Recommended action: {docs[stage]['action']}")
    segment_id, label = None, docs[stage]["label"]
else:
    stage = None
    options = summary.sort_values("users", ascending=False).reset_index(drop=True)
    labels = [f"{r.segment_name} · {r.users:,} customers" for r in options.itertuples()]
    choice = st.selectbox("Segment", range(len(options)), format_func=lambda i: labels[i], key="export_segment")
    row = options.iloc[choice]
    segment_id = None if pd.isna(row["segment_id"]) else int(row["segment_id"])
    label = str(row["segment_name"])
    c = st.columns(3)
    c[0].metric("Customers", charts.fmt_int(row["users"]), border=True)
    c[1].metric("Share of customers", charts.fmt_pct(row["share_users"]), border=True)
    c[2].metric("Share of revenue", charts.fmt_pct(row.get("share_revenue")), border=True)

slug = "".join(ch if ch.isalnum() else "-" for ch in label.lower()).strip("-")
st.download_button(
    "Download CSV", type="primary", icon=":material/download:",
    data=lambda: data.segment_members_csv(ctx.uri, ctx.ptr.segments, segment_id, stage),
    file_name=f"shoplens-{slug}-{ctx.ptr.segments}.csv", mime="text/csv", on_click="ignore",
)  # fmt: skip
st.caption("Columns: user_key, segment_id, segment_name, confidence, n_events, trust, lifecycle_stage. "
           "The file is built when you click.")  # fmt: skip
ui.footer(ctx)
