"""Funnel: where customers drop out (overall or by a breakdown), the weekly conversion trend, time to
convert, what drives conversion, and a step's drop-off audience as CSV. Reads only the published
funnel tables; the audience is read (filtered by step) when the button is clicked."""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, funnel_charts, ui
from model.segmentation import NOT_ENOUGH_NAME
from services.core.catalog import FUNNEL, SEGMENT_VIEWS

BREAKDOWN_LABELS = {"week": "Week of first step", "category_l1": "Category", "brand": "Brand",
                    "segment": "Segment", "cohort": "First-seen month"}  # fmt: skip

st.title("Funnel")
ctx = ui.context()
version = ctx.ptr.version(FUNNEL)
if version is None:
    st.info("**No funnel yet.** Build one with `shoplens funnel` (the pipeline builds the default view → cart → "
            "purchase funnel by itself after each ingestion).", icon=":material/info:")  # fmt: skip
    st.stop()

with ui.guarded(ctx):
    doc = data.document(ctx.uri, FUNNEL, version, "result.json")
    steps = data.view(ctx.uri, FUNNEL, version, "steps")
    breakdowns = data.view(ctx.uri, FUNNEL, version, "breakdowns")
    trend = data.view(ctx.uri, FUNNEL, version, "trend")
    hist = data.view(ctx.uri, FUNNEL, version, "histogram")
    ttc = data.view(ctx.uri, FUNNEL, version, "time_to_convert")
    drivers = data.view(ctx.uri, FUNNEL, version, "drivers")
    seg_views = ctx.ptr.version(SEGMENT_VIEWS)
    summary = data.view(ctx.uri, SEGMENT_VIEWS, seg_views, "segment_summary") if seg_views else pd.DataFrame()

labels = steps.sort_values("step")["label"].tolist()
window = doc.get("window_days")
st.markdown(
    f"**{' → '.join(labels)}** per **{doc.get('unit', 'user').replace('_', '-')}**, "
    f"{'in order' if doc.get('order') == 'ordered' else 'in any order'}, "
    + ("within one session." if window is None else f"within **{window:g} days** of the first step.")
)
with st.expander("Exactly what is counted"):
    st.markdown("\n".join(f"- {s}" for s in doc.get("semantics", [])))

counts = steps.sort_values("step")
cols = st.columns(len(counts))
for col, r in zip(cols, counts.itertuples(), strict=True):
    col.metric(r.label, charts.fmt_int(r.count), border=True,
               delta=None if r.step == 1 else f"{charts.fmt_pct(r.conversion_from_previous)} of previous",
               delta_color="off", help=f"{charts.fmt_pct(r.conversion_from_first)} of the first step; "
               f"{charts.fmt_int(r.dropoff)} dropped since the previous step.")  # fmt: skip

# -- the funnel, with a breakdown picker
available = [b for b in doc.get("breakdowns", []) if b in set(breakdowns.get("breakdown", pd.Series(dtype=str)))]
choice = st.segmented_control("Break down by", ["Overall", *available], default="Overall", key="funnel_by",
                              format_func=lambda b: BREAKDOWN_LABELS.get(b, b))  # fmt: skip
by = None if choice in (None, "Overall") else choice
part = breakdowns[breakdowns["breakdown"] == by] if by else None
colors = None
if by == "segment" and part is not None:
    names = sorted(part["value"].unique())
    colors = charts.color_map([n for n in names if n != NOT_ENOUGH_NAME], data.segment_colors(summary))
st.plotly_chart(funnel_charts.funnel(steps, part, colors), width="stretch")
if part is not None:
    last = len(labels)
    table = part.pivot_table(index="value", columns="step", values="count", aggfunc="sum").fillna(0)
    final = part[part["step"] == last].set_index("value")
    shown = pd.DataFrame({"value": table.index, "entered": table[1].astype(int).to_numpy(),
                          "reached": table[last].astype(int).to_numpy(),
                          "conversion": final["conversion_from_first"].reindex(table.index).to_numpy()})  # fmt: skip
    st.dataframe(shown.sort_values("entered", ascending=False), hide_index=True, width="stretch", column_config={
        "value": st.column_config.TextColumn(BREAKDOWN_LABELS.get(by, by)),
        "entered": st.column_config.NumberColumn(f"Units at {labels[0]}", format="localized"),
        "reached": st.column_config.NumberColumn(f"Reached {labels[-1]}", format="localized"),
        "conversion": st.column_config.ProgressColumn("Conversion", format="percent", min_value=0, max_value=1),
    })  # fmt: skip

