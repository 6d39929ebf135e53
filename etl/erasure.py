"""Recognizing an erased person in tables and raw lines, from one-way digests of their user keys.

Why digests and not keys: the erasure ledger must remember whom to suppress at every later ingest, yet
after erasure not even the pseudonym may remain in the lake. So the ledger keeps ``SHA-256(user_key)``
only, and every check here hashes the keys it meets and compares digests. A user key is itself a
256-bit HMAC, so its digest cannot be reversed; whoever holds the pseudonymization key can still
recognize the person again by keying and hashing a raw id, which is exactly what suppression needs.

Tables in, masks and tables out; no storage (the job is :mod:`services.jobs.erasure`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from etl.lines import Classified
from etl.pseudonymize import pseudonymize

if TYPE_CHECKING:  # pyspark only for the order path: the API and dashboard import this without it
    from pyspark.sql import DataFrame

#: The run-summary outcome of lines dropped at ingest because their user asked to be erased.
ERASED = "erased_user"

#: A user or session key as the lake writes it: 64 lowercase hex characters (HMAC-SHA256).
_KEY = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
#: What may be a raw user id in a raw line: a whole number (REES46 user ids; Online Retail's
#: ``17850.0`` is the customer ``17850``); group 1 is the id as ingestion keys it.
_RAW_ID = re.compile(rb"(?<![0-9A-Za-z.])([0-9]+)(?:\.0+)?(?![0-9A-Za-z.])")
#: The user-id column of each raw format (etl.contract's RAW_COLUMNS and ORDER_COLUMNS).
USER_ID_COLUMNS = ("user_id", "CustomerID")


def key_digest(user_key: str) -> str:
    """The one-way digest the ledger keeps of a user key (SHA-256, 64 hex characters)."""
    return hashlib.sha256(user_key.encode("ascii")).hexdigest()


def _keys_in(value: str) -> list[str]:
    """The user keys a value holds: itself when it is a key, else every key inside the text."""
    return [value] if len(value) == 64 and _KEY.fullmatch(value) else _KEY.findall(value)


def _holds(value: str | None, digests: Set[str], memo: dict[str, bool]) -> bool:
    """Does the value (a key, or text with keys in it) hold an erased person's key? Memoized per value:
    a batch meets each user key in many files, and hashes it once."""
    if value is None:
        return False
    hit = memo.get(value)
    if hit is None:
        hit = memo[value] = any(key_digest(k) in digests for k in _keys_in(value))
    return hit


def fingerprint(digest: str) -> int:
    """The first 64 bits of a key's digest: what a per-file key index holds (services.jobs.erasure_index).
    Collisions among a lake's keys only make a file a candidate; the rows are then checked by digest."""
    return int(digest[:16], 16)


def fingerprints(column: pa.Array | pa.ChunkedArray, memo: dict[str, tuple[int, ...]]) -> np.ndarray:
    """Sorted distinct fingerprints of every key in a column (a key, or text with keys inside), each
    distinct value hashed once (``memo`` carries the answers from file to file)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    found: set[int] = set()
    for chunk in chunks:
        codes = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
        for value in codes.dictionary.to_pylist():
            if value is None:
                continue
            fps = memo.get(value)
            if fps is None:
                fps = memo[value] = tuple(fingerprint(key_digest(k)) for k in _keys_in(value))
            found.update(fps)
    return np.array(sorted(found), dtype=np.uint64)


def person_mask(column: pa.Array | pa.ChunkedArray, digests: Set[str],
                memo: dict[str, bool] | None = None) -> np.ndarray:  # fmt: skip
    """Per row: does the value hold a key whose digest is in ``digests``?

    The value may be a key (``user_key``) or text with keys inside it (a quarantined ``raw_line``);
    each distinct value of a chunk is checked once, so a column of a million rows and 10,000 users
    costs 10,000 look-ups. ``memo`` carries the answers from file to file.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if not digests:
        return np.zeros(len(column), bool)
    memo = {} if memo is None else memo
    return np.concatenate([_chunk_mask(c, digests, memo) for c in chunks]) if chunks else np.zeros(0, bool)


def _chunk_mask(chunk: pa.Array, digests: Set[str], memo: dict[str, bool]) -> np.ndarray:
    codes = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
    hit = np.array([_holds(v, digests, memo) for v in codes.dictionary.to_pylist()] + [False], bool)
    indices = pc.fill_null(codes.indices, len(hit) - 1).to_numpy(zero_copy_only=False).astype(np.int64)
    return hit[indices]


def rows_of(table: pa.Table, columns: Iterable[str], digests: Set[str],
            memo: dict[str, bool] | None = None) -> np.ndarray:  # fmt: skip
    """Per row: does any of ``columns`` (those the table has) hold an erased person's key?"""
    mask = np.zeros(table.num_rows, bool)
    for name in columns:
        if name in table.column_names:
            mask |= person_mask(table[name], digests, memo)
    return mask


def linked_mask(table: pa.Table, links: tuple[tuple[str, str], ...], removed: pa.Table) -> np.ndarray:
    """Per row: does it point at a removed event? ``links`` pairs this table's columns with the columns
    of ``removed`` (``source_file``, ``line_number`` of the events taken out of the same run)."""
    mask = np.zeros(table.num_rows, bool)
    if removed.num_rows == 0 or table.num_rows == 0:
        return mask
    mine = [c for c, _ in links]
    theirs = pl.from_arrow(removed.select([e for _, e in links]).rename_columns(mine)).unique()
    rows = pl.from_arrow(table.select(mine)).with_row_index("_row").join(theirs, on=mine, how="semi")
    mask[rows["_row"].to_numpy()] = True
    return mask


