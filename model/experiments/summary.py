"""From reduced rows to the published analysis: one function both the batch job and the dashboard call.

The reduction (``etl.experiments``, on polars) returns one row
of sufficient statistics per (segment, variant, metric), and per assignment day for a sequential
analysis. Because the statistics add up, the whole experiment is the sum over segments, each
segment the sum over days, and a day's look the sum over the days before it; :func:`analyze_statistics`
does those sums and runs :func:`model.experiments.analyze` on each.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pandas as pd

from model.experiments.analysis import (
    AnalysisSettings,
    ExperimentResult,
    _jsonable,
    analyze,
    metric_inputs_from_records,
)
from model.experiments.sufficient import MetricKind

_SUMS = ["n", "sum", "sum_squares", "pre_sum", "pre_sum_squares", "sum_products"]

#: Experiment-level warning: every row was rejected (or the file had none), so nothing was analyzed.
NO_ACCEPTED_ROWS = "no_accepted_rows"


def _summed(stats: pd.DataFrame, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Rows summed over everything but ``keys`` (covariate sums stay None where a metric has none)."""
    grouped = stats.groupby(list(keys), sort=False, dropna=False)
    sums = grouped[_SUMS].sum(min_count=1)
    sums["first_line"] = grouped["first_line"].min()
    out = sums.reset_index()
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in out.to_dict("records")]


def _sequential(
    stats: pd.DataFrame,
    kinds: Mapping[str, MetricKind],
    control: str,
    settings: AnalysisSettings,
    planned_split: Mapping[str, float] | None,
) -> list[dict[str, Any]]:
    """One row per assignment day, metric and variant: the cumulative look with its always-valid interval."""
    settings = dataclasses.replace(settings, sequential=True)
    rows: list[dict[str, Any]] = []
    days = sorted(d for d in stats["assigned_date"].dropna().unique())
    for day in days:
        upto = stats[stats["assigned_date"].notna() & (stats["assigned_date"] <= day)]
        inputs = metric_inputs_from_records(_summed(upto, ["metric", "variant"]), kinds)
        look = analyze(inputs, control, settings, planned_split)
        for metric in look.metrics:
            users = {v.variant: v.users for v in metric.variants}
            rows += [
                {
                    "date": str(day),
                    "metric": metric.metric,
                    "variant": c.variant,
                    "users": users.get(c.variant, 0) + users.get(c.control, 0),
                    "lift_abs": c.lift_abs,
                    "ci_low": c.ci_low,
                    "ci_high": c.ci_high,
                    "sequential_ci_low": c.sequential_ci_low,
                    "sequential_ci_high": c.sequential_ci_high,
                    "p_value": c.p_value,
                    "sequential_p_value": c.sequential_p_value,
                }
                for c in metric.comparisons
            ]
    return rows


def analyze_statistics(
    stats: pd.DataFrame,
    kinds: Mapping[str, MetricKind],
    *,
    control: str | None = None,
    settings: AnalysisSettings = AnalysisSettings(),
    planned_split: Mapping[str, float] | None = None,
    segmented: bool = False,
) -> tuple[ExperimentResult | None, dict[str, Any]]:
    """Analyze reduced rows (columns ``[segment], [assigned_date], variant, metric`` + the statistics).

    Returns the :class:`ExperimentResult` (None when there are no accepted rows) and its JSON form:
    ``ExperimentResult.to_dict()`` plus ``sequential`` (per-day looks, when ``assigned_date`` is given
    and ``settings.sequential``) and ``warnings`` (experiment-level codes such as ``no_accepted_rows``).
    Per-segment effects are computed when ``segmented`` and there are at least two segments.
    """
    if stats.empty or not kinds:
        doc = {"control": control, "srm": None, "metrics": [], "sequential": [],
               "settings": dataclasses.asdict(settings), "warnings": [NO_ACCEPTED_ROWS]}  # fmt: skip
        return None, _jsonable(doc)
    overall = _summed(stats, ["metric", "variant"])
    records = [{**r, "segment": None} for r in overall]
    if segmented and "segment" in stats and stats["segment"].nunique() > 1:
        records += _summed(stats, ["segment", "metric", "variant"])
    result = analyze(metric_inputs_from_records(records, kinds), control, settings, planned_split)
    sequential: list[dict[str, Any]] = []
    if settings.sequential and "assigned_date" in stats:
        sequential = _sequential(stats, kinds, result.control, settings, planned_split)
    doc = result.to_dict() | {"sequential": _jsonable(sequential), "warnings": []}
    return result, doc


