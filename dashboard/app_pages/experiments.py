"""Experiments: a published A/B test analysis or an uploaded file; SRM verdict first, then the lifts."""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

import streamlit as st

from dashboard import data, ui, uploads
from dashboard import experiments as ex
from model.experiments import AnalysisSettings, srm_verdict
from services.core.catalog import EXPERIMENTS

st.title("Experiments")
st.caption("Did it work? Read an A/B test: sample ratio first, then lifts with their intervals, per segment.")

uri = data.lake_uri()
try:
    ptr: data.Pointers | None = data.pointers(uri)
except (data.LakeUnavailable, OSError) as err:
    ui.outage(err, uri)
    ptr = None

PCT = st.column_config.NumberColumn(format="%.2f%%")
P = st.column_config.NumberColumn(format="%.4f")


def show_analysis(doc: dict) -> None:
    level, verdict = srm_verdict(doc.get("srm"))
    {"bad": st.error, "warn": st.warning, "ok": st.success}[level](verdict, icon=":material/balance:")
    cols = st.columns(3)
    cols[0].metric("Users analyzed", f"{doc.get('users', 0):,}", border=True)
    cols[1].metric("Rows read", f"{doc.get('rows_read', 0):,}", border=True)
    cols[2].metric("Control", str(doc.get("control")), border=True)
    for warning in doc.get("warnings") or []:
        st.warning(f"Nothing to analyze: `{warning}`.", icon=":material/warning:")
    if doc.get("rejected"):
        with st.expander(f"Rejected rows: {sum(doc['rejected'].values()):,}", expanded=False):
            st.dataframe(ex.rejected_frame(doc), hide_index=True)
    for metric in doc.get("metrics") or []:
        name, kind = metric["metric"], metric["kind"]
        st.subheader(f"{name} ({'conversion' if kind == 'conversion' else 'mean'})")
        comps = metric["comparisons"]
        left, right = st.columns([2, 3])
        with left:
            st.dataframe(ex.variants_frame(metric), hide_index=True,
                         column_config={"Mean": PCT if kind == "conversion" else st.column_config.NumberColumn(format="%.4f")})  # fmt: skip
        with right:
            if comps:
                st.plotly_chart(ex.lift_intervals([c["variant"] for c in comps], comps, f"Lift vs {comps[0]['control']}"),
                                width="stretch", key=f"lift_{name}")  # fmt: skip
        config = {"Relative lift": PCT, "P(beat control)": PCT, "CUPED saved": PCT, "p-value": P, "Adjusted p": P}
        st.dataframe(ex.comparisons_frame(metric), hide_index=True, column_config=config)
        if metric.get("segments"):
            st.markdown("**Per segment** (adjusted across segments)")
            pairs = [(f"{s['segment']} · {c['variant']}", c) for s in metric["segments"] for c in s["comparisons"]]
            st.plotly_chart(ex.lift_intervals([p[0] for p in pairs], [p[1] for p in pairs], f"{name} by segment"),
                            width="stretch", key=f"segments_{name}")  # fmt: skip
            st.dataframe(ex.comparisons_frame(metric, segments=True), hide_index=True, column_config=config)
        if doc.get("sequential"):
            st.plotly_chart(ex.sequential_chart(doc["sequential"], name), width="stretch", key=f"seq_{name}")


tab_lake, tab_upload, tab_plan = st.tabs(["Published analyses", "Analyze a file", "Plan an experiment"])

with tab_lake:
    current = ptr.version(EXPERIMENTS) if ptr is not None else None
    versions = data.published_versions(uri, EXPERIMENTS, "result.json", current) if ptr is not None else []
    if not versions:
        st.info("**No published analysis yet.** Run `shoplens abtest analyze experiment.csv` (or upload a file "
                "in the next tab).", icon=":material/info:")  # fmt: skip
    else:
        version = st.selectbox("Analysis", versions, key="experiment_version",
                               help="Every `shoplens abtest analyze` run is a version; the newest first.")  # fmt: skip
        doc = data.document(uri, EXPERIMENTS, version, "result.json")
        st.caption(f"{doc.get('experiment')} · analyzed {doc.get('analyzed_at')} · source "
                   f"{(doc.get('source') or {}).get('kind')} `{(doc.get('source') or {}).get('file')}`")  # fmt: skip
        show_analysis(doc)

