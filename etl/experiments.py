"""Experiment tables on Arrow (polars): validate one-row-per-user rows, reduce them to sufficient statistics.

One implementation of the rules, used by ``shoplens abtest analyze`` for files of any size that fit
in memory (one row per user: 10 million users is about 1 GB), by the lake path for its assignments,
and by the dashboard for uploads. Why polars and not Spark: the rules need a user-level grouping, and
a Spark window over 10 million 64-character keys cost minutes on 2 cores where polars needs seconds;
the reduction's output is a few rows per variant, so nothing is gained by distributing it. Spark stays
where the events are (``etl.experiment_metrics``).

Input: ``user_id``, ``variant``, metric columns, optionally ``segment``, ``assigned_at`` and
``pre_<metric>`` covariates, plus the ``line_number`` :func:`read_experiment` adds (file order).
Values may be typed (Parquet) or text (CSV): ``true``/``false`` read as 1/0, anything else must parse
as a finite number.

The order of :data:`REJECT_REASONS` is the order the rules are checked in; a row gets the first that
applies:

1. ``missing_user_id``: the user id is blank.
2. ``missing_variant``: the variant is blank.
3. ``conflicting_variant``: the user appears in two variants (all their rows go).
4. ``unparseable_value``: a metric or covariate cell is not a finite number (a blank one is
   unparseable), or a non-blank ``assigned_at`` is not an ISO time.
5. ``duplicate_user``: a repeat of the user's accepted row in the same variant (the first valid row in
   file order stays).

Raw user ids exist only inside :func:`classify_experiment`: its output keys each user by the HMAC of
the id when a key is given (the lake path, which joins users to the lake), else by the line number of
the user's first row, which is enough for the rules and counts and is no identifier at all.

This module imports no pyspark: the dashboard uses it without a JVM.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

import numpy as np
import pandas as pd
import polars as pl

from etl.pseudonymize import pseudonymize_array

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
#: Reason of a lake-computed experiment's row without an assignment time (its window is unknown).
MISSING_ASSIGNED_AT: Final[str] = "missing_assigned_at"
#: Rows read to decide which text columns are numeric (the default metrics).
SAMPLE_ROWS: Final[int] = 1_000
#: Share of a column's non-blank values that must parse for it to count as a metric by default (a
#: numeric column with a few bad cells is a metric whose bad rows are rejected, not a text column).
NUMERIC_SHARE: Final[float] = 0.95


class ExperimentSchemaError(ValueError):
    """The experiment table lacks required columns; the message lists what is missing and present."""

    def __init__(self, missing: Sequence[str], present: Sequence[str]) -> None:
        super().__init__(f"experiment table is missing columns {list(missing)}; it has {list(present)}")
        self.missing, self.present = tuple(missing), tuple(present)


# -- reading ------------------------------------------------------------------------------------------
def read_experiment(source: Path | bytes, parquet: bool | None = None) -> pl.DataFrame:
    """A file's rows with ``line_number`` (the header is line 1): CSV cells as text, Parquet typed.

    ``source`` is a path or the bytes of an upload; ``parquet`` defaults to the path's suffix (or a
    directory). A CSV row with too few cells gets nulls, extra cells are dropped, and bytes that are
    not UTF-8 are replaced, so one bad row is rejected by the rules instead of failing the file.
    """
    if isinstance(source, Path | str):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such experiment file")
        if parquet is None:
            parquet = path.is_dir() or path.suffix.lower() in (".parquet", ".pq")
        data: Path | io.BytesIO = path
    else:
        data = io.BytesIO(source)
    try:
        if parquet:
            rows = pl.read_parquet(data)
        else:
            rows = pl.read_csv(data, infer_schema=False, truncate_ragged_lines=True, encoding="utf8-lossy")
    except pl.exceptions.NoDataError as err:
        raise ValueError("the experiment file is empty") from err
    return rows.with_row_index("line_number", offset=2).with_columns(pl.col("line_number").cast(pl.Int64))


def metric_columns(columns: Sequence[str]) -> list[str]:
    """Every column that is neither reserved nor a ``pre_<metric>`` covariate."""
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


# -- cells --------------------------------------------------------------------------------------------
def _text(column: str | pl.Expr) -> pl.Expr:
    """Cells as text trimmed of spaces, blank as null."""
    text = (pl.col(column) if isinstance(column, str) else column).cast(pl.String).str.strip_chars(" ")
    return pl.when(text != "").then(text)


def _number(column: str, dtype: pl.DataType) -> pl.Expr:
    """A column as Float64: ``true``/``false`` as 1/0, else the parsed number; null when not finite."""
    if dtype == pl.Boolean or dtype.is_numeric():
        parsed = pl.col(column).cast(pl.Float64)
    else:
        text = pl.col(column).cast(pl.String).str.strip_chars(" ")
        token = text.str.to_lowercase().replace_strict(BOOLEAN_TOKENS, default=None, return_dtype=pl.Float64)
        parsed = pl.coalesce(text.cast(pl.Float64, strict=False), token)
    return pl.when(parsed.is_finite()).then(parsed)


def parse_number(values: pl.Series) -> pl.Series:
    """:func:`_number` of one series (nulls where a cell does not parse)."""
    return pl.DataFrame({"v": values}).select(_number("v", values.dtype)).to_series()


def _times(values: pl.Series) -> pl.Series:
    """ISO times as UTC timestamps (naive = UTC); null when blank or not a time.

    Text is parsed once per distinct value (assignment times repeat) by pandas' ISO 8601 parser, which
    takes every ISO spelling (``T`` or space, ``Z`` or an offset, fractions) row by row.
    """
    if values.dtype == pl.Datetime or values.dtype == pl.Date:
        typed = values.cast(pl.Datetime("us"))
        zone = getattr(values.dtype, "time_zone", None)
        return typed.dt.replace_time_zone(zone or "UTC").dt.convert_time_zone("UTC")
    text = pl.DataFrame({"t": values}).select(_text("t")).to_series()
    distinct = text.drop_nulls().unique()
    parsed = pd.to_datetime(distinct.to_pandas(), utc=True, errors="coerce", format="ISO8601")
    lookup = pl.DataFrame({"t": distinct, "at": pl.from_pandas(parsed.dt.tz_localize(None))})
    at = pl.DataFrame({"t": text}).join(lookup, on="t", how="left", maintain_order="left")["at"]
    return at.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def looks_numeric(values: pl.Series, min_share: float = NUMERIC_SHARE) -> bool:
    """Whether a column could be a metric: at least ``min_share`` of its non-blank values parse."""
    if values.dtype == pl.Boolean or values.dtype.is_numeric():
        return len(values) > 0
    present = pl.DataFrame({"v": values}).select(_text("v")).to_series().drop_nulls()
    return len(present) > 0 and parse_number(present).is_not_null().mean() >= min_share  # type: ignore[operator]


def default_metrics(rows: pl.DataFrame) -> list[str]:
    """Every non-reserved, non-covariate column that is numeric or boolean (text judged on its first rows)."""
    sample = rows.head(SAMPLE_ROWS)
    return [c for c in metric_columns([c for c in rows.columns if c != "line_number"]) if looks_numeric(sample[c])]


# -- the rules ----------------------------------------------------------------------------------------
def _repeated_users(uid: pl.Series) -> np.ndarray:
    """Row positions whose user id occurs more than once (a superset found on a 64-bit hash of the id:
    integer hashing is several times cheaper than string grouping, and the rules then group these
    few rows by the id itself, so a hash collision only adds a candidate, never merges two users)."""
    hashed = uid.hash(seed=0)
    candidates = (hashed.is_duplicated() & uid.is_not_null()).arg_true()
    return candidates.to_numpy()


def classify_experiment(rows: pl.DataFrame, metrics: Sequence[str], key: bytes | None) -> pl.DataFrame:
    """Every input row once, parsed, with ``reason`` null when it is accepted.

    Output columns: ``user_key, variant, segment, assigned_at, line_number``, the metrics and their
    present covariates as Float64, and ``reason``. ``user_key`` is the HMAC of the id under ``key``, or
    without a key the line number of the user's first row (as text). Every metric and covariate cell
    must hold a number; a blank ``assigned_at`` is allowed (null), a non-ISO one is not.
    """
    check_columns(rows.columns, metrics)
    values = [*metrics, *covariate_columns(rows.columns, metrics)]
    has_time = "assigned_at" in rows.columns
    parsed = rows.select(
        _text("user_id").alias("_uid"),
        _text("variant").alias("variant"),
        (_text("segment").fill_null(NO_SEGMENT) if "segment" in rows.columns else pl.lit(NO_SEGMENT)).alias("segment"),
        pl.col("line_number").cast(pl.Int64),
        *[_number(c, rows.schema[c]).alias(c) for c in values],
    )
    if has_time:
        assigned = _times(rows["assigned_at"])
        blank = rows.select(_text("assigned_at").is_null()).to_series() if rows.schema["assigned_at"] == pl.String else assigned.is_null()
        bad_time = assigned.is_null() & ~blank
    else:
        assigned = pl.Series(values=[None] * len(rows), dtype=pl.Datetime("us", "UTC"))
        bad_time = pl.Series(values=np.zeros(len(rows), bool))
    parsed = parsed.with_columns(assigned.alias("assigned_at"))

    unparseable = bad_time.to_numpy().copy()
    for c in values:
        unparseable |= parsed[c].is_null().to_numpy()
    no_user = parsed["_uid"].is_null().to_numpy()
    no_variant = parsed["variant"].is_null().to_numpy()

    # users with several rows: the only ones a conflict or a repeat can concern
    repeated = _repeated_users(parsed["_uid"])
    conflict = np.zeros(len(rows), bool)
    repeat = np.zeros(len(rows), bool)
    first_line = parsed["line_number"].to_numpy().copy()
    if len(repeated):
        sub = parsed[repeated].select("_uid", "variant", "line_number").with_columns(
            _pos=pl.Series(repeated),
            _conflict=pl.col("variant").min().over("_uid") != pl.col("variant").max().over("_uid"),
            _first=pl.col("line_number").min().over("_uid"),
        )
        conflict[repeated] = sub["_conflict"].fill_null(False).to_numpy()
        first_line[repeated] = sub["_first"].to_numpy()
        ok = ~(no_user[repeated] | no_variant[repeated] | conflict[repeated] | unparseable[repeated])
        # accepted rows of a user share one variant (else they conflict): the first in file order stays
        kept = sub.filter(pl.Series(ok)).sort("line_number")
        repeat[kept.filter(~pl.col("_uid").is_first_distinct())["_pos"].to_numpy()] = True

    reason = np.select(
        [no_user, no_variant, conflict, unparseable, repeat], list(REJECT_REASONS), default=""
    )
    if key is not None:
        user_key = pl.Series("user_key", pseudonymize_array(parsed["_uid"].to_arrow(), key))
    else:
        user_key = pl.Series("user_key", first_line).cast(pl.String)
    return parsed.with_columns(user_key).select(
        pl.when(pl.col("_uid").is_not_null()).then(pl.col("user_key")).alias("user_key"),
        "variant",
        "segment",
        "assigned_at",
        "line_number",
        *values,
        pl.Series(reason).replace("", None).alias("reason"),
    )


def require_assignment_time(classified: pl.DataFrame) -> pl.DataFrame:
    """Reject accepted rows whose ``assigned_at`` is blank: metrics after assignment need the time."""
    missing = pl.col("reason").is_null() & pl.col("assigned_at").is_null()
    return classified.with_columns(
        pl.when(missing).then(pl.lit(MISSING_ASSIGNED_AT)).otherwise(pl.col("reason")).alias("reason")
    )


def accepted_rows(classified: pl.DataFrame) -> pl.DataFrame:
    """The rows that count: one per user."""
    return classified.filter(pl.col("reason").is_null()).drop("reason")


def rejection_counts(classified: pl.DataFrame) -> pl.DataFrame:
    """``reason, rows, users`` for every reason that occurred (users counted by key), in rule order."""
    order = {r: i for i, r in enumerate((*REJECT_REASONS, MISSING_ASSIGNED_AT))}
    return (
        classified.filter(pl.col("reason").is_not_null())
        .group_by("reason")
        .agg(pl.len().alias("rows"), pl.col("user_key").drop_nulls().n_unique().alias("users"))
        .sort(pl.col("reason").replace_strict(order, default=len(order)))
        .select("reason", pl.col("rows").cast(pl.Int64), pl.col("users").cast(pl.Int64))
    )


# -- the reduction ------------------------------------------------------------------------------------
def metric_kinds(accepted: pl.DataFrame, metrics: Sequence[str]) -> dict[str, str]:
    """Each metric's kind: a conversion when every value is 0 or 1 (and there is one), otherwise continuous."""
    if not len(accepted) or not metrics:
        return {m: "continuous" for m in metrics}
    binary = accepted.select([pl.col(m).is_in([0.0, 1.0]).all().alias(m) for m in metrics]).row(0, named=True)
    return {m: "conversion" if binary[m] else "continuous" for m in metrics}


