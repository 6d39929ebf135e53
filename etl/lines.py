"""The data contract's line rules, vectorized on Arrow: parse, validate, dedupe, normalize, pseudonymize.

One implementation for every path. Spark ingestion runs :func:`classify_batch` inside its tasks (one
call per ~64 MB chunk, see :mod:`etl.ingest`); ``shoplens predict``, the scoring API and the dashboard
upload run :func:`parse_lines` on one history. Why Arrow and not Spark SQL: row-wise ``from_csv``,
regexes and SHA-256 over every row were what ingestion spent its time on; here each rule is one C++
kernel over a whole column, and the HMAC is computed once per distinct id of a batch.

How a batch of bytes becomes lines and fields (the contract's CSV dialect, pinned by tests):

- Lines end at ``\\n``; one ``\\r`` before it (CRLF) is dropped. A missing final newline is fine.
- Fields are split at commas. Standard CSV quoting is understood (``"a,b"`` is one field, ``""`` is a
  quote inside a quoted field), but a quoted field cannot hold a line break: the line still ends at the
  ``\\n``, so both halves are ``malformed_line``. A byte-order mark belongs before the header only; on a
  data line it is part of the first field (so the event time is bad). A line is malformed when it is blank, is not valid
  UTF-8, holds a bare ``\\r``, has an unterminated quote, or does not have exactly nine fields (a
  trailing comma makes ten). Fields are not trimmed; an empty field is null.
- Most batches hold no quote and no bare ``\\r``: those are parsed by Arrow's CSV reader with quoting
  off, so every physical line is one record. The rest take the per-line path of Python's ``csv``
  module, with the same results.

Then the rules of :data:`etl.contract.QUARANTINE_REASONS`, in that order; the first that fails is the
reason. A valid line whose nine fields repeat an earlier valid line of the batch is a duplicate of that
earlier line (for unquoted lines that is byte equality); a bad line is quarantined however often it
repeats. Duplicates are found by a 128-bit hash of the nine fields (two seeded 64-bit row hashes from
polars), so a false match needs a hash collision, of probability about n^2 / 2^129 (1e-23 for a
month of 44 million lines).
"""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from etl.contract import (
    EVENT_TYPES,
    ID_PATTERN,
    MAX_PRICE,
    MAX_YEAR,
    MIN_YEAR,
    NUMBER_PATTERN,
    QUARANTINE_REASONS,
    RAW_COLUMNS,
    check_header,
)
from etl.pseudonymize import pseudonymize, pseudonymize_array

ACCEPTED, QUARANTINED, DUPLICATE = "accepted", "quarantined", "duplicate"
MALFORMED = "malformed_line"

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
_ID = f"^{ID_PATTERN}$"
_NUMBER = f"^{NUMBER_PATTERN}$"
_LONG_MAX = str(2**63 - 1)
_N = len(RAW_COLUMNS)
_BOM = "\ufeff".encode()
#: Rows up to which :func:`first_copies` groups with numpy (same result; polars pays off on chunks).
_SMALL_BATCH = 2_000
_STRINGS = pa.schema([(c, pa.string()) for c in RAW_COLUMNS])
#: Positions of the user and session id among the nine comma-separated fields of a line.
_ID_FIELDS = (RAW_COLUMNS.index("user_id"), RAW_COLUMNS.index("user_session"))

#: The lake's events table as Arrow writes it (``event_date`` is the partition, outside the file).
EVENT_FILE_SCHEMA = pa.schema([
    ("event_time", pa.timestamp("us", tz="UTC")), ("event_hour", pa.int32()), ("event_type", pa.string()),
    ("product_id", pa.int64()), ("category_id", pa.int64()), ("category_code", pa.string()),
    ("category_l1", pa.string()), ("category_l2", pa.string()), ("category_l3", pa.string()),
    ("brand", pa.string()), ("price", pa.float64()), ("user_key", pa.string()), ("session_key", pa.string()),
    ("source_file", pa.string()), ("line_number", pa.int64()),
])  # fmt: skip
QUARANTINE_FILE_SCHEMA = pa.schema([
    ("source_file", pa.string()), ("line_number", pa.int64()), ("reason", pa.string()), ("raw_line", pa.string()),
])  # fmt: skip
DUPLICATE_FILE_SCHEMA = pa.schema([
    ("source_file", pa.string()), ("line_number", pa.int64()), ("duplicate_of_line", pa.int64()),
])  # fmt: skip


