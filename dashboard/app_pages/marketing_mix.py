"""Marketing mix: channel ROI with intervals, contributions, response curves, and a live budget planner.

Reads the published model (``mmm/<version>/``) only; the planner runs the optimizer of
:mod:`model.mmm.optimizer` on the published posterior draws (numpy + scipy, no Spark, no PyMC).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, ui
from model.mmm import Posterior
from model.mmm.optimizer import HOLD_BAND, Bound, InfeasibleBounds, optimize
from services.core.catalog import MMM_MODEL

st.title("Marketing mix")
st.caption("Where should the next euro go? Revenue each channel drives, with what delay and saturation, "
           "and the allocation of a budget that earns the most.")

uri = data.lake_uri()
try:
    ptr: data.Pointers | None = data.pointers(uri)
except (data.LakeUnavailable, OSError) as err:
    ui.outage(err, uri)
    ptr = None
version = ptr.version(MMM_MODEL) if ptr is not None else None
if version is None:
    st.info("**No marketing-mix model yet.** Run `shoplens mmm fit --spend spend.csv` (revenue from the lake) "
            "or add `--kpi revenue.csv`.", icon=":material/info:")
    st.stop()


@st.cache_resource(show_spinner=False)
def _model(lake: str, v: str) -> tuple[dict, Posterior, pd.DataFrame]:
    doc = data.document(lake, MMM_MODEL, v, "model.json")
    post = Posterior.from_frame(data.view(lake, MMM_MODEL, v, "draws"), doc["posterior"]).subset(200)
    return doc, post, data.view(lake, MMM_MODEL, v, "history")


doc, post, history = _model(uri, version)
channels = data.view(uri, MMM_MODEL, version, "channels")
if not doc["converged"]:
    st.error("**The sampler did not converge** - do not act on these estimates. "
             + "; ".join(doc["diagnostics"]["problems"]), icon=":material/error:")
for w in doc["warnings"]:
    if not w.startswith("SAMPLER"):
        st.warning(w, icon=":material/warning:")

oos = doc["fit"]["out_of_sample"]
cols = st.columns(4)
cols[0].metric("Weeks fitted", f"{doc['data']['weeks']:,}", border=True)
cols[1].metric("Out-of-sample MAPE", f"{oos['model']['mape']:.1%}" if oos.get("model") else "-", border=True)
cols[2].metric("Max R-hat", f"{doc['diagnostics']['rhat_max']:.3f}", border=True)
cols[3].metric("Divergences", f"{doc['diagnostics']['divergences']:,}", border=True)

trust = pd.DataFrame(doc.get("trust", []))
held = trust.loc[~trust["identifiable"], "channel"].tolist() if not trust.empty else []
for t in (trust[~trust["identifiable"]].itertuples() if held else []):
    st.warning(f"**{t.channel}: ROI not identifiable** - {t.reasons}. The planner keeps it near its current "
               "spend; a lift test (`shoplens mmm fit --lift-tests FILE`) would pin it down.", icon=":material/help:")

st.subheader("ROI per channel (90% intervals)")
fig = go.Figure(go.Scatter(
    x=channels["roi"], y=channels["channel"], mode="markers",
    error_x={"type": "data", "symmetric": False, "array": channels["roi_high"] - channels["roi"],
             "arrayminus": channels["roi"] - channels["roi_low"]}))
fig.update_layout(height=300, template="plotly_white", xaxis_title="revenue per unit of spend",
                  margin={"l": 80, "r": 20, "t": 20, "b": 40})
st.plotly_chart(fig, width="stretch", key="mmm_roi")
shown = channels[["channel", "spend", "contribution", "roi", "roi_low", "roi_high", "mroi"]]
if not trust.empty:
    shown = shown.merge(trust[["channel", "identifiable", "prior_overlap", "max_spend_corr", "spend_cv"]],
                        on="channel", how="left")
    shown["roi"] = shown["roi"].where(shown["identifiable"])  # no number where the data cannot tell
st.dataframe(shown, hide_index=True,
             column_config={c: st.column_config.NumberColumn(format="%.2f")
                            for c in ("spend", "contribution", "roi", "roi_low", "roi_high", "mroi",
                                      "prior_overlap", "max_spend_corr", "spend_cv")})

left, right = st.columns(2)
with left:
    contrib = data.view(uri, MMM_MODEL, version, "contributions")
    fig = go.Figure([go.Scatter(x=g["date"], y=g["median"], name=k, stackgroup="one")
                     for k, g in contrib.groupby("component")])
    fig.update_layout(title="Contributions over time", height=340, template="plotly_white")
    st.plotly_chart(fig, width="stretch", key="mmm_contrib")
with right:
    curves = data.view(uri, MMM_MODEL, version, "curves")
    fig = go.Figure([go.Scatter(x=g["weekly_spend"], y=g["median"], name=k) for k, g in curves.groupby("channel")])
    fig.update_layout(title="Response curves (weekly)", height=340, template="plotly_white",
                      xaxis_title="weekly spend", yaxis_title="weekly revenue")
    st.plotly_chart(fig, width="stretch", key="mmm_curves")

st.subheader("Plan a budget")
weeks = st.slider("Horizon (weeks)", 1, 26, 13, key="mmm_weeks")
spend = history[post.channels].to_numpy(dtype=float)
last = spend[-weeks:].sum(axis=0)
budget = st.number_input("Total budget", min_value=1.0, value=float(round(last.sum(), 2)), step=1000.0,
                         key="mmm_budget")
bounds = st.data_editor(
    pd.DataFrame({"channel": post.channels, "last_weeks": last.round(2), "min_x": 0.5, "max_x": 1.5}),
    hide_index=True, disabled=["channel", "last_weeks"], key="mmm_bounds",
    column_config={"min_x": st.column_config.NumberColumn("min (x last)", min_value=0.0, step=0.1),
                   "max_x": st.column_config.NumberColumn("max (x last)", min_value=0.0, step=0.1)})
try:
    plan = optimize(post, float(budget), int(weeks), spend,
                    lower={r.channel: Bound(float(r.min_x), True) for r in bounds.itertuples()},
                    upper={r.channel: Bound(float(r.max_x), True) for r in bounds.itertuples()}, hold=held)
except InfeasibleBounds as err:
    st.error("These bounds cannot all hold: " + "; ".join(err.conflicts), icon=":material/block:")
else:
    cols = st.columns(4)
    cols[0].metric("Expected media revenue", f"{plan.expected_revenue:,.0f}",
                   delta=f"{plan.gain:+,.0f} vs current mix", border=True)
    cols[1].metric("Gain, 90% interval", f"{plan.gain_low:,.0f} to {plan.gain_high:,.0f}", border=True)
    cols[2].metric("Beats the current mix in", f"{plan.prob_better:.0%} of draws", border=True)
    cols[3].metric("Plan ROI", f"{plan.roi:.2f}", border=True)
    if plan.held:
        st.caption(f"Held within {HOLD_BAND:.0%} of current spend (ROI not identifiable): " + ", ".join(plan.held))
    st.dataframe(plan.per_channel, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.2f")
                                for c in ("current", "recommended", "change", "min", "max", "expected_revenue")})
