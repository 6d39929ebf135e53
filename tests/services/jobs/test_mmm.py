"""End to end on the event path: ``generate --marketing`` -> ingest -> ``mmm fit`` (revenue from the
lake) -> ``mmm report --json`` / ``mmm optimize``; plus the Spark revenue series against pandas.

Small on purpose (1,500 users over eight months, a short sampler run): recovery of the ROIs is proven
on a truth-level series in tests/model/test_mmm_recovery.py.
"""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from etl.generate import generate
from etl.media_plan import CHANNELS
from etl.mmm import daily_revenue
from model.mmm import FitConfig
from services.cli import app
from services.core.catalog import MMM_MODEL
from services.core.spark import read_run_dataset
from services.jobs.ingest import ingest_files
from services.jobs.mmm import fit_mmm

pytestmark = [pytest.mark.spark, pytest.mark.slow]
runner = CliRunner()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    generate(out, users=1500, start=date(2021, 1, 4), months=8, seed=3, marketing=True)
    return out


def test_generate_marketing_writes_spend_and_truth(generated):
    spend = pd.read_csv(generated / "spend.csv")
    assert list(spend.columns) == ["date", "channel", "spend", "impressions"]
    assert set(spend.channel) == set(CHANNELS)
    assert not spend.duplicated(["date", "channel"]).any() and (spend.spend >= 0).all()
    truth = json.loads((generated / "_truth" / "mmm.json").read_text())
    by = {c["channel"]: c for c in truth["channels"]}
    assert set(by) == set(CHANNELS)
    for c in truth["channels"]:
        assert c["spend"] == pytest.approx(spend.loc[spend.channel == c["channel"], "spend"].sum(), rel=1e-3)
        assert c["roi"] == pytest.approx(c["contribution"] / c["spend"], rel=1e-4)
        assert {"alpha", "l_max"} <= set(c["adstock"]) and {"lam", "beta"} <= set(c["saturation"])
    # revenue in the truth is the sum of purchase prices in the files
    frames = [pd.read_csv(f, usecols=["event_type", "price"]) for f in sorted(generated.glob("*.csv.gz"))]
    events = pd.concat(frames)
    assert truth["revenue"] == pytest.approx(events.loc[events.event_type == "purchase", "price"].sum(), rel=1e-6)


def test_marketing_truth_is_the_expected_counterfactual(generated):
    """Each channel's contribution in ``_truth/mmm.json`` is the expected revenue with its spend minus
    without it, given the users. Checked independently of ``etl.media_plan.SessionResponse``: the users
    redrawn from the seed, the generator's own ``_intensity`` with the channel dark, the expected clipped
    session count summed over the Poisson probabilities (not the closed form), whole-window totals per
    user (not per day), and revenue per session by persona read from the files and ``_truth/users.csv``."""
    from dataclasses import replace

    from scipy import stats

    from etl import generate as g
    from etl import media_plan
    from etl.personas import PERSONA_NAMES, PERSONAS
    from etl.taxonomy import build_catalogue

    seed, users = 3, 1500
    cal = g._calendar(date(2021, 1, 4), 8)
    effect = media_plan.event_plan(cal.days, seed)[4]
    people = g._draw_users(np.random.default_rng([seed, 1]), users, cal, build_catalogue(np.random.default_rng([seed, 0])))

    truth_users = pd.read_csv(generated / "_truth" / "users.csv")
    assert len(truth_users) == users  # every user has a session, so revenue per session covers them all
    events = pd.concat(pd.read_csv(f, usecols=["event_type", "price", "user_id"]) for f in sorted(generated.glob("*.csv.gz")))
    bought = events[events.event_type == "purchase"].groupby("user_id")["price"].sum()
    by_persona = truth_users.assign(revenue=truth_users.user_id.map(bought).fillna(0.0)).groupby("persona")[
        ["revenue", "n_sessions"]].sum()
    per_session = (by_persona.revenue / by_persona.n_sessions).reindex(PERSONA_NAMES).to_numpy()

    p = people.persona
    rate = np.array([q.sessions_per_month for q in PERSONAS])[p] / 30.0 * people.activity
    counts = np.arange(1000)
    clipped = np.clip(counts, 1, 400)

    def expected_revenue(on: np.ndarray) -> float:
        inten = g._intensity(replace(cal, media=(effect * on).sum(axis=1)))
        span = np.array([inten[p[u], people.first_day[u]:people.last_day[u] + 1].sum() for u in range(users)])
        sessions = (stats.poisson.pmf(counts[None, :], (rate * span)[:, None]) * clipped).sum(axis=1)
        sessions[p == PERSONA_NAMES.index("one_time_buyer")] = 1.35
        return float((per_session[p] * sessions).sum())

    doc = json.loads((generated / "_truth" / "mmm.json").read_text())
    weekly = pd.DataFrame(doc["weekly_contributions"])
    full = expected_revenue(np.ones(len(CHANNELS)))
    for c, ch in enumerate(doc["channels"]):
        dark = expected_revenue(1.0 - np.eye(len(CHANNELS))[c])
        assert ch["contribution"] > 0
        assert ch["contribution"] == pytest.approx(full - dark, rel=1e-6), ch["channel"]
        assert weekly[ch["channel"]].sum() == pytest.approx(ch["contribution"], rel=1e-6)


