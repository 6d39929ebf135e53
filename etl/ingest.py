"""Ingestion transformations: raw lines in, classified rows out (accepted, quarantined, duplicate).

The input is a DataFrame of raw lines ``(source_file, line_number, value)``. The steps are pure Spark
SQL (no Python UDFs) so they run at JVM speed on every core:

1. :func:`find_duplicates` finds exact duplicate lines without shuffling whole rows: it shuffles only a
   64-bit hash per line, then compares the few colliding lines in full.
2. :func:`classify` parses each line against the contract, records the first failed rule as the
   quarantine reason, marks later copies of a valid line as duplicates, and normalizes and
   pseudonymizes accepted events, all in one pass.

``classify`` returns one frame holding every outcome so that a single write persists all of them;
:data:`OUTPUT_COLUMNS` is its schema and :func:`events_view` / :func:`quarantine_view` /
:func:`duplicates_view` project the per-dataset columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl.contract import (
    BOT_EVENTS_PER_DAY,
    EVENT_COLUMNS,
    EVENT_TIME_FORMAT,
    EVENT_TYPES,
    ID_PATTERN,
    MAX_PRICE,
    MAX_YEAR,
    MIN_YEAR,
    NUMBER_PATTERN,
    QUARANTINE_COLUMNS,
    RAW_COLUMNS,
    RAW_SCHEMA,
)
from etl.pseudonymize import pseudonymize_col

ACCEPTED, QUARANTINED, DUPLICATE = "accepted", "quarantined", "duplicate"

#: Columns of the classified frame: the event columns, lineage, and what quarantine needs.
OUTPUT_COLUMNS: tuple[str, ...] = (
    *EVENT_COLUMNS,
    "line_number",
    "outcome",
    "reason",
    "raw_line",
    "duplicate_of_line",
)

_ID = f"^{ID_PATTERN}$"
_NUMBER = f"^{NUMBER_PATTERN}$"
_LINE_MASK = (1 << 33) - 1  # monotonically_increasing_id keeps the row index in its low 33 bits
_RAW_DDL = ", ".join(f"`{f.name}` STRING" for f in RAW_SCHEMA.fields)


@dataclass
class Chunk:
    """A plain-text piece of an input file and the line number of its first line."""

    path: Path
    source_file: str
    first_line: int


def read_lines(spark: SparkSession, chunks: list[Chunk], chunk_bytes: int) -> DataFrame:
    """Raw lines of the chunks as ``(source_file, line_number, value)``.

    Each chunk is read as exactly one partition (the open cost is set so high that Spark neither
    packs two chunks together nor splits one), so the row index inside a partition is the line offset.
    """
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(2 * chunk_bytes))
    spark.conf.set("spark.sql.files.openCostInBytes", str(1 << 40))
    meta = spark.createDataFrame(
        [(c.path.name, c.source_file, c.first_line) for c in chunks],
        T.StructType(
            [
                T.StructField("_chunk", T.StringType()),
                T.StructField("source_file", T.StringType()),
                T.StructField("_first_line", T.LongType()),
            ]
        ),
    )
    raw = (
        spark.read.option("lineSep", "\n")
        .text([str(c.path) for c in chunks])
        .select(
            F.when(F.col("value").endswith("\r"), F.expr("substring(value, 1, length(value) - 1)"))
            .otherwise(F.col("value"))
            .alias("value"),
            F.col("_metadata.file_name").alias("_chunk"),
            (F.monotonically_increasing_id().bitwiseAND(F.lit(_LINE_MASK))).alias("_offset"),
        )
    )
    return raw.join(F.broadcast(meta), on="_chunk", how="inner").select(
        "source_file", (F.col("_first_line") + F.col("_offset")).alias("line_number"), "value"
    )


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def find_duplicates(lines: DataFrame) -> DataFrame:
    """Lines that repeat an earlier line of the batch byte for byte.

    Returns ``(source_file, line_number, duplicate_of_file, duplicate_of_line)`` for every copy but
    the first (first = smallest file name, then line). Only the lines whose 64-bit hash collides are
    compared in full, so the shuffle carries 8 bytes per line instead of the whole line.
    """
    hashed = lines.select("source_file", "line_number", "value", F.xxhash64("value").alias("_h"))
    candidates = hashed.groupBy("_h").count().where(F.col("count") > 1).select("_h")
    first = Window.partitionBy("value").orderBy("source_file", "line_number")
    return (
        hashed.join(F.broadcast(candidates), on="_h", how="inner")
        .withColumn("_rank", F.row_number().over(first))
        .withColumn("duplicate_of_file", F.first("source_file").over(first))
        .withColumn("duplicate_of_line", F.first("line_number").over(first))
        .where(F.col("_rank") > 1)
        .select("source_file", "line_number", "duplicate_of_file", "duplicate_of_line")
    )


def _parse(lines: DataFrame) -> DataFrame:
    parsed = F.from_csv(
        F.col("value"),
        _RAW_DDL,
        {
            "mode": "PERMISSIVE",
            "columnNameOfCorruptRecord": "_corrupt_record",
            "ignoreLeadingWhiteSpace": "false",
        },
    )
    return lines.withColumn("_r", parsed)


def _reason() -> Column:
    """The first contract rule a parsed line breaks, or null; the order is QUARANTINE_REASONS."""
    r = {name: F.col(f"_r.{name}") for name in RAW_COLUMNS}
    ts, price = F.col("_ts"), F.col("_price")
    malformed = _blank(F.col("value")) | F.col("_r._corrupt_record").isNotNull()
    return (
        F.when(malformed, "malformed_line")
        .when(ts.isNull() | ~F.year(ts).between(MIN_YEAR, MAX_YEAR), "bad_event_time")
        .when(_blank(r["event_type"]) | ~r["event_type"].isin(*EVENT_TYPES), "unknown_event_type")
        .when(~r["product_id"].rlike(_ID) | F.col("_product_id").isNull(), "bad_product_id")
        .when(
            ~_blank(r["category_id"]) & (~r["category_id"].rlike(_ID) | F.col("_category_id").isNull()),
            "bad_category_id",
        )
        .when(_blank(r["user_id"]), "missing_user_id")
        .when(~r["user_id"].rlike(_ID), "bad_user_id")
        .when(_blank(r["user_session"]), "missing_user_session")
        .when(_blank(r["price"]), "missing_price")
        .when(~r["price"].rlike(_NUMBER) | price.isNull() | F.isnan(price), "bad_price")
        .when(price < 0, "negative_price")
        .when(price > MAX_PRICE, "absurd_price")
    )


def redact_quarantine(quarantined: DataFrame, key: bytes) -> DataFrame:
    """Quarantine rows with the user and session ids in ``raw_line`` replaced by their pseudonyms.

    Kept apart from :func:`classify` because rejects are few: evaluating this inside the hot
    projection cost about 40% of its time even when no row needed it. A line that does not split
    into the nine contract fields cannot be trusted to have its ids in place, so every standalone
    run of 6+ digits and every UUID-looking token is masked instead.
    """
    parsed = quarantined.withColumn("value", F.col("raw_line")).transform(_parse)
    r = {name: F.col(f"_r.{name}") for name in RAW_COLUMNS}
    fields = [
        F.coalesce(r[name], F.lit(""))
        if name not in ("user_id", "user_session")
        else F.coalesce(pseudonymize_col(F.nullif(r[name], F.lit("")), key), F.lit(""))
        for name in RAW_COLUMNS
    ]
    masked = F.regexp_replace(
        F.regexp_replace(F.col("value"), r"(?<![0-9A-Za-z.])[0-9]{6,}(?![0-9A-Za-z.])", "<redacted-id>"),
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        "<redacted-session>",
    )
    redacted = F.when(F.col("reason") == "malformed_line", masked).otherwise(F.concat_ws(",", *fields))
    return parsed.select(*[redacted.alias(c) if c == "raw_line" else F.col(c) for c in QUARANTINE_COLUMNS])


def classify(lines: DataFrame, duplicates: DataFrame, key: bytes) -> DataFrame:
    """Parse, validate, dedupe, normalize and pseudonymize raw lines in one pass.

    Quarantined rows keep their raw line here; :func:`quarantine_view` redacts it before anything
    is published.

    Every input line yields exactly one output row with ``outcome`` accepted, quarantined or
    duplicate, so counts reconcile by construction and can be checked against the line count.
    A bad line is quarantined even if it repeats (nothing rejected is dropped); only copies of a
    valid line count as duplicates.
    """
    dup_keys = duplicates.select("source_file", "line_number", "duplicate_of_line")
    r = {name: F.col(f"_r.{name}") for name in RAW_COLUMNS}
    event_time = F.col("_ts")
    levels = F.split(F.nullif(F.lower(F.trim(r["category_code"])), F.lit("")), r"\.")
    is_accepted = F.col("outcome") == ACCEPTED

    def when_accepted(c: Column) -> Column:
        return F.when(is_accepted, c)

    staged = (
        _parse(lines)
        .join(F.broadcast(dup_keys), on=["source_file", "line_number"], how="left")
        # typed values are computed once here; later expressions only reference them
        .withColumn("_ts", F.try_to_timestamp(F.col("_r.event_time"), F.lit(EVENT_TIME_FORMAT)))
        .withColumn("_price", F.col("_r.price").try_cast("double"))
        .withColumn("_product_id", F.col("_r.product_id").try_cast("long"))
        .withColumn("_category_id", F.col("_r.category_id").try_cast("long"))
        .withColumn("reason", _reason())
        .withColumn(
            "outcome",
            F.when(F.col("reason").isNotNull(), QUARANTINED)
            .when(F.col("duplicate_of_line").isNotNull(), DUPLICATE)
            .otherwise(ACCEPTED),
        )
    )
    return staged.select(
        when_accepted(event_time).alias("event_time"),
        when_accepted(F.hour(event_time)).alias("event_hour"),
        when_accepted(r["event_type"]).alias("event_type"),
        when_accepted(F.col("_product_id")).alias("product_id"),
        when_accepted(F.col("_category_id")).alias("category_id"),
        when_accepted(F.nullif(F.lower(F.trim(r["category_code"])), F.lit(""))).alias("category_code"),
        when_accepted(F.try_element_at(levels, F.lit(1))).alias("category_l1"),
        when_accepted(F.try_element_at(levels, F.lit(2))).alias("category_l2"),
        when_accepted(F.try_element_at(levels, F.lit(3))).alias("category_l3"),
        when_accepted(F.nullif(F.lower(F.trim(r["brand"])), F.lit(""))).alias("brand"),
        when_accepted(F.col("_price")).alias("price"),
        when_accepted(pseudonymize_col(r["user_id"], key)).alias("user_key"),
        when_accepted(pseudonymize_col(r["user_session"], key)).alias("session_key"),
        F.col("source_file"),
        when_accepted(F.to_date(event_time)).alias("event_date"),
        F.col("line_number"),
        F.col("outcome"),
        F.col("reason"),
        F.when(F.col("outcome") == QUARANTINED, F.col("value")).alias("raw_line"),
        F.when(F.col("outcome") == DUPLICATE, F.col("duplicate_of_line")).alias("duplicate_of_line"),
    )


def events_view(classified: DataFrame) -> DataFrame:
    """The lake's events table columns (plus lineage ``line_number``)."""
    return classified.select(*EVENT_COLUMNS, "line_number")


def quarantine_view(classified: DataFrame, key: bytes) -> DataFrame:
    """Quarantined rows with their raw line redacted (see :func:`redact_quarantine`)."""
    return redact_quarantine(classified.where(F.col("outcome") == QUARANTINED), key)


def duplicates_view(classified: DataFrame) -> DataFrame:
    return classified.select("source_file", "line_number", "duplicate_of_line")


def flag_suspicious_users(events: DataFrame, max_events_per_day: int = BOT_EVENTS_PER_DAY) -> DataFrame:
    """Users with bot-like volume: more than ``max_events_per_day`` events on some day.

    They are flagged, not dropped: later stages decide whether to exclude them.
    """
    per_day = events.groupBy("user_key", "event_date").agg(F.count(F.lit(1)).alias("events"))
    return (
        per_day.where(F.col("events") > max_events_per_day)
        .groupBy("user_key")
        .agg(
            F.max("events").alias("max_events_per_day"),
            F.count(F.lit(1)).alias("days_over_limit"),
            F.min("event_date").alias("first_day_over_limit"),
        )
        .withColumn("reason", F.lit(f"more than {max_events_per_day} events in a day"))
    )
