"""Segment profiles, human names, one-sentence descriptions and marketing actions.

A profile summarises one segment against the whole base: size, share of users and of revenue
(``monetary``), feature medians and means, lift (segment mean / base mean), the RFM picture and the
top categories (largest mean ``share_*``). Names come from explicit, ordered rules over the profile
(``NAMING_RULES``; the first rule that holds names the segment), so a marketer can read why a
segment is called what it is. Duplicate names are disambiguated by the segment's top category, then
by a number. Pure: a features frame and segment ids in, frozen dataclasses out.

The features table has no brand columns, so brands are not profiled here (``brand_concentration``
is: how concentrated each user's activity is on a few brands).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from model.segmentation.presentation import segment_color

__all__ = [
    "ACTIONS",
    "NAMING_RULES",
    "NamingRule",
    "SegmentProfile",
    "name_segment",
    "profile_documents",
    "profile_segments",
    "profiles_frame",
]

SHARE_PREFIX = "share_"


@dataclass(frozen=True)
class SegmentProfile:
    """One segment's picture. ``lift`` = segment mean / base mean (NaN where the base mean is 0)."""

    segment_id: int
    name: str
    archetype: str
    description: str
    actions: tuple[str, ...]
    size: int
    share_users: float
    share_revenue: float
    buyer_share: float
    rfm: dict[str, float]
    top_categories: tuple[tuple[str, float], ...]
    medians: dict[str, float]
    means: dict[str, float]
    lift: dict[str, float]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["actions"] = list(self.actions)
        d["top_categories"] = [{"category": c, "share": s} for c, s in self.top_categories]
        return _json_floats(d)


