"""One way to publish a versioned dataset: stage locally, write, publish, point, clean up.

Readers follow only ``<dataset>/_current.json``, and that pointer is written last with one small
atomic write (a rename on disk, one PUT on S3), so a crash at any point before it leaves the previous
version current and nothing half-written visible. Every job publishes through :func:`new_version`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from services.core.lake import Lake, new_run_id


@dataclass
class Staged:
    """A version being written: its local directory and the metadata its pointer will carry."""

    dataset: str
    version: str
    dir: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def write_table(self, name: str, df: pd.DataFrame | pa.Table, schema: pa.Schema | None = None) -> Path:
        """Write ``df`` (pandas, or Arrow as it is) as ``<name>.parquet`` (``name`` may hold folders)."""
        path = self.dir / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(df, pa.Table):
            table = df if schema is None else df.cast(schema)
        else:
            table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
        pq.write_table(table, path)
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as strict JSON (NaN is an error, not a token other readers choke on)."""
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2, allow_nan=False, default=str), encoding="utf-8")
        return path


@contextmanager
def new_version(lake: Lake, dataset: str, version: str | None = None, **meta: Any) -> Iterator[Staged]:
    """Stage a new version of ``dataset``; on a clean exit publish it and move the pointer.

    The pointer carries ``meta`` plus whatever the block adds to ``staged.meta``. On an exception
    nothing is published. The staging directory is removed either way.
    """
    version = version or new_run_id()
    staging = lake.work_dir / "staging" / f"{dataset.replace('/', '-')}-{version}"
    staging.mkdir(parents=True, exist_ok=True)
    staged = Staged(dataset, version, staging, dict(meta))
    try:
        yield staged
        lake.publish_version(staging, dataset, version, **staged.meta)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["Staged", "new_version"]
