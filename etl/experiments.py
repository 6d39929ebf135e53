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
def _text(values: pl.Series) -> pl.Series:
    """Cells as text trimmed of spaces, blank as null."""
    text = values.cast(pl.String).str.strip_chars(" ")
    return text.set(text == "", None) if (text == "").any() else text  # type: ignore[arg-type]


def parse_number(values: pl.Series) -> pl.Series:
    """A column as Float64: ``true``/``false`` as 1/0, else the parsed number; null when not finite.

    Text is cast as a whole; only the cells that do not cast are compared with the boolean tokens, so
    a numeric column of 10 million cells costs one cast, not a lower-casing of every cell.
    """
    if values.dtype == pl.Boolean or values.dtype.is_numeric():
        parsed = values.cast(pl.Float64)
    else:
        text = values.cast(pl.String).str.strip_chars(" ")
        parsed = text.cast(pl.Float64, strict=False)
        todo = (parsed.is_null() & text.is_not_null()).arg_true()
        if len(todo):
            tokens = text.gather(todo).str.to_lowercase()
            parsed = parsed.scatter(todo, tokens.replace_strict(BOOLEAN_TOKENS, default=None, return_dtype=pl.Float64))
    return parsed.set(~parsed.is_finite().fill_null(False), None)  # type: ignore[arg-type]


#: Spellings parsed natively (fast); any other ISO 8601 spelling goes through pandas' parser.
_TIME_FORMATS: Final[tuple[str, ...]] = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S")


