"""Recovery: PyMC-Marketing fitted on two years of a known six-channel truth gets the ROIs back.

The series is generated at the truth level (:func:`etl.media_plan.weekly_truth`: base + known media
contributions + noise, weekly); the event-level path is exercised by tests/services/jobs/test_mmm.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from etl.media_plan import weekly_truth
from model.mmm import FitConfig, channel_summary, clean_kpi, clean_spend, fit, prepare

pytestmark = pytest.mark.slow
SEED = 0


@pytest.fixture(scope="module")
def fitted():
    truth = weekly_truth(weeks=104, seed=SEED)
    spend, issues = clean_spend(truth.spend)
    kpi, more = clean_kpi(truth.revenue)
    data = prepare(spend, kpi, issues=issues + more)
    return truth, data, fit(data, FitConfig(seed=SEED, keep_draws=10_000))  # keep all: the twin check


def test_roi_of_every_channel_with_10pct_of_spend_within_20pct_and_truth_inside_90pct(fitted):
    truth, data, result = fitted
    summary = channel_summary(result.posterior, data.spend).set_index("channel")
    table = pd.DataFrame(truth.truth["channels"]).set_index("channel")
    table = table.join(summary[["roi", "roi_low", "roi_high"]], rsuffix="_model")
    table["error"] = table["roi_model"] / table["roi"] - 1
    table["inside"] = (table["roi_low"] <= table["roi"]) & (table["roi"] <= table["roi_high"])
    print("\n" + table[["spend_share", "roi", "roi_model", "roi_low", "roi_high", "error", "inside"]].round(3).to_string())
    big = table[table["spend_share"] >= 0.10]
    assert len(big) == 5
    assert (big["error"].abs() <= 0.20).all(), big["error"]
    assert table["inside"].sum() >= 5
    assert len(data) == 104 and data.channels == sorted(table.index)


def test_numpy_twin_equals_the_models_own_contributions_and_mean(fitted):
    _, data, result = fitted
    idata = result.idata
    post = result.posterior
    full = idata.posterior.stack(sample=("chain", "draw"))
    assert post.n_draws == full.sizes["sample"]
    contrib = full["channel_contribution"].transpose("sample", "date", "channel").to_numpy()
    np.testing.assert_allclose(post.media(data.spend) / post.target_scale, contrib, rtol=1e-6, atol=1e-9)
    base = post.base(data.dates, data.controls)
    season = full["yearly_seasonality_contribution"].transpose("sample", "date").to_numpy()
    np.testing.assert_allclose(base["seasonality"] / post.target_scale, season, rtol=1e-6, atol=1e-9)
    control = full["control_contribution"].sum("control").transpose("sample", "date").to_numpy()
    ours = sum(base[n] for n in post.base_names) / post.target_scale
    np.testing.assert_allclose(ours, control, rtol=1e-6, atol=1e-9)


def test_diagnostics_are_reported(fitted):
    _, _, result = fitted
    d = result.diagnostics.to_dict()
    assert {"rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "converged", "problems"} <= set(d)
    assert d["rhat_max"] < 1.05
    if not d["converged"]:
        assert result.warnings[0].startswith("SAMPLER DID NOT CONVERGE")
