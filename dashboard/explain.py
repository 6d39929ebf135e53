"""Why a customer is in their segment: their features next to the segment's medians (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from dashboard.charts import fmt_feature, label


def compare(features: Mapping[str, Any], profile: Mapping[str, Any], names: Sequence[str]) -> pd.DataFrame:
    """One row per feature: the user's value, the segment median, and user / median.

    ``names``: the model's features (the order of the returned rows follows the largest departure
    from the segment, |log(ratio)|, so what makes the user typical or atypical reads first).
    """
    medians = profile.get("medians") or {}
    rows = []
    for f in names:
        if f not in features or f not in medians:
            continue
        u, m = features.get(f), medians.get(f)
        u = None if u is None or (isinstance(u, float) and math.isnan(u)) else float(u)
        m = None if m is None else float(m)
        # a ratio only means "x times the typical member" for non-negative quantities with a positive median
        ratio = u / m if u is not None and u >= 0 and m is not None and m > 0 else None
        rows.append({"feature": f, "feature_label": label(f), "user_value": u, "median_value": m,
                     "user": fmt_feature(f, u), "median": fmt_feature(f, m), "ratio": ratio})  # fmt: skip
    df = pd.DataFrame(rows, columns=["feature", "feature_label", "user_value", "median_value", "user", "median", "ratio"])
    dist = df["ratio"].map(lambda r: abs(math.log(r)) if r and r > 0 else math.inf)  # no ratio: listed last
    return df.assign(_d=dist).sort_values("_d", kind="stable").drop(columns="_d").reset_index(drop=True)