with tab_upload:
    st.write(f"Upload an experiment file (CSV or Parquet, one row per user: `user_id`, `variant`, metrics; "
             f"optional `segment`, `assigned_at`, `pre_<metric>`; at most {ex.MAX_UPLOAD_ROWS:,} rows). "
             "It is analyzed here with the same rules as the command and not stored; user ids are not kept.")  # fmt: skip
    upload = st.file_uploader("Experiment file", type=["csv", "parquet"], key="experiment_upload",
                              max_upload_size=uploads.EXPERIMENT_MAX_MB)  # fmt: skip
    c = st.columns(4)
    control = c[0].text_input("Control", value="", placeholder="first variant in the file", key="experiment_control")
    alpha = c[1].number_input("Alpha", 0.001, 0.2, 0.05, 0.005, format="%.3f", key="experiment_alpha")
    alternative = c[2].selectbox("Test", ["two-sided", "greater", "less"], key="experiment_alternative")
    correction = c[3].selectbox("Correction", ["holm", "fdr_bh"], key="experiment_correction",
                                format_func=lambda x: {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg"}[x])  # fmt: skip
    if upload is not None:
        settings = AnalysisSettings(alpha=alpha, alternative=alternative, correction=correction)
        with st.spinner("Analyzing…"):
            result = ex.analyze_upload(upload.getvalue(), upload.name, control=control.strip() or None, settings=settings)
        if result.error:
            st.warning(result.error, icon=":material/warning:")
        else:
            show_analysis(result.doc)

with tab_plan:
    c = st.columns(3)
    kind = c[0].radio("Metric", ["conversion", "mean"], horizontal=True, key="plan_kind",
                      format_func=lambda k: {"conversion": "Conversion rate", "mean": "Mean per user"}[k])  # fmt: skip
    if kind == "conversion":
        baseline = c[1].number_input("Baseline rate (%)", 0.01, 99.0, 5.0, 0.5, key="plan_baseline") / 100
        sd = None
    else:
        baseline = c[1].number_input("Baseline mean", 0.01, None, 20.0, key="plan_mean")
        sd = c[2].number_input("Standard deviation per user", 0.01, None, 40.0, key="plan_sd")
    c = st.columns(4)
    mde_kind = c[0].selectbox("Effect is", ["relative", "absolute"], key="plan_mde_kind")
    mde = c[1].number_input("Minimum detectable effect" + (" (%)" if mde_kind == "relative" else ""),
                            0.01, None, 10.0 if mde_kind == "relative" else 0.01, key="plan_mde")  # fmt: skip
    power = c[2].slider("Power", 0.5, 0.99, 0.8, 0.01, key="plan_power")
    daily = c[3].number_input("Users per day", 0, None, 1000, 100, key="plan_daily")
    plan_alpha = st.slider("Alpha", 0.001, 0.2, 0.05, 0.001, key="plan_alpha")
    effect = mde / 100 if mde_kind == "relative" else mde
    plan, curve = ex.plan(kind, baseline, effect, mde_kind, plan_alpha, power, daily or None, sd)
    if plan.users_per_arm is None:
        st.warning(f"No plan for this input: {', '.join(plan.warnings)}.", icon=":material/warning:")
    else:
        m = st.columns(3)
        m[0].metric("Users per arm", f"{plan.users_per_arm:,}", border=True)
        m[1].metric("Users in total", f"{plan.users_total:,}", border=True)
        m[2].metric("Days", "–" if plan.days is None else f"{plan.days:,}", border=True)
        left, right = st.columns([3, 2])
        left.plotly_chart(ex.power_chart(curve, power), width="stretch", key="plan_curve")
        right.dataframe(curve, hide_index=True, column_config={"Power": st.column_config.NumberColumn(format="percent")})
    st.caption("`shoplens abtest plan --from-lake --segment NAME` takes the baseline and the traffic from the lake.")