def parse_split(text: str | None, variants: Sequence[str]) -> dict[str, float] | None:
    """A planned split: ``control=50,promo=50`` (by name) or ``50/50`` (in file order), as weights."""
    if not text or not text.strip():
        return None
    try:
        if "=" in text:
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            return {name.strip(): float(weight) for name, weight in pairs}
        weights = [float(w) for w in re.split(r"[/:,]", text) if w.strip()]
    except ValueError as err:
        raise ValueError(f"planned split {text!r} is not name=weight,... nor weights like 50/50") from err
    if len(weights) != len(variants):
        raise ValueError(f"planned split {text!r} has {len(weights)} weights for the variants {list(variants)}")
    return dict(zip(variants, weights, strict=True))


def variants_in_order(stats: pd.DataFrame) -> list[str]:
    """Variants by their first line in the file (the first is the default control)."""
    if stats.empty:
        return []
    return [str(v) for v in stats.groupby("variant")["first_line"].min().sort_values().index]


def analysis_document(
    stats: pd.DataFrame,
    kinds: Mapping[str, MetricKind],
    rejections: pd.DataFrame,
    rows_read: int,
    *,
    control: str | None = None,
    settings: AnalysisSettings = AnalysisSettings(),
    planned_split: str | None = None,
    segmented: bool = False,
) -> dict[str, Any]:
    """The analysis as published: ``srm`` first, ``rejected`` (reason -> rows), ``rejected_users``,
    ``rows_read``, ``users`` and the rest of :func:`analyze_statistics`' document.

    ``rejections`` has the columns ``reason, rows, users`` (the reductions' ``rejection_counts``).
    """
    split = parse_split(planned_split, variants_in_order(stats))
    _result, doc = analyze_statistics(stats, kinds, control=control, settings=settings, planned_split=split,
                                      segmented=segmented)  # fmt: skip
    first = stats[stats["metric"] == next(iter(kinds))] if kinds and not stats.empty else stats.iloc[0:0]
    ordered = rejections.sort_values("reason")
    return {
        "srm": doc.pop("srm"),
        "rejected": {str(r): int(n) for r, n in zip(ordered["reason"], ordered["rows"], strict=True)},
        "rejected_users": {str(r): int(n) for r, n in zip(ordered["reason"], ordered["users"], strict=True)},
        "rows_read": int(rows_read),
        "users": int(first["n"].sum()) if len(first) else 0,
        **doc,
    }


def srm_verdict(srm: Mapping[str, Any] | None) -> tuple[Literal["bad", "warn", "ok"], str]:
    """(level, sentence) of the sample-ratio check, as every output shows it first."""
    if not srm:
        return "warn", "Sample ratio: not checked, no accepted rows."
    observed = ", ".join(f"{v} {n:,}" for v, n in srm["observed"].items())
    if srm.get("mismatch"):
        return "bad", (f"Sample ratio MISMATCH (chi-square p = {srm['p_value']:.2g} < {srm['threshold']}): the "
                       f"assignment did not deliver the planned split ({observed}). Find the cause before "
                       "trusting any lift below.")  # fmt: skip
    if srm.get("p_value") is None:
        return "warn", f"Sample ratio: not testable ({', '.join(srm.get('warnings') or [])}; {observed})."
    return "ok", f"Sample ratio OK (chi-square p = {srm['p_value']:.3g}; {observed})."


__all__ = [
    "NO_ACCEPTED_ROWS",
    "analysis_document",
    "analyze_statistics",
    "parse_split",
    "srm_verdict",
    "variants_in_order",
]
