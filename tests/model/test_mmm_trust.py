"""How much to believe a channel (no sampling): prior-posterior overlap, spend correlation, the flag,
the optimizer holding flagged channels and its odds of beating the current mix, and lift-test rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from etl.media_plan import (
    CHANNELS,
    TRUTH,
    _adstock,
    _logistic,
    contributions,
    spend_plan,
    true_lift,
    week_starts,
)
from model.mmm import MMMData
from model.mmm.data import clean_lift_tests
from model.mmm.identifiability import LIMITS, channel_trust, prior_overlap, spend_correlations, spend_drift
from model.mmm.optimizer import HOLD_BAND, Bound, InfeasibleBounds, optimize
from tests.model.test_mmm_core import synthetic_posterior


def test_overlap_of_two_normals_on_log_roi_matches_the_closed_form():
    # OVL of N(m1, s) and N(m2, s) is 2 Phi(-|m1 - m2| / (2 s)) (Inman & Bradley 1989)
    mu, sigma = 0.2, 0.9
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.5, 1.5, 4.0):
        draws = np.exp(rng.normal(mu + shift, sigma, 40_000))
        assert prior_overlap(draws, mu, sigma) == pytest.approx(2 * stats.norm.cdf(-shift / (2 * sigma)), abs=0.03)


def test_spend_correlations_equal_numpy():
    spend = np.random.default_rng(1).lognormal(0, 0.5, (80, 4))
    expect = np.abs(np.corrcoef(spend.T))
    np.fill_diagonal(expect, 0)
    np.testing.assert_allclose(spend_correlations(spend), expect, atol=1e-12)


def test_two_channels_that_always_spend_together_are_flagged_and_the_third_is_not():
    post = synthetic_posterior(400)
    post.roi_prior = None  # the overlap needs the prior; the spend pattern alone decides here
    post.params["saturation_beta"] = np.random.default_rng(5).uniform(0.10, 0.11, (400, 3))  # precise ROIs
    rng = np.random.default_rng(4)
    a = rng.uniform(200, 1500, 60)
    spend = np.column_stack([a, 0.5 * a * rng.lognormal(0, 0.02, 60), rng.uniform(200, 1500, 60)])
    trust = channel_trust(post, spend).set_index("channel")
    assert not trust.loc["a", "identifiable"] and not trust.loc["b", "identifiable"]
    assert trust.loc["a", "most_correlated"] == "b" and trust.loc["a", "max_spend_corr"] > LIMITS["max_spend_corr"]
    assert "spend moves with b" in trust.loc["a", "reasons"]
    assert trust.loc["c", "identifiable"], trust.loc["c", "reasons"]
    flat = np.column_stack([a, np.full(60, 700.0) * rng.lognormal(0, 0.01, 60), spend[:, 2]])
    assert "barely varies" in channel_trust(post, flat).set_index("channel").loc["b", "reasons"]


def test_spend_drift_is_the_r2_of_a_cubic_in_time_and_flags_a_drifting_channel_only():
    rng = np.random.default_rng(8)
    walk = 1000 * np.exp(np.linspace(0, 1.5, 104) + rng.normal(0, 0.1, 104))  # a budget ramping up, weekly noise
    flights = np.where(np.arange(104) % 9 < 5, 1500.0, 0.0) * rng.lognormal(0, 0.15, 104)
    noisy = 800 * rng.lognormal(0, 0.25, 104)
    spend = np.column_stack([walk, flights, noisy])
    t = np.arange(104)
    expect = [1 - np.var(y - np.polyval(np.polyfit(t, y, 3), t)) / np.var(y) for y in spend.T]
    np.testing.assert_allclose(spend_drift(spend), expect, atol=1e-9)
    post = synthetic_posterior(400)
    post.roi_prior = None
    post.params["saturation_beta"] = np.random.default_rng(5).uniform(0.10, 0.11, (400, 3))  # precise ROIs
    trust = channel_trust(post, spend).set_index("channel")
    assert trust.loc["a", "spend_drift"] > LIMITS["spend_drift"] and "drifts slowly" in trust.loc["a", "reasons"]
    assert trust.loc["b", "identifiable"] and trust.loc["c", "identifiable"], trust[["reasons"]]


def test_a_held_channel_stays_within_the_band_of_its_current_spend():
    post = synthetic_posterior(200)
    history = np.random.default_rng(2).uniform(200, 1500, (30, 3))
    budget, weeks = 12_000.0, 6
    free = optimize(post, budget, weeks, history)
    last = history[-weeks:].sum(axis=0)
    current = dict(zip("abc", last * budget / last.sum(), strict=True))
    ch = max("abc", key=lambda c: abs(free.totals[c] / current[c] - 1))  # the channel the optimizer moves most
    assert abs(free.totals[ch] / current[ch] - 1) > HOLD_BAND  # else the test shows nothing
    held = optimize(post, budget, weeks, history, hold=[ch])
    assert abs(held.totals[ch] / current[ch] - 1) <= HOLD_BAND + 1e-9
    assert held.held == [ch] and sum(held.totals.values()) == pytest.approx(budget)
    # the user's own bounds, if they exclude the band, win and the channel is not held
    mine = optimize(post, budget, weeks, history, hold=[ch], upper={ch: Bound(0.5 * current[ch])})
    assert mine.held == [] and mine.totals[ch] <= 0.5 * current[ch] + 1e-6


def test_the_share_of_draws_where_the_plan_wins_is_computed_from_the_draws():
    post = synthetic_posterior(200)
    history = np.random.default_rng(2).uniform(200, 1500, (30, 3))
    plan = optimize(post, 12_000.0, 6, history, draws=200)
    # recompute each draw's gain independently from the plan's weekly spend
    tail = post.adstock.l_max
    carry = history[-tail:]
    last = history[-6:].sum(axis=0)
    cur = np.repeat((last * 12_000.0 / last.sum() / 6)[None], 6, axis=0)
    pad = np.zeros((tail, 3))
    gain = (post.media(np.vstack([plan.weekly.to_numpy(), pad]), carry).sum(axis=(1, 2))
            - post.media(np.vstack([cur, pad]), carry).sum(axis=(1, 2)))
    assert plan.prob_better == pytest.approx(np.mean(gain > 0))
    assert np.quantile(gain, 0.05) == pytest.approx(plan.gain_low, rel=1e-6)


def _weekly_data(seed: int = 5) -> tuple[MMMData, np.ndarray]:
    weeks = week_starts(pd.Timestamp("2022-01-03").date(), 60)
    spend = spend_plan(weeks, seed)
    data = MMMData(weeks, sorted(CHANNELS), spend[:, np.argsort(CHANNELS)], np.ones(60), pd.DataFrame(index=weeks))
    return data, spend


def test_lift_test_rows_become_weekly_calibration_rows_and_bad_rows_are_reported():
    data, _ = _weekly_data()
    rows = pd.DataFrame({
        "channel": ["Display", "tv", "email", "search", "social"],
        "start": [str(data.dates[10].date()), str(data.dates[10].date()), "not a date", "2030-01-07",
                  str(data.dates[5].date())],
        "end": [str((data.dates[13] + pd.Timedelta(days=6)).date()), "2022-04-01", "2022-04-01", "2030-02-03",
                str((data.dates[5] + pd.Timedelta(days=6)).date())],
        "spend_change": ["4000", "1", "1", "1", "10"], "revenue_change": ["6000", "1", "1", "1", "5"],
        "revenue_change_se": ["800", "1", "1", "1", "0"]})
    clean, issues = clean_lift_tests(rows, data)
    assert {i.reason: i.count for i in issues} == {"unknown_channel": 1, "bad_date": 1, "bad_standard_error": 1,
                                                    "outside_fitted_weeks": 1}
    assert clean.to_dict(orient="records") == [{
        "channel": "display", "x": pytest.approx(data.spend[10:14, data.channels.index("display")].mean()),
        "delta_x": pytest.approx(1000.0), "delta_y": pytest.approx(1500.0), "sigma": pytest.approx(200.0),
        "week": str(data.dates[12].date())}]  # the middle of the four test weeks


def test_true_lift_is_the_contribution_difference_at_the_plans_scale():
    weeks = week_starts(pd.Timestamp("2022-01-03").date(), 60)
    spend = spend_plan(weeks, 5)
    base, beta = contributions(spend)
    c = CHANNELS.index("social")
    for change in (0.5, -1.0):
        more = spend[:, c].copy()
        more[20:26] *= 1 + change
        x = more / spend[:, c].max()
        expect = (beta[c] * _logistic(_adstock(x, TRUTH[c].alpha), TRUTH[c].lam)).sum() - base[:, c].sum()
        d_spend, d_revenue = true_lift(spend, "social", 20, 6, change)
        assert d_spend == pytest.approx(change * spend[20:26, c].sum())
        assert d_revenue == pytest.approx(expect)
        assert 0 < d_revenue / d_spend < TRUTH[c].roi * 2


def test_bounds_that_only_clash_with_the_hold_say_so_and_the_users_own_clash_comes_first():
    post = synthetic_posterior(100)
    history = np.random.default_rng(2).uniform(200, 1500, (30, 3))
    with pytest.raises(InfeasibleBounds, match=r"sum of minimums .* > budget .*; with a, b held within 10%"):
        optimize(post, 12_000.0, 6, history, hold=["a", "b"], lower={"c": Bound(11_000.0)})
    with pytest.raises(InfeasibleBounds) as err:
        optimize(post, 100.0, 6, history, hold=["a", "b"], lower={"c": Bound(3000.0)})
    assert err.value.conflicts == ["sum of minimums 3,000.00 > budget 100.00"]
