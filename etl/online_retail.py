"""Order exports in the UCI/Kaggle "Online Retail" layout, classified into the same lake as REES46 events.

Input header (``etl.contract.ORDER_COLUMNS``):
``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country``. Each valid order
line becomes one ``purchase`` event:

- ``event_time`` = ``InvoiceDate`` (``M/d/yyyy H:mm`` as in the UCI file, or ISO ``yyyy-MM-dd HH:mm[:ss]``),
  read as UTC (the source has no zone; the UCI shop is in the UK);
- ``price`` = ``Quantity x UnitPrice``, the line's revenue, so every revenue aggregate (features,
  RFM, the marketing-mix revenue series) is right without a special case;
- ``product_id`` = ``StockCode`` when it is all digits, else ``10^12 + (xxhash64(code) mod 10^12)``
  (codes like ``85123A`` or ``POST`` stay distinct products);
- ``user_key`` = pseudonym of ``CustomerID`` (``17850`` and ``17850.0`` are the same customer),
  ``session_key`` = pseudonym of ``"invoice:" + InvoiceNo`` (the invoice is the session);
- category and brand columns are null. Quantity, unit price, stock code, description and country
  are kept per line in the run-scoped ``orders/lines`` dataset, joinable on
  ``(source_file, line_number, run_id)``.

Rejected lines are quarantined with the first failed rule of ``ORDER_QUARANTINE_REASONS``
(cancellations and negative quantities, rows without a customer, ...); exact duplicate lines are
duplicates as for REES46 (:func:`find_duplicates`).

Why still Spark SQL and not the Arrow path of REES46 (:mod:`etl.lines`): order exports quote their
descriptions (commas and all), have several date layouts and hash stock codes with Spark's xxhash64;
the port is open work. Files are small next to clickstream (the UCI year is 541,909 lines).

Why the ids are keyed in Arrow tasks (:func:`key_columns`) and not in Spark SQL: an HMAC built from SQL
functions carries the padded key as a literal in the query plan, where ``explain()``, the Spark UI and
error messages show it. A ``mapInArrow`` task gets the key in its pickled closure instead, as the
REES46 chunk tasks do. A malformed quarantined line keeps only its length and a keyed digest
(:func:`etl.lines.line_digest`), since its fields cannot be trusted to be in place.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from etl.contract import MAX_PRICE, MAX_YEAR, MIN_YEAR, NUMBER_PATTERN, ORDER_COLUMNS, QUARANTINE_COLUMNS
from etl.lines import ACCEPTED, DUPLICATE, MALFORMED, QUARANTINED, line_digest
from etl.pseudonymize import pseudonymize_array

_DDL = ", ".join(f"`{c}` STRING" for c in ORDER_COLUMNS) + ", `_corrupt_record` STRING"
_NUMBER = f"^{NUMBER_PATTERN}$"
_DATE_FORMATS = ("M/d/yyyy H:mm", "M/d/yyyy H:mm:ss", "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd HH:mm", "M/d/yy H:mm")
_CUSTOMER = r"^[0-9]{1,18}(\.0+)?$"
HASHED_PRODUCT_BASE = 10**12


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
    opts = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"}
    return lines.withColumn("_r", F.from_csv(F.col("value"), _DDL, opts))


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def _fields() -> dict[str, Column]:
    return {c: F.trim(F.col(f"_r.{c}")) for c in ORDER_COLUMNS}


def _typed(df: DataFrame) -> DataFrame:
    r = _fields()
    ts = F.coalesce(*[F.try_to_timestamp(r["InvoiceDate"], F.lit(f)) for f in _DATE_FORMATS])
    return (df.withColumn("_ts", ts)
            .withColumn("_qty", F.when(r["Quantity"].rlike(r"^[+-]?[0-9]{1,9}$"), r["Quantity"].cast("long")))
            .withColumn("_unit", F.when(r["UnitPrice"].rlike(_NUMBER), r["UnitPrice"].try_cast("double")))
            .withColumn("_customer", F.regexp_extract(r["CustomerID"], r"^([0-9]+)", 1)))


def _reason() -> Column:
    """The first rule of ORDER_QUARANTINE_REASONS an order line breaks, or null."""
    r = _fields()
    ts, qty, unit = F.col("_ts"), F.col("_qty"), F.col("_unit")
    malformed = _blank(F.col("value")) | F.col("_r._corrupt_record").isNotNull()
    return (
        F.when(malformed, "malformed_line")
        .when(_blank(r["InvoiceNo"]), "missing_invoice")
        .when(F.upper(r["InvoiceNo"]).startswith("C"), "cancelled_invoice")
        .when(_blank(r["StockCode"]), "missing_stock_code")
        .when(qty.isNull(), "bad_quantity")
        .when(qty <= 0, "non_positive_quantity")
        .when(ts.isNull() | ~F.year(ts).between(MIN_YEAR, MAX_YEAR), "bad_invoice_date")
        .when(_blank(r["CustomerID"]), "missing_customer_id")
        .when(~r["CustomerID"].rlike(_CUSTOMER), "bad_customer_id")
        .when(unit.isNull() | F.isnan(unit), "bad_unit_price")
        .when(unit < 0, "negative_unit_price")
        .when(unit > MAX_PRICE, "absurd_price")
    )


def product_id(code: Column) -> Column:
    """All-digit stock codes as themselves, others hashed above 10^12 (see the module docstring)."""
    c = F.upper(F.trim(code))
    hashed = F.lit(HASHED_PRODUCT_BASE) + F.pmod(F.xxhash64(c), F.lit(HASHED_PRODUCT_BASE))
    return F.when(c.rlike(r"^[0-9]{1,12}$"), c.cast("long")).otherwise(hashed)


def key_columns(df: DataFrame, columns: tuple[str, ...], key: bytes, digests: tuple[str, ...] = ()) -> DataFrame:
    """``df`` with ``columns`` (raw ids) replaced by their HMAC pseudonyms and ``digests`` (whole lines) by
    :func:`etl.lines.line_digest`, in Arrow tasks; null stays null."""

    def keyed(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            arrays = []
            for name, values in zip(batch.schema.names, batch.columns, strict=True):
                if name in columns:
                    values = pseudonymize_array(values, key)
                elif name in digests:
                    values = pa.array([None if v is None else line_digest(v, key) for v in values.to_pylist()],
                                      pa.string())  # fmt: skip
                arrays.append(values)
            yield pa.RecordBatch.from_arrays(arrays, schema=batch.schema)

    return df.mapInArrow(keyed, df.schema)


def classify_orders(lines: DataFrame, duplicates: DataFrame, key: bytes) -> DataFrame:
    """Order lines -> one row per input line: the event columns, ``outcome``, ``reason``, ``raw_line``."""
    dup_keys = duplicates.select("source_file", "line_number", "duplicate_of_line")
    r = _fields()
    staged = (
        _typed(_parse(lines).join(F.broadcast(dup_keys), on=["source_file", "line_number"], how="left"))
        .withColumn("reason", _reason())
        .withColumn("outcome", F.when(F.col("reason").isNotNull(), QUARANTINED)
                    .when(F.col("duplicate_of_line").isNotNull(), DUPLICATE).otherwise(ACCEPTED))
    )
    ok = F.col("outcome") == ACCEPTED

    def acc(c: Column) -> Column:
        return F.when(ok, c)

    ts = F.col("_ts")
    null_text = F.lit(None).cast("string")
    return key_columns(staged.select(
        acc(ts).alias("event_time"),
        acc(F.hour(ts)).alias("event_hour"),
        acc(F.lit("purchase")).alias("event_type"),
        acc(product_id(r["StockCode"])).alias("product_id"),
        F.lit(None).cast("long").alias("category_id"),
        null_text.alias("category_code"),
        null_text.alias("category_l1"),
        null_text.alias("category_l2"),
        null_text.alias("category_l3"),
        null_text.alias("brand"),
        acc(F.col("_qty") * F.col("_unit")).alias("price"),
        acc(F.col("_customer")).alias("user_key"),  # raw until key_columns below
        acc(F.concat(F.lit("invoice:"), F.upper(r["InvoiceNo"]))).alias("session_key"),
        F.col("source_file"),
        acc(F.to_date(ts)).alias("event_date"),
        F.col("line_number"),
        F.col("outcome"),
        F.col("reason"),
        F.when(F.col("outcome") == QUARANTINED, F.col("value")).alias("raw_line"),
        F.when(F.col("outcome") == DUPLICATE, F.col("duplicate_of_line")).alias("duplicate_of_line"),
    ), ("user_key", "session_key"), key)


def order_quarantine_view(classified: DataFrame, key: bytes) -> DataFrame:
    """Quarantined order lines with ``CustomerID`` replaced by its pseudonym; a malformed line by its
    length and keyed digest (its fields cannot be trusted to be in place)."""
    q = classified.where(F.col("outcome") == QUARANTINED).select(
        "source_file", "line_number", "reason", F.col("raw_line").alias("value"))
    customer = F.nullif(F.regexp_extract(F.trim(F.col("_r.CustomerID")), r"^([0-9]+)", 1), F.lit(""))
    staged = _parse(q).select("source_file", "line_number", "reason", "value", customer.alias("_customer"),
                              F.when(F.col("reason") == MALFORMED, F.col("value")).alias("_malformed"))
    parsed = _parse(key_columns(staged, ("_customer",), key, digests=("_malformed",)))
    fields = [F.coalesce(F.col("_customer") if c == "CustomerID" else F.col(f"_r.{c}"), F.lit("")).alias(c)
              for c in ORDER_COLUMNS]  # fmt: skip
    redacted = F.coalesce(F.col("_malformed"), F.to_csv(F.struct(*fields)))
    return parsed.select(*[redacted.alias(c) if c == "raw_line" else F.col(c) for c in QUARANTINE_COLUMNS])


def order_lines(lines: DataFrame) -> DataFrame:
    """Per input line: the order fields the events table has no column for (quantity kept)."""
    r = _fields()
    return _typed(_parse(lines)).select(
        "source_file", "line_number",
        F.upper(r["InvoiceNo"]).alias("invoice"), F.upper(r["StockCode"]).alias("stock_code"),
        r["Description"].alias("description"), F.col("_qty").alias("quantity"),
        F.col("_unit").alias("unit_price"), r["Country"].alias("country"),
    )


__all__ = ["HASHED_PRODUCT_BASE", "classify_orders", "find_duplicates", "key_columns", "order_lines", "order_quarantine_view", "product_id"]
