"""Reading an input file with bounds on what it can make us hold: line length and decompressed size.

Why: a gzip of a few megabytes can expand to terabytes, and a line without a newline can be any length,
so a reader that grows a buffer until the next newline (``readline()``, ``carry += block``) is an
out-of-memory kill waiting for a hostile file. Here the file is read in blocks of a fixed size, a line
longer than ``max_line_bytes`` refuses the file, and so does a stream that decompresses past
``max_decompressed_bytes`` or to more than ``max_expansion`` times its size on disk. What this reader
holds at a time: one block plus at most one unfinished line (``chunk_bytes + max_line_bytes``).

Why damaged input and our own I/O errors are told apart: a truncated gzip is the file's fault
(:class:`~etl.contract.ContractError`, the file is set aside), while a full disk or a failing read of
our local copy is ours (the ``OSError`` propagates: the run fails and is retried, the file is kept).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from gzip import BadGzipFile
from pathlib import Path
from typing import IO, Any

from isal import igzip, isal_zlib

from etl.contract import ContractError

#: Errors a damaged gzip stream raises while it is read (isal's and the standard library's).
_CORRUPT = (BadGzipFile, EOFError, isal_zlib.error, zlib.error)


@dataclass(frozen=True)
class IngestLimits:
    """Bounds on one input file (``SHOPLENS_INGEST_MAX_*``; the defaults let a real REES46 month through:
    2019-Nov is 67.5M lines of at most a few hundred bytes, 9 GB as text, about 5x its gzip)."""

    max_line_bytes: int = 1 << 20
    max_decompressed_bytes: int = 64 << 30
    max_expansion: float = 100.0
    #: The expansion rule applies from this many decompressed bytes on (a tiny file may compress 100x).
    expansion_floor_bytes: int = 256 << 20

    @classmethod
    def from_settings(cls, settings: Any) -> IngestLimits:
        return cls(settings.ingest_max_line_bytes, settings.ingest_max_decompressed_bytes,
                   settings.ingest_max_expansion)  # fmt: skip


def open_input(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when it starts with the gzip magic number."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return igzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_header(fh: IO[bytes], source: str, limits: IngestLimits) -> str:
    """The first line, at most ``max_line_bytes`` long, as text."""
    try:
        line = fh.readline(limits.max_line_bytes + 1)
    except _CORRUPT as err:
        raise ContractError(f"{source}: truncated or corrupt file ({type(err).__name__})", "corrupt_file") from err
    if len(line) > limits.max_line_bytes:
        raise ContractError(f"{source}: the first line is longer than {limits.max_line_bytes:,} bytes", "line_too_long")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ContractError(f"{source}: the first line is not UTF-8 text", "not_text") from err


def read_blocks(fh: IO[bytes], source: str, size_on_disk: int, block_bytes: int,
                limits: IngestLimits) -> Iterator[bytes]:  # fmt: skip
    """Blocks of ``block_bytes`` until the end, refusing a damaged stream and a decompression bomb."""
    total = 0
    expansion_cap = max(limits.expansion_floor_bytes, int(limits.max_expansion * size_on_disk))
    while True:
        try:
            block = fh.read(block_bytes)
        except _CORRUPT as err:
            raise ContractError(f"{source}: truncated or corrupt file ({type(err).__name__}: {err})",
                                "corrupt_file") from err  # fmt: skip
        if not block:
            return
        total += len(block)
        if total > limits.max_decompressed_bytes:
            raise ContractError(f"{source}: more than {limits.max_decompressed_bytes:,} bytes of data", "too_large")
        if total > expansion_cap:
            raise ContractError(f"{source}: expands to more than {limits.max_expansion:g} times its "
                                f"{size_on_disk:,} bytes", "decompression_bomb")  # fmt: skip
        yield block


def last_line_end(carried: int, block: bytes, source: str, limits: IngestLimits) -> int:
    """Offset just past the last newline of ``block`` (0: none), after checking that no line is too long.

    ``carried`` is the length of the unfinished line the previous blocks ended with; it continues into
    ``block``. The tail after the last newline counts too, so the carried line never exceeds the cap.
    """
    first = block.find(b"\n")
    if first < 0:
        longest = carried + len(block)
    else:
        last = block.rfind(b"\n")
        longest = max(carried + first, len(block) - last - 1, _longest_inner(block, first, last, limits.max_line_bytes))
    if longest > limits.max_line_bytes:
        raise ContractError(f"{source}: a line is longer than {limits.max_line_bytes:,} bytes", "line_too_long")
    return last + 1 if first >= 0 else 0


def _longest_inner(block: bytes, first: int, last: int, cap: int) -> int:
    """The longest line between the first and the last newline of ``block``, where it may exceed ``cap``.

    Why windows: listing every newline of a 64 MB block of empty lines takes half a gigabyte. A line
    longer than ``cap`` covers a whole window of ``cap // 2`` bytes (windows aligned after ``first``),
    so only windows without a newline are measured exactly; ``len(block) / (cap // 2)`` finds in all.
    """
    step, longest = max(cap // 2, 1), 0
    for start in range(first + 1, last, step):
        end = min(start + step, last)
        if block.find(b"\n", start, end) < 0:
            begin, stop = block.rfind(b"\n", 0, start) + 1, block.find(b"\n", end)
            longest = max(longest, stop - begin)
    return longest


__all__ = ["IngestLimits", "last_line_end", "open_input", "read_blocks", "read_header"]
