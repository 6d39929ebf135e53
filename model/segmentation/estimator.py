"""Behavioural customer segmentation: impute, log, robust-scale, PCA, K-Means (scikit-learn style).

Pure: a per-user features DataFrame in, labels / coordinates / confidences out. No I/O, no logging
set-up. Persisting and scoring without scikit-learn is ``model.segmentation.scorer``.

Why scikit-learn and not Spark ML: the features table is one row per user (3 million rows x ~45
numeric columns is ~1 GB of float64), so it fits in driver memory. PCA, k selection and K-Means are
fitted on a random sample (``sample_size``, 50k by default): centroids and principal axes are
population means/covariances, which a 50k sample estimates to well under the spread of a segment,
and the silhouette index is O(n^2) so it must be sampled anyway. Assigning all 3 million users is one
vectorised nearest-centroid pass (seconds). Spark ML's KMeans would add a cluster round trip per
iteration for no gain at this size; Spark stays where it is right: building the features.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.stats import skew
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.inspection import permutation_importance
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import RobustScaler
from sklearn.tree import DecisionTreeClassifier, export_text
from threadpoolctl import threadpool_limits

from model.segmentation.rates import DERIVED_NAMES, derive_columns, derived_inputs, fit_priors
from model.segmentation.selection import KSelection, SegmentationWarning, select_k

__all__ = [
    "CANDIDATE_FEATURES",
    "DEFAULT_FEATURES",
    "LEGACY_FEATURES",
    "NON_FEATURE_COLUMNS",
    "FeatureImportance",
    "SegmentationModel",
    "SegmentationWarning",
    "assignment_confidence",
    "match_segments",
]

#: Numeric per-user features the model may use (the features table's behavioural columns).
CANDIDATE_FEATURES: tuple[str, ...] = (
    "n_events", "n_sessions", "active_days", "events_per_session", "median_session_duration_s",
    "mean_days_between_visits", "frequency", "monetary", "recency_days", "tenure_days",
    "n_views", "n_carts", "n_removals", "n_purchases", "view_to_cart_rate", "cart_to_purchase_rate",
    "cart_abandonment_rate", "removal_rate",
    "share_accessories", "share_apparel", "share_appliances", "share_auto", "share_computers",
    "share_construction", "share_country_yard", "share_electronics", "share_furniture", "share_kids",
    "share_medicine", "share_sport", "share_stationery", "share_other",
    "category_diversity", "brand_concentration", "price_level", "weekend_share",
    "night_share", "morning_share", "afternoon_share", "evening_share", "holiday_share",
    *DERIVED_NAMES,
)  # fmt: skip

#: Default model inputs: how users browse and buy, as quantities that converge within a few sessions
#: (``model.segmentation.rates``: rates and per-session averages shrunk toward the population, and the
#: hour-of-day contrasts) plus the median session duration. Totals (events, sessions, revenue, tenure)
#: are left out: they grow with the history, so a user's segment drifted as they came back (agreement of
#: the first 15 events with the full history 0.67 with them, 0.82 without, on 20k generated users). The
#: ``share_*`` category mix is left out too: it says *what* people buy, not *how*; with 14 mostly-zero
#: shares it outweighed every behavioural trait. Both still describe segments in
#: ``model.segmentation.profiles``. The previous default (every non-share candidate) is ``LEGACY_FEATURES``.
DEFAULT_FEATURES: tuple[str, ...] = (
    "eb_price_level", "median_session_duration_s", "hour_daytime", "hour_first_half", "eb_cart_rate",
    "eb_log_events_per_session", "eb_buy_session_rate", "eb_removal_rate", "eb_holiday_share",
)  # fmt: skip
LEGACY_FEATURES: tuple[str, ...] = tuple(c for c in CANDIDATE_FEATURES if not c.startswith("share_"))

#: Columns of the features table that are identifiers, timestamps or flags, never model inputs.
NON_FEATURE_COLUMNS: tuple[str, ...] = (
    "user_key", "first_event_time", "last_event_time", "as_of", "is_suspicious", "_truth",
)  # fmt: skip

RECENCY = "recency_days"
HAS_PURCHASED = "has_purchased"


@dataclass(frozen=True)
class FeatureImportance:
    """Which features separate the segments.

    ``permutation_mean``/``_std`` is the drop in held-out accuracy of a surrogate random forest
    (trained to predict the segment from the raw feature values) when one feature is shuffled
    (``sklearn.inspection.permutation_importance``, 5 repeats); ``tree_rules`` is a shallow
    decision tree fitted to the same task, as text (``sklearn.tree.export_text``) in the features' own
    units, readable by a marketer; ``fidelity`` is the tree's held-out accuracy against the
    K-Means labels (how far the rules can be trusted).
    """

    features: tuple[str, ...]
    permutation_mean: tuple[float, ...]
    permutation_std: tuple[float, ...]
    tree_rules: str
    fidelity: float

    def ranked(self) -> list[tuple[str, float]]:
        """(feature, importance) pairs, most important first."""
        pairs = sorted(zip(self.features, self.permutation_mean, strict=True), key=lambda p: -p[1])
        return [(f, float(v)) for f, v in pairs]

    def to_dict(self) -> dict:
        return {
            "ranked": [{"feature": f, "importance": v} for f, v in self.ranked()],
            "tree_rules": self.tree_rules,
            "fidelity": float(self.fidelity),
        }


def assignment_confidence(distances: np.ndarray) -> np.ndarray:
    """Confidence in [0, 1] from each row's centroid distances (n_samples, k).

    ``1 - d1 / d2`` with d1, d2 the nearest and second-nearest centroid distances: 1 when the user
    sits on its centroid, 0 on the boundary between two segments (where the assignment is a coin
    toss). Scale-free, so comparable across models. With k = 1 every confidence is 1.
    """
    if distances.shape[1] < 2:
        return np.ones(distances.shape[0])
    part = np.partition(distances, 1, axis=1)
    d1, d2 = part[:, 0], part[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        conf = np.where(d2 > 0, 1.0 - d1 / d2, 0.0)
    return np.clip(conf, 0.0, 1.0)


def match_segments(
    previous_centroids: np.ndarray,
    new_centroids: np.ndarray,
    previous_ids: np.ndarray | None = None,
    max_distance: float | None = None,
    next_id: int | None = None,
) -> np.ndarray:
    """Ids for ``new_centroids`` that keep the ids of the previous model's matching segments.

    Both centroid sets must live in the same space (use ``SegmentationModel.feature_centroids_``
    of both models, restricted to common columns). Minimum-total-distance one-to-one matching by the
    Hungarian algorithm (Kuhn 1955; ``scipy.optimize.linear_sum_assignment``). New centroids left
    unmatched (k grew) or matched farther than ``max_distance`` get fresh ids counting up from
    ``next_id`` (default: max previous id + 1), so an id is never reused for a different segment.
    Returns an int array of length ``len(new_centroids)``.
    """
    prev = np.asarray(previous_centroids, dtype=float)
    new = np.asarray(new_centroids, dtype=float)
    if prev.ndim != 2 or new.ndim != 2 or prev.shape[1] != new.shape[1]:
        raise ValueError(f"centroid arrays must be 2-D with equal widths, got {prev.shape}, {new.shape}")
    prev_ids = np.arange(len(prev)) if previous_ids is None else np.asarray(previous_ids, dtype=int)
    if len(prev_ids) != len(prev):
        raise ValueError("previous_ids must have one id per previous centroid")
    fresh = (int(prev_ids.max()) + 1 if len(prev_ids) else 0) if next_id is None else next_id
    ids = np.full(len(new), -1, dtype=int)
    if len(prev) and len(new):
        cost = np.sqrt(((new[:, None, :] - prev[None, :, :]) ** 2).sum(axis=2))
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            if max_distance is None or cost[r, c] <= max_distance:
                ids[r] = prev_ids[c]
    for i in np.flatnonzero(ids < 0):
        ids[i] = fresh
        fresh += 1
    return ids


#: Declared parameter constraints, checked in ``fit`` (scikit-learn's habit, without its private API).
PARAMETER_CONSTRAINTS: dict[str, str] = {
    "k_range": "tuple of two ints 2 <= k_min <= k_max",
    "n_components": "float in (0, 1] (variance to keep) or int >= 1",
    "seed": "int",
    "sample_size": "int >= 100",
    "n_bootstrap": "int >= 0",
    "min_stability": "float in [0, 1]",
    "corr_threshold": "float in (0, 1]",
    "skew_threshold": "float >= 0",
    "min_events": "int >= 0",
    "tree_depth": "int >= 1",
    "clip": "float > 0 or None",
    "n_threads": "int >= 1 or None",
    "feature_set": "'rates' (DEFAULT_FEATURES) or 'legacy' (LEGACY_FEATURES); used when features is None",
    "noise_power": "float >= 0",
}

#: Truncation noise below this share of the median feature's noise counts as that share, so that a
#: feature short histories happen to get exactly right cannot take an unbounded weight.
NOISE_FLOOR_SHARE = 0.05


class SegmentationModel:
    """PCA + K-Means customer segmentation with automatic choice of k.

    Parameters
    ----------
    k_range : (int, int), default (3, 10)
        Inclusive range of numbers of segments to consider.
    features : list of str or None
        Model columns: features-table columns or derived features (``rates.DERIVED_NAMES``); None
        uses ``DEFAULT_FEATURES`` (those computable from the frame); ``LEGACY_FEATURES`` is the
        previous default of totals and raw rates.
    feature_set : {"rates", "legacy"}, default "rates"
        With ``features=None``: ``DEFAULT_FEATURES`` (quickly converging shrunk rates) or every
        ``LEGACY_FEATURES`` column present in the frame.
    n_components : float or int, default 0.9
        PCA components: a float keeps that share of variance, an int that many components.
    seed : int, default 42
        Seed for every random step (sampling, K-Means, bootstraps, surrogate tree).
    sample_size : int, default 50_000
        Rows (random, seeded) used to fit PCA and K-Means and to select k; all rows are assigned.
    n_bootstrap : int, default 5
        Bootstrap refits per k for the stability index (0 disables it).
    min_stability : float, default 0.75
        A k whose mean bootstrap ARI is below this is not eligible.
    corr_threshold : float, default 0.95
        Of two features with |Pearson corr| above this (after log transform) the later one is dropped.
    skew_threshold : float, default 1.0
        Non-negative features with sample skewness above this are log1p-transformed.
    min_events : int, default 0
        Users with fewer events are left out of training (and flagged by the light scorer).
    exclude_suspicious : bool, default True
        Leave ``is_suspicious`` users (bots) out of training; they are still assigned by ``predict``.
    clip : float or None, default 3.0
        After robust scaling, values are winsorized to [-clip, clip]. A mostly-zero feature has a
        tiny IQR, so a few users would otherwise sit tens of units away and dominate PCA and K-Means.
    n_init : int, default 10
        K-Means restarts for the final fit.
    n_threads : int or None, default None
        Cap on OpenMP/BLAS threads during ``fit`` (``threadpoolctl``); None leaves the libraries'
        default. On a shared host set 1: spin-waiting threads made a 6k-user fit 6x slower.
    tree_depth : int, default 4
        Depth of the surrogate decision tree explaining the segments.
    noise_power : float, default 0.5
        With ``fit(..., truncated=...)``: each scaled feature is weighted by its truncation noise to
        the power ``-noise_power`` (weights normalised to a root mean square of 1) before PCA and
        K-Means, so the features that a short history estimates poorly move a user's segment less
        (``feature_weights_``). 0, or no ``truncated`` frame, weighs every feature alike.

    Attributes
    ----------
    feature_names_in_ : ndarray of str (n_features_in,)
        Input columns read from the features table (those requested plus those the derived
        features are computed from).
    requested_ : list of str
        The requested model columns (features-table columns and derived features), before selection.
    derived_features_ : list of str
        Requested features computed by ``model.segmentation.rates`` (shrunk rates, hour contrasts).
    priors_ : dict[str, float]
        Population rate of every shrunk rate (``rates.fit_priors`` on the training rows).
    imputation_values_ : dict[str, float]
        Value replacing nulls per requested column: the training median, except ``recency_days`` whose
        null means "never bought" and becomes max observed recency + 1 day (the far end of the
        scale) while a derived ``has_purchased`` 0/1 flag carries the fact itself.
    dropped_features_ : dict[str, str]
        Dropped feature -> reason ("constant" or "redundant with X (|r|=0.97)").
    features_ : list of str
        Features kept, in model order (may include ``has_purchased``).
    log_features_ : list of str
        Features that are log1p-transformed (non-negative, skewness > ``skew_threshold``).
    scaler_ : RobustScaler
    truncation_noise_ : ndarray (n_features,) or None
        Root mean square, per feature, of the scaled difference between a user's first-n-events value
        and their full-history value, over the ``truncated`` rows given to ``fit`` (None without them).
    feature_weights_ : ndarray (n_features,)
        Weight of each scaled feature in the PCA + K-Means metric (all 1 without ``truncated``).
    pca_ : PCA
        Fitted on the weighted scaled features.
    projection_mean_, projection_ : ndarray (n_features,), (n_components_, n_features)
        The PCA with the weights folded in: coordinates are ``(z - projection_mean_) @ projection_.T``
        for scaled features ``z``; the light scorer applies the same two arrays.
    explained_variance_ratio_ : ndarray (n_components_,)
    n_components_ : int
    selection_ : KSelection
    selection_scores_ : DataFrame, one row per k (silhouette, davies_bouldin, calinski_harabasz,
        stability_mean, stability_std, inertia, eligible, mean_rank)
    k_ : int
    kmeans_ : KMeans
    cluster_centers_ : ndarray (k_, n_components_)
        Centroids in PCA space, ordered by segment size (label 0 = largest training segment).
    feature_centroids_ : DataFrame (k_, n_features)
        The centroids mapped back to the (log-transformed, unscaled) feature space; comparable across
        retrains, used by ``match_segments``.
    labels_ : ndarray (n_train,)
        Labels of the training rows (after ``min_events`` / suspicious filtering).
    train_index_ : Index
        Index of the training rows in the frame given to ``fit``.
    feature_importance_ : FeatureImportance
    n_train_ : int

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"n_events": np.r_[rng.normal(5, 1, 300), rng.normal(50, 5, 300)],
    ...                    "monetary": np.r_[rng.normal(10, 2, 300), rng.normal(900, 50, 300)]})
    >>> m = SegmentationModel(k_range=(2, 3), n_bootstrap=2).fit(df)
    >>> int(m.k_)
    2
    """

    _parameter_constraints = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        k_range: tuple[int, int] = (3, 10),
        features: list[str] | None = None,
        n_components: float | int = 0.9,
        seed: int = 42,
        sample_size: int = 50_000,
        n_bootstrap: int = 5,
        min_stability: float = 0.75,
        corr_threshold: float = 0.95,
        skew_threshold: float = 1.0,
        min_events: int = 0,
        exclude_suspicious: bool = True,
        clip: float | None = 3.0,
        n_init: int = 10,
        n_threads: int | None = None,
        tree_depth: int = 4,
        feature_set: str = "rates",
        noise_power: float = 0.5,
    ) -> None:
        self.k_range = k_range
        self.features = features
        self.n_components = n_components
        self.seed = seed
        self.sample_size = sample_size
        self.n_bootstrap = n_bootstrap
        self.min_stability = min_stability
        self.corr_threshold = corr_threshold
        self.skew_threshold = skew_threshold
        self.min_events = min_events
        self.exclude_suspicious = exclude_suspicious
        self.clip = clip
        self.n_init = n_init
        self.n_threads = n_threads
        self.tree_depth = tree_depth
        self.feature_set = feature_set
        self.noise_power = noise_power

    # ------------------------------------------------------------------ validation
    def _validate_params(self) -> None:
        def bad(name: str) -> ValueError:
            return ValueError(
                f"{name}={getattr(self, name)!r} is invalid; expected {self._parameter_constraints[name]}"
            )

        kr = self.k_range
        if not (
            isinstance(kr, tuple | list)
            and len(kr) == 2
            and all(isinstance(v, Integral) for v in kr)
            and 2 <= kr[0] <= kr[1]
        ):
            raise bad("k_range")
        nc = self.n_components
        if isinstance(nc, bool) or not (
            (isinstance(nc, Integral) and nc >= 1) or (isinstance(nc, Real) and 0 < nc <= 1)
        ):
            raise bad("n_components")
        checks = {
            "seed": isinstance(self.seed, Integral),
            "sample_size": isinstance(self.sample_size, Integral) and self.sample_size >= 100,
            "n_bootstrap": isinstance(self.n_bootstrap, Integral) and self.n_bootstrap >= 0,
            "min_stability": isinstance(self.min_stability, Real) and 0 <= self.min_stability <= 1,
            "corr_threshold": isinstance(self.corr_threshold, Real) and 0 < self.corr_threshold <= 1,
            "skew_threshold": isinstance(self.skew_threshold, Real) and self.skew_threshold >= 0,
            "min_events": isinstance(self.min_events, Integral) and self.min_events >= 0,
            "tree_depth": isinstance(self.tree_depth, Integral) and self.tree_depth >= 1,
            "clip": self.clip is None or (isinstance(self.clip, Real) and self.clip > 0),
            "n_threads": self.n_threads is None
            or (isinstance(self.n_threads, Integral) and self.n_threads >= 1),
            "feature_set": self.feature_set in ("rates", "legacy"),
            "noise_power": isinstance(self.noise_power, Real) and not isinstance(self.noise_power, bool)
            and self.noise_power >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise bad(name)

    def _check_fitted(self) -> None:
        if not hasattr(self, "kmeans_"):
            raise RuntimeError("SegmentationModel is not fitted yet; call fit(features_df) first")

    # ------------------------------------------------------------------ preprocessing
    def _engineer(self, df: pd.DataFrame, fit: bool) -> pd.DataFrame:
        """Input columns -> imputed feature frame (before selection, log and scaling).

        Derived features (``model.segmentation.rates``) are computed from the raw inputs with the
        priors learned in the fit (``priors_``); then nulls are imputed.
        """
        cols = list(self.feature_names_in_)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise KeyError(f"features table lacks model input columns {missing}; present: {list(df.columns)}")
        raw = df[cols].apply(pd.to_numeric, errors="coerce").astype(float)
        arrays = {c: raw[c].to_numpy() for c in cols}
        if fit:
            self.priors_ = fit_priors(arrays) if self.derived_features_ else {}
        derived = derive_columns(arrays, self.derived_features_, self.priors_)
        X = pd.DataFrame({c: derived[c] if c in derived else raw[c].to_numpy() for c in self.requested_},
                         index=df.index)  # fmt: skip
        if fit:
            values: dict[str, float] = {}
            for c in self.requested_:
                if c == RECENCY:
                    top = X[c].max()
                    values[c] = float(top + 1.0) if pd.notna(top) else 366.0
                else:
                    med = X[c].median()
                    values[c] = float(med) if pd.notna(med) else 0.0
            self.imputation_values_ = values
        if RECENCY in self.requested_:
            X[HAS_PURCHASED] = X[RECENCY].notna().astype(float)
        return X.fillna(self.imputation_values_)

    def _to_model_space(self, engineered: pd.DataFrame) -> np.ndarray:
        """Selected features -> log1p where chosen -> float array (unscaled)."""
        X = engineered[self.features_].to_numpy(dtype=float, copy=True)
        for j, name in enumerate(self.features_):
            if name in self._log_set:
                X[:, j] = np.log1p(np.clip(X[:, j], 0.0, None))
        return X

    def _select_features(self, engineered: pd.DataFrame, sample: pd.DataFrame, raw: pd.DataFrame) -> None:
        """Drop constant features, choose log features, drop the later of each redundant pair.

        Constancy is checked on all training rows; skewness and correlations on the sample rows
        (``sample`` imputed, ``raw`` the same rows before imputation), as they are estimates anyway
        and pairwise-complete correlation over millions of rows is slow.

        Redundancy is measured on observed values only (pairwise-complete Pearson after the log
        transform): an imputed mass, e.g. every non-buyer's recency set to the far end, would
        otherwise make unrelated features look collinear.
        """
        dropped: dict[str, str] = {}
        kept = []
        lo, hi = engineered.min(), engineered.max()
        for c in engineered.columns:
            if lo[c] == hi[c]:
                dropped[c] = "constant"
            else:
                kept.append(c)
        if dropped:
            warnings.warn(f"dropping constant features {sorted(dropped)}", SegmentationWarning, stacklevel=4)
        logs = []
        for c in kept:
            col = sample[c].to_numpy()
            if lo[c] >= 0 and skew(col) > self.skew_threshold:
                logs.append(c)
        log_set = set(logs)
        observed = raw.reindex(columns=kept)
        for c in kept:
            if c not in raw:
                observed[c] = sample[c]
        trans = pd.DataFrame(
            {c: np.log1p(observed[c].clip(lower=0)) if c in log_set else observed[c] for c in kept}
        )
        corr = trans.corr().abs().to_numpy()
        final: list[str] = []
        for j, c in enumerate(kept):
            partner = next((f for f in final if corr[kept.index(f), j] > self.corr_threshold), None)
            if partner is None:
                final.append(c)
            else:
                dropped[c] = f"redundant with {partner} (|r|={corr[kept.index(partner), j]:.2f})"
        if not final:
            raise ValueError("no usable feature left after dropping constant columns")
        self.features_ = final
        self.log_features_ = [c for c in final if c in log_set]
        self._log_set = set(self.log_features_)
        self.dropped_features_ = dropped

    # ------------------------------------------------------------------ fit / apply
    def fit(
        self, features_df: pd.DataFrame, y: None = None, truncated: pd.DataFrame | None = None
    ) -> SegmentationModel:
        """Learn the pipeline and the segments from a per-user features table; returns ``self``.

        ``truncated``: features of the same users computed from only their first events (the
        threshold study's truncations; any number of rows per user, matched on ``user_key``). It
        sets the feature weights (``noise_power``); users absent from ``features_df`` are ignored.
        """
        self._validate_params()
        limits = nullcontext() if self.n_threads is None else threadpool_limits(limits=self.n_threads)
        with limits:
            return self._fit(features_df, truncated)

    def _fit(self, features_df: pd.DataFrame, truncated: pd.DataFrame | None) -> SegmentationModel:
        if not isinstance(features_df, pd.DataFrame):
            raise TypeError(f"features_df must be a pandas DataFrame, got {type(features_df).__name__}")
        def available(c: str) -> bool:
            return c in features_df.columns or (
                c in DERIVED_NAMES and all(i in features_df.columns for i in derived_inputs([c]))
            )

        if self.features is None:
            cols = [c for c in (DEFAULT_FEATURES if self.feature_set == "rates" else LEGACY_FEATURES) if available(c)]
        else:
            cols = list(self.features)
            bad = [c for c in cols if not available(c)]
            if bad:
                raise KeyError(f"requested features {bad} are not columns of features_df")
        if not cols:
            raise ValueError("features_df has none of the model's candidate feature columns")
        self.requested_ = cols
        self.derived_features_ = [c for c in cols if c in DERIVED_NAMES and c not in features_df.columns]
        inputs = [c for c in cols if c not in self.derived_features_]
        inputs += [c for c in derived_inputs(self.derived_features_) if c not in inputs]
        self.feature_names_in_ = np.asarray(inputs, dtype=object)
        self.n_features_in_ = len(inputs)

        keep = pd.Series(True, index=features_df.index)
        if self.min_events and "n_events" in features_df.columns:
            keep &= features_df["n_events"].fillna(0) >= self.min_events
        if self.exclude_suspicious and "is_suspicious" in features_df.columns:
            keep &= ~features_df["is_suspicious"].fillna(False).astype(bool)
        train = features_df.loc[keep]
        k_max = self.k_range[1]
        if len(train) < max(10 * k_max, 20):
            raise ValueError(
                f"{len(train)} training users (after min_events/suspicious filters) are too few for "
                f"k up to {k_max}; need at least {max(10 * k_max, 20)}"
            )
        self.train_index_ = train.index
        self.n_train_ = len(train)

        engineered = self._engineer(train, fit=True)
        rng = np.random.default_rng(self.seed)
        n = len(engineered)
        sample = np.sort(rng.choice(n, size=min(n, self.sample_size), replace=False))
        given = [c for c in self.requested_ if c not in self.derived_features_]
        raw = train.iloc[sample][given].apply(pd.to_numeric, errors="coerce")
        self._select_features(engineered, engineered.iloc[sample], raw.astype(float))
        Xm = self._to_model_space(engineered)
        Xs = Xm[sample]

        self.scaler_ = RobustScaler().fit(Xs)
        self.truncation_noise_ = None if truncated is None else self._truncation_noise(train, Xm, truncated)
        self.feature_weights_ = self._weights(self.truncation_noise_)
        Zs = self._scale(Xs)
        n_comp = self.n_components
        if isinstance(n_comp, Integral) and n_comp > Zs.shape[1]:
            warnings.warn(
                f"n_components={n_comp} > {Zs.shape[1]} features; keeping all",
                SegmentationWarning,
                stacklevel=3,
            )
            n_comp = Zs.shape[1]
        w = self.feature_weights_
        self.pca_ = PCA(n_components=n_comp, svd_solver="full", random_state=self.seed).fit(Zs * w)
        self.explained_variance_ratio_ = self.pca_.explained_variance_ratio_
        self.n_components_ = int(self.pca_.n_components_)
        # (z * w - mean) @ C.T == (z - mean / w) @ (C * w).T: the weights live in the projection.
        self.projection_mean_ = self.pca_.mean_ / w
        self.projection_ = self.pca_.components_ * w
        Ps = self._project(Zs)

        self.selection_: KSelection = select_k(
            Ps,
            tuple(self.k_range),
            seed=self.seed,
            n_bootstrap=self.n_bootstrap,
            min_stability=self.min_stability,
        )
        self.selection_scores_ = self.selection_.scores
        k = self.selection_.k
        km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(Ps)
        # Order segments by size (largest = 0) so ids do not depend on K-Means' arbitrary numbering.
        counts = np.bincount(km.labels_, minlength=k)
        order = np.lexsort((np.arange(k), -counts))
        km.cluster_centers_ = km.cluster_centers_[order]
        km.labels_ = np.argsort(order)[km.labels_]
        self.kmeans_ = km
        self.k_ = int(k)
        self.cluster_centers_ = km.cluster_centers_
        centers_model = self.scaler_.inverse_transform(self.pca_.inverse_transform(self.cluster_centers_) / w)
        self.feature_centroids_ = pd.DataFrame(centers_model, columns=self.features_)

        P_all = self._pca_from_model_space(Xm)
        self.labels_ = self.kmeans_.predict(P_all)
        sizes = np.bincount(self.labels_, minlength=k) / len(self.labels_)
        if (sizes < 0.01).any():
            warnings.warn(
                f"segments {np.flatnonzero(sizes < 0.01).tolist()} hold under 1% of users",
                SegmentationWarning,
                stacklevel=3,
            )
        self.feature_importance_ = self._explain(engineered, rng)
        return self

    def _pca_from_model_space(self, Xm: np.ndarray) -> np.ndarray:
        return self._project(self._scale(Xm))

    def _project(self, Z: np.ndarray) -> np.ndarray:
        """PCA coordinates of scaled features, with the arithmetic of the light scorer."""
        return (Z - self.projection_mean_) @ self.projection_.T

    def _truncation_noise(self, train: pd.DataFrame, Xm: np.ndarray, truncated: pd.DataFrame) -> np.ndarray:
        """Per feature: RMS of (first-n value - full-history value) in scaled units, over ``truncated``.

        ``Xm`` is the training rows in model space, so the full-history side is not engineered again.
        """
        if "user_key" not in truncated.columns or "user_key" not in train.columns:
            raise KeyError("truncated and features_df both need a user_key column to be matched")
        rows = pd.Index(train["user_key"]).get_indexer(truncated["user_key"])
        part = truncated.loc[rows >= 0]
        if part.empty:
            raise ValueError("no row of truncated belongs to a training user; cannot weigh the features")
        Zt = self._scale(self._to_model_space(self._engineer(part, fit=False)))
        Zf = self._scale(Xm[rows[rows >= 0]])
        return np.sqrt(np.mean((Zt - Zf) ** 2, axis=0))

    def _weights(self, noise: np.ndarray | None) -> np.ndarray:
        """``noise ** -noise_power`` (noise floored at ``NOISE_FLOOR_SHARE`` of its median), RMS 1."""
        if noise is None or self.noise_power == 0:
            return np.ones(len(self.features_))
        floor = NOISE_FLOOR_SHARE * float(np.median(noise))
        if floor <= 0:
            raise ValueError("the truncated histories equal the full ones for most features; nothing to weigh by")
        w = np.maximum(noise, floor) ** -float(self.noise_power)
        return w / np.sqrt(np.mean(w**2))

    def _scale(self, Xm: np.ndarray) -> np.ndarray:
        """Robust scaling, then winsorizing at +-``clip`` (in IQR units around the median)."""
        Z = self.scaler_.transform(Xm)
        return Z if self.clip is None else np.clip(Z, -self.clip, self.clip)

    def _explain(self, engineered: pd.DataFrame, rng: np.random.Generator) -> FeatureImportance:
        """Surrogates on raw (imputed) values, 5k rows: readable shallow-tree rules; permutation
        importance of a random forest (a shallow tree gives zero to every feature it did not split on)."""
        raw = engineered[self.features_]
        labels = self.labels_
        n = len(raw)
        cap = 5_000
        idx = np.sort(rng.choice(n, size=cap, replace=False)) if n > cap else np.arange(n)
        X, y = raw.iloc[idx], labels[idx]
        strat = y if np.bincount(y).min() >= 2 else None
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=self.seed, stratify=strat)
        tree = DecisionTreeClassifier(max_depth=self.tree_depth, random_state=self.seed).fit(X_tr, y_tr)
        forest = RandomForestClassifier(n_estimators=50, max_depth=10, random_state=self.seed, n_jobs=1).fit(
            X_tr, y_tr
        )
        perm = permutation_importance(forest, X_te, y_te, n_repeats=5, random_state=self.seed)
        return FeatureImportance(
            features=tuple(self.features_),
            permutation_mean=tuple(float(v) for v in perm.importances_mean),
            permutation_std=tuple(float(v) for v in perm.importances_std),
            tree_rules=export_text(tree, feature_names=list(self.features_), decimals=2),
            fidelity=float(tree.score(X_te, y_te)),
        )

    def transform(self, features_df: pd.DataFrame) -> np.ndarray:
        """PCA coordinates (n_samples, n_components_) of every row."""
        self._check_fitted()
        Xm = self._to_model_space(self._engineer(features_df, fit=False))
        return self._pca_from_model_space(Xm)

    def predict(self, features_df: pd.DataFrame) -> np.ndarray:
        """Segment label (0..k_-1, 0 = largest training segment) of every row; no event threshold."""
        self._check_fitted()
        return self.kmeans_.predict(self.transform(features_df))

    def confidence(self, features_df: pd.DataFrame) -> np.ndarray:
        """Distance-based confidence in [0, 1] per row (see ``assignment_confidence``)."""
        self._check_fitted()
        return assignment_confidence(self.kmeans_.transform(self.transform(features_df)))

    def predict_with_confidence(self, features_df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(labels, confidence) with one PCA pass."""
        self._check_fitted()
        d = self.kmeans_.transform(self.transform(features_df))
        return d.argmin(axis=1), assignment_confidence(d)

    def summary(self) -> dict:
        """JSON-friendly facts for the model report and metrics."""
        self._check_fitted()
        return {
            "k": self.k_,
            "n_train": self.n_train_,
            "features": list(self.features_),
            "dropped_features": dict(self.dropped_features_),
            "log_features": list(self.log_features_),
            "derived_features": list(self.derived_features_),
            "priors": dict(self.priors_),
            "imputation_values": dict(self.imputation_values_),
            "n_components": self.n_components_,
            "feature_weights": dict(zip(self.features_, self.feature_weights_.tolist(), strict=True)),
            "truncation_noise": None if self.truncation_noise_ is None
            else dict(zip(self.features_, self.truncation_noise_.tolist(), strict=True)),
            "explained_variance_ratio": [float(v) for v in self.explained_variance_ratio_],
            "selection": self.selection_.to_dict(),
            "feature_importance": self.feature_importance_.to_dict(),
            "params": {
                "k_range": list(self.k_range),
                "n_components": self.n_components,
                "seed": self.seed,
                "sample_size": self.sample_size,
                "n_bootstrap": self.n_bootstrap,
                "min_stability": self.min_stability,
                "corr_threshold": self.corr_threshold,
                "skew_threshold": self.skew_threshold,
                "min_events": self.min_events,
                "clip": self.clip,
                "feature_set": self.feature_set,
                "noise_power": self.noise_power,
            },
        }
