"""Customer lookup: a raw user id (hashed here, never shown or kept) or an uploaded event history."""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

import streamlit as st

from dashboard import charts, data, explain, ui, uploads
from dashboard.access import LOOKUPS
from etl.pseudonymize import pseudonymize
from model.segmentation import lifecycle_action, lifecycle_label
from services.core.catalog import PROPENSITY
from services.core.settings import ConfigError, get_settings

st.title("Customer lookup")
ctx = ui.context()
ui.need_model(ctx)

with ui.guarded(ctx):
    model, profiles = data.model_docs(ctx.uri, ctx.ptr.model)
    min_events = model.threshold.chosen_min_events
by_id = {p["segment_id"]: p for p in profiles}
colors = charts.color_map([p["name"] for p in profiles], {p["name"]: p.get("color") for p in profiles if p.get("color")})


def show_result(segment: dict, features: dict | None, source: str) -> None:
    """The lifecycle stage, the predicted segment, the confidence and why (user vs segment medians)."""
    sid, n_events = segment.get("segment_id"), segment.get("n_events")
    stage = segment.get("lifecycle_stage")
    if stage:
        st.info(f"**Lifecycle stage: {lifecycle_label(stage)}.** {lifecycle_action(stage)}", icon=":material/route:")
    if sid is None:
        st.warning(
            f"**Not enough activity yet.** This customer has {charts.fmt_int(n_events)} events; a segment is "
            f"assigned from {charts.fmt_int(min_events)} events on (below that it would change too often to act on).",
            icon=":material/hourglass_empty:",
        )
        return
    prof = by_id.get(int(sid), {})
    name = segment.get("segment_name") or prof.get("name", f"Segment {sid}")
    color = colors.get(name, charts.ACCENT)
    st.markdown(f"<h3 style='margin-bottom:0'><span style='color:{color}'>●</span> {name}</h3>", unsafe_allow_html=True)
    st.caption(prof.get("description", ""))
    c = st.columns(3)
    c[0].metric("Segment", name, border=True)
    c[1].metric("Confidence", charts.fmt_pct(segment.get("confidence"), 0), border=True,
                help="1 − distance to the nearest segment centre / distance to the second nearest.")  # fmt: skip
    c[2].metric("Events", charts.fmt_int(n_events), border=True, help=f"Scored by model {segment.get('model_version')}")
    if segment.get("trust") is not None:
        st.caption(f"Trust {charts.fmt_pct(segment.get('trust'), 0)}: the estimated chance that this segment is the one "
                   "the customer's full history will give (learned from how segments of long histories change).")
    if prof.get("actions"):
        st.markdown("**Recommended actions:** " + " · ".join(prof["actions"]))
    if not features:
        st.info("Feature values for this customer are not available, so the comparison is not shown.", icon=":material/info:")
        return
    rows = explain.compare(features, prof, model.features or list((prof.get("medians") or {}).keys()))
    st.markdown(f"**Why {name}:** the customer's behaviour next to the segment's typical (median) customer, "
                "most alike first.")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(charts.user_vs_profile(rows, color), width="stretch")
    with right:
        st.dataframe(rows[["feature_label", "user", "median"]], hide_index=True, width="stretch",
                     height=35 * (len(rows) + 1) + 3,
                     column_config={"feature_label": "Feature", "user": "This customer", "median": "Segment median"})  # fmt: skip
    st.caption(f"Source: {source}.")


def show_propensity(user_key: str) -> None:
    """The customer's purchase propensity and decile from the current scores (if published)."""
    with ui.guarded(ctx):
        row = data.lookup_propensity(ctx.uri, ctx.ptr.version(PROPENSITY), user_key)
    if row is None:
        return
    c = st.columns(2)
    c[0].metric("Purchase propensity", charts.fmt_pct(row.get("propensity"), 1), border=True,
                help=f"Probability of a purchase within the model's horizon (model {row.get('model_version')}).")
    c[1].metric("Propensity decile", f"{row.get('decile')} of 10", border=True, help="10 = the best-scored 10% of customers.")


tab_id, tab_upload = st.tabs(["By user id", "From an event history"])
with tab_id:
    if ctx.ptr.segments is None:
        st.info("No scored customers yet: run `shoplens score`.", icon=":material/info:")
    else:
        with st.form("lookup_form", clear_on_submit=True, border=False):
            raw = st.text_input("User id", placeholder="e.g. 512475445",
                                help="The id from the shop's system. It is hashed with the platform key on the "
                                "server, then forgotten; it is never shown, logged or stored.")  # fmt: skip
            submitted = st.form_submit_button("Look up", type="primary")
        if submitted and raw.strip() and not LOOKUPS.allow(st.session_state, "lookup_times"):
            st.session_state.pop("lookup_user_key", None)
            st.warning(f"**Too many lookups.** At most {LOOKUPS.limit} per {LOOKUPS.window_s:.0f} s in one session; "
                       f"try again in {LOOKUPS.wait_s(st.session_state, 'lookup_times'):.0f} s.",
                       icon=":material/speed:")  # fmt: skip
        elif submitted and raw.strip():
            try:
                st.session_state["lookup_user_key"] = pseudonymize(raw.strip(), get_settings().key_bytes)
            except ConfigError as err:
                st.warning(f"Lookups need the platform's pseudonymization key: {err}", icon=":material/key:")
        del raw
        user_key = st.session_state.get("lookup_user_key")
        if user_key:
            with ui.guarded(ctx), st.spinner("Looking up…"):
                hit = data.lookup(ctx.uri, ctx.ptr.segments, ctx.ptr.features, user_key,
                                  tuple(model.features) or None)  # fmt: skip
            if hit is None:
                st.info("**No customer with this id** in the lake: check the id, or the customer has no events yet.",
                        icon=":material/search_off:")  # fmt: skip
            else:
                show_result(hit["segment"], hit["features"], f"segments {ctx.ptr.segments}")
                show_propensity(user_key)

with tab_upload:
    st.write("Upload a small event history in the REES46 format (one customer's clicks, CSV) to see which "
             "segment it would fall into with the current model. Nothing is stored.")  # fmt: skip
    upload = st.file_uploader("Event history (CSV)", type=["csv", "gz"], key="lookup_upload",
                              max_upload_size=uploads.LOOKUP_MAX_MB)  # fmt: skip
    if upload is not None:
        with ui.guarded(ctx), st.spinner("Scoring…"):
            result = data.predict_upload(ctx.uri, ctx.ptr.model, upload.getvalue())
        if result.error:
            st.warning(result.error, icon=":material/warning:")
        else:
            for r in result.users:
                show_result(r["segment"], r["features"], f"uploaded file, model {ctx.ptr.model}")
ui.footer(ctx)
