"""The hostile-input corpus (issue 28), written on the fly: small files that used to take ingestion or the
watcher down, or put raw ids into an error message, each with the named reason it must now get.

Made on the fly rather than stored: the bombs are built from one compressed megabyte repeated as gzip
members (a gzip reader decompresses the concatenation as one stream), so a gigabyte-long line costs a
megabyte on disk and nothing in the repository.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

from etl.contract import HEADER_LINE

#: Ids planted in the corpus: none of them may appear in any output.
RAW_IDS = ("519107250", "566511c2-e2e3-422b-b695-cf8e6e792ca8", "541312140")
ROW = ("2019-10-01 00:00:01 UTC,view,17200506,2053013559792632471,furniture.living_room.sofa,,543.10,"
       "519107250,566511c2-e2e3-422b-b695-cf8e6e792ca8")  # fmt: skip
MIB = 1 << 20


def repeated_gzip(path: Path, head: bytes, unit: bytes, times: int) -> Path:
    """``head`` then ``unit`` repeated ``times``, as gzip members (one compressed ``unit`` reused)."""
    member = gzip.compress(unit, compresslevel=9)
    with open(path, "wb") as out:
        out.write(gzip.compress(head))
        for _ in range(times):
            out.write(member)
    return path


def write_corpus(root: Path, *, long_line_mib: int = 1024, bomb_mib: int = 300) -> dict[str, str]:
    """Write the corpus under ``root``; returns file name -> the reason code it must get."""
    root.mkdir(parents=True, exist_ok=True)
    header = f"{HEADER_LINE}\n".encode()
    rows = f"{ROW}\n{ROW.replace('519107250', '541312140.0')}\n".encode()
    (root / "part-ab").write_bytes(rows)  # a headerless `split -l` part
    repeated_gzip(root / "long-line.csv.gz", header + rows, b"x" * MIB, long_line_mib)  # a 1 GiB line
    repeated_gzip(root / "bomb.csv.gz", header, b"\n" * MIB, bomb_mib)  # 300 MiB of empty lines
    whole = gzip.compress(header + rows * 2000)
    (root / "truncated.csv.gz").write_bytes(whole[: len(whole) // 2])
    (root / "noise.bin").write_bytes(b"\xff" + random.Random(28).randbytes(64 * 1024))
    return {"part-ab": "bad_header", "long-line.csv.gz": "line_too_long", "bomb.csv.gz": "decompression_bomb",
            "truncated.csv.gz": "corrupt_file", "noise.bin": "not_text"}  # fmt: skip


__all__ = ["RAW_IDS", "ROW", "repeated_gzip", "write_corpus"]
