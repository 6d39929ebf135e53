"""Lifecycle stages: where every customer with at least one event stands, from explicit rules.

The behavioural segment says *how* a customer shops and needs enough events to be trusted; the
lifecycle stage says *where they are* in their relationship with the shop and is defined for every
user from the first event on. Pure rules over columns of the per-user features table
(docs/features.md), evaluated in the order of :data:`LIFECYCLE_STAGES` (the first rule that holds
names the stage), so a marketer can read why a customer is where they are. The batch scoring
(``score_frame``) and the Spark-free ``shoplens predict`` call the same :func:`lifecycle_stage`.

Thresholds (:class:`LifecycleRules`, defaults below) are in days relative to the features' ``as_of``:

=====================  ============================================================================
stage                  rule (first that holds)
=====================  ============================================================================
``lapsed``             no event for ``lapsed_days`` (60) days or more
``repeat_buyer``       purchases in two or more sessions, the last under ``at_risk_days`` (45) ago
``first_time_buyer``   purchases in exactly one session, under ``at_risk_days`` (45) ago
``at_risk``            has bought, but the last purchase is ``at_risk_days`` (45) days old or more
``carted_not_bought``  never bought, at least one add-to-cart
``new_visitor``        never bought nor carted, first seen under ``new_days`` (7) days ago
``browsing``           never bought nor carted, known for ``new_days`` (7) days or more
=====================  ============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "LIFECYCLE_COLUMNS",
    "LIFECYCLE_STAGES",
    "LifecycleRules",
    "LifecycleStage",
    "lifecycle_action",
    "lifecycle_label",
    "lifecycle_stage",
    "lifecycle_stage_of",
    "lifecycle_stages_doc",
]


@dataclass(frozen=True)
class LifecycleStage:
    """One stage: its key (the value stored in ``segments.lifecycle_stage``), label, rule and action."""

    key: str
    label: str
    rule: str
    action: str


@dataclass(frozen=True)
class LifecycleRules:
    """The day thresholds of the rules (see the module docstring)."""

    lapsed_days: int = 60
    at_risk_days: int = 45
    new_days: int = 7


LIFECYCLE_STAGES: tuple[LifecycleStage, ...] = (
    LifecycleStage("lapsed", "Lapsed", "no event for {lapsed_days} days or more",
                   "Low-cost win-back (a 'we miss you' email with a personal offer); "
                   "suppress from paid media if it is not opened."),
    LifecycleStage("repeat_buyer", "Repeat buyer",
                   "purchases in 2 or more sessions, the last under {at_risk_days} days ago",
                   "Loyalty programme, early access and referrals; cross-sell adjacent categories."),
    LifecycleStage("first_time_buyer", "First-time buyer",
                   "purchases in exactly 1 session, under {at_risk_days} days ago",
                   "Onboarding series with a second-purchase incentive and complements of the first order."),
    LifecycleStage("at_risk", "At-risk buyer",
                   "has bought, the last purchase {at_risk_days} days ago or more",
                   "Re-activation offer on their favourite categories before they lapse."),
    LifecycleStage("carted_not_bought", "Carted, never bought",
                   "never bought, at least one add-to-cart",
                   "Cart reminders within hours, then a time-limited first-order incentive."),
    LifecycleStage("new_visitor", "New visitor",
                   "never bought nor carted, first seen under {new_days} days ago",
                   "Welcome series and an email/push opt-in with a first-visit offer."),
    LifecycleStage("browsing", "Browsing, no cart",
                   "never bought nor carted, known for {new_days} days or more",
                   "Recommendations and price-drop alerts on browsed products; social proof."),
)  # fmt: skip

#: Columns of the features table the rules read.
LIFECYCLE_COLUMNS: tuple[str, ...] = ("frequency", "n_carts", "recency_days", "tenure_days", "last_event_time", "as_of")

_BY_KEY = {s.key: s for s in LIFECYCLE_STAGES}
US_PER_DAY = 86_400_000_000


def _micros(times: pd.Series) -> np.ndarray:
    """Epoch microseconds as float (NaN where null)."""
    t = pd.to_datetime(times, utc=True).dt.tz_localize(None).to_numpy("datetime64[us]")
    return np.where(np.isnat(t), np.nan, t.astype("int64").astype(float))


def lifecycle_stage(features: pd.DataFrame, rules: LifecycleRules | None = None) -> np.ndarray:
    """The stage key of every row of a per-user features table (object array, row order).

    Reads :data:`LIFECYCLE_COLUMNS`; nulls mean "none" (no purchase, no cart).
    """
    missing = [c for c in LIFECYCLE_COLUMNS if c not in features.columns]
    if missing:
        raise KeyError(f"features table lacks lifecycle columns {missing}")

    def num(col: str) -> np.ndarray:
        return pd.to_numeric(features[col], errors="coerce").to_numpy(dtype=float)

    return lifecycle_stage_of(num("frequency"), num("n_carts"), num("recency_days"), num("tenure_days"),
                              _micros(features["last_event_time"]), _micros(features["as_of"]), rules)  # fmt: skip


def lifecycle_stage_of(
    frequency: np.ndarray, n_carts: np.ndarray, recency_days: np.ndarray, tenure_days: np.ndarray,
    last_event_us: np.ndarray, as_of_us: np.ndarray, rules: LifecycleRules | None = None,
) -> np.ndarray:  # fmt: skip
    """The rules on float arrays (NaN = null; the times in epoch microseconds), for feature columns that
    are not a frame (one history scored by the API). Inactive days: whole days from the last event to
    the as-of time."""
    rules = rules or LifecycleRules()
    as_of, last_event = np.asarray(as_of_us, dtype=float), np.asarray(last_event_us, dtype=float)
    frequency = np.nan_to_num(np.asarray(frequency, dtype=float), nan=0.0)
    carts = np.nan_to_num(np.asarray(n_carts, dtype=float), nan=0.0)
    recency = np.asarray(recency_days, dtype=float)
    bought = frequency >= 1
    recent_buy = bought & (np.nan_to_num(recency, nan=np.inf) < rules.at_risk_days)
    conditions = [
        np.nan_to_num(np.floor((as_of - last_event) / US_PER_DAY), nan=0.0) >= rules.lapsed_days,
        recent_buy & (frequency >= 2),
        recent_buy,
        bought,
        carts >= 1,
        np.nan_to_num(np.asarray(tenure_days, dtype=float), nan=0.0) < rules.new_days,
    ]
    keys = [s.key for s in LIFECYCLE_STAGES]
    return np.select(conditions, keys[:-1], default=keys[-1]).astype(object)


def lifecycle_label(key: str | None) -> str | None:
    """The readable label of a stage key (None for None)."""
    return None if key is None else _BY_KEY[key].label


def lifecycle_action(key: str | None) -> str | None:
    """The recommended action of a stage key (None for None)."""
    return None if key is None else _BY_KEY[key].action


def lifecycle_stages_doc(rules: LifecycleRules | None = None) -> list[dict]:
    """The stages as JSON (key, label, rule with its thresholds filled in, action), in rule order."""
    rules = rules or LifecycleRules()
    values = vars(rules)
    return [{"key": s.key, "label": s.label, "rule": s.rule.format(**values), "action": s.action}
            for s in LIFECYCLE_STAGES]  # fmt: skip
