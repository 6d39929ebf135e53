"""``shoplens features``: every user's features from the user timelines, published as a new version.

Spark tasks read the timeline buckets from the store and run the one Spark-free implementation,
:func:`etl.local_features.timeline_features`, on each (:func:`services.core.timelines.run_on_buckets`):
no shuffle, the events are already cut by user and sorted. Two passes over the buckets: the first
sums each category's priced events and finds the latest event (``price_level``'s lake-wide reference
and the default ``as_of``), the second computes the features and each task writes its buckets'
rows into the new version itself. Published::

    category_prices/<version>/part-00000.parquet   then category_prices/_current.json
    features/<version>/part-BBBB.parquet           then features/_current.json

The features pointer is written last, so a crash at any point leaves the previous version current
and nothing half-written visible. It records the inputs the version was computed from:
``folded_run_ids`` (the committed runs), ``timelines_version`` (the compacted timelines, None before
the first compaction) and ``category_prices_version`` (the same version id).

A lake whose committed runs have no timelines (ingested by a release before timelines) gets them built
first (:func:`services.core.timelines.backfill_timelines`, one warning line): the features stage is the
pipeline's first, so an upgraded lake keeps working instead of stopping every stage behind an error,
and the backfill only derives from committed event files what ingest now writes anyway.
Such a lake may also still hold the ``aggregates/`` of the retired Spark features (user keys inside):
the first run of this job removes it (:func:`remove_legacy_aggregates`).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from etl.local_features import (
    FEATURES_ARROW,
    PRICE_SUMS,
    as_of_micros,
    reference_means,
    timeline_features,
    timeline_price_sums,
)
from etl.timeline import KEY_COLUMNS
from services.core.catalog import CATEGORY_PRICES, FEATURES, SUSPICIOUS_USERS, TIMELINES
from services.core.lake import Lake, new_run_id
from services.core.publish import new_version
from services.core.timelines import backfill_timelines, run_on_buckets, timelines_status
from services.core.timings import Timings

log = logging.getLogger("shoplens.features")

#: Where releases before timelines kept the Spark features' mergeable per-user aggregates (no longer
#: a dataset: removed by the first features run of this release).
LEGACY_AGGREGATES = "aggregates"
#: The timeline columns the features read.
_FEATURE_INPUTS = ("user_key", "session_key", "event_time", "event_type", "price", "category_l1", "brand", "category_id")
#: The category reference's columns (a sum over buckets of :data:`etl.local_features.PRICE_SUMS`).
CATEGORY_PRICES_SCHEMA = pa.schema([("category_id", pa.int64()), ("n_priced", pa.int64()), ("sum_log_price", pa.float64())])


def features_behind(lake: Lake) -> tuple[bool, str]:
    """(due?, why): committed runs not in the features yet, or an older release's features."""
    return _behind(lake, lake.committed_run_ids(), lake.pointer(FEATURES))


def _behind(lake: Lake, committed: Sequence[str], ptr: dict[str, Any] | None) -> tuple[bool, str]:
    """:func:`features_behind` on the runs and features pointer the caller has already read."""
    if not committed:
        return False, "no committed runs"
    behind = set(committed) - set(ptr.get("folded_run_ids", []) if ptr else [])
    if behind:
        return True, f"{len(behind)} committed run(s) not folded"
    if lake.pointer(LEGACY_AGGREGATES) is not None:
        return True, "features of an older release (aggregates/ to remove)"
    return False, "up to date"


