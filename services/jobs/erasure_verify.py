"""``shoplens erase --verify``: re-scan every store for every completed request, and record it.

Broader than the erasure on purpose: every string column of every Parquet file of the lake (not only
the columns the catalog declares), every 64-hex token of every other lake object, every raw file, every
text column of every warehouse table, and the local caches. Exit code 1 in the CLI when anyone is found.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Set
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from etl.erasure import RawMatcher, key_digest, rows_of
from services.core import erasure_ledger as ledger
from services.core.lake import Lake, utc_now_iso
from services.core.storage import Store
from services.core.warehouse import Warehouse
from services.jobs.erasure import CACHES, KEY_BYTES, WAREHOUSE, Targets
from services.jobs.erasure_raw import filter_raw, local_copy, raw_keys


def _found_in_object(data: bytes, digests: Set[str], memo: dict[str, bool]) -> bool:
    """Any key of the people in one lake object: every string column of a Parquet file (not only the
    declared ones), every 64-hex token of anything else, gzip undone."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:4] == b"PAR1":
        pf = pq.ParquetFile(pa.BufferReader(data))
        strings = [f.name for f in pf.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        table = pq.read_table(pa.BufferReader(data), columns=strings, read_dictionary=strings)
        return bool(rows_of(table, strings, digests, memo).any())
    return any(key_digest(m.decode()) in digests for m in set(KEY_BYTES.findall(data)))


def verify(lake: Lake, key: bytes, targets: Targets | None = None) -> dict[str, Any]:
    """Re-scan every store for every completed request; record the verification in the ledger.

    ``found`` maps a store to the objects where a completed request's person still is (no keys).
    """
    t0 = time.monotonic()
    targets = targets or Targets()
    subs = ledger.submissions(lake)
    completed = [r for s in subs for r in s.requests if r.state == ledger.COMPLETED]
    digests = frozenset(r.key_digest for r in completed)
    found: dict[str, list[str]] = {}
    scanned = 0
    if digests:
        keys = lake.store.list("")
        scanned += len(keys)
        with ThreadPoolExecutor(max_workers=4) as pool:
            memo: dict[str, bool] = {}
            hits = pool.map(lambda k: (k, _found_in_object(lake.store.read_bytes(k), digests, memo)), keys)
            found["lake"] = [k for k, hit in hits if hit]
        matcher = RawMatcher(key, digests)
        for loc in targets.raw:
            names = raw_keys(loc)
            scanned += len(names)
            found[loc.name] = [k for k in names if _raw_holds(loc.store, k, matcher)]
        if targets.warehouse_url:
            found[WAREHOUSE] = _warehouse_holds(targets.warehouse_url, digests)
        cache = lake.work_dir / "cache"
        found[CACHES] = [str(p) for p in cache.rglob("*") if p.is_file()
                         and _found_in_object(p.read_bytes(), digests, {})] if cache.exists() else []  # fmt: skip
    found = {store: where for store, where in found.items() if where}
    now = utc_now_iso()
    for sub in subs:
        touched = False
        for r in sub.requests:
            if r.state == ledger.COMPLETED:
                r.verified_at, r.found_at_verification, touched = now, sorted(found), True
        if touched:
            ledger.save(lake, sub)
    return {"verified_at": now, "requests": len(completed), "objects_scanned": scanned, "clean": not found,
            "found": found, "duration_seconds": round(time.monotonic() - t0, 3)}  # fmt: skip


def _raw_holds(store: Store, key: str, matcher: RawMatcher) -> bool:
    with local_copy(store, key) as path:
        return filter_raw(path, matcher) > 0


def _warehouse_holds(url: str, digests: Set[str]) -> list[str]:
    """Tables where any text value holds a person's key (every text column, not only ``user_key``)."""
    wh = Warehouse(url)
    out = []
    try:
        if wh.sqlite_file is not None and not wh.sqlite_file.exists():
            return []
        with wh.errors("verifying"), wh.engine.connect() as conn:
            for name in sa.inspect(conn).get_table_names():
                for col in sa.inspect(conn).get_columns(name):
                    if not isinstance(col["type"], sa.String | sa.Text):
                        continue
                    values = pa.array([v for (v,) in conn.execute(
                        sa.select(sa.column(col["name"])).select_from(sa.table(name)).distinct())], pa.string())
                    if rows_of(pa.table({"v": values}), ["v"], digests).any():
                        out.append(f"{name}.{col['name']}")
    finally:
        wh.close()
    return out


def verify_report(v: dict[str, Any]) -> str:
    if v["requests"] == 0:
        return "no completed erasure requests to verify"
    if v["clean"]:
        return (f"verified {v['requests']} completed request(s): found nowhere "
                f"({v['objects_scanned']:,} objects scanned, {v['duration_seconds']:.1f}s)")  # fmt: skip
    where = "; ".join(f"{store}: {len(objs)} ({', '.join(objs[:3])})" for store, objs in v["found"].items())
    return f"FOUND after erasure in {where}"




__all__ = ["verify", "verify_report"]