def _times(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(ISO times as UTC timestamps, naive = UTC, null when blank or not a time; whether a cell was given).

    The usual spellings are parsed by polars; the other cells by pandas' ISO 8601 parser, which takes
    every ISO spelling (``T`` or space, ``Z`` or an offset, fractions).
    """
    if values.dtype == pl.Datetime or values.dtype == pl.Date:
        typed = values.cast(pl.Datetime("us"))
        zone = getattr(values.dtype, "time_zone", None)
        at = typed.dt.replace_time_zone(zone or "UTC").dt.convert_time_zone("UTC")
        return at, at.is_not_null()
    text = _text(values)
    at = text.str.strptime(pl.Datetime("us"), _TIME_FORMATS[0], strict=False)
    for spelling in (*_TIME_FORMATS[1:], None):  # each on the cells the ones before left
        todo = (at.is_null() & text.is_not_null()).arg_true()
        if not len(todo):
            break
        if spelling is not None:
            at = at.scatter(todo, text.gather(todo).str.strptime(pl.Datetime("us"), spelling, strict=False))
            continue
        parsed = pd.to_datetime(text.gather(todo).to_pandas(), utc=True, errors="coerce", format="ISO8601")
        at = at.scatter(todo, pl.from_pandas(parsed.dt.tz_localize(None)).cast(pl.Datetime("us")))
    at = at.dt.replace_time_zone("UTC")
    return at, text.is_not_null() if values.dtype == pl.String else at.is_not_null()


def looks_numeric(values: pl.Series, min_share: float = NUMERIC_SHARE) -> bool:
    """Whether a column could be a metric: at least ``min_share`` of its non-blank values parse."""
    if values.dtype == pl.Boolean or values.dtype.is_numeric():
        return len(values) > 0
    present = _text(values).drop_nulls()
    return len(present) > 0 and parse_number(present).is_not_null().mean() >= min_share  # type: ignore[operator]


def default_metrics(rows: pl.DataFrame) -> list[str]:
    """Every non-reserved, non-covariate column that is numeric or boolean (text judged on its first rows)."""
    sample = rows.head(SAMPLE_ROWS)
    return [c for c in metric_columns([c for c in rows.columns if c != "line_number"]) if looks_numeric(sample[c])]


# -- the rules ----------------------------------------------------------------------------------------
def _repeated_users(uid: pl.Series) -> np.ndarray:
    """Row positions whose user id occurs more than once.

    A superset found on a 64-bit hash of the id, by sorting (integer sorting is several times cheaper
    than grouping strings); the rules then group these few rows by the id itself, so a hash collision
    only adds a candidate, never merges two users.
    """
    hashed = uid.hash(seed=0).set(uid.is_null(), None)  # type: ignore[arg-type]
    ordered = hashed.drop_nulls().sort()
    repeated = ordered.filter(ordered == ordered.shift(1)).unique()
    return hashed.is_in(repeated.implode()).fill_null(False).arg_true().to_numpy()


def classify_experiment(rows: pl.DataFrame, metrics: Sequence[str], key: bytes | None) -> pl.DataFrame:
    """Every input row once, parsed, with ``reason`` null when it is accepted.

    Output columns: ``user_key, variant, segment, assigned_at, line_number``, the metrics and their
    present covariates as Float64, and ``reason``. ``user_key`` is the HMAC of the id under ``key``, or
    without a key the line number of the user's first row (an integer). Every metric and covariate cell
    must hold a number; a blank ``assigned_at`` is allowed (null), a non-ISO one is not.
    """
    check_columns(rows.columns, metrics)
    values = [*metrics, *covariate_columns(rows.columns, metrics)]
    n = rows.height
    uid, variant = _text(rows["user_id"]), _text(rows["variant"]).alias("variant")
    segment = _text(rows["segment"]).fill_null(NO_SEGMENT) if "segment" in rows.columns else pl.repeat(NO_SEGMENT, n, eager=True)
    numbers = [parse_number(rows[c]).alias(c) for c in values]
    if "assigned_at" in rows.columns:
        assigned, given = _times(rows["assigned_at"])
        unparseable = assigned.is_null() & given
    else:
        assigned = pl.Series([None] * n, dtype=pl.Datetime("us", "UTC"))
        unparseable = pl.repeat(False, n, eager=True)
    for number in numbers:
        unparseable = unparseable | number.is_null()
    line = rows["line_number"].cast(pl.Int64)

    # users with several rows: the only ones a conflict or a repeat can concern
    conflict, repeat = np.zeros(n, bool), np.zeros(n, bool)
    first_line = line.to_numpy().copy()
    repeated = _repeated_users(uid)
    if len(repeated):
        sub = pl.DataFrame({"uid": uid.gather(repeated), "variant": variant.gather(repeated),
                            "line": line.gather(repeated), "pos": repeated})  # fmt: skip
        sub = sub.with_columns(
            conflict=(pl.col("variant").min().over("uid") != pl.col("variant").max().over("uid")).fill_null(False),
            first=pl.col("line").min().over("uid"),
        )
        conflict[repeated] = sub["conflict"].to_numpy()
        first_line[repeated] = sub["first"].to_numpy()
        ok = ~(uid.is_null() | variant.is_null() | unparseable).gather(repeated).to_numpy() & ~conflict[repeated]
        # accepted rows of a user share one variant (else they conflict): the first in file order stays
        kept = sub.filter(pl.Series(ok)).sort("line")
        repeat[kept.filter(~pl.col("uid").is_first_distinct())["pos"].to_numpy()] = True

    if key is not None:
        user_key = pl.Series(pseudonymize_array(uid.to_arrow(), key)).cast(pl.String)
    else:
        user_key = pl.Series(first_line).set(uid.is_null(), None)  # type: ignore[arg-type]
    rule = {"missing_user_id": uid.is_null(), "missing_variant": variant.is_null(), "conflicting_variant":
            pl.Series(conflict), "unparseable_value": unparseable, "duplicate_user": pl.Series(repeat)}  # fmt: skip
    reason = pl.when(rule[REJECT_REASONS[0]]).then(pl.lit(REJECT_REASONS[0]))
    for name in REJECT_REASONS[1:]:
        reason = reason.when(rule[name]).then(pl.lit(name))
    return pl.DataFrame([user_key.alias("user_key"), variant, segment.alias("segment"),
                         assigned.alias("assigned_at"), line.alias("line_number"), *numbers]).with_columns(
        reason.otherwise(None).alias("reason"))  # fmt: skip


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
def metric_kinds(accepted: pl.DataFrame | pl.LazyFrame, metrics: Sequence[str]) -> dict[str, str]:
    """Each metric's kind: a conversion when every value is 0 or 1 (and there is one), otherwise continuous."""
    if not metrics:
        return {}
    checks = [(pl.len() > 0).alias("_any"), *[pl.col(m).is_in([0.0, 1.0]).all().alias(m) for m in metrics]]
    binary = accepted.lazy().select(checks).collect().row(0, named=True)
    return {m: "conversion" if binary["_any"] and binary[m] else "continuous" for m in metrics}


def sufficient_statistics(
    accepted: pl.DataFrame | pl.LazyFrame, metrics: Sequence[str], by: Sequence[Breakdown] = ()
) -> pd.DataFrame:
    """Per variant (and ``by`` keys) and metric: ``n, sum, sum_squares, pre_sum, pre_sum_squares,
    sum_products`` (covariate sums null without ``pre_<metric>``) and ``first_line``, the variant's first
    line in the file, which orders variants and so picks the default control. A small pandas table:
    the input of :func:`model.experiments.metric_inputs_from_records`. A lazy ``accepted`` (the filter
    of the classified rows) is reduced without materializing the accepted rows.
    """
    keys = [*by, "variant"]
    columns = [*keys, "metric", *STAT_COLUMNS]
    if not metrics:
        return pd.DataFrame(columns=columns)
    source = accepted.lazy()
    names = source.collect_schema().names()
    if "assigned_date" in by:
        source = source.with_columns(pl.col("assigned_at").dt.date().alias("assigned_date"))
    aggregates = [pl.len().cast(pl.Int64).alias("n"), pl.col("line_number").min().cast(pl.Int64).alias("first_line")]
    for i, m in enumerate(metrics):
        y = pl.col(m)
        aggregates += [y.sum().alias(f"_y{i}"), (y * y).sum().alias(f"_yy{i}")]
        pre = f"{PRE_PREFIX}{m}"
        if pre in names:
            x = pl.col(pre)
            aggregates += [x.sum().alias(f"_x{i}"), (x * x).sum().alias(f"_xx{i}"), (x * y).sum().alias(f"_xy{i}")]
    grouped = source.group_by(keys, maintain_order=True).agg(aggregates).collect()
    if not grouped.height:
        return pd.DataFrame(columns=columns)
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
    table = accepted.lazy() if accepted is not None else classified.lazy().filter(pl.col("reason").is_null())
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