def run_features(
    spark: SparkSession, lake: Lake, *, full: bool = False, as_of: datetime | str | None = None
) -> dict[str, Any]:
    """Publish the features of every committed run's events, from the timelines; return a summary.

    Does nothing when the current version already holds every committed run, unless ``full`` (after
    an erasure the runs are the same but their events are not) or an ``as_of`` is given; ``as_of``
    defaults to the latest event time in the lake.
    """
    t0 = time.monotonic()
    committed = lake.committed_run_ids()
    if not committed:
        raise ValueError("no committed events in the lake: run `shoplens ingest` first")
    ptr = lake.pointer(FEATURES)
    previous = set(ptr.get("folded_run_ids", [])) if ptr else set()
    new_runs = [r for r in committed if r not in previous]
    due, _why = _behind(lake, committed, ptr)
    if ptr is not None and not (due or full or as_of is not None):
        log.info("features up to date", extra={"stage": "features"})
        return {"status": "up_to_date", "version": ptr["version"], "new_run_ids": [],
                "folded_run_ids": ptr.get("folded_run_ids", []), "n_users": ptr.get("n_users"),
                "as_of": ptr.get("as_of"), "duration_seconds": round(time.monotonic() - t0, 3)}  # fmt: skip

    timings = Timings()
    with timings.phase("backfill"):
        backfilled = ensure_timelines(spark, lake)
    timelines = lake.pointer(TIMELINES)
    version = new_run_id()
    out = f"{FEATURES}/{version}"
    try:
        with timings.phase("category_sums"):
            prices, latest = category_sums(spark, lake)
        fixed = latest if as_of is None else as_of_micros(as_of)
        with timings.phase("features_tasks"):
            done = write_features(spark, lake, out, fixed, prices)
        with timings.phase("publish"):
            stats = _stats(lake, out)
            as_of_iso = datetime.fromtimestamp(fixed / 1e6, UTC).isoformat()
            with new_version(lake, CATEGORY_PRICES, version, features_version=version) as staged:
                staged.write_table("part-00000", prices, CATEGORY_PRICES_SCHEMA)
            with new_version(lake, FEATURES, version, folded_run_ids=committed, category_prices_version=version,
                             timelines_version=None if timelines is None else timelines["version"],
                             as_of=as_of_iso, n_users=done["n_users"]):  # fmt: skip
                pass  # the tasks wrote the files in place; this moves the pointer
    except BaseException:
        lake.store.delete_prefix(out)  # nothing points at it: leave no orphan files behind
        raise
    removed = remove_legacy_aggregates(lake)
    summary = {
        "status": "published",
        "version": version,
        "new_run_ids": new_runs,
        "folded_run_ids": committed,
        "timelines_version": None if timelines is None else timelines["version"],
        "backfilled_runs": sorted(backfilled),
        "legacy_aggregates_files_removed": removed,
        "n_events": stats["n_events"],
        "n_users": done["n_users"],
        "n_suspicious": stats["n_suspicious"],
        "as_of": as_of_iso,
        "phase_seconds": dict(timings),
        "duration_seconds": round(time.monotonic() - t0, 3),
    }
    log.info("features published", extra={"stage": "features", "new_runs": len(new_runs), **{
        k: summary[k] for k in ("version", "n_users", "duration_seconds")}})  # fmt: skip
    return summary


def ensure_timelines(spark: SparkSession, lake: Lake) -> dict[str, int]:
    """Build the timelines of committed runs that have none (an older release's lake); run -> events."""
    missing = timelines_status(lake)["missing_runs"]
    if not missing:
        return {}
    log.warning("%d committed run(s) have no timelines (ingested by an older release): building them once "
                "(shoplens timelines --backfill)", len(missing), extra={"stage": "features"})  # fmt: skip
    return backfill_timelines(spark, lake)


def category_sums(spark: SparkSession, lake: Lake) -> tuple[pa.Table, int]:
    """The lake's priced events and sum of ln(price) per category (:data:`CATEGORY_PRICES_SCHEMA`, by
    category_id) and its latest event time (epoch microseconds): one pass over the timeline buckets."""
    sums = run_on_buckets(spark, lake, lambda _buckets, timeline: timeline_price_sums(timeline), PRICE_SUMS,
                          columns=["event_time", "category_id", "price"], dictionary=KEY_COLUMNS[:1])  # fmt: skip
    if sums.num_rows == 0:
        raise ValueError("the lake has no timelines: run `shoplens ingest` (or `shoplens timelines --backfill`)")
    latest = int(sums["latest"].cast(pa.int64()).to_numpy().max())
    priced = sums.filter(pc.is_valid(sums["category_id"]))
    total = priced.group_by("category_id").aggregate([("n_priced", "sum"), ("sum_log_price", "sum")])
    total = total.rename_columns(["category_id", "n_priced", "sum_log_price"]).sort_by("category_id")
    return total.cast(CATEGORY_PRICES_SCHEMA), latest


