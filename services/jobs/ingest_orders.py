"""Online Retail order exports through the Spark SQL path of :mod:`etl.online_retail`.

Kept apart from the REES46 path (:mod:`services.jobs.ingest`, Arrow tasks that read and write the store
themselves): here Spark reads the chunks and writes its output on the driver's local staging
directory, so on a cluster the executors must share that directory. See etl/online_retail.py for why.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.erasure import ERASED, suppress_orders
from etl.ingest import ACCEPTED, DUPLICATE, LocalChunk, parquet_bytes, suspicious_users
from etl.online_retail import (
    classify_orders,
    find_duplicates,
    order_lines,
    order_quarantine_view,
    read_lines,
)
from services.core import erasure_ledger
from services.core.catalog import DUPLICATES, EVENTS, ORDER_LINES, QUARANTINE, SUSPICIOUS_USERS
from services.core.lake import Lake
from services.core.timings import Timings
from services.jobs.ingest_summary import FileResult, reconciled


def process_orders(
    spark: SparkSession,
    lake: Lake,
    run_id: str,
    staging: Path,
    chunks: list[LocalChunk],
    key: bytes,
    results: list[FileResult],
    timings: Timings,
) -> dict[str, Any]:
    lines = read_lines(spark, chunks, max(c.path.stat().st_size for c in chunks))
    with timings.phase("find_duplicates"):
        duplicates = find_duplicates(lines).cache()  # small: only the repeated lines
        duplicates.count()
    out = staging / "classified"
    with timings.phase("classify_and_write"):
        classified = classify_orders(lines, duplicates, key)
        if erased := erasure_ledger.suppressed(lake):
            classified = suppress_orders(classified, erased, key)
        classified.write.mode("overwrite").partitionBy("outcome").parquet(str(out))  # by day only once, below
    duplicates.unpersist()

    written = spark.read.parquet(str(out))
    with timings.phase("count"):
        rows = written.groupBy("source_file", "outcome", "reason").count().collect()
    counts = {(r["source_file"], r["outcome"], r["reason"]): r["count"] for r in rows}
    shutil.rmtree(out / f"outcome={ERASED}", ignore_errors=True)  # counted, and kept nowhere

    accepted_dir = out / f"outcome={ACCEPTED}"
    suspicious, dates = 0, None
    with timings.phase("side_tables"):
        if accepted_dir.exists():
            events = spark.read.parquet(str(accepted_dir)).select(
                "event_time", "event_hour", "event_type", "product_id", "category_id", "category_code",
                "category_l1", "category_l2", "category_l3", "brand", "price", "user_key", "session_key",
                "source_file", "line_number", "event_date")  # fmt: skip
            events.write.partitionBy("event_date").parquet(str(staging / "events"))
            per_day = events.groupBy("user_key", "event_date").agg(F.count(F.lit(1)).alias("events"))
            flags = suspicious_users(pl.from_arrow(per_day.toArrow()))
            (staging / "suspicious").mkdir()
            (staging / "suspicious" / "part-00000.parquet").write_bytes(parquet_bytes(flags))
            suspicious = flags.num_rows
            dates = events.agg(F.min("event_date").alias("lo"), F.max("event_date").alias("hi")).first()
        _rewrite(order_quarantine_view(written, key), staging / "quarantine")
        kept = written.where(F.col("outcome") == ACCEPTED).select("source_file", "line_number")
        _rewrite(order_lines(lines).join(kept, ["source_file", "line_number"], "left_semi"), staging / "side_table")
        _rewrite(written.where(F.col("outcome") == DUPLICATE).select("source_file", "line_number",
                                                                      "duplicate_of_line"), staging / "duplicates")

    with timings.phase("publish"):
        for name, dataset in (("events", EVENTS), ("quarantine", QUARANTINE), ("duplicates", DUPLICATES),
                              ("suspicious", SUSPICIOUS_USERS), ("side_table", ORDER_LINES)):  # fmt: skip
            lake.publish_run_dataset(staging / name, dataset, run_id)
    return reconciled(counts, results, suspicious, dates)


def _rewrite(df: DataFrame, path: Path) -> None:
    """Write a small outcome (quarantine, duplicates) as one clean file with its own schema."""
    df.coalesce(1).write.mode("overwrite").parquet(str(path))
