"""Purchase propensity: ROC and PR curves of both models, the confusion matrix with a capacity slider,
calibration, decile lift, and the mean propensity per segment. Reads only the small views published
with the model and the scores' pointer; never per-user rows."""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, propensity_charts, ui
from services.core.catalog import PROPENSITY, PROPENSITY_MODEL

st.title("Purchase propensity")
ctx = ui.context()
version = ctx.ptr.version(PROPENSITY_MODEL)
if version is None:
    st.info("**No propensity model yet.** Train one with `shoplens propensity train` (the pipeline trains it "
            "by itself once the lake holds a few weeks of events).", icon=":material/info:")  # fmt: skip
    st.stop()

with ui.guarded(ctx):
    doc = data.document(ctx.uri, PROPENSITY_MODEL, version, "metrics.json")
    views = {n: data.view(ctx.uri, PROPENSITY_MODEL, version, f"views/{n}")
             for n in ("roc", "pr", "grid", "calibration", "deciles", "importance")}  # fmt: skip
models = doc.get("models") or {}
shipped = doc.get("shipped")
st.markdown(
    f"Who buys in the **{doc.get('horizon_days', 7)} days** after a cutoff. Validated on the cutoff of "
    f"**{str(doc.get('validation_cutoff', '–'))[:10]}** (the latest whose label window is complete), trained on the "
    f"weeks before it. Shipped model: **{shipped}** (higher validation ROC AUC)."
)
cols = st.columns(len(models) + 1)
for col, (kind, m) in zip(cols, models.items(), strict=False):
    col.metric(f"{kind} ROC AUC", charts.fmt_num(m.get("roc_auc"), 3), border=True,
               help=f"PR AUC {charts.fmt_num(m.get('pr_auc'), 3)}, ECE {charts.fmt_num(m.get('ece'), 4)}, "
               f"log loss {charts.fmt_num(m.get('log_loss'), 3)}, Brier {charts.fmt_num(m.get('brier'), 4)}.")  # fmt: skip
first = next(iter(models.values()), {})
cols[-1].metric("Base rate", charts.fmt_pct(first.get("base_rate"), 1), border=True,
                help="Share of users at the validation cutoff who bought within the horizon.")  # fmt: skip

left, right = st.columns(2)
left.plotly_chart(propensity_charts.curve(views["roc"], "ROC curve", "false positive rate", "true positive rate", True),
                  width="stretch")  # fmt: skip
right.plotly_chart(propensity_charts.curve(views["pr"], "Precision–recall", "recall", "precision", False,
                                           first.get("base_rate")), width="stretch")  # fmt: skip

st.subheader("Confusion matrix")
kinds = list(models)
kind = st.segmented_control("Model", kinds, default=shipped if shipped in kinds else kinds[0], key="propensity_model")
share = st.slider("Audience: top share of users targeted", 1, 100, round(100 * doc.get("capacity", 0.1)),
                  format="%d%%", key="propensity_share")  # fmt: skip
row = propensity_charts.grid_row(views["grid"], kind or kinds[0], share / 100)
if row is not None:
    c = st.columns(4)
    c[0].metric("Audience", charts.fmt_int(row["targeted"]), border=True, help="Users at or above the threshold.")
    c[1].metric("Precision", charts.fmt_pct(row["precision"], 1), border=True, help="Of the targeted, share who bought.")
    c[2].metric("Recall", charts.fmt_pct(row["recall"], 1), border=True, help="Of the buyers, share who were targeted.")
    c[3].metric("Threshold", charts.fmt_num(row["threshold"], 4), border=True)
    st.plotly_chart(propensity_charts.confusion(row), width="stretch")

left, right = st.columns(2)
left.plotly_chart(propensity_charts.calibration(views["calibration"]), width="stretch")
right.plotly_chart(propensity_charts.lift(views["deciles"]), width="stretch")

st.subheader("Mean propensity per segment")
scores = ctx.ptr.docs.get(PROPENSITY) or {}
seg = pd.DataFrame(scores.get("by_segment") or [])
if seg.empty:
    st.info("No scored segments yet: run `shoplens score` and `shoplens propensity score`.", icon=":material/info:")
else:
    st.plotly_chart(propensity_charts.by_segment(seg), width="stretch")
with st.expander("Feature importance"):
    st.plotly_chart(propensity_charts.importance(views["importance"]), width="stretch")
st.caption(f"Model {version} · scores as of {charts.fmt_time(scores.get('as_of'))} · "
           f"{charts.fmt_int(scores.get('n_users'))} users scored")  # fmt: skip