def sufficient_statistics(
    accepted: pl.DataFrame, metrics: Sequence[str], by: Sequence[Breakdown] = ()
) -> pd.DataFrame:
    """Per variant (and ``by`` keys) and metric: ``n, sum, sum_squares, pre_sum, pre_sum_squares,
    sum_products`` (covariate sums null without ``pre_<metric>``) and ``first_line``, the variant's first
    line in the file, which orders variants and so picks the default control. A small pandas table:
    the input of :func:`model.experiments.metric_inputs_from_records`.
    """
    keys = [*by, "variant"]
    columns = [*keys, "metric", *STAT_COLUMNS]
    if not metrics or not len(accepted):
        return pd.DataFrame(columns=columns)
    source = accepted
    if "assigned_date" in by:
        source = accepted.with_columns(pl.col("assigned_at").dt.date().alias("assigned_date"))
    aggregates = [pl.len().cast(pl.Int64).alias("n"), pl.col("line_number").min().cast(pl.Int64).alias("first_line")]
    for i, m in enumerate(metrics):
        y = pl.col(m)
        aggregates += [y.sum().alias(f"_y{i}"), (y * y).sum().alias(f"_yy{i}")]
        pre = f"{PRE_PREFIX}{m}"
        if pre in accepted.columns:
            x = pl.col(pre)
            aggregates += [x.sum().alias(f"_x{i}"), (x * x).sum().alias(f"_xx{i}"), (x * y).sum().alias(f"_xy{i}")]
    grouped = source.group_by(keys, maintain_order=True).agg(aggregates)
    none = pl.lit(None, pl.Float64)
    long = pl.concat(
        [
            grouped.select(
                *keys,
                pl.lit(m).alias("metric"),
                "n",
                pl.col(f"_y{i}").alias("sum"),
                pl.col(f"_yy{i}").alias("sum_squares"),
                *[
                    (pl.col(f"{name}{i}") if f"{name}{i}" in grouped.columns else none).alias(alias)
                    for name, alias in (("_x", "pre_sum"), ("_xx", "pre_sum_squares"), ("_xy", "sum_products"))
                ],
                "first_line",
            )
            for i, m in enumerate(metrics)
        ]
    )
    out = long.to_pandas()[columns]
    if "assigned_date" in by:  # polars dates arrive as timestamps
        out["assigned_date"] = out["assigned_date"].dt.date
    return out


