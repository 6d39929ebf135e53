"""The Marketing-mix page: AppTest smoke tests on a lake with a published model (synthetic draws)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from model.mmm import Diagnostics, FitConfig, FitResult, MMMData
from model.mmm.optimizer import Bound, optimize
from services.core.lake import Lake
from services.core.storage import LocalStore
from tests.dashboard.fixtures import open_page
from tests.model.test_mmm_core import synthetic_posterior


def _published(fixture_lake, tmp_path, spend: np.ndarray, precise: bool = False):
    from services.jobs.mmm import publish_fit

    root = tmp_path / "lake"
    shutil.copytree(fixture_lake.root, root)
    lake = Lake(LocalStore(root), tmp_path / "work")
    post = synthetic_posterior()
    if precise:  # narrow ROI intervals: only the spend pattern can make a channel unidentifiable
        rng = np.random.default_rng(5)
        for name, (lo, hi) in {"saturation_beta": (0.10, 0.11), "saturation_lam": (1.9, 2.0),
                               "adstock_alpha": (0.3, 0.32)}.items():
            post.params[name] = rng.uniform(lo, hi, post.params[name].shape)
    dates = pd.date_range("2022-01-03", periods=40, freq="W-MON")
    revenue = post.predict(dates, spend)["mu"].mean(axis=0)
    data = MMMData(dates, post.channels, spend, revenue, pd.DataFrame(index=dates))
    diag = Diagnostics(1.003, 800.0, 700.0, 0, 500, 2, "numpyro", 12.0)
    published = publish_fit(lake, data, FitResult(post, diag, FitConfig()))
    return str(root), published, post, spend


@pytest.fixture
def lake_with_mmm(fixture_lake, tmp_path):
    return _published(fixture_lake, tmp_path, np.random.default_rng(3).uniform(200, 1500, (40, 3)))


def test_a_channel_that_spends_with_another_is_flagged_and_held(use_lake, fixture_lake, tmp_path):
    spend = np.random.default_rng(3).uniform(200, 1500, (40, 3))
    spend[:, 1] = 0.5 * spend[:, 0]  # b always spends with a: neither can be told apart
    uri, published, _, _ = _published(fixture_lake, tmp_path, spend, precise=True)
    assert {c["channel"] for c in published["channels"] if not c["identifiable"]} == {"a", "b"}
    use_lake(uri)
    at = open_page("marketing_mix")
    assert not at.error
    flagged = [w.value for w in at.warning if "ROI not identifiable" in w.value]
    assert len(flagged) == 2 and "spend moves with" in flagged[0]
    shown = at.dataframe[0].value.set_index("channel")
    assert shown.loc[["a", "b"], "roi"].isna().all() and shown.loc["c", "roi"] > 0
    assert any("Held within 10%" in c.value and "a, b" in c.value for c in at.caption)
    labels = {m.label: m.value for m in at.metric}
    assert labels["Beats the current mix in"].endswith("of draws")


def test_the_page_says_what_to_run_without_a_model(app):
    at = app("marketing_mix")
    assert any("No marketing-mix model yet" in i.value for i in at.info)


def test_a_published_model_shows_roi_curves_and_a_live_plan(use_lake, lake_with_mmm):
    uri, published, post, spend = lake_with_mmm
    use_lake(uri)
    at = open_page("marketing_mix")
    assert not at.error
    assert len(at.get("plotly_chart")) == 3
    labels = {m.label: m.value for m in at.metric}
    plan = optimize(post.subset(200), float(round(spend[-13:].sum(), 2)), 13, spend,
                    lower={c: Bound(0.5, True) for c in post.channels}, upper={c: Bound(1.5, True) for c in post.channels})
    assert labels["Plan ROI"] == f"{plan.roi:.2f}"
    # moving the budget re-plans at once; impossible bounds say which
    at.number_input(key="mmm_budget").set_value(float(spend[-13:].sum() * 3)).run()
    assert at.error and "sum of maximums" in at.error[0].value
    assert published["converged"]
