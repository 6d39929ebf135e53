"""Inputs, posterior arithmetic and the budget optimizer, on a synthetic posterior (no sampling)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from etl.media_plan import CHANNELS, long_spend, spend_plan, week_starts
from model.mmm import Geometric, InputError, Logistic, Posterior, clean_kpi, clean_spend, prepare
from model.mmm.optimizer import Bound, InfeasibleBounds, optimize
from model.mmm.validation import mape, nrmse


def synthetic_posterior(n_draws: int = 50, seed: int = 1) -> Posterior:
    rng = np.random.default_rng(seed)
    c = 3
    params = {
        "adstock_alpha": rng.uniform(0.2, 0.6, (n_draws, c)),
        "saturation_lam": rng.uniform(1.0, 3.0, (n_draws, c)),
        "saturation_beta": rng.uniform(0.05, 0.2, (n_draws, c)),
        "intercept": rng.normal(0.5, 0.01, n_draws),
        "sigma": np.full(n_draws, 0.02),
        "gamma_control": rng.normal(0.05, 0.01, (n_draws, 1)),
        "gamma_fourier": rng.normal(0.0, 0.01, (n_draws, 2)),
    }
    return Posterior(["a", "b", "c"], Geometric(l_max=6), Logistic(), np.array([1000.0, 500.0, 2000.0]),
                     100_000.0, params, ["trend"], 1, pd.Timestamp("2022-01-03"), 104.0)


@pytest.fixture(scope="module")
def post() -> Posterior:
    return synthetic_posterior()


@pytest.fixture(scope="module")
def history() -> np.ndarray:
    return np.random.default_rng(2).uniform(200, 1500, (30, 3))


# ------------------------------------------------------------------------------------------ inputs
def test_bad_spend_rows_are_reported_with_reason_and_count():
    rows = pd.DataFrame({"date": ["2022-01-03", "nope", "2022-01-03", "2022-01-10", "2022-01-10", "2022-01-17", ""],
                         "channel": ["search", "search", "search", "search", "social", "", "search"],
                         "spend": ["10", "5", "7", "-3", "abc", "4", "1"]}).astype(str)
    clean, issues = clean_spend(rows)
    counts = {i.reason: i.count for i in issues}
    assert counts == {"bad_date": 2, "missing_channel": 1, "bad_spend": 1, "negative_spend": 1,
                      "repeated_date_channel": 1}
    assert clean.to_dict(orient="list")["spend"] == [10.0]
    assert sum(counts.values()) + len(clean) == len(rows)


def _weekly_inputs(weeks: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    idx = week_starts(pd.Timestamp("2022-01-03").date(), weeks)
    spend = long_spend(idx, spend_plan(idx, 0))
    kpi = pd.DataFrame({"date": idx, "revenue": np.linspace(1e5, 1.2e5, weeks)})
    return spend, kpi


def test_gaps_never_spending_and_constant_channels_are_flagged_not_silently_filled():
    spend, kpi = _weekly_inputs()
    spend.loc[spend.channel == "email", "spend"] = 0.0
    spend.loc[spend.channel == "display", "spend"] = 100.0
    drop = spend[(spend.channel == "search")].index[[5, 6]]
    spend = spend.drop(index=drop)
    clean, _ = clean_spend(spend)
    rev, _ = clean_kpi(kpi)
    data = prepare(clean, rev)
    assert "email" not in data.channels and "never spends" in data.excluded_channels["email"]
    assert "display" not in data.channels and "constant" in data.excluded_channels["display"]
    gap = [w for w in data.warnings if w.startswith("spend: search has no rows for 2 week(s)")]
    assert gap and "zero spend" in gap[0]
    assert set(data.channels) == set(CHANNELS) - {"email", "display"}


def test_fewer_than_26_weeks_is_a_clear_error():
    spend, kpi = _weekly_inputs(20)
    with pytest.raises(InputError, match=r"only 20 complete weeks.*at least 26"):
        prepare(clean_spend(spend)[0], clean_kpi(kpi)[0])


def test_daily_inputs_make_complete_weeks_and_drop_partial_ones():
    days = pd.date_range("2022-01-05", "2022-08-31", freq="D")  # starts on a Wednesday
    spend = pd.DataFrame({"date": days, "channel": "search", "spend": np.arange(len(days)) % 9 + 1.0})
    kpi = pd.DataFrame({"date": days, "revenue": 1000.0})
    data = prepare(spend, kpi)
    assert data.dates[0] == pd.Timestamp("2022-01-10") and data.dates.weekday.unique().tolist() == [0]
    assert any("partial week" in w for w in data.warnings)
    np.testing.assert_allclose(data.revenue, 7000.0)
    assert data.spend[0, 0] == spend.set_index("date").loc["2022-01-10":"2022-01-16", "spend"].sum()


# --------------------------------------------------------------------------------------- posterior
def test_media_is_beta_times_logistic_of_normalized_geometric_adstock(post, history):
    d = 3
    p = {k: v[d] for k, v in post.params.items()}
    x = history / post.channel_scale
    w = p["adstock_alpha"] ** np.arange(6)[:, None]
    w = w / w.sum(axis=0)
    ad = np.array([[sum(w[lag, c] * x[t - lag, c] for lag in range(min(6, t + 1))) for c in range(3)]
                   for t in range(len(x))])
    expected = p["saturation_beta"] * (1 - np.exp(-p["saturation_lam"] * ad)) / (1 + np.exp(-p["saturation_lam"] * ad))
    np.testing.assert_allclose(post.media(history)[d], expected * post.target_scale)


def test_history_carries_over_and_gradient_matches_finite_differences(post, history):
    future = np.full((4, 3), 800.0)
    with_carry = post.media(future, history[-6:])
    assert (with_carry.sum() > post.media(future).sum())
    total, grad = post.media_gradient(future, history[-6:], tail=6)
    h = 1e-3
    for t, c in [(0, 0), (2, 1), (3, 2)]:
        bumped = future.copy()
        bumped[t, c] += h
        up, _ = post.media_gradient(bumped, history[-6:], tail=6)
        np.testing.assert_allclose(grad[:, t, c], (up - total) / h, rtol=1e-4)


def test_roundtrip_through_the_draws_table(post, history):
    back = Posterior.from_frame(post.draws_frame(), post.meta())
    np.testing.assert_allclose(back.media(history), post.media(history))
    dates = pd.date_range("2022-01-03", periods=30, freq="W-MON")
    np.testing.assert_allclose(back.predict(dates, history)["mu"], post.predict(dates, history)["mu"])


def test_the_customer_base_level_scales_media_and_base_and_is_held_after_the_fitted_weeks(post, history):
    """The level ``exp(k1 tau + k2 tau^2)`` (model.mmm.fit.customer_base_level), computed by hand here."""
    kappa = np.random.default_rng(3).normal([-1.0, 0.4], 0.1, (post.n_draws, 2))
    leveled = Posterior(**{**post.__dict__, "params": {**post.params, "level": kappa}, "level_order": 2})
    dates = pd.date_range("2022-01-03", periods=30, freq="W-MON")
    tau = np.arange(30) / 104.0  # fitted on 104 weeks
    level = np.exp(kappa[:, :1] * tau + kappa[:, 1:] * tau**2)  # (D, T)
    last = np.exp(kappa[:, :1] * 103 / 104 + kappa[:, 1:] * (103 / 104) ** 2)  # the last fitted week's
    np.testing.assert_allclose(leveled.level(dates), level)
    np.testing.assert_allclose(leveled.media(history), post.media(history) * level[:, :, None])
    base, flat = leveled.base(dates), post.base(dates)
    np.testing.assert_allclose(base["intercept"], flat["intercept"] * level)
    np.testing.assert_allclose(leveled.predict(dates, history)["mu"], post.predict(dates, history)["mu"] * level)
    # plans (start = the week after the fitted ones) meet the last fitted level, not an extrapolated trend
    later = pd.date_range(leveled.next_week, periods=8, freq="W-MON")
    np.testing.assert_allclose(leveled.level(later), np.repeat(last, 8, axis=1))
    future = np.full((4, 3), 800.0)
    np.testing.assert_allclose(leveled.media(future, history[-6:], start=leveled.next_week),
                               post.media(future, history[-6:]) * last[:, :, None])
    total, grad = leveled.media_gradient(future, history[-6:], tail=6, start=leveled.next_week)
    flat_total, flat_grad = post.media_gradient(future, history[-6:], tail=6)
    np.testing.assert_allclose(total, flat_total * last[:, 0])
    np.testing.assert_allclose(grad, flat_grad * last[:, :, None])
    back = Posterior.from_frame(leveled.draws_frame(), leveled.meta())
    np.testing.assert_allclose(back.media(history), leveled.media(history))


def test_metrics():
    y, yhat = np.array([100.0, 200.0, 300.0]), np.array([110.0, 180.0, 300.0])
    assert mape(y, yhat) == pytest.approx((0.1 + 0.1 + 0) / 3)
    assert nrmse(y, yhat) == pytest.approx(np.sqrt((100 + 400) / 3) / 200)


# --------------------------------------------------------------------------------------- optimizer
@pytest.mark.parametrize("pattern", ["flat", "free"])
def test_every_bound_holds_exactly_and_the_budget_is_spent(post, history, pattern):
    lower = {"a": Bound(1500.0), "b": Bound(0.8, relative=True)}
    upper = {"a": Bound(2500.0), "c": Bound(1.1, relative=True)}
    plan = optimize(post, 9000.0, 6, history, lower=lower, upper=upper, pattern=pattern)
    last = history[-6:].sum(axis=0)
    totals = np.array([plan.totals[c] for c in "abc"])
    lo = np.array([1500.0, 0.8 * last[1], 0.0])
    hi = np.array([2500.0, 9000.0, 1.1 * last[2]])
    assert (totals >= lo).all() and (totals <= hi).all()
    assert totals.sum() == pytest.approx(9000.0, rel=1e-9)
    np.testing.assert_allclose(plan.weekly.sum(axis=0).to_numpy(), totals)
    assert (plan.weekly.to_numpy() >= 0).all()
    assert plan.gain_low <= plan.gain <= plan.gain_high


def test_the_optimum_beats_every_grid_point_of_the_feasible_set(post, history):
    budget, weeks = 6000.0, 4
    plan = optimize(post, budget, weeks, history, draws=50)
    mean = post.subset(50)
    carry = history[-6:]

    def value(t: np.ndarray) -> float:
        x = np.vstack([np.repeat((t / weeks)[None], weeks, axis=0), np.zeros((6, 3))])
        return float(mean.media(x, carry).sum(axis=(1, 2)).mean())

    best = value(np.array([plan.totals[c] for c in "abc"]))
    steps = np.linspace(0, 1, 21)
    for a, b in itertools.product(steps, steps):
        if a + b <= 1:
            assert value(budget * np.array([a, b, 1 - a - b])) <= best + 1e-6 * best
    assert plan.gain >= -1e-6


def test_conflicting_bounds_name_the_conflict(post, history):
    with pytest.raises(InfeasibleBounds) as err:
        optimize(post, 1000.0, 4, history, lower={"a": Bound(800.0), "b": Bound(400.0)})
    assert err.value.conflicts == ["sum of minimums 1,200.00 > budget 1,000.00"]
    with pytest.raises(InfeasibleBounds, match=r"sum of maximums 600.00 < budget 1,000.00"):
        optimize(post, 1000.0, 4, history, upper={c: Bound(200.0) for c in "abc"})
    with pytest.raises(InfeasibleBounds, match=r"a: minimum 500.00 > maximum 100.00"):
        optimize(post, 1000.0, 4, history, lower={"a": Bound(500.0)}, upper={"a": Bound(100.0)})
    with pytest.raises(ValueError, match="unknown channel"):
        optimize(post, 1000.0, 4, history, lower={"tv": Bound(1.0)})


def test_target_roi_spends_no_more_than_pays_back(post, history):
    plan = optimize(post, 50_000.0, 4, history, target_roi=2.0)
    assert sum(plan.totals.values()) <= 50_000.0 + 1e-6
    assert plan.roi >= 2.0 - 1e-3
    assert Bound.parse("1.2x") == Bound(1.2, True) and Bound.parse("80%") == Bound(0.8, True)
