"""Warehouse publish: 3 million segment rows into a real PostgreSQL, against pandas ``to_sql`` in the same run.

Setup (not timed): a native PostgreSQL 15 (tests/pgserver.py: initdb in a temp dir, 127.0.0.1, default
settings), and a lake whose ``segments`` version holds ``--rows`` users (64-hex keys, 7 segments plus
~10% "not enough activity" with NULL ids, as ``shoplens score`` writes them).

Timed:
- shoplens: ``services.jobs.publish.publish`` of the ``segments`` table, end to end: read the Parquet,
  COPY into ``segments__next`` (CSV written by pyarrow), primary key + segment_id index, ANALYZE, and
  the swap transaction.
- peer: ``DataFrame.to_sql(method="multi", chunksize=...)`` into a plain table, on ``--peer-rows`` rows
  (it is far too slow for all of them), the frame already in memory (its read is not timed); its
  rows/s is extrapolated to ``--rows``. No indexes for the peer: they would only add to its time.

Goal (issue 15): 3,000,000 rows in at most 60 s on 2 cores.

    python benchmarks/warehouse_bench.py [--rows 3000000] [--peer-rows 200000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
GOAL_SECONDS = 60.0
NAMES = ("Window shoppers", "Loyal buyers", "Cart abandoners", "Bargain hunters", "Big-ticket buyers",
         "Weekend browsers", "Newcomers who buy")  # fmt: skip
LIFECYCLE = ("new_visitor", "browsing", "carted_not_bought", "first_time_buyer", "repeat_buyer", "at_risk", "lapsed")


def segments_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keys = [hashlib.sha256(str(500_000_000 + i).encode()).hexdigest() for i in range(rows)]
    seg = rng.integers(0, len(NAMES), rows)
    low = rng.random(rows) < 0.1
    return pd.DataFrame({
        "user_key": keys,
        "segment_id": pd.Series(seg, dtype="Int64").mask(low),
        "segment_name": np.where(low, "Not enough activity yet", np.array(NAMES, dtype=object)[seg]),
        "confidence": np.where(low, np.nan, rng.random(rows)),
        "trust": np.where(low, np.nan, rng.random(rows)),
        "lifecycle_stage": np.array(LIFECYCLE, dtype=object)[rng.integers(0, len(LIFECYCLE), rows)],
        "n_events": rng.integers(1, 400, rows),
        "model_version": "20191215T000000Z-bbbbbb",
        "as_of": pd.Timestamp("2019-11-30 23:00", tz="UTC"),
        "pc1": rng.normal(size=rows), "pc2": rng.normal(size=rows),
    })  # fmt: skip


def cpu_seconds(server) -> tuple[float, float]:
    """(this process, every PostgreSQL process) user+system CPU seconds so far."""
    import psutil

    own = psutil.Process().cpu_times()
    pg = 0.0
    root = psutil.Process(server.pid())
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            pg += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return own.user + own.system, pg


def load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--peer-rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=2, help="shoplens publishes (each of a new lake version)")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args()

    import sqlalchemy as sa

    from services.core.catalog import SEGMENTS
    from services.core.lake import Lake
    from services.core.storage import LocalStore
    from services.jobs.publish import publish, table_named
    from services.jobs.segmentation import SEGMENTS_SCHEMA
    from tests.pgserver import start_server, stop_server

    load_before = load_avg()
    server = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="warehouse-bench-") as tmp:
            work = Path(tmp)
            print(f"setup: {args.rows:,} segment rows ...", flush=True)
            df = segments_frame(args.rows)
            lake = Lake(LocalStore(work / "lake"), work / "lake-work")
            stage = work / "stage"
            stage.mkdir()
            pq.write_table(pa.Table.from_pandas(df, schema=SEGMENTS_SCHEMA, preserve_index=False),
                           stage / "part-00000.parquet")  # fmt: skip
            parquet_mb = (stage / "part-00000.parquet").stat().st_size / 1e6
            url = server.new_database("bench")
            tables = (table_named("segments"),)
            runs, cpu = [], []
            for i in range(args.repeat):
                version = f"2019121{i}T000000Z-bench{i}"
                lake.publish_version(stage, SEGMENTS, version, model_version="m")
                c0 = cpu_seconds(server)
                t0 = time.perf_counter()
                summary = publish(lake, url, tables)
                seconds = time.perf_counter() - t0
                c1 = cpu_seconds(server)
                cpu.append((c1[0] - c0[0], c1[1] - c0[1]))
                assert summary["tables"][0]["rows"] == args.rows, summary
                runs.append(seconds)
                print(f"shoplens publish #{i + 1}: {seconds:.1f}s (CPU: client {cpu[-1][0]:.1f}s, "
                      f"PostgreSQL {cpu[-1][1]:.1f}s)", flush=True)  # fmt: skip
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM segments")).scalar_one() == args.rows
                table_mb = conn.execute(sa.text("SELECT pg_total_relation_size('segments')")).scalar_one() / 1e6
            engine.dispose()

            peer_url = server.new_database("peer")
            peer_df = df.iloc[: args.peer_rows][["user_key", "segment_id", "segment_name", "confidence",
                                                  "model_version", "as_of"]]  # fmt: skip
            engine = sa.create_engine(peer_url)
            t0 = time.perf_counter()
            peer_df.to_sql("segments", engine, method="multi", chunksize=5_000, index=False)
            peer_seconds = time.perf_counter() - t0
            engine.dispose()
            print(f"peer to_sql(method='multi') on {args.peer_rows:,} rows: {peer_seconds:.1f}s", flush=True)
    finally:
        stop_server(server)

    best = min(runs)
    ours_rps = args.rows / best
    peer_rps = args.peer_rows / peer_seconds
    peer_full = args.rows / peer_rps
    load_after = load_avg()
    result = {
        "rows": args.rows, "parquet_mb": round(parquet_mb, 1), "table_mb_with_indexes": round(table_mb, 1),
        "shoplens_seconds": [round(s, 2) for s in runs], "shoplens_best_seconds": round(best, 2),
        "shoplens_rows_per_second": round(ours_rps),
        "shoplens_cpu_seconds": [{"client": round(a, 1), "postgresql": round(b, 1)} for a, b in cpu], "peer": "pandas to_sql(method='multi', chunksize=5000)",
        "peer_rows": args.peer_rows, "peer_seconds": round(peer_seconds, 2), "peer_rows_per_second": round(peer_rps),
        "peer_extrapolated_seconds": round(peer_full, 1), "speedup": round(ours_rps / peer_rps, 1),
        "goal_seconds": GOAL_SECONDS, "within_goal": max(runs) <= GOAL_SECONDS,
        "cpus": os.cpu_count(), "load_average_1m_before": load_before, "load_average_1m_after": load_after,
        "python": platform.python_version(), "postgresql": "15 (Debian, default settings, 127.0.0.1)",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "warehouse.json").write_text(json.dumps(result, indent=2) + "\n")
    shared = (f"{os.cpu_count()} CPUs shared with other work (1-min load average {load_before:.1f} before, "
              f"{load_after:.1f} after)" if load_before is not None else f"{os.cpu_count()} CPUs")  # fmt: skip
    md = f"""# Warehouse publish benchmark

