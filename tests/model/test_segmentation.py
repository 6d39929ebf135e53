"""SegmentationModel: recovery, k choice, determinism, preprocessing facts, confidence, matching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

from model.segmentation.estimator import (
    SegmentationModel,
    SegmentationWarning,
    assignment_confidence,
    match_segments,
)
from tests.model.synth import blobs, personas

# The estimator mechanics are tested on the legacy feature set: these synthetic tables are shaped by totals.
FAST = {"n_bootstrap": 2, "n_init": 4, "feature_set": "legacy"}


@pytest.fixture(scope="module")
def blob_df() -> pd.DataFrame:
    return blobs(k=4, n_per=150, seed=1)


@pytest.fixture(scope="module")
def blob_model(blob_df) -> SegmentationModel:
    return SegmentationModel(k_range=(2, 7), **FAST).fit(blob_df)


@pytest.fixture(scope="module")
def persona_df() -> pd.DataFrame:
    return personas(n_per=120, seed=3)


@pytest.fixture(scope="module")
def persona_model(persona_df) -> SegmentationModel:
    return SegmentationModel(k_range=(5, 9), **FAST).fit(persona_df)


def test_well_separated_clusters_are_recovered_with_the_true_k(blob_df, blob_model):
    assert blob_model.k_ == 4
    assert adjusted_rand_score(blob_df["_truth"], blob_model.predict(blob_df)) >= 0.9
    assert adjusted_rand_score(blob_df["_truth"], blob_model.labels_) >= 0.9
    scores = blob_model.selection_scores_
    assert list(scores["k"]) == list(range(2, 8))
    best_sil = scores.loc[scores["silhouette"].idxmax(), "k"]
    assert best_sil == 4
    assert scores.loc[scores["k"] == 4, "stability_mean"].item() > 0.95


def test_personas_are_recovered(persona_df, persona_model):
    ari = adjusted_rand_score(persona_df["_truth"], persona_model.predict(persona_df))
    assert ari >= 0.9, ari
    assert 7 <= persona_model.k_ <= 8


def test_same_input_gives_same_output(blob_df, blob_model):
    again = SegmentationModel(k_range=(2, 7), **FAST).fit(blob_df)
    np.testing.assert_array_equal(again.predict(blob_df), blob_model.predict(blob_df))
    np.testing.assert_array_equal(again.cluster_centers_, blob_model.cluster_centers_)
    pd.testing.assert_frame_equal(again.selection_scores_, blob_model.selection_scores_)


def test_labels_are_ordered_by_segment_size(persona_model):
    counts = np.bincount(persona_model.labels_)
    assert (np.diff(counts) <= 0).all()


def test_explained_variance_reaches_the_requested_share(persona_model):
    evr = persona_model.explained_variance_ratio_
    assert evr.sum() >= 0.9
    assert evr[:-1].sum() < 0.9  # the smallest number of components that reaches 90%
    assert persona_model.n_components_ == len(evr)


def test_recency_null_becomes_far_value_plus_purchase_flag(persona_df, persona_model):
    assert persona_model.imputation_values_["recency_days"] == persona_df["recency_days"].max() + 1
    assert persona_model.imputation_values_["median_session_duration_s"] == pytest.approx(
        persona_df["median_session_duration_s"].median()
    )
    # has_purchased is derived (then dropped here, as monetary already says the same)
    assert "has_purchased" in persona_model.features_ or "has_purchased" in persona_model.dropped_features_


def test_constant_and_redundant_features_are_dropped_and_recorded(blob_df):
    df = blob_df.copy()
    df["weekend_share"] = 0.5  # constant: replaces a real column
    df["n_sessions"] = df["n_events"] * 3 + 1  # perfectly redundant with n_events
    with pytest.warns(SegmentationWarning, match="constant"):
        m = SegmentationModel(k_range=(3, 5), **FAST).fit(df)
    assert m.dropped_features_["weekend_share"] == "constant"
    assert m.dropped_features_["n_sessions"].startswith("redundant with n_events")
    assert "n_sessions" not in m.features_ and "n_events" in m.features_


def test_skewed_non_negative_features_are_log_transformed():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"monetary": rng.lognormal(3, 1.5, 400), "price_level": rng.normal(0, 1, 400),
         "holiday_share": rng.uniform(0, 1, 400)}
    )  # fmt: skip
    m = SegmentationModel(k_range=(2, 3), **FAST).fit(df)
    assert m.log_features_ == ["monetary"]
    manual = df[m.features_].to_numpy(copy=True)
    j = m.features_.index("monetary")
    manual[:, j] = np.log1p(manual[:, j])
    scaled = np.clip((manual - m.scaler_.center_) / m.scaler_.scale_, -m.clip, m.clip)
    expected = m.pca_.transform(scaled)
    np.testing.assert_allclose(m.transform(df), expected, rtol=1e-10, atol=1e-10)


def test_confidence_is_one_minus_distance_ratio(blob_df, blob_model):
    d = cdist(blob_model.transform(blob_df), blob_model.cluster_centers_)
    s = np.sort(d, axis=1)
    np.testing.assert_allclose(blob_model.confidence(blob_df), 1 - s[:, 0] / s[:, 1], rtol=1e-9)
    assert assignment_confidence(np.array([[1.0, 1.0], [0.0, 4.0]])).tolist() == [0.0, 1.0]


def test_feature_importance_ranks_separating_features_above_noise():
    df = blobs(k=3, n_per=150, dim=5, seed=2)  # centers on columns 0-2; columns 3-4 are noise
    cols = [c for c in df.columns if c not in ("user_key", "_truth")]
    m = SegmentationModel(k_range=(3, 3), **FAST).fit(df)
    ranked = [f for f, _ in m.feature_importance_.ranked()]
    assert set(ranked[:3]) == set(cols[:3]) and set(ranked[3:]) == set(cols[3:])
    assert any(f"{c} <=" in m.feature_importance_.tree_rules for c in cols[:3])
    assert m.feature_importance_.fidelity > 0.95


def test_misuse_raises_but_constructor_does_not():
    m = SegmentationModel(k_range=(1, 4))  # stored as given
    assert m.k_range == (1, 4)
    with pytest.raises(ValueError, match="k_range"):
        m.fit(blobs(k=2, n_per=30))
    with pytest.raises(RuntimeError, match="not fitted"):
        SegmentationModel().predict(blobs(k=2, n_per=30))
    with pytest.raises(KeyError, match="lacks"):
        SegmentationModel(k_range=(2, 3), **FAST).fit(blobs(k=2, n_per=60)).predict(
            pd.DataFrame({"n_events": [1.0]})
        )


def test_min_events_and_suspicious_users_are_left_out_of_training(blob_df):
    df = blob_df.copy()
    df["is_suspicious"] = False
    df.loc[:9, "is_suspicious"] = True
    m = SegmentationModel(k_range=(3, 5), min_events=11, **FAST).fit(df)
    expected = (~df["is_suspicious"]) & (df["n_events"] >= 11)
    assert m.n_train_ == int(expected.sum())
    assert set(m.train_index_) == set(df.index[expected])


def test_hungarian_matching_keeps_ids_after_a_permutation():
    rng = np.random.default_rng(0)
    prev = rng.normal(0, 10, size=(5, 4))
    prev_ids = np.array([10, 11, 12, 13, 14])
    perm = np.array([3, 0, 4, 1, 2])
    new = prev[perm] + rng.normal(0, 0.1, size=(5, 4))
    np.testing.assert_array_equal(match_segments(prev, new, prev_ids), prev_ids[perm])
    # one more segment than before: the extra one gets a fresh id, the others keep theirs
    grown = np.vstack([new, [100, 100, 100, 100]])
    np.testing.assert_array_equal(match_segments(prev, grown, prev_ids), [*prev_ids[perm], 15])
    # a far match is treated as a new segment
    moved = new.copy()
    moved[0] += 50
    ids = match_segments(prev, moved, prev_ids, max_distance=5.0)
    assert ids[0] == 15 and ids[1:].tolist() == prev_ids[perm][1:].tolist()


def test_summary_is_strict_json_with_the_selection_curves(persona_model):
    import json

    summary = json.loads(json.dumps(persona_model.summary(), allow_nan=False))
    assert summary["k"] == persona_model.k_
    assert [row["k"] for row in summary["selection"]["scores"]] == list(range(5, 10))
    assert summary["explained_variance_ratio"] == pytest.approx(list(persona_model.explained_variance_ratio_))
    assert set(summary["dropped_features"]) == set(persona_model.dropped_features_)


def test_truncation_noise_weighs_the_features_as_a_hand_computation():
    """Weights = RMS(scaled first-n value - scaled full value) ** -p per feature, RMS-normalised."""
    rng = np.random.default_rng(5)
    full = blobs(k=3, n_per=100, dim=3, seed=5)
    cols = ["n_events", "monetary", "price_level"]
    truncated = pd.concat([full, full]).reset_index(drop=True)  # two truncations per user
    for col, sd in zip(cols, (0.5, 4.0, 16.0), strict=True):
        truncated[col] = truncated[col] + rng.normal(0, sd, len(truncated))
    m = SegmentationModel(k_range=(2, 4), features=cols, skew_threshold=100.0, **FAST).fit(full, truncated=truncated)
    assert m.features_ == cols and not m.log_features_

    def scaled(df: pd.DataFrame) -> np.ndarray:
        x = df[cols].to_numpy(float)
        q1, med, q3 = np.percentile(full[cols].to_numpy(float), [25, 50, 75], axis=0)
        return np.clip((x - med) / (q3 - q1), -3, 3)

    lookup = full.set_index("user_key").loc[truncated["user_key"]].reset_index()
    noise = np.sqrt(((scaled(truncated) - scaled(lookup)) ** 2).mean(axis=0))
    np.testing.assert_allclose(m.truncation_noise_, noise, rtol=1e-9)
    w = noise**-0.5
    np.testing.assert_allclose(m.feature_weights_, w / np.sqrt((w**2).mean()), rtol=1e-9)
    assert m.feature_weights_[0] > m.feature_weights_[1] > m.feature_weights_[2]
    # the weights act on the metric: coordinates are the PCA of the weighted scaled features
    Z = scaled(full) * m.feature_weights_
    np.testing.assert_allclose(m.transform(full), m.pca_.transform(Z), rtol=1e-9, atol=1e-9)
    plain = SegmentationModel(k_range=(2, 4), features=cols, skew_threshold=100.0, **FAST).fit(full)
    assert (plain.feature_weights_ == 1).all() and plain.truncation_noise_ is None
    off = SegmentationModel(k_range=(2, 4), features=cols, skew_threshold=100.0, noise_power=0, **FAST)
    assert (off.fit(full, truncated=truncated).feature_weights_ == 1).all()


def test_truncated_rows_must_belong_to_training_users():
    full = blobs(k=2, n_per=60, dim=2)
    stranger = full.assign(user_key=[f"x{i}" for i in range(len(full))])
    with pytest.raises(ValueError, match="no row of truncated belongs to a training user"):
        SegmentationModel(k_range=(2, 3), **FAST).fit(full, truncated=stranger)
