"""Profiles (recomputed independently with pandas) and the naming rules on hand-made profiles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from model.segmentation.profiles import (
    ACTIONS,
    NAMING_RULES,
    SegmentProfile,
    name_segment,
    profile_segments,
    profiles_frame,
)
from tests.model.synth import personas


def _profile(buyer_share=0.6, medians=None, means=None, lift=None, top=(("electronics", 0.4),), **kw):
    base = dict(
        segment_id=0, name="", archetype="", description="", actions=(), size=100, share_users=0.1,
        share_revenue=0.1, buyer_share=buyer_share, rfm={}, top_categories=top,
        medians={"n_events": 20, "n_views": 15, "n_carts": 1, "frequency": 2, "recency_days": 10,
                 "price_level": 0.0, "cart_abandonment_rate": 0.3, **(medians or {})},
        means={"holiday_share": 0.1, **(means or {})},
        lift={"holiday_share": 1.0, "monetary": 1.0, "n_views": 1.0, "frequency": 1.0, **(lift or {})},
    )  # fmt: skip
    base.update(kw)
    return SegmentProfile(**base)


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (_profile(means={"holiday_share": 0.7}, lift={"holiday_share": 4.0}), "Holiday shoppers"),
        (
            _profile(buyer_share=0.05, medians={"n_carts": 6, "cart_abandonment_rate": 0.95}),
            "Cart abandoners",
        ),
        (_profile(buyer_share=0.02, lift={"n_views": 1.5}), "Window shoppers"),
        (_profile(buyer_share=0.02, lift={"n_views": 0.2}), "Casual browsers"),
        (_profile(medians={"price_level": 0.8, "frequency": 1}), "Big-ticket buyers"),
        (_profile(medians={"price_level": -0.7}), "Bargain hunters"),
        (_profile(medians={"frequency": 6}, lift={"monetary": 3.0, "frequency": 4}), "Loyal high spenders"),
        (_profile(medians={"frequency": 4}, lift={"monetary": 1.1, "frequency": 3}), "Loyal regulars"),
        (_profile(medians={"frequency": 4}, lift={"monetary": 3.0, "frequency": 1.2}), "Occasional buyers"),
        (_profile(buyer_share=0.95, medians={"frequency": 1, "recency_days": 120}), "Dormant one-timers"),
        (_profile(buyer_share=0.95, medians={"frequency": 1, "recency_days": 3}), "Recent one-time buyers"),
        (_profile(buyer_share=0.3, lift={"n_views": 0.5}), "Casual browsers"),
        (_profile(buyer_share=0.7), "Occasional buyers"),
    ],
)
def test_naming_rules_on_hand_made_profiles(profile, expected):
    archetype, name, description = name_segment(profile)
    assert name == expected
    assert description.endswith(".") and len(description) < 200
    assert 2 <= len(ACTIONS[archetype]) <= 3


def test_every_rule_has_actions_and_the_last_rule_is_a_fallback():
    assert {r.archetype for r in NAMING_RULES} == set(ACTIONS)
    assert NAMING_RULES[-1].applies(_profile())


@pytest.fixture(scope="module")
def persona_df() -> pd.DataFrame:
    return personas(n_per=60, seed=11)


def test_profiles_match_an_independent_pandas_computation(persona_df):
    ids = persona_df["_truth"].to_numpy()
    profiles = profile_segments(persona_df, ids)
    total_rev = persona_df["monetary"].sum()
    for p in profiles:
        seg = persona_df[persona_df["_truth"] == p.segment_id]
        assert p.size == len(seg)
        assert p.share_users == pytest.approx(len(seg) / len(persona_df))
        assert p.share_revenue == pytest.approx(seg["monetary"].sum() / total_rev)
        assert p.buyer_share == pytest.approx((seg["frequency"] > 0).mean())
        assert p.medians["n_events"] == pytest.approx(seg["n_events"].median())
        assert p.lift["n_events"] == pytest.approx(seg["n_events"].mean() / persona_df["n_events"].mean())
        shares = seg.filter(regex="^share_")
        assert p.top_categories[0][0] == shares.mean().idxmax().removeprefix("share_")
    assert sum(p.share_users for p in profiles) == pytest.approx(1.0)
    assert sum(p.share_revenue for p in profiles) == pytest.approx(1.0)


def test_hidden_personas_get_their_names(persona_df):
    profiles = profile_segments(persona_df, persona_df["_truth"].to_numpy())
    names = {
        persona_df.loc[persona_df["_truth"] == p.segment_id, "_persona"].iloc[0]: p.name for p in profiles
    }
    assert names["loyal_frequent"] == "Loyal high spenders"
    assert names["big_ticket"] == "Big-ticket buyers"
    assert names["bargain_hunter"] == "Bargain hunters"
    assert names["window_shopper"] == "Window shoppers"
    assert names["cart_abandoner"] == "Cart abandoners"
    assert names["one_time_buyer"] == "Dormant one-timers"
    assert names["holiday_shopper"] == "Holiday shoppers"


def test_duplicate_names_are_disambiguated_and_previous_names_kept(persona_df):
    df = persona_df[persona_df["_persona"].isin(["bargain_hunter"])].copy()
    ids = np.where(np.arange(len(df)) % 2 == 0, 3, 8)
    df.loc[ids == 8, "share_apparel"] = 0.0
    df.loc[ids == 8, "share_kids"] = 0.9
    profiles = profile_segments(df, ids)
    assert [p.name for p in profiles] == ["Bargain hunters · apparel", "Bargain hunters · kids"]
    kept = profile_segments(df, ids, previous_names={3: "Bargain hunters"})
    assert [p.name for p in kept] == ["Bargain hunters", "Bargain hunters · kids"]
    assert len({p.name for p in kept}) == 2


def test_not_enough_activity_is_not_profiled_and_frame_is_flat(persona_df):
    ids = persona_df["_truth"].to_numpy().copy()
    ids[:10] = -1
    profiles = profile_segments(persona_df, ids)
    assert all(p.segment_id >= 0 for p in profiles)
    assert sum(p.size for p in profiles) == len(persona_df) - 10
    frame = profiles_frame(profiles)
    assert list(frame["segment_id"]) == sorted(set(ids[ids >= 0]))
    json.dumps(profiles[0].to_dict(), allow_nan=False)


def test_same_name_and_top_category_is_told_apart_by_the_largest_lift_never_a_number(persona_df):
    """The issue-16 clash: two cart-abandoner segments, both mostly electronics, that differ in visits."""
    df = persona_df[persona_df["_persona"] == "cart_abandoner"].copy().reset_index(drop=True)
    df["share_electronics"] = 0.8
    ids = np.where(np.arange(len(df)) % 2 == 0, 1, 4)
    df.loc[ids == 4, "n_sessions"] = df.loc[ids == 4, "n_sessions"] * 6  # the separating trait
    profiles = profile_segments(df, ids)
    a, b = (p.name for p in profiles)
    assert a == "Cart abandoners · rare visitors" and b == "Cart abandoners · frequent visitors"
    assert not any(ch.isdigit() for ch in a + b)
    # independent: the largest |ln(mean_4 / mean_1)| among the traits is n_sessions
    from model.segmentation.profiles import TRAITS

    m1, m4 = df[ids == 1].mean(numeric_only=True), df[ids == 4].mean(numeric_only=True)
    ratios = {f: abs(np.log(m4[f] / m1[f])) for f in TRAITS if m1.get(f, 0) > 0 and m4.get(f, 0) > 0}
    assert max(ratios, key=ratios.get) == "n_sessions"
    kept = profile_segments(df, ids, previous_names={1: "Cart abandoners"})
    assert [p.name for p in kept] == ["Cart abandoners", "Cart abandoners · frequent visitors"]


def test_three_way_clash_gets_three_distinct_traits(persona_df):
    df = persona_df[persona_df["_persona"] == "window_shopper"].copy().reset_index(drop=True)
    ids = np.arange(len(df)) % 3
    df.loc[ids == 1, "n_sessions"] *= 5
    df.loc[ids == 2, "weekend_share"] = 0.95
    names = [p.name for p in profile_segments(df, ids)]
    assert len(set(names)) == 3 and all(n.startswith("Window shoppers · ") for n in names)
    assert not any(ch.isdigit() for n in names for ch in n)
