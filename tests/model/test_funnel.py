"""model.funnel: odds ratios against statsmodels' Table2x2 and hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.funnel import DRIVER_COLUMNS, conversion_drivers, woolf_odds_ratio

Table2x2 = pytest.importorskip("statsmodels.stats.contingency_tables").Table2x2


def test_woolf_interval_pinned_on_a_hand_worked_table() -> None:
    # [[20, 10], [30, 40]]: OR = 20*40 / (10*30) = 8/3; SE = sqrt(1/20 + 1/10 + 1/30 + 1/40) = 0.4564
    odds, low, high = woolf_odds_ratio(np.array([20]), np.array([10]), np.array([30]), np.array([40]))
    np.testing.assert_allclose(odds, [8 / 3])
    se = np.sqrt(1 / 20 + 1 / 10 + 1 / 30 + 1 / 40)
    np.testing.assert_allclose(low, [8 / 3 * np.exp(-1.959963984540054 * se)])
    np.testing.assert_allclose(high, [8 / 3 * np.exp(1.959963984540054 * se)])
    np.testing.assert_allclose([low[0], high[0]], [1.090059, 6.523600], atol=1e-6)


def test_zero_cells_get_the_haldane_correction() -> None:
    odds, low, high = woolf_odds_ratio(np.array([5]), np.array([0]), np.array([10]), np.array([10]))
    np.testing.assert_allclose(odds, [(5.5 * 10.5) / (0.5 * 10.5)])
    assert np.isfinite(low).all() and np.isfinite(high).all() and low[0] < odds[0] < high[0]


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_odds_ratios_agree_with_statsmodels_on_random_tables(confidence: float) -> None:
    rng = np.random.default_rng(3)
    tables = rng.integers(0, 40, size=(200, 4))
    tables[:20, rng.integers(0, 4)] = 0  # plenty of zero cells
    odds, low, high = woolf_odds_ratio(*tables.T, confidence=confidence)
    for i, (a, b, c, d) in enumerate(tables):
        cells = np.array([[a, b], [c, d]], dtype=float)
        # Haldane adds 0.5 to every cell; statsmodels' shift_zeros would shift only the zero ones.
        table = Table2x2(cells + 0.5 if (cells == 0).any() else cells, shift_zeros=False)
        lo, hi = table.oddsratio_confint(alpha=1 - confidence, method="normal")
        np.testing.assert_allclose([odds[i], low[i], high[i]], [table.oddsratio, lo, hi], rtol=1e-10)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        woolf_odds_ratio(np.array([-1]), np.array([1]), np.array([1]), np.array([1]))
    with pytest.raises(ValueError, match="between 0 and 1"):
        woolf_odds_ratio(np.array([1]), np.array([1]), np.array([1]), np.array([1]), confidence=1.0)
    with pytest.raises(ValueError, match="lack column"):
        conversion_drivers(pd.DataFrame({"step": [1]}))


def _counts() -> pd.DataFrame:
    """Step 1: 300 units went on, 700 dropped; brand a converts well, b poorly, c (10 units) is too rare."""
    rows = [
        (1, "brand", "a", 150, 100),
        (1, "brand", "b", 40, 300),
        (1, "brand", "c", 5, 5),
        (1, "brand", "other", 105, 295),
        (1, "price_band", "0-10", 100, 230),
        (1, "price_band", "10+", 200, 470),
        (2, "brand", "a", 30, 120),
        (2, "brand", "other", 30, 120),
    ]
    frame = pd.DataFrame(rows, columns=["step", "attribute", "value", "went_on", "dropped"])
    totals = frame.groupby(["step", "attribute"])[["went_on", "dropped"]].transform("sum")
    return frame.assign(step_went_on=totals["went_on"], step_dropped=totals["dropped"])


def test_drivers_are_filtered_ranked_and_match_direct_computation() -> None:
    counts = _counts()
    drivers = conversion_drivers(counts, min_units=30)
    assert tuple(drivers.columns) == DRIVER_COLUMNS
    assert "c" not in set(drivers["value"])  # 10 units: below min_units
    step_1 = drivers[drivers["step"] == 1]
    # brand a (OR > 1, interval above 1) and b (OR < 1) are the strongest; price bands carry nothing.
    assert step_1["value"].tolist()[:2] in (["a", "b"], ["b", "a"])
    assert (step_1["strength"].diff().dropna() <= 0).all()
    assert (step_1.loc[step_1["attribute"] == "price_band", "strength"] == 0).all()
    a = drivers.set_index(["step", "value"]).loc[(1, "a")]
    rest_on, rest_dropped = 300 - 150, 700 - 100
    table = Table2x2(np.array([[150, 100], [rest_on, rest_dropped]]))
    np.testing.assert_allclose(a["odds_ratio"], table.oddsratio)
    np.testing.assert_allclose([a["ci_low"], a["ci_high"]], table.oddsratio_confint(method="normal"))
    np.testing.assert_allclose(a["conversion"], 150 / 250)
    np.testing.assert_allclose(a["conversion_without"], rest_on / (rest_on + rest_dropped))
    assert (a["units"], a["went_on"], a["dropped"]) == (250, 150, 100)
    # Step 2: both halves convert alike, an odds ratio of exactly 1.
    np.testing.assert_allclose(drivers.loc[drivers["step"] == 2, "odds_ratio"], [1.0, 1.0])


def test_a_value_without_contrast_is_dropped() -> None:
    counts = pd.DataFrame(
        [(1, "segment", "all", 40, 60, 40, 60)],
        columns=["step", "attribute", "value", "went_on", "dropped", "step_went_on", "step_dropped"],
    )
    assert conversion_drivers(counts, min_units=1).empty
