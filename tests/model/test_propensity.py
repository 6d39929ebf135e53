"""The propensity estimator, its light JSON scorer and the evaluation figures, against independent sums."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from threadpoolctl import threadpool_limits

from model.propensity import (
    MODEL_FEATURES,
    LightPropensityScorer,
    PropensityModel,
    capacity_threshold,
    compare_models,
    decile_cuts,
    decile_table,
    design_matrix,
    evaluate,
    expected_calibration_error,
    export_artifact,
    threshold_grid,
)

CUTS = pd.to_datetime(["2019-10-06", "2019-10-13", "2019-10-20", "2019-10-27"], utc=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Four weekly cutoffs of synthetic users; buying depends on recent carts, sessions and recency."""
    rng = np.random.default_rng(0)
    n = 1500
    parts = []
    for i, c in enumerate(CUTS):
        df = pd.DataFrame({f: rng.gamma(2.0, 2.0, n) for f in MODEL_FEATURES})
        df["recency_days"] = np.where(rng.random(n) < 0.4, np.nan, rng.integers(0, 60, n))
        df["days_since_last_cart"] = np.where(rng.random(n) < 0.3, np.nan, rng.exponential(10, n))
        logit = -3.2 + 0.45 * df["carts_7d"] + 0.2 * df["sessions_28d"] - 0.03 * df["recency_days"].fillna(90) + 0.1 * i
        df["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        df["cutoff"] = c
        df["user_key"] = [f"u{j}" for j in range(n)]
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def _split(frame):
    v = frame["cutoff"] == CUTS[-1]
    return frame.loc[~v], frame.loc[v]


@pytest.mark.parametrize("kind", ["logistic", "boosted"])
@pytest.mark.parametrize("calibration", ["none", "sigmoid", "isotonic"])
def test_light_scorer_from_json_equals_the_estimator(frame, kind, calibration):
    train, val = _split(frame)
    with threadpool_limits(1):
        m = PropensityModel(kind=kind, calibration=calibration, max_iter=40, isotonic_min_positives=1)
        m.fit(train, train["label"], train["cutoff"])
    assert m.calibration_ == (None if calibration == "none" else calibration)
    art = json.loads(json.dumps(export_artifact(m, "v1"), allow_nan=False))  # strict JSON round trip
    scorer = LightPropensityScorer(art)
    np.testing.assert_allclose(scorer.predict_proba(val), m.predict_proba(val)[:, 1], rtol=1e-12, atol=1e-12)
    # the importance's re-scoring of a changed column: the calibrated bits of scoring the whole
    A = design_matrix(val)
    B = A.copy()
    B[:, 0] = A[::-1, 0]
    np.testing.assert_array_equal(scorer.column_change(A)(B, 0), scorer.proba_matrix(B))


def test_fit_never_sees_the_last_training_cutoff_for_the_base_model(frame):
    train, _ = _split(frame)
    with threadpool_limits(1):
        m = PropensityModel(kind="logistic").fit(train, train["label"], train["cutoff"])
    assert m.n_train_ == int((train["cutoff"] < CUTS[-2]).sum())
    assert m.holdout_["cutoff"].startswith("2019-10-20")


def test_a_random_split_is_refused_and_the_shipped_model_is_trained_by_time(frame):
    train, val = _split(frame)
    mixed = frame.sample(frac=0.8, random_state=0)  # a random split mixes the validation week into training
    with pytest.raises(ValueError, match="earlier than the validation cutoff"):
        compare_models(mixed, val)
    with threadpool_limits(1):
        comp = compare_models(train, val, params={"boosted": {"max_iter": 40}})
        by_time = PropensityModel(kind=comp.shipped, random_state=0, **({"max_iter": 40} if comp.shipped == "boosted" else {}))
        by_time.fit(train, train["label"], train["cutoff"])
        by_chance = PropensityModel(kind=comp.shipped, random_state=0, **({"max_iter": 40} if comp.shipped == "boosted" else {}))
        by_chance.fit(mixed, mixed["label"], np.zeros(len(mixed)))  # one group: a random-split model
    shipped = comp.best.model.predict_proba(val)[:, 1]
    np.testing.assert_allclose(shipped, by_time.predict_proba(val)[:, 1])
    assert not np.allclose(shipped, by_chance.predict_proba(val)[:, 1])
    assert comp.shipped == max(comp.reports, key=lambda k: comp.reports[k].metrics["roc_auc"])
    assert all(c < CUTS[-1] for c in comp.train_cutoffs)


def test_no_positive_labels_is_a_clear_error(frame):
    train, _ = _split(frame)
    with pytest.raises(ValueError, match="no positive labels"):
        PropensityModel().fit(train, np.zeros(len(train)), train["cutoff"])


def test_metrics_equal_sklearn_and_hand_computations():
    rng = np.random.default_rng(3)
    p = rng.beta(1, 8, 5000)
    y = (rng.random(5000) < p * 1.3).astype(int)
    m = evaluate(y, p, capacity=0.1)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["base_rate"] == pytest.approx(y.mean())
    # confusion at capacity: the 500 best scores are targeted
    top = np.argsort(-p)[:500]
    c = m["confusion"]
    assert c["targeted"] == 500 and c["tp"] == y[top].sum() and c["fn"] == y.sum() - y[top].sum()
    assert c["precision"] == pytest.approx(y[top].mean()) and c["recall"] == pytest.approx(y[top].sum() / y.sum())
    assert capacity_threshold(p, 0.1) == pytest.approx(np.sort(p)[-500])
    # ECE by hand: 10 equal-width bins
    ece = sum(abs(p[(p >= b / 10) & (p < (b + 1) / 10)].mean() - y[(p >= b / 10) & (p < (b + 1) / 10)].mean())
              * ((p >= b / 10) & (p < (b + 1) / 10)).mean() for b in range(10) if ((p >= b / 10) & (p < (b + 1) / 10)).any())  # fmt: skip
    assert expected_calibration_error(y, p) == pytest.approx(ece)
    # deciles: 500 users each, lift = rate / base rate, gains reach 1
    d = decile_table(y, p)
    assert d["users"].tolist() == [500] * 10 and d["decile"].tolist() == list(range(10, 0, -1))
    assert d["lift"].iloc[0] == pytest.approx(y[top].mean() / y.mean())
    assert d["cumulative_gain"].iloc[-1] == pytest.approx(1.0)
    g = threshold_grid(y, p)
    assert g.loc[np.isclose(g["audience_share"], 0.1), "tp"].item() == c["tp"]


def test_decile_cut_points_reproduce_rank_deciles_for_distinct_scores():
    p = np.random.default_rng(1).random(1000)
    scorer = LightPropensityScorer.__new__(LightPropensityScorer)
    scorer.decile_cuts = decile_cuts(p)
    got = LightPropensityScorer.deciles_of(scorer, p)
    ranks = pd.Series(p).rank(method="first").to_numpy()
    want = np.ceil(ranks / 100).astype(int)
    assert (got == want).mean() > 0.99 and got.min() == 1 and got.max() == 10


def test_design_matrix_names_a_missing_column():
    with pytest.raises(ValueError, match="lacks feature column"):
        design_matrix(pd.DataFrame({"n_events": [1]}))


# 32-bit and 64-bit leaf vectors, and the level-by-level walk beyond 64 leaves
@pytest.mark.parametrize("leaves", [31, 50, 90])
def test_light_scorer_tree_paths_equal_sklearn_with_missing_values_in_chunks(frame, leaves, monkeypatch):
    import model.propensity.scorer as scorer_module
    import model.propensity.trees as trees_module

    train, val = _split(frame)
    with threadpool_limits(1):
        m = PropensityModel(kind="boosted", calibration="none", max_iter=15, max_leaf_nodes=leaves,
                            min_samples_leaf=5)  # fmt: skip
        m.fit(train, train["label"], train["cutoff"])
    trees = export_artifact(m, "v1")["boosted"]["trees"]
    split_nan_left = [ml for t in trees for ml, lf in zip(t["missing_left"], t["leaf"], strict=True)
                      if not lf]  # fmt: skip
    assert any(split_nan_left) and not all(split_nan_left)  # both NaN routes are exercised
    scorer = LightPropensityScorer(export_artifact(m, "v1"))
    assert (scorer._ensemble.bit_trees is not None) == (leaves <= 64)
    monkeypatch.setattr(scorer_module, "CHUNK", 256)  # several frame chunks and tree blocks
    monkeypatch.setattr(trees_module, "BLOCK", 100)
    want = m.base_.decision_function(design_matrix(val))
    np.testing.assert_array_equal(scorer.decision(design_matrix(val)), want)
    np.testing.assert_array_equal(scorer.decision(design_matrix(val, dtype=np.float64)), want)
    # the estimator's own path (calibration's raw scores): the rows split across threads, ragged blocks
    assert len(val) > 3 * 100
    np.testing.assert_array_equal(trees_module.TreeEnsemble.of(m.base_).decision(design_matrix(val), threads=3), want)
    np.testing.assert_allclose(scorer.predict_proba(val), m.predict_proba(val)[:, 1], rtol=1e-12, atol=1e-12)
    # a permutation importance's re-scorings (only the trees that read the shuffled column applied again):
    # the bits of scoring the shuffled copy whole, NaNs moved into and out of rows, across blocks
    A = design_matrix(val)
    change = scorer.column_change(A)
    for j in range(A.shape[1]):
        B = A.copy()
        B[:, j] = A[::-1, j]
        np.testing.assert_array_equal(change(B, j), scorer.proba_matrix(B))


def test_design_matrix_rounds_to_float32_whatever_the_container_and_row_selection(frame):
    rows = np.array([5, 0, 17])
    a32 = design_matrix(frame, rows=rows)
    a64 = design_matrix(frame, rows=rows, dtype=np.float64)
    assert a32.dtype == np.float32 and a64.dtype == np.float64
    np.testing.assert_array_equal(a32.astype(np.float64), a64)
    want = frame.iloc[rows][list(MODEL_FEATURES)].to_numpy(dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(a32, want)


def test_permutation_importance_agrees_with_sklearn_and_is_zero_for_an_unused_column():
    from scipy.special import expit
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.inspection import permutation_importance

    from model.propensity.evaluation import permutation_importance_auc

    def score(M: np.ndarray) -> np.ndarray:
        return expit(1.5 * M[:, 0] + 0.5 * M[:, 2])

    class Fixed(ClassifierMixin, BaseEstimator):  # sklearn's tool wants an estimator: the same rule as one
        def fit(self, X, y):
            self.classes_ = np.array([0, 1])
            return self

        def predict_proba(self, X):
            return np.column_stack([1 - score(X), score(X)])

    rng = np.random.default_rng(0)
    A = rng.normal(size=(20_000, 3)).astype(np.float32)
    y = (rng.random(len(A)) < score(A)).astype(int)
    got = permutation_importance_auc(score, A, y, ["a", "b", "c"], n_repeats=5).set_index("feature")
    assert got.index.tolist() == ["a", "c", "b"]  # largest first
    assert got.loc["b", "importance"] == got.loc["b", "sd"] == 0.0  # the score never reads column b
    want = permutation_importance(Fixed().fit(A, y), A, y, scoring="roc_auc", n_repeats=5, random_state=1)
    # different shuffles of 20,000 rows: the mean drops agree to a few sd of either
    np.testing.assert_allclose(got["importance"].loc[["a", "b", "c"]], want.importances_mean, atol=0.01)
    assert got.loc["a", "importance"] > 5 * got.loc["c", "importance"] > 0
    again = permutation_importance_auc(score, A, y, ["a", "b", "c"], n_repeats=5)
    pd.testing.assert_frame_equal(again.set_index("feature"), got)  # seeded: threads do not change it
