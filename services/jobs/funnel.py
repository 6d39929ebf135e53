"""``shoplens funnel``: where customers drop out, who dropped, and what goes with going on.

Reads the committed events (their user timelines) and the current segments, computes the funnel
with :mod:`etl.funnel` (the per-unit frame once on Spark, a pass over each timeline bucket, collected
into polars; every table derives from it there) and the
conversion drivers with :mod:`model.funnel`, and publishes::

    funnel/<version>/{steps, breakdowns, trend, time_to_convert, histogram, drivers}.parquet
    funnel/<version>/dropoffs/            (Parquet: step, label, unit_key, user_key, segment, reached_at)
    funnel/<version>/{result.json, report.md, report.html}
    funnel/_current.json                  (the commit point; carries run_ids and segments_version)

The pipeline's ``funnel`` stage publishes the default funnel whenever the committed runs or the
segments changed since the current version. Only pseudonymized keys are written. Columns:
docs/outputs.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from pyspark.sql import SparkSession

from etl.funnel import (
    DEFAULT_STEPS,
    NO_SEGMENT,
    FunnelSpec,
    dictionary_columns,
    driver_counts,
    dropoff_audience,
    event_columns,
    funnel_steps,
    time_to_convert,
    time_to_convert_histogram,
    timeline_units,
    timeline_units_entered,
    units_schema,
    with_breakdowns,
)
from model.funnel import conversion_drivers
from model.scoring import TRAIT_EVENT_COLUMNS, traits_as_of
from model.segmentation.history import LoadedModel
from services.core.catalog import EVENTS, FUNNEL, RUNS, SEGMENTS
from services.core.documents.funnel import FunnelResult
from services.core.freshness import recording
from services.core.lake import Lake, utc_now_iso
from services.core.publish import new_version
from services.core.readers import load_model, parquet_dataset
from services.core.timelines import require_timelines, run_on_buckets
from services.reports.funnel import semantics, write_funnel_report

log = logging.getLogger("shoplens.funnel")

BREAKDOWNS: Final[tuple[str, ...]] = ("week", "category_l1", "brand", "segment", "cohort")
TABLES: Final[tuple[str, ...]] = ("steps", "breakdowns", "trend", "time_to_convert", "histogram", "drivers")
DROPOFFS: Final[str] = "dropoffs"
_DROPOFFS_SCHEMA: Final[pa.Schema] = pa.schema([
    ("step", pa.int32(), False), ("label", pa.string(), False), ("unit_key", pa.string()), ("user_key", pa.string()),
    ("segment", pa.string()), ("reached_at", pa.timestamp("us", tz="UTC")),
])  # fmt: skip
RESULT_FILE: Final[str] = FunnelResult.FILE
#: The per-unit columns of the drivers' point-in-time traits (trait -> column of the unit frame).
AT_START: Final[dict[str, str]] = {"segment": "segment_at_start", "lifecycle_stage": "lifecycle_stage_at_start"}


@dataclass(frozen=True)
class FunnelConfig:
    """What ``shoplens funnel`` computes (the defaults are the pipeline stage's funnel)."""

    steps: str = DEFAULT_STEPS
    unit: str = "user"
    order: str = "ordered"
    window_days: float = 7.0
    by: tuple[str, ...] = BREAKDOWNS
    top_brands: int = 10
    min_units: int = 30  # a driver value needs this many units with it and without it
    confidence: float = 0.95
    top_drivers: int = 10  # per step, in result.json and the report
    spec: FunnelSpec = field(init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = [b for b in self.by if b not in BREAKDOWNS]
        if unknown:
            raise ValueError(f"unknown breakdown(s) {', '.join(unknown)}; use some of {', '.join(BREAKDOWNS)}")
        if self.top_brands < 1:
            raise ValueError(f"--top-brands must be at least 1, got {self.top_brands}")
        object.__setattr__(self, "spec", FunnelSpec.parse(self.steps, self.unit, self.order, self.window_days))


def parse_by(text: str | None) -> tuple[str, ...]:
    """``"week,brand"`` -> ("week", "brand"); empty or None -> no breakdown."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


# ------------------------------------------------------------------------------------ compute
def _segments_frame(lake: Lake) -> tuple[pl.DataFrame | None, str | None]:
    """(user_key, segment) of the current segments (the segment breakdown and the drop-off audiences),
    and their version."""
    version = lake.current_version(SEGMENTS)
    dataset = parquet_dataset(lake, f"{SEGMENTS}/{version}") if version else None
    if dataset is None:
        return None, None
    seg = pl.from_arrow(dataset.to_table(columns=["user_key", "segment_name"]))
    return seg.rename({"segment_name": "segment"}), version


def _pandas(df: pl.DataFrame) -> pd.DataFrame:
    return df.to_pandas(date_as_object=True)  # dates stay dates (week), as in the published tables


def _pairs(n_steps: int) -> list[tuple[int, int]]:
    """Consecutive steps, plus first to last when there are more than two."""
    pairs = [(k, k + 1) for k in range(1, n_steps)]
    return pairs + ([(1, n_steps)] if n_steps > 2 else [])


@dataclass
class FunnelTables:
    """What one funnel publishes (pandas; the drop-off audiences stay a polars frame until written)."""

    steps: pd.DataFrame
    breakdowns: pd.DataFrame
    trend: pd.DataFrame
    time_to_convert: pd.DataFrame
    histogram: pd.DataFrame
    drivers: pd.DataFrame
    dropoffs: pl.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in TABLES}


def compute_tables(
    spark: SparkSession, lake: Lake, cfg: FunnelConfig, segments: pl.DataFrame | None = None
) -> FunnelTables:
    """Every table of the funnel from the lake's committed events (and segments).

    Spark walks the events into the per-unit frame; it is collected once and every table is counted
    from it with polars (why: :mod:`etl.funnel`).
    """
    spec = cfg.spec
    t0 = time.monotonic()
    matched = unit_frame(spark, lake, spec, _traits_model(lake))
    log.info("funnel units collected", extra={"stage": "funnel", "units": matched.height,
             "duration_seconds": round(time.monotonic() - t0, 3)})  # fmt: skip
    cohorts = "cohort" in cfg.by
    units = with_breakdowns(matched, cfg.top_brands, segments, cohorts)
    if segments is None:
        units = units.with_columns(segment=pl.lit(NO_SEGMENT))
    steps = _pandas(funnel_steps(units, spec))
    parts = [
        _pandas(funnel_steps(units, spec, by=[dim]).select(
            pl.lit(dim).alias("breakdown"), pl.col(dim).cast(pl.String).alias("value"), pl.exclude(dim)))
        for dim in cfg.by
    ]  # fmt: skip
    breakdowns = pd.concat(parts, ignore_index=True) if parts else steps.iloc[:0].assign(breakdown="", value="")
    breakdowns = breakdowns.sort_values(["breakdown", "value", "step"], kind="stable", ignore_index=True)
    trend = _pandas(funnel_steps(units, spec, by=["week"]))
    ttc, hist = [], []
    for a, b in _pairs(spec.n_steps):
        ttc.append(_pandas(time_to_convert(units, spec, a, b)).assign(from_step=a, to_step=b))
        hist.append(_pandas(time_to_convert_histogram(units, spec, a, b)).assign(from_step=a, to_step=b))
    labels = dict(enumerate(spec.labels, start=1))
    ttc_df = pd.concat(ttc, ignore_index=True)
    ttc_df = ttc_df.assign(from_label=ttc_df["from_step"].map(labels), to_label=ttc_df["to_step"].map(labels))
    hist_df = pd.concat(hist, ignore_index=True)
    traits = _trait_columns(units, cohorts)  # columns of the units frame: no join back to it
    per_unit = units.select("unit_key", "user_key", "level", "first_category_l1", "first_brand", "first_price", *traits)
    counts = _pandas(driver_counts(per_unit, spec, trait_columns=[t.meta.output_name() for t in traits]))
    drivers = conversion_drivers(counts, cfg.min_units, cfg.confidence)
    drivers.insert(1, "label", drivers["step"].map(labels))
    drivers.insert(2, "next_label", drivers["step"].map(lambda k: labels.get(k + 1)))
    return FunnelTables(steps, breakdowns, trend, ttc_df, hist_df, drivers, _dropoffs(units, spec))


def unit_frame(spark: SparkSession, lake: Lake, spec: FunnelSpec, model: LoadedModel | None = None) -> pl.DataFrame:
    """The per-unit frame (:func:`etl.funnel.timeline_units`' rows), collected into polars.

    Walked over the user timelines, a bucket per call of :func:`etl.funnel.timeline_units` in Spark
    tasks that read the buckets themselves: the events are already cut by user and sorted, so there
    is no shuffle and, for user units, no sort; the keys the walk does not hash come as dictionaries
    (:func:`etl.funnel.dictionary_columns`). A lake with committed runs that have no timeline
    (ingested before timelines existed) is refused with a pointer to ``shoplens timelines --backfill``
    (:func:`services.core.timelines.require_timelines`).

    With a segmentation ``model`` the same tasks add each unit's segment and lifecycle stage as of its
    entry (:data:`AT_START` columns, :func:`units_with_traits`).
    """
    require_timelines(lake)

    def walk(_buckets: Sequence[int], timeline: pa.Table) -> pa.Table:
        return timeline_units(timeline, spec) if model is None else units_with_traits(timeline, spec, model)

    schema, columns = units_schema(spec), event_columns(spec)
    if model is not None:
        schema = pa.schema([*schema, *(pa.field(c, pa.string()) for c in AT_START.values())])
        columns = list(dict.fromkeys([*columns, *TRAIT_EVENT_COLUMNS]))
    return pl.from_arrow(run_on_buckets(spark, lake, walk, schema, columns=columns,
                                        dictionary=dictionary_columns(spec)))


def units_with_traits(timeline: pa.Table, spec: FunnelSpec, model: LoadedModel) -> pa.Table:
    """:func:`etl.funnel.timeline_units` of a bucket plus each unit's segment and lifecycle stage as of its
    entry into the funnel (:func:`model.scoring.traits_as_of`: from its user's events strictly before it).

    The entry is the unit's earliest first-step event, not the first step of the chain the walk keeps:
    that one is a later event for a unit that went on (the start of its deepest chain) and the earliest
    for one that dropped, so attributes taken then would still tell who went on.
    """
    units, starts = timeline_units_entered(timeline, spec)
    traits = traits_as_of(timeline, starts, model)
    for trait, column in AT_START.items():
        units = units.append_column(column, traits[trait])
    return units


def _traits_model(lake: Lake) -> LoadedModel | None:
    """The current segmentation model for the drivers' point-in-time traits; None before the first training."""
    try:
        return load_model(lake)
    except FileNotFoundError:
        return None


def _traits(units: pl.DataFrame, cohort: bool) -> pl.DataFrame | None:
    """The drivers' user attributes per unit, each as of the unit's entry (its earliest first-step event,
    never after its first step): segment and lifecycle stage from the user's history before it (with a segmentation model and timelines; ``new`` without
    any earlier event), and the cohort (the month of the user's first event, never after the step).

    Not the current segments: those are computed from everything the user did, the outcome included
    (whoever carted is "carted, never bought" afterwards), so they would rank the outcome as its driver.
    """
    columns = _trait_columns(units, cohort)
    return units.select("unit_key", *columns) if columns else None


def _trait_columns(units: pl.DataFrame, cohort: bool) -> list[pl.Expr]:
    """:func:`_traits`' columns, named as the drivers' attributes."""
    columns = [pl.col(c).alias(trait) for trait, c in AT_START.items() if c in units.columns]
    return [*columns, pl.col("cohort")] if cohort else columns


def _dropoffs(units: pl.DataFrame, spec: FunnelSpec) -> pl.DataFrame:
    """Every drop-off audience in one frame: ``step, label, unit_key, user_key, segment, reached_at``."""
    audiences = pl.concat([
        dropoff_audience(units, spec, k, extra=["segment"]).select(
            pl.lit(k, pl.Int32).alias("step"), pl.lit(spec.labels[k - 1]).alias("label"), pl.all())
        for k in range(1, spec.n_steps)
    ])  # fmt: skip
    return audiences.select("step", "label", "unit_key", "user_key", "segment", "reached_at")


def _dropoff_counts(dropoffs: pl.DataFrame, n_steps: int) -> dict[int, int]:
    counts = dict(dropoffs.group_by("step").len().iter_rows())
    return {k: int(counts.get(k, 0)) for k in range(1, n_steps)}


# ------------------------------------------------------------------------------------ documents
def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    clean = df.astype(object).where(df.notna(), None)
    return clean.to_dict("records")


def step_records(steps: pd.DataFrame) -> list[dict[str, Any]]:
    """The ``--json`` steps: ``{index, step, count, conversion_from_previous, conversion_from_first, dropoff, dropoff_rate}``."""
    out = []
    for r in _records(steps.sort_values("step")):
        out.append({
            "index": int(r["step"]), "step": r["label"], "count": int(r["count"]),
            "conversion_from_previous": r["conversion_from_previous"], "conversion_from_first": r["conversion_from_first"],
            "dropoff": int(r["dropoff"]), "dropoff_rate": r["dropoff_rate"],
        })  # fmt: skip
    return out


def result_document(cfg: FunnelConfig, tables: FunnelTables, version: str, meta: dict[str, Any],
                    dropoff_counts: dict[int, int]) -> dict[str, Any]:  # fmt: skip
    spec = cfg.spec
    drivers = tables.drivers.groupby("step", sort=True).head(cfg.top_drivers)
    return FunnelResult.model_validate({
        "version": version, "computed_at": utc_now_iso(), **meta, **spec.to_dict(),
        "semantics": semantics(spec.to_dict()),
        "breakdowns": list(cfg.by), "top_brands": cfg.top_brands,
        "drivers_rule": {"min_units": cfg.min_units, "confidence": cfg.confidence,
                         "interval": "Woolf logit interval, Haldane-corrected when a cell is 0"},
        "steps": step_records(tables.steps),
        "units": int(tables.steps.loc[tables.steps["step"] == 1, "count"].sum()),
        "time_to_convert": _records(tables.time_to_convert),
        "top_drivers": _records(drivers),
        "dropoff_audiences": [{"step": k, "label": spec.labels[k - 1], "units": n} for k, n in dropoff_counts.items()],
    }).to_dict()  # fmt: skip


# ------------------------------------------------------------------------------------ the job
def run_funnel(spark: SparkSession, lake: Lake, cfg: FunnelConfig | None = None) -> dict[str, Any]:
    """Compute the funnel from the lake's committed events and publish ``funnel/<version>/``."""
    cfg = cfg or FunnelConfig()
    t0 = time.monotonic()
    if not lake.committed_files(EVENTS):
        raise ValueError("no committed events in the lake: run `shoplens ingest` first")
    run_ids = sorted(lake.committed_run_ids())
    segments, segments_version = _segments_frame(lake)
    tables = compute_tables(spark, lake, cfg, segments)
    meta = {**recording({RUNS: run_ids, SEGMENTS: segments_version}), **cfg.spec.to_dict(),
            "breakdowns": list(cfg.by)}  # fmt: skip
    with new_version(lake, FUNNEL, **meta) as staged:
        for name, df in tables.tables().items():
            staged.write_table(name, df)
        staged.write_table(f"{DROPOFFS}/part-00000", tables.dropoffs.to_arrow(), _DROPOFFS_SCHEMA)
        dropoff_counts = _dropoff_counts(tables.dropoffs, cfg.spec.n_steps)
        doc = result_document(cfg, tables, staged.version, meta, dropoff_counts)
        staged.write_json(RESULT_FILE, doc)
        write_funnel_report(staged.dir, doc, tables.tables())
        staged.meta["units"] = doc["units"]
    summary = {"status": "published", **{k: doc[k] for k in ("version", "unit", "order", "window_days", "steps",
                                                              "units", "breakdowns", "segments_version")},
               "time_to_convert": doc["time_to_convert"], "dropoff_audiences": doc["dropoff_audiences"],
               "duration_seconds": round(time.monotonic() - t0, 3)}  # fmt: skip
    log.info("funnel %s published", staged.version, extra={"stage": "funnel", "version": staged.version,
             "units": doc["units"], "duration_seconds": summary["duration_seconds"]})  # fmt: skip
    return summary


# ------------------------------------------------------------------------------------ export
def read_dropoffs(lake: Lake, step: str) -> pd.DataFrame:
    """Users who reached ``step`` (a label such as ``cart``, or its number) and not the next, with their segment.

    From the current funnel. One row per user: ``user_key, segment, step, label, reached_at`` (the
    earliest time they reached the step) and ``units`` (how many of their units stalled there: 1 for
    user funnels, sessions or products otherwise).
    """
    ptr = lake.pointer(FUNNEL)
    if ptr is None:
        raise FileNotFoundError("no funnel yet: run `shoplens funnel`")
    labels: list[str] = list(ptr.get("steps") or [])
    k = _step_number(step, labels)
    dataset = parquet_dataset(lake, f"{FUNNEL}/{ptr['version']}/{DROPOFFS}")
    columns = ["user_key", "segment", "reached_at"]
    rows = (dataset.to_table(columns=columns, filter=ds.field("step") == k).to_pandas()
            if dataset is not None else pd.DataFrame(columns=columns))  # fmt: skip
    out = (rows.groupby(["user_key", "segment"], as_index=False, dropna=False)
           .agg(reached_at=("reached_at", "min"), units=("reached_at", "size")))  # fmt: skip
    out.insert(2, "step", k)
    out.insert(3, "label", labels[k - 1])
    out["reached_at"] = pd.to_datetime(out["reached_at"], utc=True)
    return out.sort_values(["reached_at", "user_key"], ignore_index=True)


def _step_number(step: str, labels: Sequence[str]) -> int:
    text = str(step).strip()
    if text.isdigit():
        k = int(text)
    elif text in labels:
        k = labels.index(text) + 1
    else:
        raise ValueError(f"the current funnel has no step {text!r}; its steps are {', '.join(labels)}")
    if not 1 <= k < len(labels):
        raise ValueError(f"step {text!r} has no drop-off audience: choose one of {', '.join(labels[:-1])} "
                         f"(the last step, {labels[-1]}, has no next step)")  # fmt: skip
    return k


# ------------------------------------------------------------------------------------ summaries
def funnel_report(s: dict[str, Any]) -> str:
    window = "no window (within one session)" if s["window_days"] is None else f"window {s['window_days']:g} days"
    lines = [f"funnel {s['version']}: {s['unit']} units, {s['order']}, {window}; {s['units']:,} units entered "
             f"({s['duration_seconds']:.1f}s)",
             f"{'step':<28} {'count':>12} {'from prev':>10} {'from first':>11} {'dropoff':>10}"]  # fmt: skip
    for r in s["steps"]:
        prev = "-" if r["conversion_from_previous"] is None else f"{r['conversion_from_previous']:.1%}"
        first = "-" if r["conversion_from_first"] is None else f"{r['conversion_from_first']:.1%}"
        lines.append(f"{r['step']:<28} {r['count']:>12,} {prev:>10} {first:>11} {r['dropoff']:>10,}")
    return "\n".join(lines)


__all__ = [
    "BREAKDOWNS",
    "DROPOFFS",
    "RESULT_FILE",
    "TABLES",
    "FunnelConfig",
    "FunnelTables",
    "compute_tables",
    "funnel_report",
    "parse_by",
    "read_dropoffs",
    "result_document",
    "run_funnel",
    "step_records",
]