# -- trend and time to convert
left, right = st.columns(2)
left.plotly_chart(funnel_charts.trend(trend, labels), width="stretch")
pairs = [(int(r.from_step), int(r.to_step)) for r in ttc.itertuples()]
with right:
    pair = st.selectbox("Time to convert", pairs, key="funnel_pair",
                        format_func=lambda p: f"{labels[p[0] - 1]} → {labels[p[1] - 1]}") if pairs else None  # fmt: skip
    if pair is not None:
        h = hist[(hist["from_step"] == pair[0]) & (hist["to_step"] == pair[1])]
        row = ttc[(ttc["from_step"] == pair[0]) & (ttc["to_step"] == pair[1])].iloc[0]
        st.plotly_chart(funnel_charts.histogram(h, f"{labels[pair[0] - 1]} → {labels[pair[1] - 1]}"), width="stretch")
        st.caption(f"Median {charts.fmt_num(row['median_seconds'] / 3600, 1)} h · quartiles "
                   f"{charts.fmt_num(row['p25_seconds'] / 3600, 1)}–{charts.fmt_num(row['p75_seconds'] / 3600, 1)} h · "
                   f"{charts.fmt_int(row['units'])} units")  # fmt: skip

# -- drivers
st.subheader("What drives conversion")
rule = doc.get("drivers_rule", {})
st.caption(f"Odds of going on to the next step with a value versus without it, with a {charts.fmt_pct(rule.get('confidence'), 0)} "
           f"interval; values with at least {rule.get('min_units', '–')} units on both sides; strongest first. "
           "Segment and lifecycle stage are the user's as of entering the funnel (\"new\": no earlier event).")  # fmt: skip
if drivers.empty:
    st.info("No attribute value has enough units on both sides yet.", icon=":material/info:")
else:
    k = st.selectbox("From step", sorted(drivers["step"].unique()), key="funnel_driver_step",
                     format_func=lambda s: f"{labels[s - 1]} → {labels[s]}")  # fmt: skip
    d = drivers[drivers["step"] == k].head(25).assign(
        interval=lambda x: [f"{charts.fmt_num(lo)}–{charts.fmt_num(hi)}" for lo, hi in zip(x["ci_low"], x["ci_high"], strict=True)])
    st.dataframe(d, hide_index=True, width="stretch",
                 column_order=["attribute", "value", "units", "conversion", "conversion_without", "odds_ratio", "interval"],
                 column_config={
                     "attribute": st.column_config.TextColumn("Attribute"), "value": st.column_config.TextColumn("Value"),
                     "units": st.column_config.NumberColumn("Units", format="localized"),
                     "conversion": st.column_config.NumberColumn("Conversion with", format="percent"),
                     "conversion_without": st.column_config.NumberColumn("Without", format="percent"),
                     "odds_ratio": st.column_config.NumberColumn("Odds ratio", format="%.2f"),
                     "interval": st.column_config.TextColumn("95% interval"),
                 })  # fmt: skip

# -- drop-off audience
st.subheader("Drop-off audience")
audiences = {a["step"]: a for a in doc.get("dropoff_audiences", [])}
if audiences:
    step = st.selectbox("Users who reached", list(audiences), key="funnel_dropoff_step",
                        format_func=lambda s: f"{labels[s - 1]} but not {labels[s]} · {audiences[s]['units']:,} units")  # fmt: skip
    st.download_button(
        "Download CSV", type="primary", icon=":material/download:",
        data=lambda: data.funnel_dropoffs_csv(ctx.uri, version, step),
        file_name=f"shoplens-funnel-{labels[step - 1]}-dropoffs-{version}.csv", mime="text/csv", on_click="ignore",
    )  # fmt: skip
    st.caption("Columns: user_key (pseudonymized), segment, reached_at. The file is built when you click; "
               "`shoplens export funnel-dropoffs --step <step>` writes the same audience.")  # fmt: skip
st.caption(f"Funnel {version} · computed {charts.fmt_time(doc.get('computed_at'))} · "
           f"{charts.fmt_int(doc.get('units'))} units entered")  # fmt: skip
