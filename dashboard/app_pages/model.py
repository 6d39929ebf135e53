"""Segmentation model: how k was chosen, the activity threshold, what drives the segments, versions."""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

st.title("Segmentation model")
ctx = ui.context()
ui.need_model(ctx)

with ui.guarded(ctx):
    model, profiles = data.model_docs(ctx.uri, ctx.ptr.model)
    history = data.model_history(ctx.uri, ctx.ptr.model)

metrics, info, thr = model.metrics, model.data, model.threshold
st.markdown(
    f"Model `{model.version}` trained {charts.fmt_time(model.trained_at)} on events from "
    f"**{info.event_date_min}** to **{info.event_date_max}**: "
    f"{charts.fmt_int(info.users_trained)} of {charts.fmt_int(info.users_total)} customers "
    f"had enough activity to train on."
)
c = st.columns(5)
c[0].metric("Segments (k)", charts.fmt_int(model.k), border=True)
c[1].metric("Silhouette", charts.fmt_num(metrics.silhouette, 3), border=True,
            help="-1..1, higher = segments better separated.")  # fmt: skip
c[2].metric("Davies–Bouldin", charts.fmt_num(metrics.davies_bouldin, 3), border=True,
            help="Lower = more compact, better separated segments.")  # fmt: skip
c[3].metric("Stability (ARI)", charts.fmt_num(metrics.stability_ari, 3), border=True,
            help="Agreement of bootstrap refits with the model (1 = identical).")  # fmt: skip
c[4].metric("Min. events", charts.fmt_int(thr.chosen_min_events), border=True,
            help="Customers with fewer events are 'not enough activity yet'.")  # fmt: skip

tab_k, tab_thr, tab_imp, tab_hist = st.tabs(["Choosing k", "Activity threshold", "Feature importance", "Versions"])
with tab_k:
    st.plotly_chart(charts.k_selection([r.model_dump() for r in model.k_selection], model.k), width="stretch")
    st.caption(f"Rule: {model.k_rule}")
    evr = model.explained_variance_ratio
    if evr:
        st.caption(f"PCA keeps {len(evr)} components explaining {sum(evr):.0%} of the variance of "
                   f"{len(model.features)} features.")  # fmt: skip
with tab_thr:
    if thr.curve:
        st.plotly_chart(charts.threshold_curve([p.model_dump() for p in thr.curve], thr.chosen_min_events, thr.target),
                        width="stretch")  # fmt: skip
        st.caption("For customers with long histories, the segment computed from their first n events is "
                   "compared with the one from all their events. Below the threshold a segment would "
                   "change too often to act on.")  # fmt: skip
    else:
        st.info("This model version did not record a threshold study.", icon=":material/info:")
with tab_imp:
    if model.feature_importance:
        st.plotly_chart(charts.importance(model.feature_importance), width="stretch")
    if model.tree_rules:
        with st.expander("Rules of a small decision tree that mimics the segments"):
            st.code(model.tree_rules, language="text")
    if model.dropped_features:
        st.markdown("**Features left out**")
        st.dataframe(pd.DataFrame([d.model_dump() for d in model.dropped_features])
                     .rename(columns={"name": "Feature", "reason": "Why"}), hide_index=True)  # fmt: skip
with tab_hist:
    st.dataframe(
        history, hide_index=True, width="stretch",
        column_config={
            "version": "Version", "trained_at": "Trained (UTC)", "k": "k",
            "silhouette": st.column_config.NumberColumn("Silhouette", format="%.3f"),
            "davies_bouldin": st.column_config.NumberColumn("Davies–Bouldin", format="%.3f"),
            "stability_ari": st.column_config.NumberColumn("Stability", format="%.3f"),
            "min_events": "Min. events",
            "users_trained": st.column_config.NumberColumn("Trained on", format="localized"),
            "users_total": st.column_config.NumberColumn("Customers", format="localized"),
            "data_from": "Data from", "data_to": "Data to",
            "ari_vs_truth": st.column_config.NumberColumn("ARI vs truth", format="%.3f"),
            "current": st.column_config.CheckboxColumn("Current"),
        },
    )  # fmt: skip
ui.footer(ctx)
