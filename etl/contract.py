"""The data contract: what an input file must look like and what the lake holds.

Every stage imports its column names, types and rules from here, so a change to the contract is a
change in one file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, get_args

# pyspark is imported only when a Spark schema is first used (see __getattr__ below), so Spark-free
# callers (``shoplens predict``, the dashboard) can import the contract's rules and constants.
if TYPE_CHECKING:
    from pyspark.sql import types as T

#: Header of a REES46 event file, in order.
RAW_COLUMNS: Final[tuple[str, ...]] = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
HEADER_LINE: Final[str] = ",".join(RAW_COLUMNS)

EventType = Literal["view", "cart", "remove_from_cart", "purchase"]
EVENT_TYPES: Final[tuple[str, ...]] = ("view", "cart", "remove_from_cart", "purchase")

#: Input timestamps look like ``2019-10-01 00:00:00 UTC``.
EVENT_TIME_FORMAT: Final[str] = "yyyy-MM-dd HH:mm:ss 'UTC'"
EVENT_TIME_PYTHON_FORMAT: Final[str] = "%Y-%m-%d %H:%M:%S UTC"

#: A price above this is treated as a data error (the real catalogue tops out near 2,600).
MAX_PRICE: Final[float] = 100_000.0
#: Events outside these years are bad timestamps (REES46 starts in 2019).
MIN_YEAR: Final[int] = 2000
MAX_YEAR: Final[int] = 2100
#: Identifiers are non-negative integers of at most this many digits (category ids reach 19).
MAX_ID_DIGITS: Final[int] = 19
#: One rule each for identifiers and prices, shared by Spark ingestion (``rlike``, anchored) and the
#: Spark-free line validation (``re.fullmatch``): a non-negative integer of at most MAX_ID_DIGITS
#: digits, and a decimal number with an optional exponent.
ID_PATTERN: Final[str] = rf"[0-9]{{1,{MAX_ID_DIGITS}}}"
NUMBER_PATTERN: Final[str] = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
#: A user with more events than this in one day is flagged as bot-like (not dropped).
BOT_EVENTS_PER_DAY: Final[int] = 1_000

#: Reasons a row is quarantined, checked in this order; the first that applies is recorded.
QuarantineReason = Literal[
    "malformed_line",
    "bad_event_time",
    "unknown_event_type",
    "bad_product_id",
    "bad_category_id",
    "missing_user_id",
    "bad_user_id",
    "missing_user_session",
    "missing_price",
    "bad_price",
    "negative_price",
    "absurd_price",
]
QUARANTINE_REASONS: Final[tuple[str, ...]] = get_args(QuarantineReason)

#: Header of an order export in the UCI/Kaggle "Online Retail" layout (``--format online-retail``).
ORDER_COLUMNS: Final[tuple[str, ...]] = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
ORDER_HEADER_LINE: Final[str] = ",".join(ORDER_COLUMNS)
#: Reasons an order line is quarantined (etl/online_retail.py), checked in this order. Cancellations
#: (``C`` invoices) and negative quantities are not sales; rows without a customer cannot be attributed.
OrderQuarantineReason = Literal[
    "malformed_line",
    "missing_invoice",
    "cancelled_invoice",
    "missing_stock_code",
    "bad_quantity",
    "non_positive_quantity",
    "bad_invoice_date",
    "missing_customer_id",
    "bad_customer_id",
    "bad_unit_price",
    "negative_unit_price",
    "absurd_price",
]
ORDER_QUARANTINE_REASONS: Final[tuple[str, ...]] = get_args(OrderQuarantineReason)
#: Every quarantine reason of every input format, in report order.
ALL_QUARANTINE_REASONS: Final[tuple[str, ...]] = (
    *QUARANTINE_REASONS, *(r for r in ORDER_QUARANTINE_REASONS if r not in QUARANTINE_REASONS))


#: Every raw field is read as text first so that a bad value is quarantined, never coerced to null.
def _raw_schema() -> T.StructType:
    from pyspark.sql import types as T

    return T.StructType(
        [T.StructField(name, T.StringType(), True) for name in RAW_COLUMNS]
        + [T.StructField("_corrupt_record", T.StringType(), True)]
    )


#: One accepted event in the lake (partition column ``event_date`` is added by the layout).
def _event_schema() -> T.StructType:
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField("event_time", T.TimestampType(), False),
            T.StructField("event_hour", T.IntegerType(), False),
            T.StructField("event_type", T.StringType(), False),
            T.StructField("product_id", T.LongType(), False),
            T.StructField("category_id", T.LongType(), True),
            T.StructField("category_code", T.StringType(), True),
            T.StructField("category_l1", T.StringType(), True),
            T.StructField("category_l2", T.StringType(), True),
            T.StructField("category_l3", T.StringType(), True),
            T.StructField("brand", T.StringType(), True),
            T.StructField("price", T.DoubleType(), False),
            T.StructField("user_key", T.StringType(), False),
            T.StructField("session_key", T.StringType(), False),
            T.StructField("source_file", T.StringType(), False),
            T.StructField("event_date", T.DateType(), False),
        ]
    )


#: The real REES46 top-level categories (first segment of ``category_code``). Per-user category shares
#: use this fixed list so the feature set does not change with the data; anything else is "other".
CATEGORY_L1: Final[tuple[str, ...]] = (
    "accessories",
    "apparel",
    "appliances",
    "auto",
    "computers",
    "construction",
    "country_yard",
    "electronics",
    "furniture",
    "kids",
    "medicine",
    "sport",
    "stationery",
)
#: Category buckets of the per-user shares: the fixed top-level list plus "other".
CATEGORY_BUCKETS: Final[tuple[str, ...]] = (*CATEGORY_L1, "other")
#: Hour-of-day bands of the per-user activity profile (UTC, inclusive start, exclusive end).
HOUR_BANDS: Final[dict[str, tuple[int, int]]] = {
    "night": (0, 6),
    "morning": (6, 12),
    "afternoon": (12, 18),
    "evening": (18, 24),
}


#: One quarantined row. ``raw_line`` never carries a raw user id or session id (see etl.ingest).
def _quarantine_schema() -> T.StructType:
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField("source_file", T.StringType(), False),
            T.StructField("line_number", T.LongType(), False),
            T.StructField("reason", T.StringType(), False),
            T.StructField("raw_line", T.StringType(), True),
        ]
    )


#: Spark schemas and the column tuples derived from them, built on first access (PEP 562) so that
#: importing the contract's plain constants does not import pyspark.
_LAZY: dict[str, Any] = {
    "RAW_SCHEMA": lambda: _raw_schema(),
    "EVENT_SCHEMA": lambda: _event_schema(),
    "EVENT_COLUMNS": lambda: tuple(f.name for f in _event_schema().fields),
    "QUARANTINE_SCHEMA": lambda: _quarantine_schema(),
    "QUARANTINE_COLUMNS": lambda: tuple(f.name for f in _quarantine_schema().fields),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = _LAZY[name]()
        globals()[name] = value  # cache: later look-ups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Why a whole input file is refused (its run summary's ``reason_code``, the watcher's ``.error.json``).
FileRejection = Literal[
    "bad_header",  # the first line is not the expected header (a headerless ``split -l`` part, say)
    "not_text",  # the header is not UTF-8 text (binary noise)
    "corrupt_file",  # a gzip stream that is truncated or damaged
    "line_too_long",  # a line longer than the configured cap
    "too_large",  # more decompressed bytes than the configured cap
    "decompression_bomb",  # decompresses to more than the configured multiple of its size
]
FILE_REJECTIONS: Final[tuple[str, ...]] = get_args(FileRejection)


class ContractError(ValueError):
    """An input violates the data contract as a whole (for example a wrong header); ``code`` names why."""

    def __init__(self, message: str, code: FileRejection = "bad_header") -> None:
        super().__init__(message)
        self.code = code


def check_header(header_line: str, source: str, columns: tuple[str, ...] = RAW_COLUMNS) -> None:
    """Raise :class:`ContractError` naming the file and the difference if the header is not ``columns``.

    Why the message holds counts and expected names only: a headerless file (a ``split -l`` part) has a
    data row where the header should be, and its cells are raw user and session ids. The message goes
    to logs, run summaries, quarantine reports and the dashboard, so no cell of the line is quoted.
    """
    got = [c.strip() for c in header_line.rstrip("\r\n").lstrip("\ufeff").split(",")]
    if tuple(got) == columns:
        return
    missing = [c for c in columns if c not in got]
    unknown = sum(c not in columns for c in got)
    if not missing and not unknown:
        detail = "columns out of order"
    else:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing)}" if missing else "",
            f"{unknown} unexpected column{'s' if unknown != 1 else ''}" if unknown else "",
        ) if part)  # fmt: skip
    raise ContractError(f"{source}: bad header ({len(got)} columns, {detail}); "
                        f"expected {len(columns)} columns: {','.join(columns)}")
