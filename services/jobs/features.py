"""``shoplens features``: fold newly committed ingestion runs into the per-user aggregates, publish features.

The aggregates' ``_current.json`` pointer records which committed runs are folded in
(``folded_run_ids``). A call reads only the events of committed runs not yet folded (the ``run_id``
partition prunes the rest), merges them into the current aggregates, and publishes::

    aggregates/<version>/{users,sessions,days,brands,prices}/   then aggregates/_current.json
    features/<version>/                                          then features/_current.json

Each dataset is written whole under a new version before its pointer moves, so readers never see a
half-written one. If the process dies between the two pointers, the next call finds the features
behind the aggregates and finalizes them again without folding anything twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.aggregates import TABLES, Aggregates, update_aggregates
from etl.features import finalize
from etl.local_features import (
    FEATURES_ARROW,
    PRICE_SUMS,
    as_of_micros,
    reference_means,
    timeline_features,
    timeline_price_sums,
)
from services.core.catalog import AGGREGATES, EVENTS, FEATURES, SUSPICIOUS_USERS
from services.core.lake import Lake, new_run_id
from services.core.publish import new_version
from services.core.spark import read_run_dataset
from services.core.timelines import run_on_buckets

log = logging.getLogger("shoplens.features")


def read_aggregates(spark: SparkSession, lake: Lake, version: str) -> Aggregates:
    """The aggregate tables of ``aggregates/<version>/``."""
    tables = {}
    for name in TABLES:
        path = lake.spark_path(f"{AGGREGATES}/{version}/{name}")
        if path is None:
            raise FileNotFoundError(f"aggregates version {version} has no table {name}")
        tables[name] = spark.read.parquet(path)
    return Aggregates(**tables)


def read_features(spark: SparkSession, lake: Lake, version: str | None = None) -> DataFrame:
    """The published features (the current version unless ``version`` is given)."""
    version = version or lake.current_version(FEATURES)
    path = lake.spark_path(f"{FEATURES}/{version}") if version else None
    if path is None:
        raise FileNotFoundError("no features published yet: run `shoplens features`")
    return spark.read.parquet(path)


def _write_aggregates(aggregates: Aggregates, out: Path) -> None:
    for name, df in aggregates.tables().items():
        df.write.mode("overwrite").parquet(str(out / name))


def run_features(
    spark: SparkSession, lake: Lake, *, full: bool = False, as_of: datetime | str | None = None
) -> dict[str, Any]:
    """Bring aggregates and features up to date with the committed runs; return a summary.

    ``full`` ignores the current aggregates and folds every committed run from scratch. ``as_of``
    defaults to the latest event time in the lake.
    """
    t0 = time.monotonic()
    committed = lake.committed_run_ids()
    agg_ptr = None if full else lake.pointer(AGGREGATES)
    folded = list(agg_ptr.get("folded_run_ids", [])) if agg_ptr else []
    new_runs = [r for r in committed if r not in set(folded)]
    feat_ptr = lake.pointer(FEATURES)
    ctx = {"stage": "features", "new_runs": len(new_runs), "full": full}

    if agg_ptr is None and not new_runs:
        raise ValueError("no committed events in the lake: run `shoplens ingest` first")
    features_fresh = (
        feat_ptr is not None
        and agg_ptr is not None
        and feat_ptr.get("aggregates_version") == agg_ptr["version"]
        and as_of is None
    )
    if not new_runs and features_fresh:
        log.info("features up to date", extra=ctx)
        return {
            "status": "up_to_date",
            "version": feat_ptr["version"],
            "aggregates_version": agg_ptr["version"],
            "new_run_ids": [],
            "folded_run_ids": folded,
            "n_users": feat_ptr.get("n_users"),
            "as_of": feat_ptr.get("as_of"),
            "duration_seconds": round(time.monotonic() - t0, 3),
        }

    version = new_run_id()
    new_events = 0
    if new_runs:
        events = read_run_dataset(spark, lake, EVENTS)
        previous = read_aggregates(spark, lake, agg_ptr["version"]) if agg_ptr else None
        if events is not None:
            events = events.where(F.col("run_id").isin(new_runs))
            new_events = events.count()
        if events is None or (previous is None and new_events == 0):
            raise ValueError("the committed runs hold no accepted events")
        folded = folded + new_runs
        with new_version(lake, AGGREGATES, version, folded_run_ids=folded, tables=list(TABLES),
                         previous_version=agg_ptr["version"] if agg_ptr else None) as staged:  # fmt: skip
            _write_aggregates(update_aggregates(previous, events), staged.dir)
        agg_version = version
    else:
        agg_version = agg_ptr["version"]

    suspicious = read_run_dataset(spark, lake, SUSPICIOUS_USERS)
    features = finalize(read_aggregates(spark, lake, agg_version), as_of=as_of, suspicious_users=suspicious)
    with new_version(lake, FEATURES, version, aggregates_version=agg_version, folded_run_ids=folded) as staged:
        features.write.mode("overwrite").parquet(str(staged.dir))
        stats = (
            spark.read.parquet(str(staged.dir))
            .agg(
                F.count(F.lit(1)).alias("n_users"),
                F.sum(F.col("is_suspicious").cast("long")).alias("n_suspicious"),
                F.sum(F.col("n_events")).alias("n_events"),
                F.max(F.unix_micros("as_of")).alias("as_of_us"),
            )
            .first()
        )
        as_of_us = stats["as_of_us"]
        as_of_iso = datetime.fromtimestamp(as_of_us / 1e6, UTC).isoformat() if as_of_us is not None else None
        staged.meta.update(as_of=as_of_iso, n_users=stats["n_users"])

    summary = {
        "status": "published",
        "version": version,
        "aggregates_version": agg_version,
        "new_run_ids": new_runs,
        "folded_run_ids": folded,
        "new_events": new_events,
        "n_events": stats["n_events"],
        "n_users": stats["n_users"],
        "n_suspicious": stats["n_suspicious"] or 0,
        "as_of": as_of_iso,
        "full": full,
        "duration_seconds": round(time.monotonic() - t0, 3),
    }
    log.info(
        "features published",
        extra={**ctx, **{k: summary[k] for k in ("version", "new_events", "n_users", "duration_seconds")}},
    )
    return summary


#: The timeline columns the features read.
_FEATURE_INPUTS = ("user_key", "session_key", "event_time", "event_type", "price", "category_l1", "brand", "category_id")


def features_from_timelines(
    spark: SparkSession, lake: Lake, out: str, as_of: datetime | str | None = None
) -> dict[str, Any]:
    """The lake's features from its timelines: :func:`etl.local_features.timeline_features` on each
    user bucket, each Spark task writing its bucket's rows to ``<out>/part-BBBB.parquet`` in the store.

    Two passes over the buckets: the first sums each category's priced events and finds the latest
    event (the lake-wide ``price_level`` reference and default ``as_of``, as the Spark job takes them
    from the whole lake's aggregates); the second computes every user's features. Returns the as-of
    time (epoch microseconds), the users and the files written.
    """
    sums = run_on_buckets(spark, lake, lambda _buckets, timeline: timeline_price_sums(timeline), PRICE_SUMS,
                          columns=["event_time", "category_id", "price"])  # fmt: skip
    if sums.num_rows == 0:
        raise ValueError("the lake has no timelines: run `shoplens ingest` (or `shoplens timelines --backfill`)")
    latest = int(sums["latest"].cast(pa.int64()).to_numpy().max())
    fixed = latest if as_of is None else as_of_micros(as_of)
    priced = sums.filter(pc.is_valid(sums["category_id"]))  # to pandas without nulls: int64 ids stay exact
    reference = reference_means(priced.select(["category_id", "n_priced", "sum_log_price"]).to_pandas())
    flagged = frozenset(_suspicious_keys(lake))

    def features(_buckets: Sequence[int], timeline: pa.Table) -> pa.Table:
        return timeline_features(timeline, fixed, reference, flagged)

    written = run_on_buckets(spark, lake, features, FEATURES_ARROW, columns=_FEATURE_INPUTS, out=out)
    return {"as_of_us": fixed, "n_users": int(sum(written["rows"].to_pylist())), "files": written.num_rows}


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
    how = "full recomputation" if s["full"] else f"folded {len(s['new_run_ids'])} new run(s)"
    return (
        f"features {s['version']} published: {how}, {s['new_events']:,} new events\n"
        f"{s['n_users']:,} users, {s['n_events']:,} events, as of {s['as_of']}, "
        f"{s['n_suspicious']:,} flagged suspicious ({s['duration_seconds']:.1f}s)"
    )
