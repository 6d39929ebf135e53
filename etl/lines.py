"""Spark-free validation of REES46 lines: the twin of :mod:`etl.ingest`'s rules for small histories.

``shoplens predict``, the dashboard's upload and the scoring API validate a user's raw history here:
the same contract constants and patterns (:mod:`etl.contract`), the same reasons in the same order
(``QUARANTINE_REASONS``), the first failed rule wins. Invalid lines are counted per reason and
skipped; exact copies of a valid line are dropped as duplicates. Imports neither pyspark nor the lake.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from etl.contract import (
    EVENT_TYPES,
    ID_PATTERN,
    MAX_PRICE,
    MAX_YEAR,
    MIN_YEAR,
    NUMBER_PATTERN,
    RAW_COLUMNS,
    check_header,
)

_ID = re.compile(ID_PATTERN)
_NUMBER = re.compile(NUMBER_PATTERN)
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) UTC")
_LONG_MAX = 2**63 - 1
_EVENT_TYPES = frozenset(EVENT_TYPES)
_N_FIELDS = len(RAW_COLUMNS)

def _blank(v: str | None) -> bool:
    """Null, or only spaces (Spark's trim removes spaces only)."""
    return v is None or v.strip(" ") == ""


def _bad_id(v: str) -> bool:
    return _ID.fullmatch(v) is None or int(v) > _LONG_MAX


def _event_time(v: str | None) -> datetime | None:
    m = _TIME.fullmatch(v or "")
    if m is None:
        return None
    try:
        when = datetime(*(int(g) for g in m.groups()), tzinfo=UTC)
    except ValueError:  # 2019-02-30 and the like
        return None
    return when if MIN_YEAR <= when.year <= MAX_YEAR else None


def validate_line(line: str) -> tuple[str | None, tuple | None]:
    """(quarantine reason or None, typed row or None) of one data line, first failed rule wins.

    The rules and their order are etl.contract.QUARANTINE_REASONS as etl.ingest applies them. The
    typed row is (event_time, event_type, product_id, category_id, category_code, brand, price,
    user_id, user_session); empty fields are None, text is not yet normalized.
    """
    if _blank(line):
        return "malformed_line", None
    fields = next(csv.reader([line]))
    if len(fields) != _N_FIELDS:
        return "malformed_line", None
    f = [v if v != "" else None for v in fields]
    raw_time, etype, product, category, code, brand, price_s, user, session = f
    when = _event_time(raw_time)
    if when is None:
        return "bad_event_time", None
    if _blank(etype) or etype not in _EVENT_TYPES:
        return "unknown_event_type", None
    if product is None or _bad_id(product):
        return "bad_product_id", None
    if not _blank(category) and _bad_id(category):  # type: ignore[arg-type]
        return "bad_category_id", None
    if _blank(user):
        return "missing_user_id", None
    if _ID.fullmatch(user) is None:  # type: ignore[arg-type]
        return "bad_user_id", None
    if _blank(session):
        return "missing_user_session", None
    if _blank(price_s):
        return "missing_price", None
    if _NUMBER.fullmatch(price_s) is None:  # type: ignore[arg-type]
        return "bad_price", None
    price = float(price_s)  # type: ignore[arg-type]
    if price != price:
        return "bad_price", None
    if price < 0:
        return "negative_price", None
    if price > MAX_PRICE:
        return "absurd_price", None
    category_id = None if category is None or _blank(category) else int(category)
    return None, (when, etype, int(product), category_id, code, brand, price, user, session)


@dataclass
class History:
    """The valid rows of an event file plus what was left out and why."""

    rows: pd.DataFrame  # REES46 columns, typed (see validate_line), one row per accepted line
    rows_read: int = 0
    invalid: dict[str, int] = field(default_factory=dict)  # quarantine reason -> lines
    duplicates: int = 0

    @property
    def rows_invalid(self) -> int:
        return sum(self.invalid.values())

    def summary(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_accepted": len(self.rows),
            "rows_invalid": self.rows_invalid,
            "invalid_by_reason": dict(self.invalid),
            "duplicates_removed": self.duplicates,
        }


def parse_lines(lines: Iterable[str]) -> History:
    """Validate data lines (no header); invalid ones are counted, copies of a valid line dropped."""
    kept: list[tuple] = []
    seen: set[str] = set()
    invalid: Counter[str] = Counter()
    read = duplicates = 0
    for line in lines:
        read += 1
        line = line[:-1] if line.endswith("\r") else line
        reason, row = validate_line(line)
        if reason is not None:
            invalid[reason] += 1
        elif line in seen:
            duplicates += 1
        else:
            seen.add(line)
            kept.append(row)  # type: ignore[arg-type]
    rows = pd.DataFrame(kept, columns=list(RAW_COLUMNS))
    return History(rows=rows, rows_read=read, invalid=dict(invalid), duplicates=duplicates)


def read_history(path: str | Path) -> History:
    """Read a REES46 file (plain or gzip), check its header (ContractError if wrong), validate rows."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise ValueError(f"{path.name}: empty file (no header)")
    check_header(lines[0], path.name)
    return parse_lines(lines[1:])


__all__ = ["History", "parse_lines", "read_history", "validate_line"]
