"""An independent scan for a person's traces: every file under a root and every warehouse table.

Independent of :mod:`services.jobs.erasure` on purpose: it knows nothing of the catalog, of user-key
columns or of digests. It looks for the literal strings (the raw id as a whole number, the 64-hex
key) in every byte of every file, after undoing gzip, and in every value of every column of every
Parquet file (dictionary pages are compressed, so the bytes alone would miss them), and in every
value of every row of every warehouse table, plus the bytes of the database files themselves.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa


def patterns_of(needles: Iterable[str]) -> list[re.Pattern[bytes]]:
    # a raw id is a number: it must not match inside a longer number (a price, a product id)
    return [re.compile(rb"(?<![0-9A-Za-z])" + re.escape(n.encode()) + rb"(?![0-9A-Za-z])") for n in needles]


def _text_of(column: pa.ChunkedArray) -> bytes:
    values = column.to_pylist()
    return "\n".join("" if v is None else str(v) for v in values).encode()


def scan_bytes(name: str, data: bytes, patterns: list[re.Pattern[bytes]]) -> list[str]:
    """Where in one object (a file's content) a needle occurs."""
    found = []
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if any(p.search(data) for p in patterns):
        found.append(f"{name} (bytes)")
    if data[:4] == b"PAR1":
        table = pq.read_table(io.BytesIO(data))
        for col in table.column_names:
            if any(p.search(_text_of(table[col])) for p in patterns):
                found.append(f"{name}:{col}")
    return found


def scan_tree(root: Path, needles: Iterable[str]) -> list[str]:
    """Every file under ``root`` (hidden ones too)."""
    patterns = patterns_of(needles)
    found: list[str] = []
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            found += scan_bytes(str(path), path.read_bytes(), patterns)
    return found


def scan_bucket(client, bucket: str, needles: Iterable[str]) -> list[str]:
    """Every object of a bucket on an S3 server (minio client)."""
    patterns = patterns_of(needles)
    found: list[str] = []
    for obj in client.list_objects(bucket, recursive=True):
        response = client.get_object(bucket, obj.object_name)
        try:
            found += scan_bytes(f"s3://{bucket}/{obj.object_name}", response.read(), patterns)
        finally:
            response.close()
            response.release_conn()
    return found


def scan_warehouse(url: str, needles: Iterable[str]) -> list[str]:
    """Every value of every row of every table of the warehouse."""
    patterns = patterns_of(needles)
    engine = sa.create_engine(url)
    found = []
    try:
        with engine.connect() as conn:
            for name in sa.inspect(conn).get_table_names():
                rows = conn.execute(sa.text(f'SELECT * FROM "{name}"')).fetchall()
                text = "\n".join("|".join("" if v is None else str(v) for v in r) for r in rows).encode()
                if any(p.search(text) for p in patterns):
                    found.append(f"warehouse:{name}")
    finally:
        engine.dispose()
    return found
