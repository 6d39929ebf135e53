"""Assigning a customer to a segment from their first n events: nearest centroid (shipped) against classifiers.

Every family reads the same inputs, a user's first-n-events features in the shipped model's space,
and is judged on the same thing: does it give the segment the user's full history gets from the
shipped model? The classifiers learn that target from the training users' truncated rows (every n
pooled) and their full-history rows; the shipped rule needs no training. Agreement is measured per n
on held-out users (a seeded split by user, so no user is on both sides). Latency: the batch cost per
user and the median time of one single-user call, as the scoring API makes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from model.comparison.table import Table, finite

#: A rule from model-space rows to segment ids.
Predict = Callable[[np.ndarray], np.ndarray]
#: The margin of mean agreement by which a challenger "clearly" beats the shipped rule.
CLEAR_MARGIN = 0.02


@dataclass(frozen=True)
class Assigner:
    name: str
    build: Callable[[int], Any] | None  # seed -> unfitted scikit-learn classifier; None: the shipped rule
    max_train_rows: int | None = None  # a seeded sample (the SVM's fit is quadratic in the rows)


ASSIGNERS: tuple[Assigner, ...] = (
    Assigner("Nearest centroid (shipped)", None),
    Assigner("K-NN (k=15)", lambda s: KNeighborsClassifier(n_neighbors=15)),
    Assigner("Decision tree", lambda s: DecisionTreeClassifier(max_depth=8, min_samples_leaf=5, random_state=s)),
    Assigner("SVM (RBF)", lambda s: SVC(kernel="rbf", C=1.0, random_state=s), max_train_rows=6_000),
    Assigner("Random forest", lambda s: RandomForestClassifier(n_estimators=150, min_samples_leaf=2, n_jobs=1,
                                                               random_state=s)),
    Assigner("Gradient boosting", lambda s: HistGradientBoostingClassifier(max_iter=150, random_state=s)),
    Assigner("MLP (64-32)", lambda s: MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=400, early_stopping=True,
                                                    random_state=s)),
)  # fmt: skip


def nearest_centroid(centroids: np.ndarray, segment_ids: np.ndarray) -> Predict:
    """The shipped rule: the segment of the closest centroid (what the light scorer applies)."""
    C, ids = np.asarray(centroids, dtype=float), np.asarray(segment_ids)
    return lambda X: ids[((X[:, None, :] - C[None]) ** 2).sum(axis=2).argmin(axis=1)]


def _single_call_ms(predict: Predict, X: np.ndarray, calls: int = 50) -> float:
    times = []
    for i in range(min(calls, len(X))):
        t0 = time.perf_counter()
        predict(X[i : i + 1])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def compare_assigners(
    first: np.ndarray,
    n: np.ndarray,
    user: np.ndarray,
    target: np.ndarray,
    full: np.ndarray,
    full_user: np.ndarray,
    shipped: Predict,
    *,
    ns: tuple[int, ...] = (5, 10, 15, 20, 40),
    test_share: float = 0.3,
    seed: int = 42,
    assigners: tuple[Assigner, ...] = ASSIGNERS,
) -> Table:
    """Agreement with the full-history segment per n, on held-out users, and latency, for every family.

    ``first`` (rows: a user's first-n features in model space), ``n`` and ``user`` (an integer id per
    row) and ``target`` (that user's full-history shipped segment); ``full``/``full_user``: the
    full-history rows (training material for the classifiers, target = ``shipped(full)``).
    """
    users = np.unique(user)
    rng = np.random.default_rng(seed)
    test_users = rng.choice(users, size=max(1, round(test_share * len(users))), replace=False)
    is_test = np.isin(user, test_users)
    train_full = ~np.isin(full_user, test_users)
    X_train = np.vstack([first[~is_test], full[train_full]])
    y_train = np.concatenate([target[~is_test], shipped(full[train_full])])
    X_test, y_test, n_test = first[is_test], target[is_test], n[is_test]
    present = [m for m in ns if (n_test == m).sum() > 0]
    rows = []
    for a in assigners:
        if a.build is None:
            predict, fit_seconds = shipped, 0.0
        else:
            fit_rows = np.arange(len(X_train))
            if a.max_train_rows is not None and len(fit_rows) > a.max_train_rows:
                fit_rows = np.sort(np.random.default_rng(seed).choice(fit_rows, a.max_train_rows, replace=False))
            t0 = time.perf_counter()
            if len(np.unique(y_train[fit_rows])) < 2:
                raise ValueError("model comparison: the training users fall into a single segment")
            clf = a.build(seed).fit(X_train[fit_rows], y_train[fit_rows])
            fit_seconds = time.perf_counter() - t0
            predict = clf.predict
        t0 = time.perf_counter()
        pred = predict(X_test)
        batch = time.perf_counter() - t0
        agree = {f"agreement_n{m}": finite(float((pred[n_test == m] == y_test[n_test == m]).mean())) for m in present}
        rows.append({
            "family": a.name, "shipped": a.build is None, **agree,
            "mean_agreement": finite(float(np.mean([agree[f"agreement_n{m}"] for m in present]))),
            "fit_seconds": round(fit_seconds, 4), "batch_us_per_user": round(batch / max(len(X_test), 1) * 1e6, 3),
            "single_call_ms": round(_single_call_ms(predict, X_test), 4),
            "train_rows": int(len(X_train) if a.max_train_rows is None else min(len(X_train), a.max_train_rows)),
        })  # fmt: skip
    shipped_row = rows[0]
    best = max(rows, key=lambda r: (r["mean_agreement"] or -1.0, r["shipped"]))
    gain = (best["mean_agreement"] or 0.0) - (shipped_row["mean_agreement"] or 0.0)
    if best is shipped_row or gain < CLEAR_MARGIN:
        winner = shipped_row["family"]
        why = (f"no family agrees with the full-history segment clearly more often (best challenger "
               f"{best['family'] if best is not shipped_row else 'none'} {gain:+.3f} mean agreement, "
               f"margin {CLEAR_MARGIN}); the nearest centroid needs no training, is consistent with the "
               f"segments by construction and answers in {shipped_row['single_call_ms']:.3f} ms per user.")  # fmt: skip
        claim: dict[str, str | None] = {"why": why}
    else:
        winner = best["family"]
        claim = {
            "gain": f"agrees with the full-history segment {gain:+.3f} more often on average "
                    f"({best['mean_agreement']:.3f} against {shipped_row['mean_agreement']:.3f})",
            "cost": f"a classifier retrained with every model ({best['fit_seconds']:.1f} s here), a second artifact "
                    f"beside the centroids, {best['single_call_ms']:.3f} ms per single-user call against "
                    f"{shipped_row['single_call_ms']:.3f} ms, and the trust figure and the event threshold (both "
                    "measured on the centroid rule) measured again on the new one",
        }  # fmt: skip
    return Table(
        question="Which rule should assign a customer to a segment from their first n events?",
        rows=rows, metrics=[*(f"agreement_n{m}" for m in present), "mean_agreement", "fit_seconds",
                            "batch_us_per_user", "single_call_ms"],
        winner=winner, shipped=shipped_row["family"],
        rule=f"highest mean agreement over n = {', '.join(map(str, present))}; a challenger must beat the shipped "
             f"rule by at least {CLEAR_MARGIN}",
        **claim,
        notes=[f"{len(users)} study users, {len(test_users)} held out (seed {seed}); {int(is_test.sum())} held-out "
               f"first-n rows; n absent from the list had no user with at least twice n events."],
    )  # fmt: skip


__all__ = ["ASSIGNERS", "CLEAR_MARGIN", "Assigner", "compare_assigners", "nearest_centroid"]
