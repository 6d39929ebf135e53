"""The segmentation views the dashboard reads: small tables built from the segments and features.

Pure pandas (one row per user in, one row per segment or a bounded sample out), so the job that
publishes them and the tests that fake a lake call the same builders. No user key leaves them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from model.segmentation.presentation import NOT_ENOUGH_NAME, segment_color

PCA_SAMPLE_MAX = 20_000


def segment_summary(segments: pd.DataFrame, features: pd.DataFrame, profiles: list[dict]) -> pd.DataFrame:
    """One row per segment (plus segment_id null = not enough activity): users, revenue, shares, colour."""
    rev = features[["user_key", "monetary"]] if "monetary" in features else pd.DataFrame(columns=["user_key"])
    df = segments.merge(rev, on="user_key", how="left")
    df["monetary"] = df.get("monetary", pd.Series(0.0, index=df.index)).fillna(0.0)
    df["_sid"] = df["segment_id"].astype("float").fillna(-1).astype(int)
    g = df.groupby("_sid").agg(users=("user_key", "size"), revenue=("monetary", "sum"),
                               avg_confidence=("confidence", "mean"))  # fmt: skip
    names = {int(p["segment_id"]): p["name"] for p in profiles}
    names.update(df.drop_duplicates("_sid").set_index("_sid")["segment_name"].to_dict())
    total_users, total_rev = g["users"].sum(), g["revenue"].sum()
    out = pd.DataFrame(
        {
            "segment_id": pd.array([None if s < 0 else s for s in g.index], dtype="Int64"),
            "segment_name": [NOT_ENOUGH_NAME if s < 0 else names.get(s, f"Segment {s}") for s in g.index],
            "users": g["users"].astype("int64").to_numpy(),
            "share_users": (g["users"] / total_users).to_numpy() if total_users else 0.0,
            "revenue": g["revenue"].astype(float).to_numpy(),
            "share_revenue": (g["revenue"] / total_rev).to_numpy() if total_rev > 0 else 0.0,
            "avg_confidence": g["avg_confidence"].astype(float).to_numpy(),
            "color": [segment_color(None if s < 0 else s) for s in g.index],
        }
    )
    return out.sort_values("users", ascending=False, kind="stable").reset_index(drop=True)


def pca_sample(segments: pd.DataFrame, max_rows: int = PCA_SAMPLE_MAX, seed: int = 0) -> pd.DataFrame:
    """Scored users' (pc1, pc2, segment) sampled per segment in proportion to its size, <= max_rows.

    Each segment keeps at least min(its size, 1% of ``max_rows``) points so small segments stay visible.
    """
    scored = segments.loc[segments["segment_id"].notna(), ["pc1", "pc2", "segment_id", "segment_name"]]
    if len(scored) <= max_rows:
        return scored.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    sizes = scored.groupby("segment_id").size()
    floor = max_rows // 100
    quota = np.maximum(np.floor(sizes / len(scored) * (max_rows - floor * len(sizes))), 0).astype(int) + floor
    parts = []
    for sid, idx in scored.groupby("segment_id").indices.items():
        take = min(len(idx), int(quota[sid]))
        parts.append(scored.iloc[np.sort(rng.choice(idx, size=take, replace=False))])
    return pd.concat(parts).head(max_rows).reset_index(drop=True)


def segment_flow(previous: pd.DataFrame | None, current: pd.DataFrame) -> pd.DataFrame:
    """Users per (segment under the previous model -> segment now), over users scored by both."""
    cols = ["from_segment_name", "to_segment_name", "users"]
    if previous is None:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "users" else "string") for c in cols})
    both = previous[["user_key", "segment_name"]].merge(
        current[["user_key", "segment_name"]], on="user_key", suffixes=("_from", "_to")
    )
    flow = both.groupby(["segment_name_from", "segment_name_to"]).size().reset_index(name="users")
    flow.columns = cols
    return flow.sort_values("users", ascending=False, kind="stable").reset_index(drop=True)


__all__ = ["PCA_SAMPLE_MAX", "pca_sample", "segment_flow", "segment_summary"]