@dataclass(frozen=True)
class Reduced:
    """Everything the analysis needs from the rows: small enough to print."""

    rows: int
    rejections: pd.DataFrame  # reason, rows, users
    kinds: dict[str, str]
    stats: pd.DataFrame  # segment, [assigned_date], variant, metric, n, sum, ... first_line
    segmented: bool


def reduce_classified(
    classified: pl.DataFrame,
    metrics: Sequence[str],
    *,
    segmented: bool,
    daily: bool,
    kinds: Mapping[str, str] | None = None,
    accepted: pl.DataFrame | None = None,
) -> Reduced:
    """Rejections, metric kinds and sufficient statistics of classified rows.

    ``accepted`` replaces the accepted rows (the lake path computes their metrics); ``kinds`` fixes the
    metric kinds instead of inferring them.
    """
    table = accepted if accepted is not None else accepted_rows(classified)
    by: tuple[Breakdown, ...] = ("segment", "assigned_date") if daily else ("segment",)
    return Reduced(
        rows=len(classified),
        rejections=rejection_counts(classified).to_pandas(),
        kinds=dict(kinds) if kinds is not None else metric_kinds(table, metrics),
        stats=sufficient_statistics(table, metrics, by),
        segmented=segmented,
    )


__all__ = [
    "BOOLEAN_TOKENS",
    "MISSING_ASSIGNED_AT",
    "NO_SEGMENT",
    "NUMERIC_SHARE",
    "PRE_PREFIX",
    "REJECT_REASONS",
    "RESERVED_COLUMNS",
    "SAMPLE_ROWS",
    "STAT_COLUMNS",
    "Breakdown",
    "ExperimentSchemaError",
        "Reduced",
    "RejectReason",
    "accepted_rows",
    "check_columns",
    "classify_experiment",
    "covariate_columns",
    "default_metrics",
    "looks_numeric",
    "metric_columns",
    "metric_kinds",
    "parse_number",
    "read_experiment",
    "reduce_classified",
    "rejection_counts",
    "require_assignment_time",
    "sufficient_statistics",
]
