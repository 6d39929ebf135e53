"""The Lifetime value page: AppTest on the fixture lake's contract-shaped clv version; what it shows is
recomputed from the fixture's customers table with pandas."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard.charts import fmt_int, fmt_money
from services.core.catalog import CLV
from tests.dashboard.fixtures import open_page_without


def test_without_values_the_page_says_what_to_run(use_lake, fixture_lake, tmp_path):
    at = open_page_without(CLV, "lifetime_value", fixture_lake.root, tmp_path, use_lake)
    assert any("No lifetime values yet" in i.value for i in at.info)


def test_metrics_charts_groups_and_top_customers(app, fixture_lake):
    at = app("lifetime_value")
    assert not at.error
    clv = fixture_lake.clv
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Customers"] == fmt_int(len(clv))
    assert metrics["Total lifetime value"] == fmt_money(clv["clv"].sum())
    assert metrics["Median lifetime value"] == fmt_money(clv["clv"].median())
    assert len(at.get("plotly_chart")) == 3  # distribution, value by segment, holdout
    groups, top = at.dataframe[0].value, at.dataframe[1].value
    want = clv.groupby("segment")["clv"].agg(["size", "sum"])
    got = groups.set_index("value")
    assert got["customers"].to_dict() == want["size"].to_dict()
    assert got["clv_sum"].to_dict() == pytest.approx(want["sum"].to_dict())
    assert top["user_key"].tolist() == clv.nlargest(20, "clv")["user_key"].tolist()
    assert not top["user_key"].isin(fixture_lake.raw_ids.values()).any()  # pseudonymized keys only


def test_the_breakdown_picker_shows_lifecycle_stages(app, fixture_lake):
    at = app("lifetime_value")
    at.segmented_control(key="clv_by").set_value("lifecycle_stage").run()
    assert not at.exception
    got = at.dataframe[0].value.set_index("value")["customers"]
    want = fixture_lake.clv.groupby("lifecycle_stage").size()
    assert got.to_dict() == want.to_dict()
    assert isinstance(got, pd.Series)