def write_features(spark: SparkSession, lake: Lake, out: str, as_of_us: int, prices: pa.Table) -> dict[str, Any]:
    """Every user's features as of ``as_of_us`` with the lake's category ``prices``: each Spark task
    writes its buckets' rows to ``<out>/part-BBBB.parquet`` in the store. Returns the users and files."""
    reference = reference_means(prices.to_pandas())
    flagged = frozenset(_suspicious_keys(lake))

    def features(_buckets: Sequence[int], timeline: pa.Table) -> pa.Table:
        return timeline_features(timeline, as_of_us, reference, flagged)

    written = run_on_buckets(spark, lake, features, FEATURES_ARROW, columns=_FEATURE_INPUTS, dictionary=KEY_COLUMNS, out=out)
    return {"n_users": int(sum(written["rows"].to_pylist())), "files": written.num_rows}


def features_from_timelines(
    spark: SparkSession, lake: Lake, out: str, as_of: datetime | str | None = None
) -> dict[str, Any]:
    """The lake's features written under ``out`` (a store prefix), unpublished: :func:`category_sums`
    then :func:`write_features`. Returns the as-of time (epoch microseconds), the users and the files."""
    prices, latest = category_sums(spark, lake)
    fixed = latest if as_of is None else as_of_micros(as_of)
    return {"as_of_us": fixed, **write_features(spark, lake, out, fixed, prices)}


def category_reference(lake: Lake, version: str) -> pd.DataFrame:
    """category_id, mean_log_price, n: the lake-wide category price reference behind ``price_level`` that
    the features of ``version`` were computed with (``category_prices/<version>/``; small)."""
    keys = [k for k in lake.store.list(f"{CATEGORY_PRICES}/{version}") if k.endswith(".parquet")]
    if not keys:
        raise FileNotFoundError(f"no category prices for features version {version}: run `shoplens features`")
    g = pa.concat_tables([pq.read_table(io.BytesIO(lake.store.read_bytes(k))) for k in keys]).to_pandas()
    return pd.DataFrame({"category_id": g["category_id"].astype("int64"),
                         "mean_log_price": g["sum_log_price"] / g["n_priced"],
                         "n": g["n_priced"].astype("int64")}).reset_index(drop=True)  # fmt: skip


def remove_legacy_aggregates(lake: Lake) -> int:
    """Delete an older release's ``aggregates/`` (pseudonymous user keys no dataset reads any more); files removed."""
    return lake.store.delete_prefix(LEGACY_AGGREGATES) if lake.store.list(LEGACY_AGGREGATES) else 0


def _stats(lake: Lake, out: str) -> dict[str, int]:
    """Events and flagged users of the features just written (two columns read back)."""
    n_events = n_suspicious = 0
    for key in lake.store.list(out):
        if key.endswith(".parquet"):
            t = pq.read_table(io.BytesIO(lake.store.read_bytes(key)), columns=["n_events", "is_suspicious"])
            n_events += int(pc.sum(t["n_events"]).as_py() or 0)
            n_suspicious += int(pc.sum(t["is_suspicious"].cast(pa.int64())).as_py() or 0)
    return {"n_events": n_events, "n_suspicious": n_suspicious}


def _suspicious_keys(lake: Lake) -> set[str]:
    """The user keys the committed runs flagged suspicious."""
    keys: set[str] = set()
    for key in lake.committed_files(SUSPICIOUS_USERS):
        table = pq.read_table(pa.BufferReader(lake.store.read_bytes(key)), columns=["user_key"])
        keys.update(table["user_key"].to_pylist())
    return keys


def features_report(s: dict[str, Any]) -> str:
    """The human-readable summary the CLI prints."""
    if s["status"] == "up_to_date":
        return f"features {s['version']} are up to date ({s['n_users']:,} users, as of {s['as_of']})"
    backfill = f", timelines built for {len(s['backfilled_runs'])} older run(s)" if s["backfilled_runs"] else ""
    return (
        f"features {s['version']} published from the timelines of {len(s['folded_run_ids'])} run(s) "
        f"({len(s['new_run_ids'])} new{backfill})\n"
        f"{s['n_users']:,} users, {s['n_events']:,} events, as of {s['as_of']}, "
        f"{s['n_suspicious']:,} flagged suspicious ({s['duration_seconds']:.1f}s)"
    )
