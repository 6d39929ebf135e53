"""model.comparison on data whose answer is known: separated blobs, a shifted short history, a planted signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from model.comparison import compare_assigners, compare_clusterings, compare_propensity
from model.comparison.assignment import CLEAR_MARGIN, nearest_centroid
from model.propensity.features import MODEL_FEATURES

pytestmark = pytest.mark.slow  # every family is fitted (about a minute in all on 2 shared cores)
TIMES = ("fit_seconds", "batch_us_per_user", "single_call_ms")


def _untimed(table) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in table.rows]


def test_clustering_scores_are_sklearns_and_every_family_finds_separated_blobs() -> None:
    X, truth = make_blobs(n_samples=600, centers=4, cluster_std=0.6, random_state=3)
    t = compare_clusterings(X, 4, seed=7, sample_size=10_000, silhouette_rows=10_000, n_bootstrap=2, truth=truth)
    labels = KMeans(n_clusters=4, n_init=10, random_state=7).fit(X).labels_  # the whole X is the sample here
    km = t.rows[0]
    assert km["family"] == "K-Means (shipped)" and km["shipped"]
    assert km["silhouette"] == pytest.approx(silhouette_score(X, labels))
    assert km["davies_bouldin"] == pytest.approx(davies_bouldin_score(X, labels))
    assert km["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X, labels))
    assert {r["family"] for r in t.rows} == {"K-Means (shipped)", "Gaussian mixture", "Ward agglomerative", "BIRCH"}
    for r in t.rows:
        assert r["ari_vs_truth"] > 0.95 and r["stability_ari"] > 0.9, r
    assert t.winner in {r["family"] for r in t.rows} and t.why


def test_clustering_is_deterministic_under_a_seed_and_refuses_too_few_rows() -> None:
    X, _ = make_blobs(n_samples=400, centers=3, random_state=1)
    a = compare_clusterings(X, 3, seed=5, sample_size=300, n_bootstrap=2)
    b = compare_clusterings(X, 3, seed=5, sample_size=300, n_bootstrap=2)
    assert _untimed(a) == _untimed(b) and a.winner == b.winner
    with pytest.raises(ValueError, match="too few"):
        compare_clusterings(X[:5], 3)


def _study(shift: float, noise: float, seed: int = 0):
    """Users around 3 centroids; their first-n rows are the full row + shift/n + noise/sqrt(n)."""
    rng = np.random.default_rng(seed)
    C = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    full = C[rng.integers(0, 3, 600)] + rng.normal(0, 1.0, (600, 2))
    ns = (5, 10, 20, 40)
    first = np.vstack([full + shift / n + rng.normal(0, noise / np.sqrt(n), full.shape) for n in ns])
    n = np.repeat(ns, len(full))
    user = np.tile(np.arange(len(full)), len(ns))
    shipped = nearest_centroid(C, np.array([10, 11, 12]))
    return first, n, user, shipped(full)[user], full, np.arange(len(full)), shipped


def test_exact_short_histories_agree_everywhere_and_noise_fades_with_n() -> None:
    first, n, user, target, full, fu, shipped = _study(shift=0.0, noise=0.0)
    t = compare_assigners(first, n, user, target, full, fu, shipped, ns=(5, 10, 20, 40), seed=1)
    assert all(t.rows[0][f"agreement_n{m}"] == 1.0 for m in (5, 10, 20, 40))
    assert t.winner == "Nearest centroid (shipped)"
    first, n, user, target, full, fu, shipped = _study(shift=0.0, noise=3.0)
    row = compare_assigners(first, n, user, target, full, fu, shipped, ns=(5, 10, 20, 40), seed=1).rows[0]
    assert 0 < row["agreement_n5"] < row["agreement_n40"]


def test_a_classifier_that_learns_a_systematic_bias_of_short_histories_is_named_the_winner() -> None:
    # short histories are shifted by +12/n on both axes: the centroid rule misreads them, a classifier learns it
    first, n, user, target, full, fu, shipped = _study(shift=12.0, noise=0.2)
    t = compare_assigners(first, n, user, target, full, fu, shipped, ns=(5, 10, 20, 40), seed=1)
    shipped_row = t.rows[0]
    best = max(t.rows[1:], key=lambda r: r["mean_agreement"])
    assert best["mean_agreement"] - shipped_row["mean_agreement"] >= CLEAR_MARGIN
    assert t.winner == best["family"] != t.shipped and "switching would cost" in t.why


def _examples(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cutoffs = pd.to_datetime(["2019-10-07", "2019-10-14", "2019-10-21", "2019-10-28"], utc=True)
    n = 1_500
    frames = []
    for c in cutoffs:
        data = {f: rng.gamma(1.0, 1.0, n) for f in MODEL_FEATURES}
        signal = 1.2 * np.log1p(data[MODEL_FEATURES[0]]) + 0.8 * data[MODEL_FEATURES[1]] - 3.0
        data["label"] = (rng.random(n) < 1 / (1 + np.exp(-signal))).astype(int)
        data["cutoff"] = c
        frames.append(pd.DataFrame(data))
    return pd.concat(frames, ignore_index=True)


def test_propensity_families_share_the_time_split_and_the_rule_favours_the_shipped_on_a_tie() -> None:
    ex = _examples()
    last = ex["cutoff"].max()
    t = compare_propensity(ex.loc[ex["cutoff"] < last], ex.loc[ex["cutoff"] == last], seed=3, max_train_rows=10_000)
    assert [r["family"] for r in t.rows] == ["Logistic regression (shipped)", "Gradient boosting (shipped)",
                                             "Random forest", "MLP (32-16)"]  # fmt: skip
    assert all(r["roc_auc"] > 0.65 for r in t.rows)  # the planted signal is found by every family
    shipped_best = max((r for r in t.rows if r["shipped"]), key=lambda r: r["roc_auc"])
    other_best = max((r for r in t.rows if not r["shipped"]), key=lambda r: r["roc_auc"])
    if other_best["roc_auc"] - shipped_best["roc_auc"] < 0.005:
        assert t.winner == shipped_best["family"]
    else:
        assert t.winner == other_best["family"]
    with pytest.raises(ValueError, match="strictly before"):
        compare_propensity(ex.loc[ex["cutoff"] == last], ex.loc[ex["cutoff"] < last])


def test_forest_trees_draw_bounded_bootstraps_and_keep_the_ranking_of_full_ones() -> None:
    """Each tree's bootstrap is at most FOREST_TREE_ROWS rows (the fit's cost); on a planted signal the bounded
    forest ranks the validation users about as well as one whose trees see full-size bootstraps."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score

    from model.comparison.propensity import FOREST_TREE_ROWS, PROPENSITY_FAMILIES
    from model.propensity.features import design_matrix

    forest = next(f for f in PROPENSITY_FAMILIES if f.name == "Random forest")
    assert forest.build(0, 3 * FOREST_TREE_ROWS).max_samples == FOREST_TREE_ROWS
    assert forest.build(0, 1_000).max_samples == 1_000  # smaller data: full-size bootstraps, as before
    ex = _examples()
    last = ex["cutoff"].max()
    train, val = ex.loc[ex["cutoff"] < last], ex.loc[ex["cutoff"] == last]
    X, y, Xv, yv = (design_matrix(train, MODEL_FEATURES), train["label"].to_numpy(), design_matrix(val, MODEL_FEATURES),
                    val["label"].to_numpy())  # fmt: skip
    bounded = forest.build(0, 1_500).fit(X, y)  # 1,500-row bootstraps of 4,500 rows
    full = RandomForestClassifier(n_estimators=200, min_samples_leaf=20, max_features="sqrt", random_state=0).fit(X, y)
    assert bounded.estimators_[0].tree_.n_node_samples[0] < 1_500 < full.estimators_[0].tree_.n_node_samples[0]
    auc = roc_auc_score(yv, bounded.predict_proba(Xv)[:, 1])
    assert auc == pytest.approx(roc_auc_score(yv, full.predict_proba(Xv)[:, 1]), abs=0.02) and auc > 0.65
