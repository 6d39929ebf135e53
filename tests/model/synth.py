"""Synthetic per-user features tables with known clusters, for the model tests (numpy only)."""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORIES = (
    "accessories", "apparel", "appliances", "auto", "computers", "construction", "country_yard",
    "electronics", "furniture", "kids", "medicine", "sport", "stationery", "other",
)  # fmt: skip


def blobs(k: int = 4, n_per: int = 150, dim: int = 6, spread: float = 12.0, seed: int = 0) -> pd.DataFrame:
    """Well-separated Gaussian clusters in feature columns named like the real table, plus ``_truth``.

    Cluster centers sit on distinct axes (one-hot times ``spread``) so every pair is far apart.
    Values are shifted to be non-negative and skew-free (so no log transform kicks in).
    """
    rng = np.random.default_rng(seed)
    cols = ["n_events", "monetary", "price_level", "weekend_share", "holiday_share", "category_diversity",
            "night_share", "brand_concentration"][:dim]  # fmt: skip
    centers = np.zeros((k, dim))
    for i in range(k):
        centers[i, i % dim] = spread * (1 + i // dim)
    X = np.vstack([rng.normal(c, 1.0, size=(n_per, dim)) for c in centers])
    df = pd.DataFrame(X + 10, columns=cols)
    df["_truth"] = np.repeat(np.arange(k), n_per)
    df.insert(0, "user_key", [f"u{i:05d}" for i in range(len(df))])
    return df


def _shares(rng: np.random.Generator, n: int, favourites: dict[str, float]) -> np.ndarray:
    alpha = np.full(len(CATEGORIES), 0.3)
    for cat, a in favourites.items():
        alpha[CATEGORIES.index(cat)] = a
    return rng.dirichlet(alpha, size=n)


def personas(n_per: int = 200, seed: int = 0) -> pd.DataFrame:
    """A features table with the 7 personas of the generator, clearly apart, with nulls where real."""
    rng = np.random.default_rng(seed)
    frames = []
    spec = {
        # name: (events, sessions, buys, views_to_cart, cart_to_buy, price_level, recency, holiday, favs)
        "loyal_frequent": (120, 30, 8, 0.25, 0.7, 0.0, 5, 0.1, {"electronics": 2, "kids": 2}),
        "big_ticket": (30, 4, 1, 0.15, 0.8, 1.0, 40, 0.1, {"appliances": 3, "electronics": 3}),
        "bargain_hunter": (80, 12, 3, 0.2, 0.6, -1.0, 15, 0.1, {"apparel": 3, "accessories": 2}),
        "window_shopper": (60, 10, 0, 0.01, 0.0, 0.0, None, 0.1, {"furniture": 2, "computers": 2}),
        "cart_abandoner": (40, 6, 0, 0.4, 0.0, 0.1, None, 0.1, {"apparel": 2, "sport": 2}),
        "one_time_buyer": (6, 1, 1, 0.3, 0.9, 0.0, 120, 0.05, {"medicine": 2, "stationery": 2}),
        "holiday_shopper": (25, 4, 2, 0.2, 0.6, 0.1, 30, 0.85, {"kids": 3, "electronics": 2}),
    }
    for truth, (name, (ev, ses, buys, v2c, _c2b, pl, rec, hol, favs)) in enumerate(spec.items()):
        n = n_per
        n_events = np.maximum(1, rng.poisson(ev, n))
        n_sessions = np.maximum(1, rng.poisson(ses, n))
        frequency = rng.poisson(buys, n) if buys else np.zeros(n, dtype=int)
        if name in ("big_ticket", "one_time_buyer"):
            frequency = np.ones(n, dtype=int)
        n_purchases = frequency + rng.binomial(frequency, 0.2)
        n_views = np.maximum(1, (n_events * 0.85).astype(int))
        n_carts = rng.binomial(n_views, v2c) + n_purchases
        n_removals = rng.binomial(n_carts, 0.15)
        price = np.exp(5 + pl + rng.normal(0, 0.2, n))
        monetary = n_purchases * price
        recency = np.where(frequency > 0, rng.gamma(2.0, (rec or 1) / 2.0, n).round(), np.nan)
        tenure = np.maximum(np.nan_to_num(recency, nan=0), rng.gamma(3, 40, n).round())
        shares = _shares(rng, n, favs)
        hours = rng.dirichlet([1, 2, 3, 3], size=n)
        df = pd.DataFrame(
            {
                "n_events": n_events, "n_sessions": n_sessions,
                "active_days": np.minimum(n_sessions, rng.poisson(ses * 0.8, n) + 1),
                "events_per_session": n_events / n_sessions,
                "median_session_duration_s": rng.gamma(2, 150, n),
                "mean_days_between_visits": np.where(n_sessions > 1, tenure / n_sessions, np.nan),
                "frequency": frequency, "monetary": monetary, "recency_days": recency,
                "tenure_days": tenure, "n_views": n_views, "n_carts": n_carts,
                "n_removals": n_removals, "n_purchases": n_purchases,
                "view_to_cart_rate": n_carts / n_views,
                "cart_to_purchase_rate": np.where(n_carts > 0, n_purchases / np.maximum(n_carts, 1), np.nan),
                "cart_abandonment_rate": np.where(
                    n_carts > 0, 1 - np.minimum(n_purchases, n_carts) / np.maximum(n_carts, 1), np.nan
                ),
                "removal_rate": np.where(n_carts > 0, n_removals / np.maximum(n_carts, 1), np.nan),
                **{f"share_{c}": shares[:, i] for i, c in enumerate(CATEGORIES)},
                "category_diversity": (shares > 0.05).sum(axis=1),
                "brand_concentration": rng.beta(2, 5, n),
                "price_level": pl + rng.normal(0, 0.15, n),
                "weekend_share": rng.beta(2, 5, n),
                "night_share": hours[:, 0], "morning_share": hours[:, 1],
                "afternoon_share": hours[:, 2], "evening_share": hours[:, 3],
                "holiday_share": np.clip(hol + rng.normal(0, 0.05, n), 0, 1),
                "is_suspicious": False,
                "_truth": truth, "_persona": name,
            }
        )  # fmt: skip
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "user_key", [f"k{i:06d}" for i in range(len(out))])
    return out