@dataclass
class Parsed:
    """A batch of lines split into the nine raw fields."""

    fields: pa.Table  # RAW_COLUMNS as strings (empty field = null), one row per well-formed line
    line_index: np.ndarray  # each row's 0-based line index in the batch
    malformed: dict[int, str]  # line index -> raw text, for lines that did not split into nine fields
    n_lines: int


def count_lines(data: bytes) -> int:
    """Lines in ``data``: each ``\\n`` ends one, and a last line without it counts too."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def parse(data: bytes) -> Parsed:
    """Split a batch of data lines (no header) into fields, by the dialect in the module docstring."""
    n_lines = count_lines(data)
    # Arrow's reader would also drop a byte-order mark at the start of the batch: leave that to the
    # per-line path, for which a BOM on a data line is part of its first field (only the header may have one).
    simple = (b'"' not in data and not data.startswith(_BOM)
              and (b"\r" not in data or data.count(b"\r") == data.count(b"\r\n")))
    if n_lines and simple:
        try:
            return _parse_unquoted(data, n_lines)
        except pa.ArrowInvalid:  # not valid UTF-8: the per-line path finds the lines that are not
            pass
    return _parse_per_line(data, n_lines)


def _parse_unquoted(data: bytes, n_lines: int) -> Parsed:
    bad: dict[int, str] = {}

    def invalid(row: Any) -> str:  # a line that is not nine fields; row.number counts lines from 1
        bad[row.number - 1] = row.text.removesuffix("\r")
        return "skip"

    table = pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(column_names=list(RAW_COLUMNS), use_threads=False),
        parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False, invalid_row_handler=invalid),
        convert_options=pacsv.ConvertOptions(column_types=_STRINGS, null_values=[""], strings_can_be_null=True),
    )  # fmt: skip
    index = np.delete(np.arange(n_lines, dtype=np.int64), sorted(bad)) if bad else np.arange(n_lines)
    if len(index) != table.num_rows:
        raise ValueError(f"CSV reader returned {table.num_rows} rows for {len(index)} well-formed lines")
    # An empty line reads as nine nulls, like ",,,,,,,,"; only the raw bytes tell them apart.
    all_null = np.flatnonzero(_all_null(table))
    if len(all_null):
        ends = np.append(np.flatnonzero(np.frombuffer(data, np.uint8) == 10), len(data))
        starts = np.concatenate([[0], ends[:-1] + 1])
        empty = [i for i in all_null if ends[index[i]] - starts[index[i]] <= 1
                 and data[starts[index[i]] : ends[index[i]]] in (b"", b"\r")]
        if empty:
            bad.update({int(index[i]): "" for i in empty})
            keep = np.ones(table.num_rows, bool)
            keep[empty] = False
            table, index = table.filter(pa.array(keep)), index[keep]
    return Parsed(table, index, bad, n_lines)


def _all_null(table: pa.Table) -> np.ndarray:
    mask = np.ones(table.num_rows, bool)
    if any(column.null_count == 0 for column in table.columns):  # the usual case: no null row at all
        return ~mask
    for column in table.columns:
        mask &= column.is_null().to_numpy(zero_copy_only=False)
    return mask


def _parse_per_line(data: bytes, n_lines: int) -> Parsed:
    raw = data.split(b"\n")[:n_lines]
    rows: list[list[str]] = []
    index: list[int] = []
    bad: dict[int, str] = {}
    for i, line in enumerate(raw):
        line = line.removesuffix(b"\r")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            bad[i] = line.decode("utf-8", errors="replace")
            continue
        fields = _split(text)
        if fields is None:
            bad[i] = text
        else:
            rows.append(fields)
            index.append(i)
    columns = {c: pa.array([r[j] or None for r in rows], pa.string()) for j, c in enumerate(RAW_COLUMNS)}
    return Parsed(pa.table(columns, schema=_STRINGS), np.array(index, np.int64), bad, n_lines)


def parse_fields(columns: Mapping[str, Sequence[Any]]) -> Parsed:
    """Rows given field by field (the scoring API's JSON events), as :func:`parse` splits the CSV lines
    they stand for: the same fields, without writing those lines only to split them again.

    ``columns`` maps each of the nine raw columns to its values; a value stands for its text
    (``str(value)``), None and "" for the empty field (null). A line cannot hold a line break inside a
    field (module docstring), so a row with ``\\r`` or ``\\n`` in a field is malformed (its "raw text" is
    its fields joined by commas); every other row is well formed, nine fields as given.
    """
    n = len(columns[RAW_COLUMNS[0]])
    flat = [v for c in RAW_COLUMNS for v in columns[c]]  # one array for the nine columns: one kernel call each
    try:
        values = pa.array(flat, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid, UnicodeEncodeError):  # numbers, or text that is not UTF-8
        # as _joined encodes the text of lines (a lone surrogate becomes "?")
        values = pa.array([None if v is None else str(v).encode("utf-8", "replace").decode() for v in flat],
                          pa.string())  # fmt: skip
    values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
    broken = _np(pc.match_substring_regex(values, r"[\r\n]")).reshape(_N, n).any(axis=0)
    fields = pa.table([values.slice(j * n, n) for j in range(_N)], schema=_STRINGS)
    if not broken.any():
        return Parsed(fields, np.arange(n, dtype=np.int64), {}, n)
    bad = np.flatnonzero(broken)
    texts = fields.take(bad).to_pylist()
    malformed = {int(i): ",".join(t[c] or "" for c in RAW_COLUMNS) for i, t in zip(bad, texts, strict=True)}
    return Parsed(fields.filter(pa.array(~broken)), np.flatnonzero(~broken), malformed, n)


def _split(text: str) -> list[str] | None:
    """The nine fields of one line, or None if it is malformed."""
    if text.strip(" ") == "" or "\r" in text:
        return None
    try:
        fields = next(csv.reader([text], strict=True))
    except csv.Error:
        return None
    return fields if len(fields) == _N else None


# -- the rules -----------------------------------------------------------------------------------


def _np(mask: pa.ChunkedArray | pa.Array, null: bool = False) -> np.ndarray:
    return (pc.fill_null(mask, null) if mask.null_count else mask).to_numpy(zero_copy_only=False)


def _blank(values: pa.ChunkedArray) -> np.ndarray:
    """Null, or spaces only (Spark's trim, which the lake has always used, removes spaces only)."""
    return _np(pc.equal(pc.utf8_trim(values, " "), ""), True)


def _bad_id(values: pa.ChunkedArray) -> np.ndarray:
    """Not a non-negative integer that fits in 64 bits (null counts as bad)."""
    ok = pc.match_substring_regex(values, _ID)
    fits = pc.or_(pc.less(pc.utf8_length(values), len(_LONG_MAX)), pc.less_equal(values, _LONG_MAX))
    return ~_np(pc.and_(ok, fits))


def _typed(fields: pa.Table) -> tuple[pa.ChunkedArray, pa.ChunkedArray, dict[str, np.ndarray]]:
    """(event time, price, per-rule failure masks) of parsed rows."""
    f = {c: fields[c] for c in RAW_COLUMNS}
    when = pc.strptime(f["event_time"], format=_TIME_FORMAT, unit="s", error_is_null=True)
    # strptime rolls 2019-02-30 over to March and accepts 2019-1-1; printing it back must give the input
    # (a cast prints "YYYY-MM-DD HH:MM:SS", about 8x faster than strftime)
    printed = pc.binary_join_element_wise(pc.cast(when, pa.string()), " UTC", "")
    exact = _np(pc.equal(printed, f["event_time"]))
    year = _np(pc.year(when), 0)
    number = pc.match_substring_regex(f["price"], _NUMBER)
    price = pc.cast(pc.if_else(number, f["price"], "nan"), pa.float64())
    price_np = _np(price, np.nan)
    failed = {
        "bad_event_time": ~exact | (year < MIN_YEAR) | (year > MAX_YEAR),
        "unknown_event_type": ~_np(pc.is_in(f["event_type"], pa.array(EVENT_TYPES))),
        "bad_product_id": _bad_id(f["product_id"]),
        "bad_category_id": ~_blank(f["category_id"]) & _bad_id(f["category_id"]),
        "missing_user_id": _blank(f["user_id"]),
        "bad_user_id": ~_np(pc.match_substring_regex(f["user_id"], _ID)),
        "missing_user_session": _blank(f["user_session"]),
        "missing_price": _blank(f["price"]),
        "bad_price": np.isnan(price_np),
        "negative_price": price_np < 0,
        "absurd_price": price_np > MAX_PRICE,
    }
    return when, price, failed


def reasons(fields: pa.Table) -> tuple[np.ndarray, pa.ChunkedArray, pa.ChunkedArray]:
    """(first failed rule or None per row, event time, price) of parsed rows."""
    when, price, failed = _typed(fields)
    rules = [r for r in QUARANTINE_REASONS if r != MALFORMED]
    # rule numbers, then names: string choices would make numpy build a full text array per rule
    code = np.select([failed[r] for r in rules], range(1, len(rules) + 1), default=0)
    return np.array([None, *rules], dtype=object)[code], when, price


def _row_hashes(fields: pa.Table) -> np.ndarray:
    """A 128-bit hash of each row's nine fields, as an (n, 2) uint64 array."""
    frame = pl.from_arrow(fields)
    assert isinstance(frame, pl.DataFrame)
    return np.column_stack([frame.hash_rows(seed=0).to_numpy(), frame.hash_rows(seed=1).to_numpy()])


def first_copies(hashes: np.ndarray) -> np.ndarray:
    """For each row, the position of the first row with the same hash (itself if it is the first)."""
    # one history (predict, the API): numpy, without polars' per-call cost
    if 0 < len(hashes) <= _SMALL_BATCH:
        order = np.lexsort((hashes[:, 1], hashes[:, 0]))  # stable: copies stay in position order
        ordered = hashes[order]
        starts = np.r_[True, (ordered[1:] != ordered[:-1]).any(axis=1)]
        first = np.empty(len(hashes), np.int64)
        first[order] = order[starts][np.cumsum(starts) - 1]
        return first
    frame = pl.DataFrame({"a": hashes[:, 0], "b": hashes[:, 1], "i": np.arange(len(hashes))})
    return frame.with_columns(first=pl.col("i").min().over("a", "b"))["first"].to_numpy()


@dataclass
class _Checked:
    """A parsed batch with each row's first failed rule and, among the valid rows, the copies."""

    parsed: Parsed
    reason: np.ndarray  # per parsed row: the first failed rule, or None
    when: pa.ChunkedArray  # per parsed row: the event time
    price: pa.ChunkedArray  # per parsed row: the price
    valid: np.ndarray  # per parsed row: no rule failed
    hashes: np.ndarray  # per valid row: the 128-bit row hash
    first: np.ndarray  # per valid row: position (among valid rows) of its first copy

    @property
    def is_dup(self) -> np.ndarray:
        """Per valid row: a later copy of an earlier valid row."""
        return self.first != np.arange(len(self.first))

    @property
    def kept(self) -> np.ndarray:
        """Parsed-row positions of the valid rows that are first copies."""
        return np.flatnonzero(self.valid)[~self.is_dup]


def _check(parsed: Parsed) -> _Checked:
    reason, when, price = reasons(parsed.fields)
    valid = reason == None  # noqa: E711 (element-wise on an object array)
    hashes = _row_hashes(parsed.fields.filter(pa.array(valid)))
    return _Checked(parsed, reason, when, price, valid, hashes, first_copies(hashes))


# -- a classified batch ----------------------------------------------------------------------------


@dataclass
class Classified:
    """Every line of a batch in exactly one of three tables (so counts reconcile by construction)."""

    events: pa.Table  # EVENT_FILE_SCHEMA plus event_date; user_key and session_key dictionary-encoded
    quarantine: pa.Table  # QUARANTINE_FILE_SCHEMA, raw_line redacted
    duplicates: pa.Table  # DUPLICATE_FILE_SCHEMA
    hashes: np.ndarray  # (len(events), 2) uint64: the row hash of each accepted event
    n_lines: int


def _category_levels(code: pa.ChunkedArray) -> list[pa.ChunkedArray]:
    parts = pc.split_pattern(pc.binary_join_element_wise(code, "..", ""), ".")  # padded: 3 levels exist
    length = pc.subtract(pc.list_value_length(parts), 2)
    return [pc.if_else(pc.greater(length, k), pc.list_element(parts, k), None) for k in range(3)]


def _normalized(values: pa.ChunkedArray) -> pa.ChunkedArray:
    lowered = pc.utf8_lower(pc.utf8_trim(values, " "))
    return pc.if_else(pc.equal(lowered, ""), None, lowered)


def _redacted(fields: pa.Table, key: bytes) -> pa.ChunkedArray:
    """The line rebuilt from its fields with the user and session ids replaced by their pseudonyms."""
    parts = []
    for c in RAW_COLUMNS:
        value = fields[c]
        if c in ("user_id", "user_session"):
            value = pseudonymize_array(value, key)
        parts.append(pc.fill_null(value, ""))
    return pc.binary_join_element_wise(*parts, ",")


def mask_ids(text: str, key: bytes) -> str:
    """A malformed line as it may be kept in the quarantine: nothing in it identifies a person.

    Why no guessing which tokens are ids: ids come as ``541312140.0``, as short numbers and as sessions
    that are not dashed UUIDs, and a pattern misses some. A line that still cuts into the nine fields
    at its commas keeps them, with both ids keyed as in the events; any other line is replaced by its
    length and a keyed digest (the holder of the key can find it in the source file by line number).
    """
    parts = text.split(",")
    if len(parts) == _N:
        for i in _ID_FIELDS:
            parts[i] = pseudonymize(parts[i], key)
        return ",".join(parts)
    return line_digest(text, key)


def line_digest(text: str, key: bytes) -> str:
    """What a quarantine keeps of a line whose ids cannot be found by position: its length and a keyed
    digest, never the text."""
    return f"<malformed line: {len(text)} characters, digest {pseudonymize(text, key)[:16]}>"


def classify_batch(data: bytes, key: bytes, source_file: str, first_line: int) -> Classified:
    """Parse, validate, dedupe, normalize and pseudonymize the data lines in ``data``.

    ``first_line`` is the line number of the batch's first line in ``source_file``. Raw ids leave this
    function only as HMAC pseudonyms: accepted rows carry ``user_key``/``session_key``, quarantined rows
    a redacted ``raw_line``.
    """
    c = _check(parse(data))
    parsed, fields, reason, first, is_dup = c.parsed, c.parsed.fields, c.reason, c.first, c.is_dup
    lines = parsed.line_index + first_line
    valid_lines = lines[c.valid]

    bad_rows = np.flatnonzero(~c.valid)
    malformed = sorted(parsed.malformed)
    quarantine = pa.table({
        "source_file": pa.array([source_file] * (len(bad_rows) + len(malformed)), pa.string()),
        "line_number": pa.array(np.concatenate([lines[bad_rows], np.array(malformed, np.int64) + first_line])),
        "reason": pa.array([*reason[bad_rows], *[MALFORMED] * len(malformed)], pa.string()),
        "raw_line": pa.concat_arrays([
            _redacted(fields.take(bad_rows), key).combine_chunks().cast(pa.string()),
            pa.array([mask_ids(parsed.malformed[i], key) for i in malformed], pa.string()),
        ]),
    }, schema=QUARANTINE_FILE_SCHEMA)  # fmt: skip
    duplicates = pa.table({
        "source_file": pa.array([source_file] * int(is_dup.sum()), pa.string()),
        "line_number": pa.array(valid_lines[is_dup]),
        "duplicate_of_line": pa.array(valid_lines[first[is_dup]]),
    }, schema=DUPLICATE_FILE_SCHEMA)  # fmt: skip

    keep = c.kept
    kept = fields.take(keep)
    event_time = c.when.take(keep).cast(pa.timestamp("us", tz="UTC"))
    code = _normalized(kept["category_code"])
    l1, l2, l3 = _category_levels(code)
    events = pa.table({
        "event_time": event_time,
        "event_hour": pc.hour(event_time).cast(pa.int32()),
        "event_type": kept["event_type"],
        **_ids(kept),
        "category_code": code, "category_l1": l1, "category_l2": l2, "category_l3": l3,
        "brand": _normalized(kept["brand"]),
        "price": c.price.take(keep),
        "user_key": pseudonymize_array(kept["user_id"], key, encoded=True),
        "session_key": pseudonymize_array(kept["user_session"], key, encoded=True),
        "source_file": pa.array([source_file] * len(keep), pa.string()),
        "line_number": pa.array(lines[keep]),
        "event_date": pc.cast(event_time, pa.date32()),
    })  # fmt: skip
    return Classified(events, quarantine, duplicates, c.hashes[~is_dup], parsed.n_lines)


def _ids(kept: pa.Table) -> dict[str, pa.ChunkedArray]:
    """``product_id`` and ``category_id`` of valid rows as int64 (a blank category id is null)."""
    category = kept["category_id"]
    return {"product_id": pc.cast(kept["product_id"], pa.int64()),
            "category_id": pc.cast(pc.if_else(pa.array(_blank(category)), None, category), pa.int64())}  # fmt: skip


# -- Spark-free histories (predict, API, dashboard upload) -------------------------------------------


@dataclass
class History:
    """The valid rows of an event file plus what was left out and why."""

    table: pa.Table  # RAW_COLUMNS typed: event_time UTC, ids int, price float; text not yet normalized
    rows_read: int = 0
    invalid: dict[str, int] = field(default_factory=dict)  # quarantine reason -> lines
    duplicates: int = 0

    @cached_property
    def rows(self) -> pd.DataFrame:
        """``table`` as pandas, converted on first use (one small history scored from Arrow never needs it)."""
        return self.table.to_pandas()

    @property
    def rows_invalid(self) -> int:
        return sum(self.invalid.values())

    def summary(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_accepted": self.table.num_rows,
            "rows_invalid": self.rows_invalid,
            "invalid_by_reason": dict(self.invalid),
            "duplicates_removed": self.duplicates,
        }


def line_reasons(lines: list[str]) -> list[str | None]:
    """The first failed rule of each data line (None when valid), by the same code as ingestion."""
    return row_reasons(parse(_joined(lines)))


def row_reasons(parsed: Parsed) -> list[str | None]:
    """The first failed rule of each parsed line or row (None when valid)."""
    out: list[str | None] = [MALFORMED] * parsed.n_lines
    reason, _, _ = reasons(parsed.fields)
    for i, r in zip(parsed.line_index, reason, strict=True):
        out[i] = r
    return out


def _joined(lines: Iterable[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8", errors="replace")


def parse_data(data: bytes) -> History:
    """Validate a batch of data lines (no header); invalid ones are counted, copies of a valid one dropped."""
    return history_of(parse(data))


def history_of(parsed: Parsed) -> History:
    """The :class:`History` of parsed lines (:func:`parse`) or rows (:func:`parse_fields`)."""
    c = _check(parsed)
    invalid = Counter(r for r in c.reason if r is not None)
    if c.parsed.malformed:
        invalid[MALFORMED] += len(c.parsed.malformed)
    kept = c.parsed.fields.take(c.kept)
    table = pa.table({
        "event_time": c.when.take(c.kept).cast(pa.timestamp("ns", tz="UTC")),
        "event_type": kept["event_type"],
        **_ids(kept),
        "category_code": kept["category_code"], "brand": kept["brand"],
        "price": c.price.take(c.kept),
        "user_id": kept["user_id"], "user_session": kept["user_session"],
    })  # fmt: skip
    ordered = {r: invalid[r] for r in QUARANTINE_REASONS if invalid[r]}
    return History(table=table, rows_read=c.parsed.n_lines, invalid=ordered, duplicates=int(c.is_dup.sum()))


def parse_lines(lines: Iterable[str]) -> History:
    """:func:`parse_data` of text lines (each without its newline)."""
    return parse_data(_joined(lines))


def validate_line(line: str) -> tuple[str | None, tuple | None]:
    """(quarantine reason or None, typed row or None) of one data line; see :func:`parse_data`."""
    history = parse_lines([line])
    if history.invalid:
        return next(iter(history.invalid)), None
    row = history.rows.iloc[0]
    category = None if pd.isna(row["category_id"]) else int(row["category_id"])
    return None, (row["event_time"].to_pydatetime(), row["event_type"], int(row["product_id"]), category,
                  row["category_code"], row["brand"], float(row["price"]), row["user_id"], row["user_session"])


def read_history(path: str | Path) -> History:
    """Read a REES46 file (plain or gzip), check its header (ContractError if wrong), validate rows."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    header, _, body = data.partition(b"\n")
    if not header and not body:
        raise ValueError(f"{path.name}: empty file (no header)")
    check_header(header.decode("utf-8", errors="replace"), path.name)
    return parse_data(body)


__all__ = [
    "Classified", "History", "Parsed", "classify_batch", "count_lines", "history_of", "line_digest", "line_reasons",
    "mask_ids", "parse",
    "parse_data", "parse_fields", "parse_lines", "read_history", "row_reasons", "validate_line",
]  # fmt: skip
