"""The pandas peer of ``benchmarks/abtest_bench.py``: the experiment rules of ``etl.experiments`` in pandas.

This was shoplens's own pandas implementation (the dashboard's, until the rules moved to polars); it
stays here as the pandas baseline the benchmark compares against: the same reasons, HMAC keys and
sufficient statistics, checked by the harness against the other tools' counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from etl.experiments import (
    BOOLEAN_TOKENS,
    NO_SEGMENT,
    PRE_PREFIX,
    REJECT_REASONS,
    STAT_COLUMNS,
    Breakdown,
    check_columns,
    covariate_columns,
)
from etl.pseudonymize import pseudonymize


def _text(values: pd.Series) -> pd.Series:
    """Cells as trimmed text (spaces only, as Spark's ``trim``), blanks and missing values as NA."""
    text = values.astype("string").str.strip(" ")
    return text.mask(text == "")


def parse_number(values: pd.Series) -> pd.Series:
    """A column as float64: ``true``/``false`` as 1/0, else the parsed number; NaN when not finite."""
    if pd.api.types.is_bool_dtype(values):
        parsed = values.astype("float64")
    elif pd.api.types.is_numeric_dtype(values):
        parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    else:
        text = _text(values).str.lower()
        tokens = text.map(BOOLEAN_TOKENS, na_action="ignore").astype("float64")
        parsed = tokens.fillna(pd.to_numeric(text.where(tokens.isna()), errors="coerce").astype("float64"))
    return parsed.where(np.isfinite(parsed.to_numpy(dtype="float64", na_value=np.nan)))


def parse_time(values: pd.Series) -> pd.Series:
    """ISO times as UTC timestamps (naive = UTC); NaT when blank or not a time."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    return pd.to_datetime(_text(values), utc=True, errors="coerce", format="ISO8601")


def classify_experiment_local(rows: pd.DataFrame, metrics: Sequence[str], key: bytes | None) -> pd.DataFrame:
    """Every input row once, with ``reason`` None when it is accepted (the pandas ``classify_experiment``).

    Output columns as the Spark version: ``user_key, variant, segment, assigned_at, line_number``, the
    metrics and present covariates as float64, and ``reason``. With ``key`` None the user key is an
    ordinal (``#<n>``) instead of an HMAC: enough for the rules, and no raw id is kept either way.
    """
    check_columns(list(rows.columns), metrics)
    values = [*metrics, *covariate_columns(list(rows.columns), metrics)]
    user = _text(rows["user_id"])
    codes, uniques = pd.factorize(user)  # each distinct id hashed once; NA is code -1
    names = [f"#{i}" for i in range(len(uniques))] if key is None else [pseudonymize(u, key) for u in uniques]
    user_key = pd.Series(np.asarray([*names, None], dtype=object)[codes], index=rows.index)
    has_segment, has_time = "segment" in rows.columns, "assigned_at" in rows.columns
    raw_time = _text(rows["assigned_at"]) if has_time else pd.Series(pd.NA, index=rows.index, dtype="string")
    assigned = parse_time(rows["assigned_at"]) if has_time else pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns, UTC]")
    out = pd.DataFrame(
        {
            "user_key": user_key,
            "variant": _text(rows["variant"]).astype(object).where(lambda v: v.notna(), None),
            "segment": _text(rows["segment"]).fillna(NO_SEGMENT).astype(object) if has_segment else NO_SEGMENT,
            "assigned_at": assigned,
            "line_number": rows["line_number"].astype("int64"),
            **{c: parse_number(rows[c]) for c in values},
        },
        index=rows.index,
    )
    variants = out.groupby("user_key", dropna=True)["variant"].transform("nunique")
    unparseable = (raw_time.notna() & assigned.isna()).to_numpy(dtype=bool)
    for c in values:
        unparseable |= out[c].isna().to_numpy()
    conditions = [
        out["user_key"].isna().to_numpy(),
        out["variant"].isna().to_numpy(),
        (variants > 1).to_numpy(dtype=bool, na_value=False),
        unparseable,
    ]
    reason = pd.Series(np.select(conditions, list(REJECT_REASONS[:4]), default=""), index=rows.index)
    ok = reason == ""
    order = out[ok].sort_values("line_number", kind="stable")
    repeat = order.groupby(["user_key", "variant"]).cumcount() > 0
    reason.loc[repeat[repeat].index] = "duplicate_user"
    return out.assign(reason=reason.mask(reason == "", None).astype(object))


def accepted_rows_local(classified: pd.DataFrame) -> pd.DataFrame:
    """The rows that count: one per user."""
    return classified[classified["reason"].isna()].drop(columns="reason")


def rejection_counts_local(classified: pd.DataFrame) -> pd.DataFrame:
    """``reason, rows, users`` for every reason that occurred (users counted by key)."""
    rejected = classified[classified["reason"].notna()]
    return (
        rejected.groupby("reason")
        .agg(rows=("reason", "size"), users=("user_key", "nunique"))
        .reset_index()[["reason", "rows", "users"]]
    )


def sufficient_statistics_local(
    accepted: pd.DataFrame, metrics: Sequence[str], by: Sequence[Breakdown] = ()
) -> pd.DataFrame:
    """Per variant (and ``by`` keys) and metric, the columns of ``etl.experiments.sufficient_statistics``."""
    keys = [*by, "variant"]
    source = accepted
    if "assigned_date" in by:
        source = accepted.assign(assigned_date=accepted["assigned_at"].dt.date)
    grouped = source.groupby(keys, sort=False, dropna=False)
    base = grouped.agg(n=("line_number", "size"), first_line=("line_number", "min"))
    frames = []
    for m in metrics:
        pre = f"{PRE_PREFIX}{m}"
        work = source[[*keys, m]].assign(_yy=source[m] ** 2)
        if pre in source.columns:
            work = work.assign(_x=source[pre], _xx=source[pre] ** 2, _xy=source[pre] * source[m])
        sums = work.groupby(keys, sort=False, dropna=False).sum(min_count=1)
        stats = pd.DataFrame(
            {
                "metric": m,
                "n": base["n"].astype("int64"),
                "sum": sums[m],
                "sum_squares": sums["_yy"],
                "pre_sum": sums.get("_x", np.nan),
                "pre_sum_squares": sums.get("_xx", np.nan),
                "sum_products": sums.get("_xy", np.nan),
                "first_line": base["first_line"].astype("int64"),
            },
            index=base.index,
        )
        frames.append(stats.reset_index())
    columns = [*keys, "metric", *STAT_COLUMNS]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
