"""Experiment tables without Spark: the rules every row is checked against, and their pandas twin.

The definitions here (the rejection reasons and their order, the reserved columns, how a cell becomes
a number, what a covariate is called) are the one statement of the rules: ``etl.experiments`` applies
them on Spark for files of any size, :func:`classify_experiment_local` and
:func:`sufficient_statistics_local` apply them with pandas to a small upload (the dashboard, which
never starts a JVM). tests/etl/test_local_experiments.py checks both give the same reasons, rows and
statistics on the same input.

The order of :data:`REJECT_REASONS` is the order the rules are checked in; a row gets the first that
applies:

1. ``missing_user_id``: the user id is blank.
2. ``missing_variant``: the variant is blank.
3. ``conflicting_variant``: the user appears in two variants (all their rows go).
4. ``unparseable_value``: a metric or covariate cell is not a finite number (``true``/``false`` read as
   1/0; a blank one is unparseable), or a non-blank ``assigned_at`` is not an ISO time.
5. ``duplicate_user``: a repeat of the user's accepted row in the same variant (the first valid row in
   file order stays).

This module imports neither pyspark nor ``etl.experiments``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, get_args

import numpy as np
import pandas as pd

from etl.pseudonymize import pseudonymize

RejectReason = Literal[
    "missing_user_id",
    "missing_variant",
    "conflicting_variant",
    "unparseable_value",
    "duplicate_user",
]
REJECT_REASONS: Final[tuple[str, ...]] = get_args(RejectReason)

#: Grouping keys the reductions can add to the variant.
Breakdown = Literal["segment", "assigned_date"]

#: Segment label of users whose ``segment`` is blank or absent.
NO_SEGMENT: Final[str] = "(none)"
#: Columns that are never metrics.
RESERVED_COLUMNS: Final[tuple[str, ...]] = ("user_id", "variant", "segment", "assigned_at", "line_number")
PRE_PREFIX: Final[str] = "pre_"
#: Text cells read as numbers besides the numerals (compared after trimming and lower-casing).
BOOLEAN_TOKENS: Final[dict[str, float]] = {"true": 1.0, "false": 0.0}
#: The statistics columns of one (keys..., metric) row, in output order.
STAT_COLUMNS: Final[tuple[str, ...]] = (
    "n",
    "sum",
    "sum_squares",
    "pre_sum",
    "pre_sum_squares",
    "sum_products",
    "first_line",
)


class ExperimentSchemaError(ValueError):
    """The experiment table lacks required columns; the message lists what is missing and present."""

    def __init__(self, missing: Sequence[str], present: Sequence[str]) -> None:
        super().__init__(f"experiment table is missing columns {list(missing)}; it has {list(present)}")
        self.missing, self.present = tuple(missing), tuple(present)


def metric_columns(columns: Sequence[str]) -> list[str]:
    """The default metrics: every column that is neither reserved nor a ``pre_<metric>`` covariate."""
    names = set(columns)
    return [
        c
        for c in columns
        if c not in RESERVED_COLUMNS and not (c.startswith(PRE_PREFIX) and c[len(PRE_PREFIX) :] in names)
    ]


def covariate_columns(columns: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """The ``pre_<metric>`` covariates present for ``metrics``."""
    return [f"{PRE_PREFIX}{m}" for m in metrics if f"{PRE_PREFIX}{m}" in columns]


def check_columns(columns: Sequence[str], metrics: Sequence[str]) -> None:
    """Raise :class:`ExperimentSchemaError` unless ``user_id``, ``variant``, ``line_number`` and the metrics exist."""
    missing = [c for c in ("user_id", "variant", "line_number", *metrics) if c not in columns]
    if missing:
        raise ExperimentSchemaError(missing, list(columns))


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


#: Share of a column's non-blank values that must parse for it to count as a metric by default (a
#: numeric column with a few bad cells is a metric whose bad rows are rejected, not a text column).
NUMERIC_SHARE: Final[float] = 0.95


def looks_numeric(values: pd.Series, min_share: float = NUMERIC_SHARE) -> bool:
    """Whether a column could be a metric: at least ``min_share`` of its non-blank values parse."""
    present = values[_text(values).notna()] if not pd.api.types.is_numeric_dtype(values) else values
    return bool(len(present)) and float(parse_number(present).notna().mean()) >= min_share


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


def metric_kinds_local(accepted: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``metric, kind``: a conversion when every value is 0 or 1 (and there is one), otherwise continuous."""
    kinds = [
        "conversion" if len(accepted) and bool(accepted[m].isin((0.0, 1.0)).all()) else "continuous"
        for m in metrics
    ]
    return pd.DataFrame({"metric": list(metrics), "kind": kinds})


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


__all__ = [
    "BOOLEAN_TOKENS",
    "NO_SEGMENT",
    "NUMERIC_SHARE",
    "PRE_PREFIX",
    "REJECT_REASONS",
    "RESERVED_COLUMNS",
    "STAT_COLUMNS",
    "Breakdown",
    "ExperimentSchemaError",
    "RejectReason",
    "accepted_rows_local",
    "check_columns",
    "classify_experiment_local",
    "covariate_columns",
    "looks_numeric",
    "metric_columns",
    "metric_kinds_local",
    "parse_number",
    "parse_time",
    "rejection_counts_local",
    "sufficient_statistics_local",
]
