"""Segments: who they are, how big, what they are worth, how they differ, what to do, how they moved."""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui
from model.segmentation import LIFECYCLE_STAGES, lifecycle_stages_doc
from services.core.catalog import SEGMENT_VIEWS

st.title("Segments")
ctx = ui.context()
ui.need_model(ctx)
ui.need_views(ctx, SEGMENT_VIEWS)

# -- load
with ui.guarded(ctx):
    model, profiles = data.model_docs(ctx.uri, ctx.ptr.model)
    summary = data.view(ctx.uri, SEGMENT_VIEWS, ctx.ptr.version(SEGMENT_VIEWS), "segment_summary")
    sample = data.view(ctx.uri, SEGMENT_VIEWS, ctx.ptr.version(SEGMENT_VIEWS), "pca_sample")
    flow = data.view(ctx.uri, SEGMENT_VIEWS, ctx.ptr.version(SEGMENT_VIEWS), "segment_flow")

colors = charts.color_map(
    [*(p["name"] for p in profiles), *summary.get("segment_name", pd.Series(dtype=str))],
    data.segment_colors(summary, profiles),
)
by_name = {p["name"]: p for p in profiles}

# -- the table
total = int(summary["users"].sum()) if len(summary) else 0
scored = int(summary.loc[summary["segment_id"].notna(), "users"].sum()) if len(summary) else 0
st.markdown(
    f"**{len(profiles)} segments** found by model `{ctx.ptr.model}` among **{scored:,}** customers "
    f"with enough activity ({charts.fmt_int(total - scored)} more are too new to place)."
)
by_summary = summary.set_index("segment_name").to_dict("index") if len(summary) else {}
cards = sorted(profiles, key=lambda p: -by_summary.get(p["name"], {}).get("users", p.get("size", 0)))
for i in range(0, len(cards), 2):
    for col, p in zip(st.columns(2), cards[i : i + 2], strict=False):
        with col.container(border=True, height="stretch"):
            st.markdown(
                f"<span style='color:{colors.get(p['name'])};font-size:1.3em'>●</span> "
                f"<b style='font-size:1.15em'>{p['name']}</b>", unsafe_allow_html=True,
            )
            st.caption(p.get("description", ""))
            row = by_summary.get(p["name"], {})  # shares of all customers, as in the table below
            st.markdown(f"**{charts.fmt_int(row.get('users'))}** customers · **{charts.fmt_pct(row.get('share_users'))}** "
                        f"of customers · **{charts.fmt_pct(row.get('share_revenue'))}** of revenue")  # fmt: skip
table = summary.sort_values("users", ascending=False)
st.dataframe(
    table, hide_index=True, width="stretch",
    column_order=["segment_name", "users", "share_users", "share_revenue", "revenue", "avg_confidence"],
    column_config={
        "segment_name": st.column_config.TextColumn("Segment", width="medium"),
        "users": st.column_config.NumberColumn("Customers", format="localized"),
        "share_users": st.column_config.ProgressColumn("Share of customers", format="percent", min_value=0, max_value=1),
        "share_revenue": st.column_config.ProgressColumn("Share of revenue", format="percent", min_value=0, max_value=1),
        "revenue": st.column_config.NumberColumn("Revenue", format="dollar"),
        "avg_confidence": st.column_config.NumberColumn("Avg. confidence", format="percent"),
    },
)  # fmt: skip
st.plotly_chart(charts.segment_shares(summary, colors), width="stretch")

tab_map, tab_profiles, tab_cats, tab_actions, tab_life, tab_flow = st.tabs(
    ["Customer map", "Profiles", "Categories & brands", "Marketing actions", "Lifecycle", "Movement between models"]
)
with tab_map:
    if sample.empty:
        st.info("No map sample in the views yet.", icon=":material/info:")
    else:
        st.plotly_chart(charts.pca_map(sample, colors), width="stretch")
        st.caption("Each dot is a customer placed by the first two principal components of their behaviour; "
                   "a stratified sample so every segment shows, not the full base.")  # fmt: skip

