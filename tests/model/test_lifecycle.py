"""Lifecycle rules on hand-made users, against the documented thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from model.segmentation import LIFECYCLE_STAGES, lifecycle_stage, lifecycle_stages_doc

AS_OF = pd.Timestamp("2019-12-01", tz="UTC")


def _user(frequency=0, n_carts=0, recency=None, tenure=10, inactive=1) -> dict:
    return {"frequency": frequency, "n_carts": n_carts, "recency_days": recency, "tenure_days": tenure,
            "last_event_time": AS_OF - pd.Timedelta(days=inactive, hours=1), "as_of": AS_OF}  # fmt: skip


CASES = [
    (_user(frequency=3, recency=5, inactive=70), "lapsed"),
    (_user(frequency=2, recency=44), "repeat_buyer"),
    (_user(frequency=1, recency=10), "first_time_buyer"),
    (_user(frequency=2, recency=45), "at_risk"),
    (_user(frequency=1, recency=59, inactive=59), "at_risk"),
    (_user(n_carts=2), "carted_not_bought"),
    (_user(tenure=6), "new_visitor"),
    (_user(tenure=7), "browsing"),
    (_user(tenure=0, inactive=0), "new_visitor"),
]


def test_each_rule_and_its_boundary():
    df = pd.DataFrame([c[0] for c in CASES])
    assert lifecycle_stage(df).tolist() == [c[1] for c in CASES]


def test_every_user_gets_a_documented_stage_with_an_action():
    rng = np.random.default_rng(0)
    n = 500
    freq = rng.integers(0, 4, n)
    df = pd.DataFrame({
        "frequency": freq, "n_carts": rng.integers(0, 3, n),
        "recency_days": np.where(freq > 0, rng.integers(0, 90, n), np.nan),
        "tenure_days": rng.integers(0, 90, n),
        "last_event_time": AS_OF - pd.to_timedelta(rng.integers(0, 90, n), unit="D"), "as_of": AS_OF,
    })  # fmt: skip
    stages = lifecycle_stage(df)
    keys = {s.key for s in LIFECYCLE_STAGES}
    assert set(stages) <= keys and len(stages) == n
    doc = lifecycle_stages_doc()
    assert [d["key"] for d in doc] == [s.key for s in LIFECYCLE_STAGES]
    assert all(d["action"] and "{" not in d["rule"] for d in doc)
    assert "60 days" in doc[0]["rule"]
