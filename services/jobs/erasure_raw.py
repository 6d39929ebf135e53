"""Raw files (processed and rejected input, with raw ids) read for erasure: streamed, matched, rewritten.

What counts as the person's line is :class:`etl.erasure.RawMatcher`'s rule; here only the I/O: a
store object as a local file, its lines in bounded blocks (gzip undone), the rewrite written beside.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from isal import igzip

from etl.erasure import RawMatcher
from services.core.storage import Store


@dataclass(frozen=True)
class RawLocation:
    """Raw files that may hold raw ids: a store and the prefix in it (``_processed`` of the incoming one)."""

    name: str
    store: Store
    prefix: str = ""


RAW_BLOCK = 64 * 1024 * 1024


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _blocks(path: Path) -> Iterator[bytes]:
    """The file's content (gzip undone) in blocks of whole lines, streamed: memory stays bounded."""
    with (igzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")) as fh:
        carry = b""
        while block := fh.read(RAW_BLOCK):
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry += block
                continue
            yield carry + block[:cut]
            carry = block[cut:]
        if carry:
            yield carry


def filter_raw(path: Path, matcher: RawMatcher, out: Path | None = None) -> int:
    """How many lines of a raw file are an erased person's; with ``out``, write the file without them
    (gzip kept). Pass 1 finds the person's ids among the file's numbers; only a file with some is
    read again, line by line."""
    ids: set[bytes] = set()
    for block in _blocks(path):
        ids |= matcher.hits(block)
    if not ids:
        return 0
    dropped, column, width, first = 0, None, 0, True
    opener = igzip.open if _is_gzip(path) else open
    with opener(out, "wb") if out is not None else contextlib.nullcontext() as writer:
        for block in _blocks(path):
            lines = block.split(b"\n")
            head: list[bytes] = []
            if first:
                first = False
                column = RawMatcher.user_column(lines[0])
                if column is not None:  # a known header stays; an unknown one is checked like any line
                    width, head, lines = lines[0].count(b",") + 1, lines[:1], lines[1:]
            kept = head + RawMatcher.keep(lines, ids, column, width)
            dropped += len(head) + len(lines) - len(kept)
            if writer is not None:
                writer.write(b"\n".join(kept))
    return dropped


@contextlib.contextmanager
def local_copy(store: Store, key: str) -> Iterator[Path]:
    """The object as a local file: itself on disk, a temporary download from S3."""
    local = store.local_path(key)
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw"
        store.get_file(key, path)
        yield path


def raw_keys(loc: RawLocation) -> list[str]:
    """The raw files of a location (hidden files and the rejection reports skipped)."""
    return [k for k in loc.store.list(loc.prefix) if not k.rsplit("/", 1)[-1].startswith(".")
            and not k.endswith(".error.json")]  # fmt: skip


__all__ = ["RAW_BLOCK", "RawLocation", "filter_raw", "local_copy", "raw_keys"]