with tab_profiles:
    names = [p["name"] for p in profiles]
    chosen = st.multiselect("Segments to compare", names, default=names, key="segments_compare")
    picked = [by_name[n] for n in chosen]
    st.plotly_chart(charts.radar(picked, colors), width="stretch")
    numeric = sorted({f for p in profiles for f, v in (p.get("medians") or {}).items() if v is not None},
                     key=charts.label)  # fmt: skip
    default = "monetary" if "monetary" in numeric else numeric[0]
    feature = st.selectbox("Compare segments on", numeric, index=numeric.index(default), format_func=charts.label,
                           key="segments_feature")  # fmt: skip
    st.plotly_chart(charts.feature_bars(picked, feature, colors), width="stretch")

with tab_cats:
    st.plotly_chart(charts.top_categories(profiles, colors), width="stretch")
    rows = []
    for p in profiles:
        med = p.get("medians") or {}
        cats = ", ".join(f"{c['category'].replace('_', ' ')} ({c['share']:.0%})" for c in p.get("top_categories") or [])
        rows.append({"Segment": p["name"], "Top categories": cats or "–",
                     "Brand loyalty (median)": charts.fmt_pct(med.get("brand_concentration")),
                     "Price level vs category": charts.fmt_num(med.get("price_level"))})  # fmt: skip
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("Brand loyalty is the Herfindahl index of a customer's brands (100% = a single brand); "
               "price level is ln(price) against the category's mean (negative = cheaper than typical).")  # fmt: skip

with tab_actions:
    acts = sorted(profiles, key=lambda p: -p.get("size", 0))
    for i in range(0, len(acts), 2):
        for col, p in zip(st.columns(2), acts[i : i + 2], strict=False):
            with col.container(border=True, height="stretch"):
                st.markdown(f"<span style='color:{colors.get(p['name'])};font-size:1.3em'>●</span> "
                            f"<b>{p['name']}</b>", unsafe_allow_html=True)  # fmt: skip
                for action in p.get("actions") or []:
                    st.markdown(f"- {action}")

with tab_life:
    with ui.guarded(ctx):
        life = data.lifecycle_counts(ctx.uri, ctx.ptr.segments) if ctx.ptr.segments else pd.DataFrame()
    if life.empty:
        st.info("No lifecycle stages in these segments yet: run `shoplens score` with the current version.",
                icon=":material/info:")  # fmt: skip
    else:
        docs = {d["key"]: d for d in lifecycle_stages_doc()}
        per_stage = life.groupby("lifecycle_stage")["users"].sum()
        all_users = int(per_stage.sum())
        st.markdown(f"Every customer with at least one event has a **lifecycle stage** ({all_users:,} customers), "
                    "from explicit rules, beside the behavioural segment.")  # fmt: skip
        rows = [{"Stage": docs[s.key]["label"], "Customers": int(per_stage.get(s.key, 0)),
                 "Share": per_stage.get(s.key, 0) / all_users if all_users else 0.0,
                 "Rule": docs[s.key]["rule"], "Recommended action": docs[s.key]["action"]}
                for s in LIFECYCLE_STAGES]  # fmt: skip
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
            "Customers": st.column_config.NumberColumn(format="localized"),
            "Share": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1)})  # fmt: skip
        cross = life.pivot_table(index="lifecycle_stage", columns="segment_name", values="users", aggfunc="sum",
                                 fill_value=0)  # fmt: skip
        cross.index = [docs[k]["label"] if k in docs else k for k in cross.index]
        st.markdown("**Stages by behavioural segment** (customers)")
        st.dataframe(cross, width="stretch")

with tab_flow:
    previous = model.previous_version
    if flow.empty:
        st.info("No movement to show yet: the flow appears after the model has been retrained at least once "
                "(users scored by both the previous and the current model).", icon=":material/info:")  # fmt: skip
    else:
        moved = int(flow.loc[flow["from_segment_name"] != flow["to_segment_name"], "users"].sum())
        st.markdown(f"**{charts.fmt_int(moved)}** of {charts.fmt_int(flow['users'].sum())} customers changed segment "
                    f"between model `{previous or 'previous'}` and `{ctx.ptr.model}`.")  # fmt: skip
        st.plotly_chart(charts.sankey(flow, colors), width="stretch")
ui.footer(ctx)