@pytest.fixture(scope="module")
def fitted_lake(spark, generated, tmp_path_factory):
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from tests.conftest import TEST_KEY

    root = tmp_path_factory.mktemp("mmmlake")
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=TEST_KEY, spark_master="local[2]")
    lake = open_lake(settings)
    summary = ingest_files(spark, lake, sorted(generated.glob("*.csv.gz")), TEST_KEY.encode())
    assert summary["status"] == "committed"
    # one lift test on search (plumbing: what calibration does to accuracy is tested on truths in
    # tests/model/test_mmm_recovery.py), plus a row for a channel the model does not have
    lifts = root / "lifts.csv"
    pd.DataFrame({"channel": ["search", "tv"], "start": ["2021-03-01", "2021-03-01"], "end": ["2021-03-28"] * 2,
                  "spend_change": [8000.0, 100.0], "revenue_change": [12000.0, 1.0],
                  "revenue_change_se": [3000.0, 1.0]}).to_csv(lifts, index=False)
    result = fit_mmm(lake, generated / "spend.csv", spark=lambda: spark,
                     config=FitConfig(draws=200, tune=300, seed=1), cv_folds=1, cv_horizon=4, lift_tests=lifts)
    return settings, lake, result


def test_lake_revenue_equals_pandas_on_the_files(spark, fitted_lake, generated):
    _, lake, _ = fitted_lake
    ours = daily_revenue(read_run_dataset(spark, lake, "events")).toPandas()
    raw = pd.concat(pd.read_csv(f, usecols=["event_time", "event_type", "price"]) for f in generated.glob("*.csv.gz"))
    raw = raw[raw.event_type == "purchase"]
    expected = raw.groupby(raw.event_time.str[:10])["price"].sum()
    got = ours.set_index(ours["date"].astype(str))["revenue"]
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False, rtol=1e-9)


