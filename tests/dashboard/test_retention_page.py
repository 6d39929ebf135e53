"""The Retention page: AppTest on the fixture lake's retention version (counted by etl.retention from
drawn active days); the figures shown are recomputed from the fixture's table with pandas."""

from __future__ import annotations

from dashboard.charts import fmt_int, fmt_pct
from services.core.catalog import RETENTION
from tests.dashboard.fixtures import open_page_without


def test_without_retention_the_page_says_what_to_run(use_lake, fixture_lake, tmp_path):
    at = open_page_without(RETENTION, "retention", fixture_lake.root, tmp_path, use_lake)
    assert any("No retention yet" in i.value for i in at.info)


def test_overall_triangle_curves_and_metrics(app, fixture_lake):
    at = app("retention")
    assert not at.error
    table = fixture_lake.retention
    overall = table[table["breakdown"] == "overall"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cohorts"] == fmt_int(overall["cohort"].nunique())
    assert metrics["Users in cohorts"] == fmt_int(overall.loc[overall["period"] == 0, "size"].sum())
    p1 = overall[(overall["period"] == 1) & overall["complete"]]
    assert metrics["Returning in week 1"] == fmt_pct(p1["users"].sum() / p1["size"].sum())
    assert len(at.get("plotly_chart")) == 3  # triangle, retention curves, revenue curves


def test_the_breakdown_picker_filters_to_one_group(app, fixture_lake):
    at = app("retention")
    at.segmented_control(key="retention_by").set_value("segment").run()
    assert not at.exception
    table = fixture_lake.retention
    seg = table[(table["breakdown"] == "segment") & (table["period"] == 0)]
    biggest = seg.groupby("group")["size"].sum().sort_values(ascending=False)
    assert at.selectbox(key="retention_group").value == biggest.index[0]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Users in cohorts"] == fmt_int(biggest.iloc[0])
