"""Event-threshold study maths on hand-made curves."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from model.segmentation.threshold import threshold_study


def _curve(agreements: dict[int, float], n_users: int = 20, k: int = 4, seed: int = 0):
    """Rows (n, first_n, all) where exactly round(share * n_users) users agree at each n."""
    rng = np.random.default_rng(seed)
    ns, a, b = [], [], []
    for n, share in agreements.items():
        truth = rng.integers(0, k, n_users)
        first = truth.copy()
        n_bad = round((1 - share) * n_users)
        first[:n_bad] = (truth[:n_bad] + 1) % k
        ns += [n] * n_users
        a += first.tolist()
        b += truth.tolist()
    return np.array(ns), np.array(a), np.array(b)


def test_curve_values_and_smallest_n_meeting_the_target():
    n, a, b = _curve({5: 0.5, 10: 0.7, 20: 0.85, 50: 0.9, 100: 0.95})
    study = threshold_study(n, a, b, target=0.8, confidence=None)
    assert [p.n for p in study.curve] == [5, 10, 20, 50, 100]
    assert [p.agreement for p in study.curve] == [0.5, 0.7, 0.85, 0.9, 0.95]
    m = n == 20
    assert study.curve[2].ari == pytest.approx(adjusted_rand_score(b[m], a[m]))
    assert study.threshold == 20 and study.error is None
    assert list(study.frame.columns) == ["n", "n_users", "agreement", "ari", "lower"]


def test_a_lucky_point_before_a_dip_does_not_set_the_threshold():
    n, a, b = _curve({5: 0.5, 10: 0.85, 20: 0.75, 50: 0.9})
    assert threshold_study(n, a, b, target=0.8, confidence=None).threshold == 50


def test_target_not_reached_returns_error_code():
    n, a, b = _curve({5: 0.5, 10: 0.6})
    study = threshold_study(n, a, b, target=0.8)
    assert study.threshold is None and study.error == "target_not_reached"
    assert study.to_dict()["curve"][0]["agreement"] == 0.5
    empty = threshold_study([], [], [])
    assert empty.error == "no_data" and empty.curve == ()


def test_ari_metric_can_set_the_threshold():
    n, a, b = _curve({5: 0.6, 10: 1.0})
    study = threshold_study(n, a, b, target=0.99, metric="ari", confidence=None)
    assert study.curve[1].ari == pytest.approx(1.0) and study.threshold == 10


def test_the_lower_confidence_bound_must_meet_the_target():
    """Wilson's one-sided 95% bound, worked by hand: a barely-met target on few users is not enough."""
    n, a, b = _curve({10: 0.82, 20: 0.9}, n_users=200)
    study = threshold_study(n, a, b, target=0.8)
    assert threshold_study(n, a, b, target=0.8, confidence=None).threshold == 10
    assert study.threshold == 20 and study.confidence == 0.95
    z, users = 1.6448536269514722, 200  # one-sided 95%: the 0.95 quantile of the standard normal
    for point, share in zip(study.curve, (0.82, 0.9), strict=True):
        centre = (share + z**2 / (2 * users)) / (1 + z**2 / users)
        half = z / (1 + z**2 / users) * np.sqrt(share * (1 - share) / users + z**2 / (4 * users**2))
        assert point.lower == pytest.approx(centre - half, abs=1e-12)
    assert 0.75 < study.curve[0].lower < 0.8 < study.curve[1].lower


def test_the_ari_bound_is_a_bootstrap_below_the_estimate():
    n, a, b = _curve({10: 0.7, 20: 1.0}, n_users=300)
    study = threshold_study(n, a, b, target=0.5, metric="ari", seed=3)
    low, perfect = study.curve
    assert low.lower < low.ari and perfect.lower == pytest.approx(1.0)
    assert study.to_dict()["confidence"] == 0.95
    with pytest.raises(ValueError, match="confidence"):
        threshold_study(n, a, b, confidence=1.0)