def test_fit_publishes_a_version_with_everything_report_and_optimize_need(fitted_lake):
    settings, lake, result = fitted_lake
    version = lake.current_version(MMM_MODEL)
    assert version == result["version"]
    root = Path(settings.lake) / MMM_MODEL / version
    for name in ("draws.parquet", "channels.parquet", "contributions.parquet", "curves.parquet", "adstock.parquet",
                 "history.parquet", "fit.parquet", "cv.parquet", "trust.parquet", "model.json", "report.md",
                 "report.html", "report.json"):
        assert (root / name).exists(), name
    # the lift test, in weekly units (four weeks), and the rejected row with its reason
    assert result["lift_tests"] == [{"channel": "search", "x": pytest.approx(result["lift_tests"][0]["x"]),
                                     "delta_x": pytest.approx(2000.0), "delta_y": pytest.approx(3000.0),
                                     "sigma": pytest.approx(750.0), "week": "2021-03-15"}]  # mid-test week
    assert {"source": "lift_tests", "reason": "unknown_channel", "count": 1}.items() <= \
        next(i for i in result["data"]["row_issues"] if i["source"] == "lift_tests").items()
    trust = pd.read_parquet(root / "trust.parquet").set_index("channel")
    held = sorted(trust.index[~trust["identifiable"]])
    assert sorted(result["recommendation"]["held"]) == held  # the default plan's 0.5x-1.5x bounds hold the band
    for c in result["channels"]:
        assert c["identifiable"] == bool(trust.loc[c["channel"], "identifiable"])
    assert 0.0 <= result["recommendation"]["prob_better"] <= 1.0
    assert len(pd.read_parquet(root / "draws.parquet")) <= 500
    assert result["data"]["kpi_source"] == "lake purchases"
    assert any("partial week" in w for w in result["warnings"]) or result["data"]["weeks"] >= 26


def test_report_json_and_optimize_through_the_cli(fitted_lake, monkeypatch):
    settings, _, _ = fitted_lake
    from services.core.settings import get_settings
    from tests.conftest import TEST_KEY

    monkeypatch.setenv("SHOPLENS_LAKE", settings.lake)
    monkeypatch.setenv("SHOPLENS_WORK_DIR", str(settings.work_dir))
    monkeypatch.setenv("SHOPLENS_PSEUDONYM_KEY", TEST_KEY)
    get_settings.cache_clear()
    out = runner.invoke(app, ["mmm", "report", "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert {c["channel"] for c in doc["channels"]} <= set(CHANNELS)
    for c in doc["channels"]:
        assert {"channel", "spend", "contribution", "roi", "roi_low", "roi_high", "mroi", "identifiable",
                "prior_overlap", "max_spend_corr", "spend_cv", "reasons"} <= set(c)
        assert c["roi_low"] <= c["roi"] <= c["roi_high"]
    text = runner.invoke(app, ["mmm", "report"], catch_exceptions=False).stdout
    for c in doc["channels"]:
        assert (f"WARNING: {c['channel']}: ROI not identifiable" in text) == (not c["identifiable"])
    assert doc["fit"]["mape"] is not None and doc["fit"]["nrmse"] is not None

    out = runner.invoke(app, ["mmm", "optimize", "--budget", "20000", "--weeks", "4", "--min", "search=3000",
                              "--max", "social=1.0x", "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    plan = json.loads(out.stdout.strip().splitlines()[-1])
    assert sum(plan["totals"].values()) == pytest.approx(20000.0)
    assert plan["totals"]["search"] >= 3000.0
    assert plan["totals"]["social"] <= plan["bounds"]["social"][1]
    bad = runner.invoke(app, ["mmm", "optimize", "--budget", "100", "--min", "search=3000"])
    assert isinstance(bad.exception, ValueError)  # main() turns it into "shoplens: error: ..." and exit 1
    assert str(bad.exception) == "bounds conflict: sum of minimums 3,000.00 > budget 100.00"
    get_settings.cache_clear()


def test_spend_file_problems_are_errors_or_reported(fitted_lake, tmp_path, generated):
    _, lake, _ = fitted_lake
    short = tmp_path / "short.csv"
    pd.read_csv(generated / "spend.csv").head(6 * 70).to_csv(short, index=False)  # ten weeks
    kpi = tmp_path / "kpi.csv"
    pd.DataFrame({"date": pd.date_range("2021-01-04", periods=80), "revenue": 100.0}).to_csv(kpi, index=False)
    with pytest.raises(ValueError, match="at least 26"):
        fit_mmm(lake, short, kpi, cv_folds=0)
    with gzip.open(tmp_path / "x.gz", "wt"):
        pass
    with pytest.raises(FileNotFoundError):
        fit_mmm(lake, tmp_path / "missing.csv", kpi)
