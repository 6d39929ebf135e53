"""Segment profiles, human names, one-sentence descriptions and marketing actions.

A profile summarises one segment against the whole base: size, share of users and of revenue
(``monetary``), feature medians and means, lift (segment mean / base mean), the RFM picture and the
top categories (largest mean ``share_*``). Names come from explicit, ordered rules over the profile
(``NAMING_RULES``; the first rule that holds names the segment), so a marketer can read why a
segment is called what it is. Two segments that earn the same name are told apart by their top
category when it differs, otherwise by the trait that separates them most (the largest ratio of
their lifts among ``TRAITS``, e.g. "Cart abandoners · electronics · frequent visitors" vs "... · rare
visitors"), never by a number. Pure: a features frame and segment ids in, frozen dataclasses out.

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
    "TRAITS",
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


#: Traits that can tell two same-named segments apart: feature -> (phrase when higher, when lower).
#: Non-negative features only, so the ratio of two segments' means (their lift ratio) is meaningful.
TRAITS: Mapping[str, tuple[str, str]] = {
    "n_sessions": ("frequent visitors", "rare visitors"),
    "events_per_session": ("long visits", "short visits"),
    "median_session_duration_s": ("slow browsers", "quick visits"),
    "frequency": ("buy more often", "buy less often"),
    "monetary": ("bigger spenders", "smaller spenders"),
    "view_to_cart_rate": ("quick to cart", "slow to cart"),
    "cart_abandonment_rate": ("abandon more carts", "abandon fewer carts"),
    "removal_rate": ("often remove items", "rarely remove items"),
    "category_diversity": ("many categories", "few categories"),
    "brand_concentration": ("brand-loyal", "brand-agnostic"),
    "weekend_share": ("weekend shoppers", "weekday shoppers"),
    "night_share": ("night owls", "rarely at night"),
    "morning_share": ("morning shoppers", "rarely in the morning"),
    "afternoon_share": ("afternoon shoppers", "rarely in the afternoon"),
    "evening_share": ("evening shoppers", "rarely in the evening"),
    "holiday_share": ("holiday-season", "off-season"),
    "tenure_days": ("long-standing", "newcomers"),
}  # fmt: skip


def _trait_ratios(a: SegmentProfile, b: SegmentProfile) -> list[tuple[float, str, bool]]:
    """(|ln(mean_a / mean_b)|, feature, a is higher) over TRAITS, largest first (equal means last)."""
    out = []
    for f in TRAITS:
        x, y = a.means.get(f), b.means.get(f)
        if x is None or y is None or not (np.isfinite(x) and np.isfinite(y)) or x <= 0 or y <= 0:
            continue
        out.append((abs(float(np.log(x / y))), f, x > y))
    return sorted(out, key=lambda t: (-t[0], t[1]))


def separating_traits(group: list[SegmentProfile]) -> list[str]:
    """A distinct phrase per profile of ``group`` saying what sets it apart from the others.

    Two profiles: the trait with the largest ratio of their means, "higher" phrase for one and
    "lower" for the other. More: for each profile, the trait whose mean is farthest (in ratio) from
    the mean of the others, skipping phrases already taken.
    """
    if len(group) == 2:
        ranked = _trait_ratios(group[0], group[1])
        if ranked:
            _, f, a_high = ranked[0]
            hi, lo = TRAITS[f]
            return [hi, lo] if a_high else [lo, hi]
        return ["larger" if group[0].size >= group[1].size else "smaller",
                "smaller" if group[0].size >= group[1].size else "larger"]  # fmt: skip
    taken: list[str] = []
    for i, p in enumerate(group):
        others = [q for j, q in enumerate(group) if j != i]
        rest = _replace(others[0], means={f: float(np.mean([q.means.get(f, np.nan) for q in others])) for f in TRAITS})
        phrase = next((TRAITS[f][0 if high else 1] for _, f, high in _trait_ratios(p, rest)
                       if TRAITS[f][0 if high else 1] not in taken), None)  # fmt: skip
        taken.append(phrase or f"{_top(p)} and more")
    return taken


def _disambiguate(profiles: list[SegmentProfile], keep: set[int]) -> list[SegmentProfile]:
    """Make names unique without numbers: the top category where it differs, then a separating trait.

    Names carried over from the previous model (ids in ``keep``) are left as they are when possible:
    a clash between a kept name and a new one renames only the new one.
    """
    out = list(profiles)

    def clashes() -> list[list[int]]:
        counts = pd.Series([p.name for p in out]).value_counts()
        return [[i for i, p in enumerate(out) if p.name == name] for name in counts[counts > 1].index]

    for dup in clashes():
        keeper = next((i for i in dup if out[i].segment_id in keep), None)
        tops = [_top(out[i]) for i in dup]
        if len(set(tops)) == len(tops):
            for i in dup:
                if i != keeper:
                    out[i] = _replace(out[i], name=f"{out[i].name} · {_top(out[i])}")
    for dup in clashes():
        keeper = next((i for i in dup if out[i].segment_id in keep), None)
        phrases = separating_traits([out[i] for i in dup])
        for i, phrase in zip(dup, phrases, strict=True):
            if i != keeper or len(dup) > 2:
                out[i] = _replace(out[i], name=f"{out[i].name} · {phrase}")
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
