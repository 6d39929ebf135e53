"""An experiment analysed by ``shoplens abtest analyze`` with a channel and spend recorded is a lift test
that ``shoplens mmm fit --lift-tests`` reads as it is: the measured revenue change and its standard error
checked against pandas and scipy on the experiment file, then the weekly calibration row the fit gets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from model.mmm.data import InputError, MMMData, clean_lift_tests
from services.cli import app
from services.jobs.abtest import media_block
from services.jobs.mmm import read_lift_tests
from tests.services.jobs.abtest_data import experiment_frame, write_experiment

runner = CliRunner()


def analyze(*args: str) -> dict:
    result = runner.invoke(app, ["abtest", "analyze", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_abtest_result_with_channel_and_spend_is_a_lift_test_for_mmm_fit(cli_env, tmp_path):
    frame = experiment_frame(6_000, seed=11, variants=("control", "exposed"), conversion_lift=0.4)
    path = write_experiment(tmp_path / "search_boost.csv", frame)
    doc = analyze(str(path), "--metric", "revenue", "--no-cuped", "--channel", "Search", "--spend-change", "12000",
                  "--period", "2024-03-04:2024-03-17", "--out", str(tmp_path / "out"))
    assert doc["media"] == {"channel": "search", "spend_change": 12000.0, "start": "2024-03-04", "end": "2024-03-17"}

    lift = read_lift_tests(tmp_path / "out" / "result.json")
    revenue = frame.assign(revenue=frame["revenue"].astype(float)).groupby("variant")["revenue"]
    n, mean, var = revenue.size(), revenue.mean(), revenue.var(ddof=1)
    se = np.sqrt(var["control"] / n["control"] + var["exposed"] / n["exposed"])  # Welch's standard error
    assert stats.ttest_ind(*(g for _, g in revenue), equal_var=False).pvalue < 0.05  # a real lift to calibrate on
    assert lift.to_dict(orient="records") == [{
        "channel": "search", "start": "2024-03-04", "end": "2024-03-17", "spend_change": 12000.0,
        "revenue_change": pytest.approx((mean["exposed"] - mean["control"]) * n["exposed"], rel=1e-9),
        "revenue_change_se": pytest.approx(se * n["exposed"], rel=1e-9)}]

    weeks = pd.date_range("2024-01-01", periods=30, freq="W-MON")
    spend = np.column_stack([np.linspace(1000, 3000, 30), np.full(30, 500.0)])
    data = MMMData(weeks, ["search", "social"], spend, np.ones(30), pd.DataFrame(index=weeks))
    rows, issues = clean_lift_tests(lift, data)
    assert issues == []
    in_test = (weeks >= "2024-03-04") & (weeks <= "2024-03-17")
    assert rows.to_dict(orient="records") == [{
        "channel": "search", "x": pytest.approx(spend[in_test, 0].mean()), "delta_x": pytest.approx(6000.0),
        "delta_y": pytest.approx(lift.at[0, "revenue_change"] / 2), "sigma": pytest.approx(lift.at[0, "revenue_change_se"] / 2),
        "week": "2024-03-11"}]  # the second (middle) of the two test weeks


def test_a_result_without_media_or_with_half_the_options_is_refused(cli_env, tmp_path):
    path = write_experiment(tmp_path / "plain.csv", experiment_frame(800, seed=2))
    analyze(str(path), "--out", str(tmp_path / "out"))
    with pytest.raises(InputError, match="records no channel and spend"):
        read_lift_tests(tmp_path / "out" / "result.json")
    with pytest.raises(ValueError, match="go together"):
        media_block("search", None, "2024-03-04:2024-03-17")
    with pytest.raises(ValueError, match="START:END"):
        media_block("search", 100.0, "2024-03-17:2024-03-04")
