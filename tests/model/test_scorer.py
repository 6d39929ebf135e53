"""LightScorer: same assignments as the model, JSON round trip, threshold, stable ids on retrain."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from model.segmentation.estimator import SegmentationModel
from model.segmentation.scorer import (
    NOT_ENOUGH_ACTIVITY,
    LightScorer,
    export_artifact,
    match_to_previous,
    previous_names,
)
from tests.model.synth import personas

FAST = {"n_bootstrap": 2, "n_init": 4}


@pytest.fixture(scope="module")
def train_df() -> pd.DataFrame:
    return personas(n_per=120, seed=3)


@pytest.fixture(scope="module")
def fresh_df() -> pd.DataFrame:
    """Unseen users, with extra nulls and out-of-range values the scorer must handle like the model."""
    df = personas(n_per=40, seed=99)
    df.loc[::7, "median_session_duration_s"] = np.nan
    df.loc[::5, "recency_days"] = np.nan
    df.loc[::11, "price_level"] = -5.0
    return df


@pytest.fixture(scope="module")
def model(train_df) -> SegmentationModel:
    return SegmentationModel(k_range=(5, 9), **FAST).fit(train_df)


@pytest.fixture(scope="module")
def artifact(model) -> dict:
    names = [f"name-{i}" for i in range(model.k_)]
    return export_artifact(model, "2026.11.22-1", segment_names=names, metadata={"k": model.k_})


def test_artifact_is_strict_json_and_round_trips(artifact):
    text = json.dumps(artifact, allow_nan=False)
    assert json.loads(text) == artifact
    assert artifact["model_version"] == "2026.11.22-1" and artifact["min_events"] == 0


@pytest.mark.parametrize("which", ["train_df", "fresh_df"])
def test_scorer_assigns_exactly_like_the_model(which, request, model, artifact):
    df = request.getfixturevalue(which)
    scorer = LightScorer.from_json(json.dumps(artifact))
    seg, conf = scorer.predict(df)
    np.testing.assert_array_equal(seg, model.predict(df))
    np.testing.assert_allclose(conf, model.confidence(df), rtol=1e-9, atol=1e-12)
    assert ((conf >= 0) & (conf <= 1)).all()


def test_predict_one_equals_batch_and_is_fast(model, artifact, fresh_df):
    scorer = LightScorer.from_dict(artifact)
    seg, conf = scorer.predict(fresh_df)
    row = fresh_df.iloc[5]
    record = {c: (None if pd.isna(v) else v) for c, v in row.items()}
    one = scorer.predict_one(record)
    assert one == (int(seg[5]), pytest.approx(float(conf[5])))
    timings = []
    for _ in range(20):
        t0 = time.perf_counter()
        scorer.predict_one(record)
        timings.append(time.perf_counter() - t0)
    assert np.median(timings) < 0.05  # sanity bound only; real timing lives in benchmarks/


def test_users_below_min_events_get_no_segment(model, fresh_df):
    art = export_artifact(model, "v", min_events=30)
    scorer = LightScorer.from_dict(art)
    seg, conf = scorer.predict(fresh_df)
    low = fresh_df["n_events"].to_numpy() < 30
    assert low.any() and (~low).any()
    assert (seg[low] == NOT_ENOUGH_ACTIVITY).all() and np.isnan(conf[low]).all()
    np.testing.assert_array_equal(seg[~low], model.predict(fresh_df)[~low])
    frame = scorer.predict_frame(fresh_df)
    assert frame["segment_id"].isna().sum() == low.sum()
    assert frame["segment_name"].isna().sum() == low.sum()
    assert list(frame["user_key"]) == list(fresh_df["user_key"])
    small = fresh_df.loc[low].iloc[0].to_dict()
    assert scorer.predict_one({k: (None if pd.isna(v) else v) for k, v in small.items()}) == (None, None)


def test_segment_ids_survive_a_retrain(train_df, model, artifact):
    # new model: other sample of the same population, other seed, shuffled rows -> other label order
    retrain_df = personas(n_per=120, seed=4).sample(frac=1.0, random_state=1)
    new = SegmentationModel(k_range=(5, 9), seed=7, **FAST).fit(retrain_df)
    prev_art = export_artifact(model, "v1", segment_ids=[10 + i for i in range(model.k_)],
                               segment_names=[f"n{i}" for i in range(model.k_)])  # fmt: skip
    ids = match_to_previous(new, prev_art)
    new_art = export_artifact(new, "v2", segment_ids=ids)
    old_seg, _ = LightScorer.from_dict(prev_art).predict(train_df)
    new_seg, _ = LightScorer.from_dict(new_art).predict(train_df)
    assert np.mean(old_seg == new_seg) >= 0.95  # same users keep the same segment id
    assert previous_names(prev_art)[10] == "n0"


def test_bad_artifact_is_rejected(artifact):
    with pytest.raises(ValueError, match="artifact"):
        LightScorer.from_dict({**artifact, "schema_version": 99})


def test_chunked_scoring_equals_one_pass(monkeypatch, model, artifact, fresh_df):
    import model.segmentation.scorer as scorer_module

    scorer = LightScorer.from_dict(artifact)
    whole = scorer.predict(fresh_df)
    monkeypatch.setattr(scorer_module, "_CHUNK_ROWS", 7)  # many chunks, a ragged last one
    chunked = scorer.predict(fresh_df)
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])


def test_derived_rates_and_trust_are_applied_by_the_scorer_like_the_model(model, fresh_df):
    from model.segmentation import DERIVED_NAMES, TrustModel
    from model.segmentation.rates import DERIVED

    assert set(model.derived_features_) <= set(DERIVED_NAMES) and model.derived_features_
    # independent shrinkage of one rate: (carts + 20 * prior) / (views + 20), carts capped at views, nulls = 0
    prior = model.priors_["eb_cart_rate"]
    strength = next(d.strength for d in DERIVED if d.name == "eb_cart_rate")
    views = fresh_df["n_views"].astype(float).fillna(0)
    carts = np.minimum(fresh_df["n_carts"].astype(float).fillna(0), views)
    expected = (carts + strength * prior) / (views + strength)
    got = model._engineer(fresh_df, fit=False)["eb_cart_rate"]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy())
    trust = TrustModel(-2.0, 0.7, 3.0)
    scorer = LightScorer.from_json(json.dumps(export_artifact(model, "v", trust=trust)))
    seg, conf = scorer.predict(fresh_df)
    np.testing.assert_array_equal(seg, model.predict(fresh_df))
    n = fresh_df["n_events"].to_numpy(dtype=float)
    want = 1 / (1 + np.exp(-(-2.0 + 0.7 * np.log(np.maximum(n, 1)) + 3.0 * conf)))
    np.testing.assert_allclose(scorer.trust(n, conf), want)


def test_scorer_applies_the_feature_weights_exactly_like_the_model(train_df, fresh_df):
    """The weights are folded into the artifact's PCA; assignments and confidences stay the model's."""
    truncated = personas(n_per=120, seed=4)  # another draw of the same users' personas: a noisy history
    assert (truncated["user_key"] == train_df["user_key"]).all()
    weighted = SegmentationModel(k_range=(5, 9), **FAST).fit(train_df, truncated=truncated)
    assert not np.allclose(weighted.feature_weights_, 1.0)
    scorer = LightScorer.from_json(json.dumps(export_artifact(weighted, "w")))
    for df in (train_df, fresh_df):
        seg, conf = scorer.predict(df)
        np.testing.assert_array_equal(seg, weighted.predict(df))
        np.testing.assert_allclose(conf, weighted.confidence(df), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(scorer.transform(scorer.input_matrix(df)), weighted.transform(df), rtol=1e-12)