def _json_floats(obj):
    """NaN/inf -> None so the dict is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_floats(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_floats(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ---------------------------------------------------------------------- naming rules
@dataclass(frozen=True)
class NamingRule:
    """``applies(profile)`` decides; ``describe(profile)`` writes the one-sentence description."""

    archetype: str
    name: str
    why: str
    applies: Callable[[SegmentProfile], bool]
    describe: Callable[[SegmentProfile], str]


def _m(p: SegmentProfile, col: str, default: float = np.nan) -> float:
    return float(p.medians.get(col, default))


def _mean(p: SegmentProfile, col: str, default: float = np.nan) -> float:
    return float(p.means.get(col, default))


def _lift(p: SegmentProfile, col: str) -> float:
    v = p.lift.get(col, np.nan)
    return float(v) if v is not None else np.nan


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _top(p: SegmentProfile) -> str:
    return p.top_categories[0][0] if p.top_categories else "no single category"


def _ge(x: float, t: float) -> bool:
    return bool(np.isfinite(x) and x >= t)


def _le(x: float, t: float) -> bool:
    return bool(np.isfinite(x) and x <= t)


def _loyal(p: SegmentProfile) -> bool:
    """Repeat buyers: at least two purchase sessions for the median user, twice the base average."""
    return _ge(_m(p, "frequency"), 2) and _ge(_lift(p, "frequency"), 2.0)


NAMING_RULES: tuple[NamingRule, ...] = (
    NamingRule(
        "holiday_shopper", "Holiday shoppers",
        "mean holiday_share >= 0.4 and at least twice the base",
        lambda p: _ge(_mean(p, "holiday_share"), 0.4) and _ge(_lift(p, "holiday_share"), 2.0),
        lambda p: f"Concentrate {_pct(_mean(p, 'holiday_share'))} of their activity in the holiday peak; "
        f"{_pct(p.buyer_share)} buy, mostly {_top(p)}.",
    ),
    NamingRule(
        "cart_abandoner", "Cart abandoners",
        "under half have bought, median n_carts >= 2 and median cart_abandonment_rate >= 0.7",
        lambda p: p.buyer_share < 0.5 and _ge(_m(p, "n_carts"), 2)
        and _ge(_m(p, "cart_abandonment_rate"), 0.7),
        lambda p: f"Put products in the cart (median {_m(p, 'n_carts'):.0f}) but abandon "
        f"{_pct(_m(p, 'cart_abandonment_rate'))} of carts; {_pct(p.buyer_share)} have ever bought.",
    ),
    NamingRule(
        "window_shopper", "Window shoppers",
        "under 20% have bought, median n_carts <= 1 and mean n_views >= half the base mean",
        lambda p: p.buyer_share < 0.2 and _le(_m(p, "n_carts"), 1) and _ge(_lift(p, "n_views"), 0.5),
        lambda p: f"Browse a lot (median {_m(p, 'n_views'):.0f} views) but rarely add to cart or buy: "
        f"only {_pct(p.buyer_share)} have purchased.",
    ),
    NamingRule(
        "big_ticket", "Big-ticket buyers",
        "at least half bought and median price_level >= +0.3 (dearer than the category)",
        lambda p: p.buyer_share >= 0.5 and _ge(_m(p, "price_level"), 0.3),
        lambda p: f"Buy rarely but expensive items (prices {np.expm1(_m(p, 'price_level')):+.0%} vs. the "
        f"category), bringing {_pct(p.share_revenue)} of revenue from {_pct(p.share_users)} of users.",
    ),
    NamingRule(
        "bargain_hunter", "Bargain hunters",
        "at least 30% bought and median price_level <= -0.3 (cheaper than the category)",
        lambda p: p.buyer_share >= 0.3 and _le(_m(p, "price_level"), -0.3),
        lambda p: f"Seek the cheap end of each category (prices {np.expm1(_m(p, 'price_level')):+.0%} "
        f"vs. typical) and compare many products before buying.",
    ),
    NamingRule(
        "loyal_high_spender", "Loyal high spenders",
        "median frequency >= 2, frequency lift >= 2 and monetary lift >= 1.5",
        lambda p: _loyal(p) and _ge(_lift(p, "monetary"), 1.5),
        lambda p: f"Come back and buy often (median {_m(p, 'frequency'):.0f} purchase sessions, last "
        f"{_m(p, 'recency_days'):.0f} days ago) and bring {_pct(p.share_revenue)} of revenue.",
    ),
    NamingRule(
        "loyal_regular", "Loyal regulars",
        "median frequency >= 2 and frequency lift >= 2",
        _loyal,
        lambda p: f"Buy regularly (median {_m(p, 'frequency'):.0f} purchase sessions) with moderate "
        f"baskets; last purchase a median {_m(p, 'recency_days'):.0f} days ago.",
    ),
    NamingRule(
        "dormant_one_timer", "Dormant one-timers",
        "at least half bought, median frequency <= 1 and median recency_days >= 30",
        lambda p: p.buyer_share >= 0.5 and _le(_m(p, "frequency"), 1) and _ge(_m(p, "recency_days"), 30),
        lambda p: f"Bought once, a median {_m(p, 'recency_days'):.0f} days ago, and have not come back.",
    ),
    NamingRule(
        "new_one_timer", "Recent one-time buyers",
        "at least half bought and median frequency <= 1",
        lambda p: p.buyer_share >= 0.5 and _le(_m(p, "frequency"), 1),
        lambda p: f"Made a first purchase recently (median {_m(p, 'recency_days'):.0f} days ago); "
        "the second purchase is still to win.",
    ),
    NamingRule(
        "casual_browser", "Casual browsers",
        "under half have bought",
        lambda p: p.buyer_share < 0.5,
        lambda p: f"Light, occasional visitors (median {_m(p, 'n_events'):.0f} events); "
        f"{_pct(p.buyer_share)} have bought.",
    ),
    NamingRule(
        "occasional_buyer", "Occasional buyers",
        "fallback",
        lambda p: True,
        lambda p: f"Buy now and then (median {_m(p, 'frequency'):.0f} purchase sessions), close to the "
        "average customer.",
    ),
)  # fmt: skip

#: Two or three recommended marketing actions per archetype.
ACTIONS: Mapping[str, tuple[str, ...]] = {
    "holiday_shopper": (
        "Start holiday campaigns early with wish-list and gift-guide emails.",
        "Retarget in the weeks before the peak with bundles of their top categories.",
        "Offer an off-season incentive to turn seasonal visits into year-round habits.",
    ),
    "cart_abandoner": (
        "Send cart-reminder emails/push within hours, then a time-limited incentive.",
        "Remove checkout friction: shipping cost upfront, guest checkout, saved carts.",
        "Show stock and price-drop alerts for items left in the cart.",
    ),
    "window_shopper": (
        "Trigger a first-purchase discount after repeated views of the same product.",
        "Use social proof (reviews, bestsellers) on the products they browse.",
        "Retarget viewed items with price-drop and back-in-stock alerts.",
    ),
    "big_ticket": (
        "Offer financing/instalments and extended warranties.",
        "Cross-sell premium accessories and services after purchase.",
        "Give a dedicated, high-touch service channel; avoid blanket discounts.",
    ),
    "bargain_hunter": (
        "Target with flash sales, coupons and clearance newsletters.",
        "Promote value bundles and private-label alternatives.",
        "Use price-drop alerts rather than full-price recommendations.",
    ),
    "loyal_high_spender": (
        "Enrol in a VIP/loyalty tier with early access and free shipping.",
        "Personalised recommendations from their top categories; ask for reviews and referrals.",
        "Protect margin: reward with experiences and service, not discounts.",
    ),
    "loyal_regular": (
        "Loyalty points and replenishment reminders to keep the rhythm.",
        "Cross-sell adjacent categories to grow basket size.",
    ),
    "dormant_one_timer": (
        "Win-back campaign with a personalised second-purchase offer.",
        "Recommend complements to the first purchase.",
        "Ask for feedback on the first purchase; suppress from costly channels if no response.",
    ),
    "new_one_timer": (
        "Onboarding series after the first order, with a second-purchase incentive.",
        "Recommend complements to the first purchase within 2 weeks.",
    ),
    "casual_browser": (
        "Low-cost nurture: newsletter and personalised homepage.",
        "Capture an email/push opt-in with a welcome offer.",
    ),
    "occasional_buyer": (
        "Seasonal reminders and recommendations from their top categories.",
        "Test a loyalty-points offer to raise purchase frequency.",
    ),
}


def name_segment(profile: SegmentProfile) -> tuple[str, str, str]:
    """(archetype, name, description) from the first rule of ``NAMING_RULES`` that applies."""
    for rule in NAMING_RULES:
        if rule.applies(profile):
            return rule.archetype, rule.name, rule.describe(profile)
    raise AssertionError("the last naming rule always applies")  # pragma: no cover


# ---------------------------------------------------------------------- profiling
def _stats(df: pd.DataFrame, numeric: list[str]) -> tuple[pd.Series, pd.Series]:
    return df[numeric].median(skipna=True), df[numeric].mean(skipna=True)


def profile_segments(
    features_df: pd.DataFrame,
    segment_ids: np.ndarray | pd.Series,
    previous_names: Mapping[int, str] | None = None,
    n_top_categories: int = 3,
) -> list[SegmentProfile]:
    """Profile, name and describe every segment (ids < 0, i.e. "not enough activity", are skipped).

    ``previous_names`` (segment id -> name from the previous model) keeps a matched segment's name
    across retrains; other segments are named by the rules. Sorted by segment id.
    """
    ids = np.asarray(segment_ids)
    if len(ids) != len(features_df):
        raise ValueError(f"{len(ids)} segment ids for {len(features_df)} feature rows")
    df = features_df.reset_index(drop=True)
    mask = ids >= 0
    df, ids = df.loc[mask].reset_index(drop=True), ids[mask]
    numeric = [
        c for c in df.columns
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
    ]  # fmt: skip
    base_mean = df[numeric].mean(skipna=True)
    total_users = len(df)
    total_revenue = float(df["monetary"].fillna(0).sum()) if "monetary" in df else 0.0
    shares = [c for c in numeric if c.startswith(SHARE_PREFIX)]
    previous_names = dict(previous_names or {})

    provisional: list[SegmentProfile] = []
    for sid in sorted(np.unique(ids).tolist()):
        seg = df.loc[ids == sid]
        med, mean = _stats(seg, numeric)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = (mean / base_mean.replace(0, np.nan)).astype(float)
        revenue = float(seg["monetary"].fillna(0).sum()) if "monetary" in seg else 0.0
        if "frequency" in seg:
            buyers = seg["frequency"].fillna(0) > 0
        elif "recency_days" in seg:
            buyers = seg["recency_days"].notna()
        else:
            buyers = pd.Series(False, index=seg.index)
        rfm = {
            "recency_days_median": float(seg.loc[buyers, "recency_days"].median())
            if "recency_days" in seg and buyers.any() else np.nan,
            "frequency_median": float(med.get("frequency", np.nan)),
            "frequency_mean": float(mean.get("frequency", np.nan)),
            "monetary_median": float(med.get("monetary", np.nan)),
            "monetary_mean": float(mean.get("monetary", np.nan)),
            "monetary_per_buyer": float(revenue / buyers.sum()) if buyers.any() else 0.0,
        }  # fmt: skip
        top = mean[shares].sort_values(ascending=False).head(n_top_categories)
        top_categories = tuple((c[len(SHARE_PREFIX) :], float(v)) for c, v in top.items() if v > 0)
        provisional.append(
            SegmentProfile(
                segment_id=int(sid), name="", archetype="", description="", actions=(),
                size=len(seg), share_users=len(seg) / total_users,
                share_revenue=revenue / total_revenue if total_revenue > 0 else 0.0,
                buyer_share=float(buyers.mean()), rfm=rfm, top_categories=top_categories,
                medians={k: float(v) for k, v in med.items()},
                means={k: float(v) for k, v in mean.items()},
                lift={k: float(v) for k, v in lift.items()},
            )
        )  # fmt: skip
    named = []
    for p in provisional:
        archetype, name, description = name_segment(p)
        name = previous_names.get(p.segment_id, name)
        named.append(_replace(p, name=name, archetype=archetype, description=description,
                              actions=ACTIONS[archetype]))  # fmt: skip
    return _disambiguate(named, keep=set(previous_names))


def _replace(p: SegmentProfile, **changes) -> SegmentProfile:
    return SegmentProfile(**{**p.__dict__, **changes})


def _disambiguate(profiles: list[SegmentProfile], keep: set[int]) -> list[SegmentProfile]:
    """Make names unique: append the top category to duplicates, then a number if still equal.

    Names carried over from the previous model (ids in ``keep``) are left as they are when possible.
    """
    out = list(profiles)
    counts = pd.Series([p.name for p in out]).value_counts()
    for name in counts[counts > 1].index:
        dup = [i for i, p in enumerate(out) if p.name == name]
        keeper = next((i for i in dup if out[i].segment_id in keep), None)
        for i in dup:
            if i != keeper:
                out[i] = _replace(out[i], name=f"{name} · {_top(out[i])}")
    seen: dict[str, int] = {}
    for i, p in enumerate(out):
        if p.name in seen:
            seen[p.name] += 1
            out[i] = _replace(p, name=f"{p.name} {seen[p.name]}")
        else:
            seen[p.name] = 1
    return out


def profiles_frame(profiles: list[SegmentProfile]) -> pd.DataFrame:
    """One row per segment: id, name, size, shares, RFM and top category (for tables and reports)."""
    rows = []
    for p in profiles:
        rows.append(
            {
                "segment_id": p.segment_id,
                "segment_name": p.name,
                "archetype": p.archetype,
                "size": p.size,
                "share_users": p.share_users,
                "share_revenue": p.share_revenue,
                "buyer_share": p.buyer_share,
                **p.rfm,
                "top_category": _top(p),
                "description": p.description,
            }
        )
    return pd.DataFrame(rows)


def profile_documents(profiles: list[SegmentProfile]) -> list[dict]:
    """Profiles as published in ``profiles.json`` (docs/outputs.md): ``lifts`` and the segment's colour."""
    out = []
    for p in profiles:
        d = p.to_dict()
        d["lifts"] = d.pop("lift")
        d["color"] = segment_color(p.segment_id)
        out.append(d)
    return out