def suppress(out: Classified, digests: Set[str]) -> tuple[Classified, int]:
    """A classified batch without the lines of people who asked to be erased, and how many there were.

    Their events, their quarantined lines (found by the pseudonyms in ``raw_line``) and the copies of
    their events (duplicates pointing at a removed line) all go: nothing of them is kept anywhere.
    """
    if not digests:
        return out, 0
    gone = person_mask(out.events["user_key"], digests)
    bad = person_mask(out.quarantine["raw_line"], digests)
    if not gone.any() and not bad.any():
        return out, 0
    lines = pa.array(out.events["line_number"].combine_chunks().to_numpy()[gone])
    copies = np.asarray(pc.is_in(out.duplicates["duplicate_of_line"], lines))
    kept = Classified(out.events.filter(pa.array(~gone)), out.quarantine.filter(pa.array(~bad)),
                      out.duplicates.filter(pa.array(~copies)), out.hashes[~gone], out.n_lines)  # fmt: skip
    return kept, int(gone.sum() + bad.sum() + copies.sum())


def suppress_orders(classified: DataFrame, digests: Set[str], key: bytes) -> DataFrame:
    """Order lines (:func:`etl.online_retail.classify_orders`) with the erased people's lines marked
    :data:`ERASED`: their purchases (by ``user_key``), their rejected lines (any number in the raw line
    keyed to them: no field of a rejected line can be trusted) and the copies of their purchases."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, StructField, StructType

    from etl.lines import ACCEPTED, DUPLICATE, QUARANTINED

    mine = F.col("outcome") == ACCEPTED
    mine &= F.sha2(F.col("user_key"), 256).isin(list(digests))
    # The raw line's numbers are keyed in Arrow tasks, never in Spark SQL (its plan would show the key).
    matcher = RawMatcher(key, frozenset(digests))

    def flag(batches: Iterable[pa.RecordBatch]) -> Iterable[pa.RecordBatch]:
        for batch in batches:
            lines = batch.column(batch.schema.get_field_index("raw_line")).to_pylist()
            hits = [bool(line) and bool(matcher.hits(line.encode())) for line in lines]
            yield batch.append_column("_erased_line", pa.array(hits, pa.bool_()))

    flagged = classified.mapInArrow(flag, StructType([*classified.schema.fields, StructField("_erased_line", BooleanType())]))
    rejected = (F.col("outcome") == QUARANTINED) & F.col("_erased_line")
    marked = (flagged.withColumn("outcome", F.when(mine | rejected, F.lit(ERASED)).otherwise(F.col("outcome")))
              .drop("_erased_line"))
    firsts = (marked.where(F.col("outcome") == ERASED)
              .select("source_file", F.col("line_number").alias("duplicate_of_line"), F.lit(True).alias("_gone")))
    copies = marked.join(firsts, ["source_file", "duplicate_of_line"], "left")
    gone = (F.col("outcome") == DUPLICATE) & F.col("_gone").isNotNull()
    return copies.withColumn("outcome", F.when(gone, F.lit(ERASED)).otherwise(F.col("outcome"))).drop("_gone")


@dataclass
class RawMatcher:
    """Finds an erased person's lines in raw files (REES46 or Online Retail CSV, plain text).

    Raw ids in both formats are numbers (``17850.0`` is the customer ``17850``), so the candidates are
    the digit runs of a file: :meth:`hits` keys each distinct one once and keeps those whose digest is
    an erased person's. Most files hold none and are read once. In a file that does, a line goes when
    its user-id field (found by the header) is such an id; a line that does not split into the header's
    fields (malformed, or a rejected file without a known header) goes when such an id stands anywhere
    in it, since no column can be trusted there.
    """

    key: bytes
    digests: Set[str]
    _seen: dict[bytes, bool] = field(default_factory=dict)

    def hits(self, block: bytes) -> set[bytes]:
        """The ids in ``block`` (whole lines) that belong to an erased person."""
        found = set()
        for token in set(_RAW_ID.findall(block)):
            hit = self._seen.get(token)
            if hit is None:
                hit = self._seen[token] = key_digest(pseudonymize(token.decode(), self.key)) in self.digests
            if hit:
                found.add(token)
        return found

    @staticmethod
    def user_column(header: bytes) -> int | None:
        """Position of the user-id field in a header line, None if the header is not a known one."""
        names = [f.strip().strip('"') for f in header.decode("utf-8", "replace").rstrip("\r").split(",")]
        return next((i for i, n in enumerate(names) if n in USER_ID_COLUMNS), None)

    @staticmethod
    def keep(lines: list[bytes], ids: set[bytes], column: int | None, width: int) -> list[bytes]:
        """``lines`` without those of the people whose raw ``ids`` are given."""
        if not ids:
            return lines
        anywhere = re.compile(rb"(?<![0-9A-Za-z])(?:" + b"|".join(re.escape(i) for i in ids) + rb")(?:\.0+)?(?![0-9A-Za-z])")
        kept = []
        for line in lines:
            if anywhere.search(line) is None:
                kept.append(line)
                continue
            fields = line.rstrip(b"\r").split(b",")
            if column is not None and len(fields) == width:
                m = _RAW_ID.fullmatch(fields[column].strip().strip(b'"'))
                if m is None or m.group(1) not in ids:
                    kept.append(line)
        return kept


__all__ = [
    "ERASED",
    "RawMatcher",
    "fingerprint",
    "fingerprints",
    "key_digest",
    "linked_mask",
    "person_mask",
    "rows_of",
    "suppress",
    "suppress_orders",
]
