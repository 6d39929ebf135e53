"""The Experiments page: AppTest smoke tests on the fixture lake, and its Spark-free analysis logic
checked against scipy/statsmodels computed from the raw rows."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize, proportions_ztest

from dashboard import experiments as ex
from model.experiments import AnalysisSettings
from services.core.lake import Lake
from services.core.storage import LocalStore
from tests.dashboard.fixtures import open_page
from tests.services.jobs.abtest_data import experiment_frame, with_bad_rows, write_experiment

TIGHT = {"rel": 1e-9, "abs": 1e-12}


@pytest.fixture(scope="module")
def upload(tmp_path_factory) -> tuple[bytes, pd.DataFrame, dict[str, int]]:
    clean = experiment_frame(6_000, seed=8, rate=0.12, conversion_lift=0.2)
    rows, bad = with_bad_rows(clean)
    path = write_experiment(tmp_path_factory.mktemp("upload") / "exp.csv", rows)
    return path.read_bytes(), clean.drop(index=1).reset_index(drop=True), bad  # row 1: a user in two variants


def test_an_upload_counts_bad_rows_per_reason_and_analyzes_the_rest(upload):
    payload, clean, bad = upload
    result = ex.analyze_upload(payload, "exp.csv")
    assert result.error is None
    doc = result.doc
    assert doc["rejected"] == bad
    assert doc["users"] == len(clean)
    assert [m["metric"] for m in doc["metrics"]] == ["purchased", "revenue"]
    assert doc["control"] == "control"
    counts = clean["variant"].value_counts()
    assert doc["srm"]["observed"] == {v: int(counts[v]) for v in ("control", "promo")}
    assert doc["srm"]["p_value"] == pytest.approx(stats.chisquare(counts[["control", "promo"]]).pvalue, **TIGHT)


def test_upload_lifts_and_p_values_equal_statsmodels_and_scipy_on_the_raw_rows(upload):
    payload, clean, _bad = upload
    doc = ex.analyze_upload(payload, "exp.csv", settings=AnalysisSettings(cuped=False)).doc
    arms = {v: g for v, g in clean.groupby("variant")}
    bought = {v: g["purchased"].astype(int) for v, g in arms.items()}
    purchased = doc["metrics"][0]["comparisons"][0]
    _z, p = proportions_ztest([bought["promo"].sum(), bought["control"].sum()], [len(bought["promo"]), len(bought["control"])])
    assert purchased["lift_abs"] == pytest.approx(bought["promo"].mean() - bought["control"].mean(), **TIGHT)
    assert purchased["p_value"] == pytest.approx(p, **TIGHT)
    revenue = {v: g["revenue"].astype(float) for v, g in arms.items()}
    welch = stats.ttest_ind(revenue["promo"], revenue["control"], equal_var=False)
    assert doc["metrics"][1]["comparisons"][0]["p_value"] == pytest.approx(welch.pvalue, **TIGHT)
    segs = {s["segment"] for s in doc["metrics"][0]["segments"]}
    assert segs == set(clean["segment"])


def test_degenerate_uploads_give_named_warnings_or_a_message_not_a_traceback(tmp_path):
    frame = experiment_frame(200, seed=1).assign(purchased="0")
    doc = ex.analyze_upload(write_experiment(tmp_path / "zero.csv", frame).read_bytes(), "zero.csv").doc
    assert "no_conversions" in doc["metrics"][0]["comparisons"][0]["warnings"]
    only_control = experiment_frame(50, seed=2).assign(variant="control")
    doc = ex.analyze_upload(write_experiment(tmp_path / "one.csv", only_control).read_bytes(), "one.csv").doc
    assert doc["srm"]["warnings"] == ["srm_not_testable"] and doc["metrics"][0]["comparisons"] == []
    assert "not an experiment file" in ex.analyze_upload(b"a,b\n1,2\n", "x.csv").error
    assert ex.analyze_upload(b"\x00\x01garbage", "x.parquet").error


def test_the_planning_calculator_equals_statsmodels():
    plan, curve = ex.plan("conversion", 0.05, 0.1, "relative", 0.05, 0.8, 1000, None)
    n = NormalIndPower().solve_power(proportion_effectsize(0.055, 0.05), alpha=0.05, power=0.8)
    assert plan.users_per_arm == int(np.ceil(n))
    assert plan.days == int(np.ceil(2 * plan.users_per_arm / 1000))
    at_needed = curve.loc[curve["Users per arm"] == plan.users_per_arm, "Power"].iloc[0]
    assert at_needed == pytest.approx(0.8, abs=1e-3)
    assert curve["Power"].is_monotonic_increasing


# ------------------------------------------------------------------------------------ AppTest
def test_the_page_opens_on_a_lake_without_experiments_and_plans(app):
    at = app("experiments")
    assert any("No published analysis yet" in i.value for i in at.info)
    labels = {m.label: m.value for m in at.metric}
    plan, _ = ex.plan("conversion", 0.05, 0.1, "relative", 0.05, 0.8, 1000, None)
    assert labels["Users per arm"] == f"{plan.users_per_arm:,}"
    assert len(at.get("plotly_chart")) == 1  # the power curve


@pytest.fixture
def lake_with_experiment(fixture_lake, tmp_path, upload):
    from services.jobs.abtest import publish_analysis

    root = tmp_path / "lake"
    shutil.copytree(fixture_lake.root, root)
    lake = Lake(LocalStore(root), tmp_path / "work")
    doc = ex.analyze_upload(upload[0], "exp.csv").doc
    doc = {**doc, "analyzed_at": "2024-03-09T00:00:00+00:00", "source": {"kind": "file", "file": "exp.csv", "window": None}}
    published = publish_analysis(lake, doc)
    return str(root), published


def test_a_published_analysis_shows_the_srm_verdict_first_then_lifts_and_segments(use_lake, lake_with_experiment):
    uri, published = lake_with_experiment
    use_lake(uri)
    at = open_page("experiments")
    assert at.selectbox(key="experiment_version").value == published["version"]
    assert at.success and at.success[0].value.startswith("Sample ratio OK")
    assert not at.error
    # per metric: the lift plot and the per-segment plot (2 metrics x 2) plus the planning curve
    assert len(at.get("plotly_chart")) == 5
    users = next(m.value for m in at.metric if m.label == "Users analyzed")
    assert users == f"{published['users']:,}"
