"""Evaluation of a propensity score on a labelled cutoff: every figure the report and dashboard show.

Inputs are labels ``y`` (0/1) and scores ``p`` (probabilities); outputs are plain dicts and small
frames (no user keys). The threshold rule is campaign capacity: the top ``capacity`` share of users
by score are targeted (ties at the cut are all in), so precision and recall are "if we mailed the
top 10%". Expected calibration error (ECE, Guo et al. 2017, "On Calibration of Modern Neural
Networks", eq. 3): equal-width probability bins, sum over bins of (bin share) * |mean p - mean y|.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)
from threadpoolctl import threadpool_limits

DEFAULT_CAPACITY = 0.10
ECE_BINS = 10


def capacity_threshold(p: np.ndarray, capacity: float = DEFAULT_CAPACITY) -> float:
    """The score of the ``ceil(capacity * n)``-th best user: target everyone scoring at least this."""
    if not 0 < capacity <= 1:
        raise ValueError(f"capacity must be in (0, 1], got {capacity}")
    k = max(1, int(np.ceil(capacity * len(p))))
    return float(np.sort(p)[::-1][k - 1])


def confusion_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Confusion counts, precision and recall when users with ``p >= threshold`` are targeted."""
    pred = p >= threshold
    pos = y == 1
    tp, fp = int(np.sum(pred & pos)), int(np.sum(pred & ~pos))
    fn, tn = int(np.sum(~pred & pos)), int(np.sum(~pred & ~pos))
    return {
        "threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "targeted": tp + fp,
        "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
    }  # fmt: skip


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-width bin of p: users, mean predicted, observed rate (empty bins left out)."""
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    n = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y.astype(float), minlength=bins)
    keep = n > 0
    return pd.DataFrame({
        "bin": np.arange(bins)[keep], "lower": np.arange(bins)[keep] / bins, "users": n[keep].astype("int64"),
        "mean_predicted": sum_p[keep] / n[keep], "observed_rate": sum_y[keep] / n[keep],
    })  # fmt: skip


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with ``bins`` equal-width bins (module docstring)."""
    t = calibration_table(y, p, bins)
    if t.empty:
        return float("nan")
    return float(np.sum(t["users"] / len(p) * np.abs(t["mean_predicted"] - t["observed_rate"])))


