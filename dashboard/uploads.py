"""What a dashboard upload may be: its size, what it may decompress to, and a Parquet file's rows, each
checked before the upload is read, so one hostile file cannot take the dashboard's memory.

Streamlit refuses files over a widget's ``max_upload_size`` (megabytes of 2**20 bytes) in the browser
and on the server; :data:`LARGEST_UPLOAD_MB` is also the server's global ``server.maxUploadSize``
(``dashboard/.streamlit/config.toml`` and the ``shoplens dashboard`` launcher), so no other upload
path accepts more. The checks here hold also when a file reaches the code another way (tests, a
widget without the parameter).
"""

from __future__ import annotations

import zlib

import pyarrow as pa
import pyarrow.parquet as pq

MB = 2**20  # Streamlit's megabyte
LOOKUP_MAX_MB = 20  # a customer's event history (CSV, or gzipped CSV)
EXPERIMENT_MAX_MB = 60  # an experiment's per-user rows (CSV or Parquet)
LARGEST_UPLOAD_MB = max(LOOKUP_MAX_MB, EXPERIMENT_MAX_MB)
#: What a gzipped upload may expand to: a 20 MB gzip of event lines is ~150 MB of text at the usual
#: ratio; a bomb of 20 MB expands to 20 GB.
MAX_EXPANDED_BYTES = 160 * MB
GZIP_MAGIC = b"\x1f\x8b"


class UploadRefused(ValueError):
    """An upload the dashboard does not read; ``reason`` names why (too_large, decompression_bomb,
    corrupt_gzip, too_many_rows), the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_size(payload: bytes, max_mb: int, cli: str) -> None:
    """Refuse a file over ``max_mb``; ``cli`` is the command that handles big files."""
    if len(payload) > max_mb * MB:
        raise UploadRefused("too_large", f"The file is too large for the dashboard ({len(payload):,} bytes; at "
                                         f"most {max_mb} MB). Use `{cli}` for big files.")  # fmt: skip


def expanded(payload: bytes, limit: int = MAX_EXPANDED_BYTES) -> bytes:
    """``payload`` itself, or if gzipped its content, decompressed to at most ``limit`` bytes.

    Inflated one megabyte at a time (zlib's ``max_length``) and refused as soon as the total passes the
    limit, so a bomb costs about ``limit`` bytes, not its expanded size (one call with ``max_length =
    limit`` would cost twice that: zlib grows its output buffer by copying). Every gzip member is read,
    as ``gzip.decompress`` would.
    """
    if not payload.startswith(GZIP_MAGIC):
        return payload
    parts: list[bytes] = []
    total, rest = 0, payload
    while rest.startswith(GZIP_MAGIC):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = rest
        while not inflater.eof:
            try:
                part = inflater.decompress(pending, MB)
            except zlib.error as err:
                raise UploadRefused("corrupt_gzip", f"The file is not a readable gzip file ({err}).") from None
            total += len(part)
            if total > limit:
                raise UploadRefused("decompression_bomb", f"The file expands to more than {limit // MB} MB when "
                                    "decompressed (a decompression bomb, or far more than the dashboard reads).")  # fmt: skip
            pending = inflater.unconsumed_tail
            if not part and not pending and not inflater.eof:  # no input left, no output, no end
                raise UploadRefused("corrupt_gzip", "The gzip file is cut short (truncated upload?).")
            parts.append(part)
        rest = inflater.unused_data
    return b"".join(parts)


def check_parquet(payload: bytes, max_rows: int, limit: int = MAX_EXPANDED_BYTES) -> None:
    """Refuse a Parquet file with more than ``max_rows`` rows, or more than ``limit`` bytes once decoded,
    from its footer alone (nothing else of the file is decoded)."""
    try:
        meta = pq.ParquetFile(pa.BufferReader(payload)).metadata
    except (pa.ArrowException, OSError):
        return  # not Parquet: the reader says so, with its own message
    if meta.num_rows > max_rows:
        raise UploadRefused("too_many_rows", f"{meta.num_rows:,} rows is more than the dashboard analyzes "
                                             f"({max_rows:,}).")  # fmt: skip
    decoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if decoded > limit:
        raise UploadRefused("decompression_bomb", f"The file decodes to {decoded // MB:,} MB, more than the "
                                                  f"dashboard reads ({limit // MB} MB).")  # fmt: skip


__all__ = [
    "EXPERIMENT_MAX_MB",
    "LARGEST_UPLOAD_MB",
    "LOOKUP_MAX_MB",
    "MAX_EXPANDED_BYTES",
    "MB",
    "UploadRefused",
    "check_parquet",
    "check_size",
    "expanded",
]
