"""Lifetime value: how value is spread, which segments and lifecycle stages hold it, how well the model
predicted a holdout period, and the top customers (pseudonymized keys) for the CRM. Reads only the
published clv tables."""


from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui, value_charts
from services.core.catalog import CLV, SEGMENT_VIEWS

BREAKDOWNS = {"segment": "Segment", "lifecycle_stage": "Lifecycle stage"}

st.title("Lifetime value")
ctx = ui.context()
version = ctx.ptr.version(CLV)
if version is None:
    st.info("**No lifetime values yet.** Fit them with `shoplens clv fit` (the pipeline refits after each "
            "ingestion once there are purchases).", icon=":material/info:")  # fmt: skip
    st.stop()

with ui.guarded(ctx):
    doc = data.document(ctx.uri, CLV, version, "result.json")
    groups = data.view(ctx.uri, CLV, version, "groups")
    dist = data.view(ctx.uri, CLV, version, "distribution")
    seg_views = ctx.ptr.version(SEGMENT_VIEWS)
    summary = data.view(ctx.uri, SEGMENT_VIEWS, seg_views, "segment_summary") if seg_views else pd.DataFrame()

totals = doc.get("totals", {})
horizon = doc.get("horizon_months")
st.markdown(f"Expected value of each customer's purchases over the next **{horizon} months**, discounted at "
            f"{charts.fmt_pct(doc.get('monthly_discount'))} a month; **{doc.get('model')}** + Gamma-Gamma, fitted by "
            f"**{doc.get('method')}**, as of {doc.get('observation_end')}.")  # fmt: skip
for w in doc.get("warnings", []):
    st.warning(w, icon=":material/warning:")
with st.expander("Exactly what is computed"):
    st.markdown("\n".join(f"- {s}" for s in doc.get("semantics", [])))
cols = st.columns(4)
cols[0].metric("Customers", charts.fmt_int(doc.get("customers")), border=True,
               help=f"{charts.fmt_int(doc.get('repeat_customers'))} bought on more than one day")  # fmt: skip
cols[1].metric("Total lifetime value", charts.fmt_money(totals.get("clv_sum")), border=True)
cols[2].metric("Median lifetime value", charts.fmt_money(totals.get("clv_median")), border=True)
cols[3].metric("Median p(alive)", charts.fmt_pct(totals.get("p_alive_median")), border=True)

st.plotly_chart(value_charts.clv_distribution(dist), width="stretch")

# -- value by segment or lifecycle stage
by = st.segmented_control("Value by", list(BREAKDOWNS), default="segment", key="clv_by",
                          format_func=lambda b: BREAKDOWNS[b]) or "segment"  # fmt: skip
part = groups[groups["breakdown"] == by]
colors = charts.color_map(sorted(part["value"].astype(str)), data.segment_colors(summary)) if by == "segment" else None
st.plotly_chart(value_charts.value_by(part, colors), width="stretch")
st.dataframe(part.sort_values("clv_sum", ascending=False), hide_index=True, width="stretch",
             column_order=["value", "customers", "clv_sum", "clv_median", "revenue_sum", "p_alive_median"],
             column_config={
                 "value": st.column_config.TextColumn(BREAKDOWNS[by]),
                 "customers": st.column_config.NumberColumn("Customers", format="localized"),
                 "clv_sum": st.column_config.NumberColumn("CLV sum", format="%.2f"),
                 "clv_median": st.column_config.NumberColumn("CLV median", format="%.2f"),
                 "revenue_sum": st.column_config.NumberColumn("Revenue so far", format="%.2f"),
                 "p_alive_median": st.column_config.NumberColumn("Median p(alive)", format="percent"),
             })  # fmt: skip

# -- the holdout check
st.subheader("Holdout check")
h = doc.get("holdout")
if not h:
    st.info("This fit has no holdout period. `shoplens clv fit --holdout-from YYYY-MM-DD` fits on the days before "
            "the date and compares its forecast with what customers then did.", icon=":material/info:")  # fmt: skip
else:
    st.plotly_chart(value_charts.holdout(h["by_frequency"]), width="stretch")
    st.caption(f"Fitted on the days up to {h['calibration_end']}; holdout {h['from']} to {h['to']}. Repeat purchases: "
               f"actual {charts.fmt_int(h['actual_purchases'])}, predicted {charts.fmt_num(h['predicted_purchases'], 1)}. "
               f"Per-customer error {charts.fmt_num(h['mae'], 3)} against {charts.fmt_num(h['mae_naive'], 3)} for the "
               f"naive calibration rate; correlation {charts.fmt_num(h['correlation'], 2)}.")  # fmt: skip

# -- top customers
st.subheader("Top customers by lifetime value")
top = pd.DataFrame(doc.get("top_customers", []))
st.dataframe(top, hide_index=True, width="stretch", column_config={
    "user_key": st.column_config.TextColumn("Customer (pseudonymized key)"),
    "segment": st.column_config.TextColumn("Segment"),
    "clv": st.column_config.NumberColumn("CLV", format="%.2f"),
    "p_alive": st.column_config.NumberColumn("p(alive)", format="percent"),
    "frequency": st.column_config.NumberColumn("Repeat purchases", format="localized"),
    "revenue": st.column_config.NumberColumn("Revenue so far", format="%.2f"),
})  # fmt: skip
st.caption("Every customer's values for the CRM: `shoplens export clv --out clv.csv` (pseudonymized keys), or the "
           f"`customer_value` warehouse table. Lifetime value {version} · computed {charts.fmt_time(doc.get('computed_at'))}")  # fmt: skip
