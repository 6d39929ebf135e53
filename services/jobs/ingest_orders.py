"""Online Retail order exports through the Spark SQL path of :mod:`etl.online_retail`.

Kept apart from the REES46 path (:mod:`services.jobs.ingest`) for the classification, which is Spark SQL
(etl/online_retail.py says why), but staged the same way: the chunks go to the run's staging prefix in the
store, Spark tasks read their chunk from there and write the run's files back to it
(:func:`services.core.spark.write_to_store`), so the driver and the executors share no directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from etl.erasure import ERASED, suppress_orders
from etl.ingest import ACCEPTED, DUPLICATE, suspicious_users
from etl.online_retail import classify_orders, find_duplicates, order_lines, order_quarantine_view
from services.core import erasure_ledger
from services.core.catalog import (
    DUPLICATES,
    EVENTS,
    ORDER_LINES,
    QUARANTINE,
    STAGING,
    SUSPICIOUS_USERS,
    TIMELINE_RUNS,
)
from services.core.lake import Lake
from services.core.spark import read_parquet, write_to_store
from services.core.spark_tasks import one_task_each
from services.core.timelines import build_timelines
from services.core.timings import Timings
from services.jobs.ingest_summary import FileResult, reconciled, stage_chunks
from services.jobs.ingest_tasks import TIMELINE_PARTS, Chunk, LocalChunk, parquet_bytes


def process_orders(
    spark: SparkSession,
    lake: Lake,
    run_id: str,
    staging: Path,
    local_chunks: list[LocalChunk],
    key: bytes,
    results: list[FileResult],
    timings: Timings,
) -> dict[str, Any]:
    store, prefix = lake.store, f"{STAGING}/{run_id}"
    chunks = stage_chunks(store, prefix, local_chunks, timings)
    lines = read_lines(spark, store, chunks)
    with timings.phase("find_duplicates"):
        duplicates = find_duplicates(lines).cache()  # small: only the repeated lines
        duplicates.count()
    out = f"{prefix}/classified"
    with timings.phase("classify_and_write"):
        classified = classify_orders(lines, duplicates, key)
        if erased := erasure_ledger.suppressed(lake):
            classified = suppress_orders(classified, erased, key)
        write_to_store(classified, store, out, "outcome")  # by day only once, below
    duplicates.unpersist()

    written = read_parquet(spark, lake, out)
    with timings.phase("count"):
        rows = written.groupBy("source_file", "outcome", "reason").count().collect() if written is not None else []
    counts = {(r["source_file"], r["outcome"], r["reason"]): r["count"] for r in rows}
    store.delete_prefix(f"{out}/outcome={ERASED}")  # counted, and kept nowhere

    accepted = read_parquet(spark, lake, f"{out}/outcome={ACCEPTED}")
    suspicious, dates = 0, None
    with timings.phase("side_tables"):
        if accepted is not None:
            events = accepted.select(
                "event_time", "event_hour", "event_type", "product_id", "category_id", "category_code",
                "category_l1", "category_l2", "category_l3", "brand", "price", "user_key", "session_key",
                "source_file", "line_number", "event_date")  # fmt: skip
            write_to_store(events, store, f"{prefix}/events", "event_date")
            per_day = events.groupBy("user_key", "event_date").agg(F.count(F.lit(1)).alias("events"))
            flags = suspicious_users(pl.from_arrow(per_day.toArrow()))
            store.write_bytes(f"{prefix}/suspicious/part-00000.parquet", parquet_bytes(flags))
            suspicious = flags.num_rows
            dates = events.agg(F.min("event_date").alias("lo"), F.max("event_date").alias("hi")).first()
        if written is not None:
            _rewrite(order_quarantine_view(written, key), store, f"{prefix}/quarantine")
            kept = written.where(F.col("outcome") == ACCEPTED).select("source_file", "line_number")
            _rewrite(order_lines(lines).join(kept, ["source_file", "line_number"], "left_semi"), store,
                     f"{prefix}/side_table")  # fmt: skip
            _rewrite(written.where(F.col("outcome") == DUPLICATE).select("source_file", "line_number",
                                                                          "duplicate_of_line"),
                     store, f"{prefix}/duplicates")  # fmt: skip

    with timings.phase("timelines"):  # the run's sorted timeline, as a REES46 run gets from its chunk tasks
        events_written = [k for k in store.list(f"{prefix}/events") if k.endswith(".parquet")]
        build_timelines(spark, store, events_written, f"{prefix}/timelines", f"{prefix}/{TIMELINE_PARTS}",
                        sum(n for (_, outcome, _), n in counts.items() if outcome == ACCEPTED))  # fmt: skip
    with timings.phase("publish"):
        for name, dataset in (("events", EVENTS), ("quarantine", QUARANTINE), ("duplicates", DUPLICATES),
                              ("suspicious", SUSPICIOUS_USERS), ("side_table", ORDER_LINES),
                              ("timelines", TIMELINE_RUNS)):  # fmt: skip
            lake.publish_run_dataset(f"{prefix}/{name}", dataset, run_id)
        store.delete_prefix(prefix)
    return reconciled(counts, results, suspicious, dates)


_LINES_ARROW = pa.schema([("source_file", pa.string()), ("line_number", pa.int64()), ("value", pa.string())])


def read_lines(spark: SparkSession, store: Any, chunks: list[Chunk]) -> DataFrame:
    """Raw lines of the staged chunks as ``(source_file, line_number, value)``, one task per chunk
    reading it from the store: split on ``\\n``, a trailing ``\\r`` dropped, bytes that are not UTF-8
    replaced (Spark's text reader kept them as they were; no field rule accepts them either way)."""

    def read(i: int) -> Iterator[pa.RecordBatch]:
        chunk = chunks[i]
        lines = store.read_bytes(chunk.key).split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        values = [(line[:-1] if line.endswith(b"\r") else line).decode("utf-8", "replace") for line in lines]
        yield from pa.table([pa.array([chunk.source_file] * len(values), pa.string()),
                             pa.array(range(chunk.first_line, chunk.first_line + len(values)), pa.int64()),
                             pa.array(values, pa.string())], schema=_LINES_ARROW).to_batches()  # fmt: skip

    return one_task_each(spark, len(chunks), read, from_arrow_schema(_LINES_ARROW))


def _rewrite(df: DataFrame, store: Any, prefix: str) -> None:
    """Write a small outcome (quarantine, duplicates) as one clean file with its own schema."""
    write_to_store(df.coalesce(1), store, prefix)