{args.rows:,} segment rows (Parquet {parquet_mb:.0f} MB; in PostgreSQL {table_mb:.0f} MB with the primary key and
the segment_id index) into a native PostgreSQL 15 on 127.0.0.1, default settings; {shared};
{result['measured_at']}. `python benchmarks/warehouse_bench.py`.

| method | rows | seconds | rows/s |
|---|---:|---:|---:|
| shoplens publish (Parquet -> COPY -> indexes -> ANALYZE -> swap), best of {len(runs)} | {args.rows:,} | {best:.1f} | {ours_rps:,.0f} |
| pandas `to_sql(method="multi", chunksize=5000)`, no indexes | {args.peer_rows:,} | {peer_seconds:.1f} | {peer_rps:,.0f} |
| the same, extrapolated | {args.rows:,} | {peer_full:,.0f} | |

All shoplens runs: {", ".join(f"{s:.1f} s" for s in runs)}; CPU they used (user + system):
{", ".join(f"client {a:.1f} s + PostgreSQL {b:.1f} s" for a, b in cpu)}. The client renders CSV while the server
parses it, and the server's CPU (COPY, index builds, ANALYZE, swap) is the larger part: on 2 uncontended
cores that CPU time bounds the wall time; on a shared machine the wall time is what the table says. Goal (issue 15): at most {GOAL_SECONDS:.0f} s for
{args.rows:,} rows on 2 cores -> {"met" if result["within_goal"] else "NOT met"} (worst run {max(runs):.1f} s);
{result["speedup"]:.0f}x the peer's rate.

Why: a record batch becomes CSV in pyarrow's C++ writer and streams through psycopg 3's `COPY ... FROM
STDIN` into a table created in the same transaction (`FREEZE`); the indexes are built once after the
load. The peer turns every row into Python objects and a parameterized multi-row INSERT.
"""
    (args.results / "warehouse.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