def decile_table(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """Lift and cumulative gains by score decile (decile 10 = the best-scored 10%).

    Deciles are by rank (stable on ties, highest score first), so each holds n/10 users (+-1).
    """
    n = len(p)
    order = np.argsort(-p, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    decile = 10 - (rank * 10 // n)
    base = y.mean()
    rows = []
    cum_pos, total_pos = 0, max(int(y.sum()), 1)
    for d in range(10, 0, -1):
        m = decile == d
        pos = int(y[m].sum())
        cum_pos += pos
        rate = pos / m.sum() if m.any() else float("nan")
        rows.append({
            "decile": d, "users": int(m.sum()), "buyers": pos, "mean_score": float(p[m].mean()) if m.any() else None,
            "purchase_rate": rate, "lift": rate / base if base > 0 else None,
            "cumulative_gain": cum_pos / total_pos, "cumulative_users": float(np.sum(decile >= d) / n),
        })  # fmt: skip
    return pd.DataFrame(rows)


def threshold_grid(y: np.ndarray, p: np.ndarray, shares: np.ndarray | None = None) -> pd.DataFrame:
    """Confusion counts for a grid of audience shares (1%..100%): what the dashboard slider reads."""
    shares = np.round(np.arange(0.01, 1.0001, 0.01), 2) if shares is None else shares
    order = np.sort(p)[::-1]
    rows = []
    for s in shares:
        k = max(1, int(np.ceil(s * len(p))))
        rows.append({"audience_share": float(s), **confusion_at(y, p, float(order[k - 1]))})
    return pd.DataFrame(rows)


def _downsample_curve(x: np.ndarray, y: np.ndarray, t: np.ndarray, max_points: int = 400) -> pd.DataFrame:
    take = np.unique(np.linspace(0, len(x) - 1, min(len(x), max_points)).round().astype(int))
    return pd.DataFrame({"x": x[take], "y": y[take], "threshold": t[np.minimum(take, len(t) - 1)]})


def curves(y: np.ndarray, p: np.ndarray) -> dict[str, pd.DataFrame]:
    """ROC (x = false positive rate, y = true positive rate) and PR (x = recall, y = precision)."""
    fpr, tpr, thr = roc_curve(y, p)
    prec, rec, pthr = precision_recall_curve(y, p)
    return {
        "roc": _downsample_curve(fpr, tpr, np.where(np.isfinite(thr), thr, 1.0)),
        "pr": _downsample_curve(rec[::-1], prec[::-1], np.r_[pthr, 1.0][::-1]),
    }


def evaluate(y: np.ndarray, p: np.ndarray, capacity: float = DEFAULT_CAPACITY) -> dict[str, Any]:
    """Headline metrics on one labelled cutoff (JSON-ready; tables via the other functions)."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-15, 1 - 1e-15)
    if y.min() == y.max():
        raise ValueError("evaluation needs both buyers and non-buyers in the labelled cutoff")
    thr = capacity_threshold(p, capacity)
    top = decile_table(y, p).iloc[0]
    return {
        "users": len(y), "buyers": int(y.sum()), "base_rate": float(y.mean()),
        "roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])), "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p), "mean_predicted": float(p.mean()),
        "capacity": capacity, "confusion": confusion_at(y, p, thr), "top_decile_lift": float(top["lift"]),
    }  # fmt: skip


def permutation_importance_auc(
    predict: Callable[[np.ndarray], np.ndarray], A: np.ndarray, y: np.ndarray, names: list[str] | tuple[str, ...],
    n_repeats: int = 3, seed: int = 0, max_rows: int = 20_000,
    column_change: Callable[[np.ndarray], Callable[[np.ndarray, int], np.ndarray]] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Drop in ROC AUC when one column is shuffled (mean and sd over ``n_repeats``), largest first.

    ``predict`` maps a design matrix to probabilities (it must be thread-safe: the columns are scored
    on one thread per core, the numpy work releasing the GIL; the shuffles are drawn in order first,
    so the figures do not depend on the threads); at most ``max_rows`` rows (seeded sample).
    ``column_change``, if given, maps the (sampled) matrix ``A`` to ``(B, j) -> predict(B)`` for a
    copy ``B`` differing from it in column ``j`` only, equal to ``predict`` and cheaper
    (:meth:`model.propensity.scorer.LightPropensityScorer.column_change`).
    """
    rng = np.random.default_rng(seed)
    if len(A) > max_rows:
        take = rng.choice(len(A), size=max_rows, replace=False)
        A, y = A[take], y[take]
    base = roc_auc_score(y, predict(A))
    shuffles = [[rng.permutation(len(A)) for _ in range(n_repeats)] for _ in names]
    rescore = (lambda B, _j: predict(B)) if column_change is None else column_change(A)

    def drops(j: int) -> list[float]:
        out = []
        for order in shuffles[j]:
            B = A.copy()
            B[:, j] = B[order, j]
            out.append(base - roc_auc_score(y, rescore(B, j)))
        return out

    # one BLAS thread per scoring thread: the logistic score's matrix product would start a BLAS thread
    # per core inside each of them (twice the cores busy, spinning: 1.9x the time on 2 cores)
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool, threadpool_limits(limits=1, user_api="blas"):
        found = list(pool.map(drops, range(len(names))))
    rows = [{"feature": name, "importance": float(np.mean(d)), "sd": float(np.std(d))} for name, d in zip(names, found, strict=True)]
    return pd.DataFrame(rows).sort_values("importance", ascending=False, ignore_index=True)


__all__ = [
    "DEFAULT_CAPACITY",
    "ECE_BINS",
    "calibration_table",
    "capacity_threshold",
    "confusion_at",
    "curves",
    "decile_table",
    "evaluate",
    "expected_calibration_error",
    "permutation_importance_auc",
    "threshold_grid",
]
